"""SSE-KMS and DSSE-KMS buckets: S3's ETag is not an MD5 there, so neither restore nor verify may compare
it with the manifest's MD5 as if it were one.

moto answers MD5 ETags whatever the encryption, so a real HTTP hop between the engine and moto plays
S3's part: every ETag it forwards (listing XML, GET and HEAD headers) becomes an opaque one, If-Match
is translated back, and GET/HEAD answers carry `x-amz-server-side-encryption`. The bucket is filled
by the real backup first, so the manifests hold what a backup records: the MD5 of the bytes sent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.manifests import ManifestWriter
from sync_engine.models import LocalFile, Outcome, PlanItem, Reason, UploadResult
from tests.conftest import Result, list_keys
from tests.forgery import planted_manifest_key

RunSync = Callable[..., Result]

PREFIX = "immich/media/"
REPORTS = "immich/sync-reports/"
ONLY = ("--only", "profile,library")
_LISTED_ETAG = re.compile(rb"<ETag>(&quot;|&#34;|\")?([0-9a-f]{32}(?:-\d+)?)(&quot;|&#34;|\")?</ETag>")


def opaque(etag: str) -> str:
    """What an SSE-KMS object's ETag looks like: same shape as an MD5 ETag, not the MD5 of its bytes."""
    head, dash, parts = etag.partition("-")
    return hashlib.sha256(b"kms" + head.encode()).hexdigest()[:32] + dash + parts


class KmsHop:
    """S3 with SSE-KMS (or DSSE-KMS) in front of moto. `corrupt` flips a byte in every GET of those keys."""

    def __init__(self, upstream: str, encryption: str) -> None:
        self.encryption = encryption
        self.corrupt: set[str] = set()
        self.ops: list[tuple[str, str]] = []
        self._real: dict[str, str] = {}
        lock = threading.Lock()
        up = urlsplit(upstream)
        hop = self

        def hide(real: str) -> str:
            forged = opaque(real)
            with lock:
                hop._real[forged] = real
            return forged

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                headers = dict(self.headers.items())
                for name in list(headers):
                    if name.lower() in ("if-match", "if-none-match"):
                        value = headers[name].strip('"')
                        with lock:
                            headers[name] = f'"{hop._real.get(value, value)}"'
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                conn.request(self.command, self.path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                parts = urlsplit(self.path)
                key = unquote(parts.path).split("/", 2)[2] if unquote(parts.path).count("/") >= 2 else ""
                listing = self.command == "GET" and not key and "list-type" in parse_qs(parts.query)
                with lock:
                    hop.ops.append((self.command, key))
                if listing:
                    data = _LISTED_ETAG.sub(
                        lambda m: b"<ETag>&quot;" + hide(m[2].decode()).encode() + b"&quot;</ETag>", data
                    )
                if self.command == "GET" and key in hop.corrupt and resp.status == 200 and data:
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
                self.send_response(resp.status)
                for name, value in resp.getheaders():
                    lower = name.lower()
                    if lower in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        continue
                    if lower == "x-amz-server-side-encryption":
                        continue
                    if lower == "etag" and key:
                        value = f'"{hide(value.strip(chr(34)))}"'
                    self.send_header(name, value)
                if key and self.command in ("GET", "HEAD") and resp.status in (200, 206):
                    self.send_header("x-amz-server-side-encryption", hop.encryption)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def gets(self, prefix: str = PREFIX) -> list[str]:
        return [k for m, k in self.ops if m == "GET" and k.startswith(prefix)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def backed_up(run_sync: RunSync, sample: SampleLibrary, s3: LocalS3, bucket: str) -> dict[str, dict[str, Any]]:
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    return list_keys(s3, bucket, PREFIX)


@pytest.fixture(params=["aws:kms", "aws:kms:dsse"])
def kms(
    request: pytest.FixtureRequest, s3: LocalS3, monkeypatch: pytest.MonkeyPatch, sync_env: dict[str, str]
) -> Iterator[KmsHop]:
    hop = KmsHop(s3.endpoint, request.param)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", hop.endpoint)
    yield hop
    hop.close()


def files(root: Path, folders: tuple[str, ...]) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for folder in folders
        for p in (root / folder).rglob("*")
        if p.is_file()
    }


def restore(run_sync: RunSync, target: Path, *args: str) -> Result:
    return run_sync("restore", "--to", str(target), "-o", "json", *ONLY, *args)


# -- restore --------------------------------------------------------------------------------------


def test_restore_checks_the_md5_of_what_it_downloads_on_a_kms_bucket(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], sample: SampleLibrary, tmp_path: Path, kms: KmsHop
) -> None:
    target = tmp_path / "restored"
    result = restore(run_sync, target)
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["totals"]["failed"] == 0 and report["totals"]["downloaded"] == report["totals"]["objects"] > 0
    assert files(target, ("profile", "library")) == files(sample.root, ("profile", "library"))

    again = restore(run_sync, target, "--force")  # a re-run sees the files as already there, by their MD5
    assert again.code == 0, again.out
    assert again.json()["totals"]["already_there"] == report["totals"]["objects"]


