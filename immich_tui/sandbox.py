"""An embedded default world: a generated Immich library and a local S3 endpoint (moto on 127.0.0.1).

`make demo` and the test-suite both stand on this, so the demo shows exactly what is tested.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync_engine.config import IMMICH_FOLDERS, MiB

USERS = ("7f3c2a10-admin", "b41e9d22-anna")
DEMO_KEY_ID = "sandbox-admin"
DEMO_SECRET = "sandbox-admin-secret"  # a local moto server's admin key, not a real credential


@dataclass
class SampleLibrary:
    root: Path
    files: dict[str, int] = field(default_factory=dict)  # rel path -> size

    def folder_files(self, folder: str) -> dict[str, int]:
        return {k: v for k, v in self.files.items() if k.startswith(f"{folder}/")}


def _write(lib: SampleLibrary, rel: str, data: bytes, when: datetime) -> None:
    path = lib.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    ts = when.timestamp()
    os.utime(path, (ts, ts))
    lib.files[rel] = len(data)


def make_sample_library(
    root: Path,
    *,
    seed: int = 7,
    photos_per_month: int = 6,
    months: int = 8,
    big_files: tuple[int, ...] = (3 * MiB, 6 * MiB, 18 * MiB),
) -> SampleLibrary:
    """A small but realistic library: all six folders with `.immich` markers, year/month nesting,
    storage-template and upload layouts, a few multi-MB videos (one above the multipart threshold),
    names with spaces and non-ASCII letters, and an empty file. File times lie in the past."""
    rng = random.Random(seed)
    lib = SampleLibrary(root)
    root.mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    for folder in IMMICH_FOLDERS:
        _write(lib, f"{folder}/.immich", b"", start)
    n = 0
    for user in USERS:
        for month in range(months):
            when = start.replace(year=2024 + month // 12, month=month % 12 + 1)
            for _ in range(photos_per_month):
                n += 1
                body = rng.randbytes(rng.randint(20_000, 300_000))
                name = f"IMG_{n:04d}.jpg"
                _write(lib, f"library/{user}/{when:%Y}/{when:%m}/{name}", body, when)
                uid = f"{rng.getrandbits(64):016x}"
                _write(lib, f"upload/{user}/{uid[:2]}/{uid[2:4]}/{uid}.jpg", body[:50_000], when)
                _write(lib, f"thumbs/{user}/{uid[:2]}/{uid[2:4]}/{uid}-thumbnail.webp", body[:8_000], when)
        _write(lib, f"profile/{user}/avatar.jpg", rng.randbytes(40_000), start)
    odd = start.replace(month=6)
    _write(lib, f"library/{USERS[0]}/2024/06/Holiday photo (1).jpg", rng.randbytes(90_000), odd)
    _write(lib, f"library/{USERS[0]}/2024/06/Café – Zürich.jpg", rng.randbytes(70_000), odd)
    _write(lib, f"library/{USERS[1]}/2024/06/empty.jpg", b"", odd)
    for i, size in enumerate(big_files):
        when = start.replace(month=3 + i)
        _write(lib, f"library/{USERS[1]}/{when:%Y}/{when:%m}/VID_{i:04d}.mp4", rng.randbytes(size), when)
        _write(lib, f"encoded-video/{USERS[1]}/{i:02d}/VID_{i:04d}.mp4", rng.randbytes(200_000), when)
    _write(lib, "backups/immich-db-backup-20240801T020000.sql.gz", rng.randbytes(120_000), start)
    return lib


def bucket_policy(bucket: str, actions: list[str]) -> dict[str, Any]:
    """Allow `actions` on a bucket and every key in it."""
    resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalS3:
    """A moto S3 server in its own process on 127.0.0.1, so it is a real HTTP peer of the client."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LocalS3:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self._proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not start on {self.endpoint}")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, service: str = "s3", key_id: str = DEMO_KEY_ID, secret: str = DEMO_SECRET) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    def post(self, path: str, body: bytes) -> None:
        req = urllib.request.Request(
            f"{self.endpoint}{path}", data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(req, timeout=10).close()

    def iam_user(self, name: str, policy: dict[str, Any] | str | None) -> tuple[str, str]:
        """A user with this inline policy (none when `None`) and an access key; create users before
        `enforce_iam()`, which needs keys with IAM rights to undo."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        if policy is not None:
            document = policy if isinstance(policy, str) else json.dumps(policy)
            iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=document)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def enforce_iam(self, on: bool = True) -> None:
        """moto checks IAM policies for every request after this (create users and keys first)."""
        self.post("/moto-api/reset-auth", b"0" if on else b"inf")
