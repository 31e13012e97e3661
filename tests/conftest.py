"""Shared fixtures: a moto S3 server in its own process, a fresh bucket per test, the sample library.

The engine is run through its real CLI entry point (`sync_engine.cli.main`) against real HTTP
endpoints; only the process environment is set per test, as the CronJob's Secret would set it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from immich_tui.demo.library import SampleLibrary, make_sample_library
from immich_tui.demo.s3 import LocalS3
from sync_engine.cli import main
from tests.s3proxy import Proxy

SECRET = "wJalrXUtnFEMI-test-secret-do-not-print"


@pytest.fixture(scope="session")
def s3() -> Iterator[LocalS3]:
    with LocalS3() as server:
        yield server


@pytest.fixture
def bucket(s3: LocalS3) -> str:
    """Versioned, as deploy/README.md creates it: a changed file may then replace its object."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    s3.client().put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@pytest.fixture
def unversioned_bucket(s3: LocalS3, sync_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A bucket that never had versioning, made the sync's bucket (BUCKET_NAME) of the test."""
    name = f"plain-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    monkeypatch.setenv("BUCKET_NAME", name)
    return name


@pytest.fixture
def proxy(s3: LocalS3) -> Iterator[Proxy]:
    p = Proxy(s3.endpoint)
    yield p
    p.close()


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> SampleLibrary:
    return make_sample_library(tmp_path_factory.mktemp("template") / "library")


@pytest.fixture
def sample(tmp_path: Path, sample_template: SampleLibrary) -> SampleLibrary:
    """A private copy per test (tests modify files), with the template's times preserved."""
    import shutil

    root = tmp_path / "library"
    shutil.copytree(sample_template.root, root, symlinks=True)
    return SampleLibrary(root, dict(sample_template.files))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def sync_env(monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str, sample: SampleLibrary) -> dict[str, str]:
    """The variables the writer Secret provides, pointed at the local server."""
    env = {
        "AWS_ACCESS_KEY_ID": "AKIATESTWRITER",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": bucket,
        "MEDIA_PREFIX": "immich/media/",
        "AWS_ENDPOINT_URL_S3": s3.endpoint,
        "LIBRARY_ROOT": str(sample.root),
        "IMMICH_SYNC_MAX_ATTEMPTS": "3",
        # each test copies its library just before it runs, so every ctime is seconds old: the settle
        # window (judged on ctime) is tested where it matters, with explicit values
        "IMMICH_SYNC_SETTLE_SECONDS": "0",
        # the sample's 18 MiB video goes multipart (two 16 MiB parts), so every test exercises both paths
        "IMMICH_SYNC_MULTIPART_THRESHOLD_MIB": "16",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    use_sync_env(monkeypatch, env)
    return env


def use_sync_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Exactly these variables, none inherited from the shell that runs the tests."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "IMMICH_SYNC_")) or name in ("BUCKET_NAME", "MEDIA_PREFIX", "LIBRARY_ROOT"):
            monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def sync_runner(capsys: pytest.CaptureFixture[str], secret: str):  # type: ignore[no-untyped-def]
    """`immich-sync ARGV` in-process; asserts the secret key never reaches its output."""

    def _run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        assert secret not in captured.out and secret not in captured.err
        return Result(code, captured.out, captured.err)

    return _run


@pytest.fixture
def run_sync(capsys: pytest.CaptureFixture[str], sync_env: dict[str, str]):  # type: ignore[no-untyped-def]
    return sync_runner(capsys, SECRET)


def list_keys(s3: LocalS3, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    client = s3.client()
    out: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj
    return out


def open_multipart_uploads(s3: LocalS3, bucket: str) -> list[dict[str, Any]]:
    return list(s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


pytest_plugins = ["tests.cluster", "tests.tui"]
