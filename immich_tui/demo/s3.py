"""A local S3 endpoint for the sandbox and the tests: moto's server in its own process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

DEMO_KEY_ID = "sandbox-admin"
DEMO_SECRET = "sandbox-admin-secret"  # a local moto server's admin key, not a real credential


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

    server_args: tuple[str, ...] = ("-m", "moto.server")  # what the interpreter runs: moto's server

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> LocalS3:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self._proc = subprocess.Popen(
            [sys.executable, *self.server_args, "-H", "127.0.0.1", "-p", str(self.port)],
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
