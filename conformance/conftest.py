"""Fixtures for the conformance suite: a real Ceph RGW instead of moto (see rgw.py, `make conformance`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def client(endpoint: str, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):  # type: ignore[no-untyped-def]
    """An S3 client as the bucket owner (the default keys) or as the identity whose keys are given."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(rgw: RadosGateway, request: pytest.FixtureRequest) -> str:
    name = "conf-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    client(rgw.endpoint).create_bucket(Bucket=name)
    return name


IAM = Path(__file__).resolve().parent.parent / "deploy/iam"


@dataclass(frozen=True)
class Identity:
    """An RGW user of its own: its keys, and the principal a bucket policy names it by."""

    uid: str
    access_key: str
    secret_key: str = field(repr=False)

    @property
    def arn(self) -> str:
        return f"arn:aws:iam:::user/{self.uid}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


@pytest.fixture(scope="session")
def identities(rgw: RadosGateway) -> dict[str, Identity]:
    """The writer and the restorer, each an RGW user apart from the buckets' owner (ACCESS_KEY), so that
    what each may do is decided by the bucket's policy alone (see `identity_policy`)."""
    return {role: Identity(f"drill-{role}", *rgw.add_user(f"drill-{role}")) for role in ("writer", "restorer")}


# What RGW 16 lets an object's owner do through the object's ACL when no policy statement matches: the
# writer owns every object it puts, so without these denials it could read back its photos (which
# media-writer.json withholds: "ReadItsOwnFilesCacheNeverMedia") and their older versions, and read or
# change their ACLs, tags, retention and legal holds. (A Deny with NotAction would say it shorter, but
# RGW 16 does not apply one to these requests.)
OWNER_EXTRAS = [
    "s3:GetObjectVersion",
    "s3:GetObjectAcl",
    "s3:GetObjectVersionAcl",
    "s3:PutObjectAcl",
    "s3:PutObjectVersionAcl",
    "s3:GetObjectTagging",
    "s3:GetObjectVersionTagging",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
    "s3:DeleteObjectTagging",
    "s3:DeleteObjectVersionTagging",
    "s3:GetObjectRetention",
    "s3:PutObjectRetention",
    "s3:GetObjectLegalHold",
    "s3:PutObjectLegalHold",
    "s3:GetObjectTorrent",
    "s3:GetObjectVersionTorrent",
]


def _statements(name: str, bucket: str, who: Identity) -> list[dict[str, Any]]:
    """The shipped identity policy's statements, each made a bucket policy statement naming `who`."""
    policy = json.loads((IAM / name).read_text().replace("BUCKET_NAME", bucket))
    return [
        {**s, "Sid": f"{who.uid.replace('-', '')}{s.get('Sid', n)}", "Principal": {"AWS": [who.arn]}}
        for n, s in enumerate(policy["Statement"])
    ]


def identity_policy(bucket: str, writer: Identity, restorer: Identity) -> dict[str, Any]:
    """deploy/iam/media-writer.json for the writer and deploy/iam/restorer.json for the restorer, as one
    bucket policy, word for word (the s3:prefix condition on the writer's ListBucket included: RGW 16
    evaluates it), plus explicit denials of what RGW would otherwise let the writer do as the owner of
    the objects it puts (OWNER_EXTRAS, and GetObject outside the run reports). The restorer owns
    nothing, so the bucket policy is all it has."""
    reports = f"arn:aws:s3:::{bucket}/immich/sync-reports/*"
    never = [
        {
            "Sid": "WriterNeverReadsMedia",
            "Effect": "Deny",
            "Principal": {"AWS": [writer.arn]},
            "Action": "s3:GetObject",
            "NotResource": reports,
        },
        {
            "Sid": "WriterGetsNothingFromOwningItsObjects",
            "Effect": "Deny",
            "Principal": {"AWS": [writer.arn]},
            "Action": OWNER_EXTRAS,
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        },
    ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            *_statements("media-writer.json", bucket, writer),
            *_statements("restorer.json", bucket, restorer),
            *never,
        ],
    }


@pytest.fixture
def guarded_bucket(rgw: RadosGateway, bucket: str, identities: dict[str, Identity]) -> str:
    """`bucket` as deploy/README.md makes it (versioned), owned by the admin user, with the writer and
    the restorer given their rights by `identity_policy` and nothing else."""
    owner = client(rgw.endpoint)
    owner.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    policy = identity_policy(bucket, identities["writer"], identities["restorer"])
    owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return bucket


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
