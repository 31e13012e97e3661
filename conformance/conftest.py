"""Fixtures for the conformance suite: a real Ceph RGW instead of moto (see rgw.py, `make conformance`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.config
import pytest

from conformance.rgw import ACCESS_KEY, SECRET_KEY, RadosGateway, missing
from immich_tui.demo.library import SampleLibrary, make_sample_library
from tests.conftest import sync_runner, use_sync_env


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RadosGateway]:
    absent = missing()
    if absent:
        pytest.fail(f"Ceph RGW is not installed (missing {', '.join(absent)}): run `make conformance`")
    with RadosGateway(tmp_path_factory.mktemp("rgw")) as gateway:
        yield gateway


def client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(rgw: RadosGateway, request: pytest.FixtureRequest) -> str:
    name = "conf-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    client(rgw.endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory: pytest.TempPathFactory) -> SampleLibrary:
    return make_sample_library(tmp_path_factory.mktemp("template") / "library")


@pytest.fixture
def sample(tmp_path: Path, sample_template: SampleLibrary) -> SampleLibrary:
    root = tmp_path / "library"
    shutil.copytree(sample_template.root, root, symlinks=True)
    return SampleLibrary(root, dict(sample_template.files))


@pytest.fixture
def sync_env(monkeypatch: pytest.MonkeyPatch, rgw: RadosGateway, bucket: str, sample: SampleLibrary) -> dict[str, str]:
    """The writer Secret's variables with the defaults a new user keeps (multipart from 64 MiB is
    lowered to 16 MiB so the sample's 18 MiB video takes the multipart path)."""
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": bucket,
        "MEDIA_PREFIX": "immich/media/",
        "AWS_ENDPOINT_URL_S3": rgw.endpoint,
        "IMMICH_SYNC_PATH_STYLE": "1",
        "LIBRARY_ROOT": str(sample.root),
        "IMMICH_SYNC_SETTLE_SECONDS": "0",
        "IMMICH_SYNC_MULTIPART_THRESHOLD_MIB": "16",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    use_sync_env(monkeypatch, env)
    return env


@pytest.fixture
def run_sync(capsys: pytest.CaptureFixture[str], sync_env: dict[str, str]):  # type: ignore[no-untyped-def]
    return sync_runner(capsys, SECRET_KEY)