def test_bytes_that_do_not_hash_to_the_manifest_md5_are_never_restored(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], tmp_path: Path, kms: KmsHop
) -> None:
    victim = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    kms.corrupt.add(victim)
    target = tmp_path / "restored"
    result = restore(run_sync, target)
    assert result.code == 1
    report = result.json()
    assert [(p["path"], p["kind"]) for p in report["problems"]] == [
        ("profile/7f3c2a10-admin/avatar.jpg", "verify-failed")
    ]
    assert "manifest" in report["problems"][0]["detail"]
    assert kms.gets().count(victim) == 3
    assert not (target / "profile/7f3c2a10-admin/avatar.jpg").exists()
    assert not [p for p in target.rglob("*") if p.name.endswith(".tmp")]


def test_a_kms_object_no_manifest_describes_is_checked_by_size_and_said_so(
    run_sync: RunSync, sample: SampleLibrary, s3: LocalS3, bucket: str, tmp_path: Path, kms: KmsHop
) -> None:
    s3.client().put_object(Bucket=bucket, Key=PREFIX + "profile/legacy.jpg", Body=b"adopted from aws-cli")
    target = tmp_path / "restored"
    result = restore(run_sync, target)
    assert result.code == 0, result.out
    report = result.json()
    assert report["size_checked_only"] == 1
    assert "size" in " ".join(report["next_steps"]) and "SSE-KMS" in " ".join(report["next_steps"])
    assert (target / "profile/legacy.jpg").read_bytes() == b"adopted from aws-cli"

    # a re-run cannot prove the file's bytes either: the same size is all there is to go by, and said so
    again = restore(run_sync, target, "--force")
    assert again.code == 0, again.out
    assert again.json()["totals"]["already_there"] == report["totals"]["objects"]
    assert again.json()["size_checked_only"] == 1


def test_an_archived_object_that_changed_is_reported_before_s3_is_asked_to_restore_it(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """No KMS here: the HEAD that reads the restore state also shows the differing ETag is an MD5."""
    victim = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    size = backed_up[victim]["Size"]
    s3.client().put_object(Bucket=bucket, Key=victim, Body=b"y" * size, StorageClass="GLACIER")
    result = restore(run_sync, tmp_path / "restored")
    assert result.code == 1
    report = result.json()
    assert [(p["path"], p["kind"]) for p in report["problems"]] == [
        ("profile/7f3c2a10-admin/avatar.jpg", "changed-in-s3")
    ]
    assert "RestoreObject" not in report["requests"] and report["totals"]["pending"] == 0


# -- verify ---------------------------------------------------------------------------------------


def test_verify_never_calls_a_kms_object_ok_that_it_could_not_compare(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], kms: KmsHop
) -> None:
    """The manifests hold MD5s only (the engine's older manifests, or a server that did not say):
    the listing cannot show whether the bytes are still those, so verify says so and fails."""
    result = run_sync("verify", "-o", "json")
    assert result.code == 1
    data = result.json()
    assert data["verified"] == 0 and data["etag_mismatch"] == 0
    assert data["not_comparable"] == len(backed_up)
    kinds = {p["kind"] for p in data["problems"]}
    assert kinds == {"not-comparable"}
    assert kms.encryption in data["problems"][0]["detail"]
    text = run_sync("verify")
    assert text.code == 1 and "verify ok" not in text.out and "not-comparable" in text.out


def test_verify_matches_the_etag_s3_reported_at_upload(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], s3: LocalS3, bucket: str, kms: KmsHop
) -> None:
    """What a backup records on a KMS bucket: the MD5 it sent and the ETag S3 answered."""
    writer = ManifestWriter()
    for key, obj in backed_up.items():
        etag = obj["ETag"].strip('"')
        local = LocalFile(rel=key.removeprefix(PREFIX), size=obj["Size"], mtime_ns=1_700_000_000 * 10**9)
        item = PlanItem(local=local, key=key, reason=Reason.MISSING)
        part_size = 16 * 1024 * 1024 if "-" in etag else None
        writer.add(
            UploadResult(item, Outcome.UPLOADED, size=obj["Size"], etag=etag, part_size=part_size, s3_etag=opaque(etag))
        )
    s3.client().put_object(Bucket=bucket, Key=planted_manifest_key(), Body=writer.finish())
    victim = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    result = run_sync("verify", "-o", "json")
    assert result.code == 0, result.out
    assert result.json()["verified"] == len(backed_up)

    # replaced behind the backup's back: S3's ETag is no longer the one it reported, whatever it means
    s3.client().put_object(Bucket=bucket, Key=victim, Body=b"x" * backed_up[victim]["Size"])
    result = run_sync("verify", "-o", "json")
    assert result.code == 1
    assert [(p["kind"], p["key"]) for p in result.json()["problems"]] == [("etag-mismatch", victim)]


def test_verify_tells_a_changed_object_from_a_kms_one(
    run_sync: RunSync, backed_up: dict[str, dict[str, Any]], s3: LocalS3, bucket: str
) -> None:
    """Without KMS a differing listing ETag is a change, as before (HEAD shows no KMS header)."""
    victim = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    s3.client().put_object(Bucket=bucket, Key=victim, Body=b"x" * backed_up[victim]["Size"])
    data = run_sync("verify", "-o", "json").json()
    assert data["etag_mismatch"] == 1 and data["not_comparable"] == 0
    assert json.dumps(data["problems"]).count(victim) == 1
