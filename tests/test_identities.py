"""Four identities, proven apart: the policies shipped in deploy/iam, enforced on a versioned bucket.

The media writer (media-writer.json), the CNPG archiver (cnpg-writer.json), the restorer (restorer.json)
and the viewer (viewer.json) each get an IAM user on moto with exactly that policy. moto alone evaluates no S3
condition, so the prefix-scoped `s3:ListBucket` of the writer and the archiver would list everything;
tests/strict_iam.py adds the `s3:prefix` evaluation (and the Object Lock actions), and the last test
shows the difference is real.

What each request is checked as, and so what is proven here: ListObjectsV2 → s3:ListBucket,
ListObjectVersions → s3:ListBucketVersions, GET/HEAD → s3:GetObject, GET with versionId →
s3:GetObjectVersion, PUT and multipart → s3:PutObject, DELETE → s3:DeleteObject, DELETE with versionId
→ s3:DeleteObjectVersion, PUT ?versioning → s3:PutBucketVersioning, PUT ?lifecycle →
s3:PutLifecycleConfiguration, GET ?versioning → s3:GetBucketVersioning, and (from tests/strict_iam.py,
as AWS does) HeadBucket → s3:ListBucket without `s3:prefix`. A multi-object DeleteObjects is checked
key by key there; tests/test_archiver_policy.py proves it with barman-cloud's retention, so it is not
repeated here.

The archiver's policy also allows `s3:ListBucket` when the request carries no `s3:prefix`: barman-cloud
checks the bucket with a HeadBucket, which AWS authorises that way. A ListObjectsV2 without a prefix is
the same request to IAM, so the archiver can list the key names of the whole bucket (nothing more).

The viewer's `s3:ListBucket` holds only for the exact prefixes the tools list (`StringEquals`): the run
reports (status, offsite, inventory's fallback) and the media prefix (the names and sizes behind
`offsite`'s exact per-folder totals); its `s3:GetObject` only under the run reports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from immich_tui.demo.s3 import LocalS3, bucket_policy
from tests.strict_iam import StrictIamS3

BUCKET = "immich-offsite-identities"
IAM = Path(__file__).resolve().parent.parent / "deploy" / "iam"
MEDIA, REPORTS, ARCHIVE = "immich/media/", "immich/sync-reports/", "immich/postgres/"


def shipped(name: str) -> str:
    return (IAM / name).read_text().replace("BUCKET_NAME", BUCKET)


class World:
    def __init__(self, server: LocalS3, keys: dict[str, tuple[str, str]], versions: dict[str, str]) -> None:
        self.server, self.keys, self.versions = server, keys, versions

    def client(self, who: str) -> Any:
        key_id, secret = self.keys[who]
        return self.server.client(key_id=key_id, secret=secret)


def _seed(server: LocalS3, admin: Any) -> dict[str, str]:
    """Two versions of one object under each prefix; returns the old version's id per key."""
    admin.create_bucket(Bucket=BUCKET)
    admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    old: dict[str, str] = {}
    for prefix in (MEDIA, REPORTS, ARCHIVE):
        key = f"{prefix}seed/object"
        old[key] = admin.put_object(Bucket=BUCKET, Key=key, Body=b"old")["VersionId"]
        admin.put_object(Bucket=BUCKET, Key=key, Body=b"new")
    return old


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with StrictIamS3() as server:
        versions = _seed(server, server.client())
        keys = {
            "writer": server.iam_user("media-writer", shipped("media-writer.json")),
            "archiver": server.iam_user("cnpg-archiver", shipped("cnpg-writer.json")),
            "restorer": server.iam_user("restorer", shipped("restorer.json")),
            "viewer": server.iam_user("viewer", shipped("viewer.json")),
            "admin": server.iam_user("admin", bucket_policy(BUCKET, ["s3:*"])),
        }
        server.enforce_iam()
        yield World(server, keys, versions)


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        code = exc.response["Error"]["Code"]
        return "denied" if code in ("AccessDenied", "403") else code
    return "allowed"


def _object_ops(client: Any, prefix: str, versions: dict[str, str]) -> dict[str, Callable[[], Any]]:
    """Every way to read, write or destroy under `prefix`, one request each."""
    key = f"{prefix}seed/object"
    return {
        "ListObjectsV2": lambda: client.list_objects_v2(Bucket=BUCKET, Prefix=prefix),
        "ListObjectVersions": lambda: client.list_object_versions(Bucket=BUCKET, Prefix=prefix),
        "GetObject": lambda: client.get_object(Bucket=BUCKET, Key=key),
        "HeadObject": lambda: client.head_object(Bucket=BUCKET, Key=key),
        "GetObjectVersion": lambda: client.get_object(Bucket=BUCKET, Key=key, VersionId=versions[key]),
        "PutObject": lambda: client.put_object(Bucket=BUCKET, Key=f"{prefix}intruder", Body=b"x"),
        "CreateMultipartUpload": lambda: client.create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}intruder"),
        "DeleteObject": lambda: client.delete_object(Bucket=BUCKET, Key=key),
        "DeleteObjectVersion": lambda: client.delete_object(Bucket=BUCKET, Key=key, VersionId=versions[key]),
    }


def _bucket_ops(client: Any) -> dict[str, Callable[[], Any]]:
    lifecycle = {"Rules": [{"ID": "wipe", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]}
    return {
        "HeadBucket": lambda: client.head_bucket(Bucket=BUCKET),
        "ListObjectsV2 (whole bucket)": lambda: client.list_objects_v2(Bucket=BUCKET),
        "PutBucketVersioning": lambda: client.put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"}
        ),
        "PutLifecycleConfiguration": lambda: client.put_bucket_lifecycle_configuration(
            Bucket=BUCKET, LifecycleConfiguration=lifecycle
        ),
        "GetBucketVersioning": lambda: client.get_bucket_versioning(Bucket=BUCKET),
        "GetObjectLockConfiguration": lambda: client.get_object_lock_configuration(Bucket=BUCKET),
    }


def _intact(world: World) -> None:
    """Whatever was attempted, the bucket is as seeded: versioned, no lifecycle, both versions of every key."""
    admin = world.client("admin")
    assert admin.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    with pytest.raises(botocore.exceptions.ClientError):
        admin.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    for key, old in world.versions.items():
        listed = admin.list_object_versions(Bucket=BUCKET, Prefix=key)
        assert old in {v["VersionId"] for v in listed.get("Versions", [])}, key
        assert not listed.get("DeleteMarkers"), key
        assert admin.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"new"


def test_the_media_writer_cannot_touch_the_database_archive(world: World) -> None:
    writer = world.client("writer")
    outcomes = {op: _outcome(call) for op, call in _object_ops(writer, ARCHIVE, world.versions).items()}
    assert outcomes == {op: "denied" for op in outcomes}
    _intact(world)


def test_the_media_writer_appends_and_can_neither_delete_nor_unprotect(world: World) -> None:
    writer = world.client("writer")
    media = {op: _outcome(call) for op, call in _object_ops(writer, MEDIA, world.versions).items()}
    assert media == {
        "ListObjectsV2": "allowed",
        "ListObjectVersions": "denied",
        "GetObject": "denied",  # never reads a photo back
        "HeadObject": "denied",
        "GetObjectVersion": "denied",
        "PutObject": "allowed",
        "CreateMultipartUpload": "allowed",
        "DeleteObject": "denied",
        "DeleteObjectVersion": "denied",
    }
    reports = {op: _outcome(call) for op, call in _object_ops(writer, REPORTS, world.versions).items()}
    assert {op for op, v in reports.items() if v == "allowed"} == {
        "ListObjectsV2",
        "GetObject",  # its own run reports: the files cache
        "HeadObject",
        "PutObject",
        "CreateMultipartUpload",
    }
    bucket = {op: _outcome(call) for op, call in _bucket_ops(writer).items()}
    assert bucket == {
        "HeadBucket": "denied",  # s3:ListBucket without s3:prefix; the sync never asks
        "ListObjectsV2 (whole bucket)": "denied",
        "PutBucketVersioning": "denied",
        "PutLifecycleConfiguration": "denied",
        "GetBucketVersioning": "allowed",  # reads the state; PutBucketVersioning stays denied
        "GetObjectLockConfiguration": "ObjectLockConfigurationNotFoundError",  # allowed; the bucket has none
    }
    _intact(world)


@pytest.mark.parametrize("prefix", [MEDIA, REPORTS])
def test_the_archiver_cannot_touch_the_media_or_the_run_reports(world: World, prefix: str) -> None:
    archiver = world.client("archiver")
    outcomes = {op: _outcome(call) for op, call in _object_ops(archiver, prefix, world.versions).items()}
    assert outcomes == {op: "denied" for op in outcomes}
    bucket = {op: _outcome(call) for op, call in _bucket_ops(archiver).items()}
    assert bucket == {
        "HeadBucket": "allowed",  # barman-cloud's bucket check
        # no s3:prefix either, so IAM cannot tell it from the HeadBucket: key names only, no object, no version
        "ListObjectsV2 (whole bucket)": "allowed",
        "PutBucketVersioning": "denied",
        "PutLifecycleConfiguration": "denied",
        "GetBucketVersioning": "denied",
        "GetObjectLockConfiguration": "denied",
    }
    _intact(world)


def test_the_archiver_does_its_job_under_its_prefix(world: World) -> None:
    """Barman Cloud lists, puts, reads back and (its retention) deletes: allowed, only under immich/postgres/.
    On a versioned bucket its delete leaves the data as a noncurrent version it cannot remove."""
    archiver, admin = world.client("archiver"), world.client("admin")
    key = f"{ARCHIVE}immich-db/wals/0000000100000000/000000010000000000000001.gz"
    version = archiver.put_object(Bucket=BUCKET, Key=key, Body=b"wal")["VersionId"]
    assert archiver.list_objects_v2(Bucket=BUCKET, Prefix=f"{ARCHIVE}immich-db/")["KeyCount"] == 1
    assert archiver.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"wal"
    archiver.delete_object(Bucket=BUCKET, Key=key)
    # the deleted WAL file is a noncurrent version now, out of the archiver's reach
    assert _outcome(lambda: archiver.delete_object(Bucket=BUCKET, Key=key, VersionId=version)) == "denied"
    assert _outcome(lambda: archiver.get_object(Bucket=BUCKET, Key=key, VersionId=version)) == "denied"
    assert _outcome(lambda: archiver.list_object_versions(Bucket=BUCKET, Prefix=ARCHIVE)) == "denied"
    assert admin.get_object(Bucket=BUCKET, Key=key, VersionId=version)["Body"].read() == b"wal"


def test_the_restorer_reads_every_version_and_changes_nothing(world: World) -> None:
    restorer = world.client("restorer")
    key = f"{MEDIA}seed/object"
    listed = restorer.list_object_versions(Bucket=BUCKET, Prefix=MEDIA)
    assert {v["VersionId"] for v in listed["Versions"] if v["Key"] == key} >= {world.versions[key]}
    assert restorer.get_object(Bucket=BUCKET, Key=key, VersionId=world.versions[key])["Body"].read() == b"old"
    assert restorer.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"new"
    for prefix in (MEDIA, REPORTS, ARCHIVE):  # the database catalog and the run reports too
        outcomes = {op: _outcome(call) for op, call in _object_ops(restorer, prefix, world.versions).items()}
        assert {op for op, v in outcomes.items() if v == "allowed"} == {
            "ListObjectsV2",
            "ListObjectVersions",
            "GetObject",
            "HeadObject",
            "GetObjectVersion",
        }, prefix
    bucket = {op: _outcome(call) for op, call in _bucket_ops(restorer).items()}
    assert bucket == {
        "HeadBucket": "allowed",
        "ListObjectsV2 (whole bucket)": "allowed",
        "PutBucketVersioning": "denied",
        "PutLifecycleConfiguration": "denied",
        "GetBucketVersioning": "denied",  # exactly the five actions a restore needs
        "GetObjectLockConfiguration": "denied",
    }
    _intact(world)


def test_the_restorer_policy_is_exactly_its_actions() -> None:
    doc = json.loads((IAM / "restorer.json").read_text())
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in doc["Statement"])
    assert actions == {
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:RestoreObject",
    }


def test_the_viewer_reads_the_run_reports_and_cannot_download_a_photo(world: World) -> None:
    """What status, offsite and inventory send, and nothing more: a listing of the run reports and of the
    media prefix (names and sizes), a GET of a run report. No photo, nothing of the database archive, no
    version, no write."""
    viewer = world.client("viewer")
    reports = {op: _outcome(call) for op, call in _object_ops(viewer, REPORTS, world.versions).items()}
    assert reports == {
        "ListObjectsV2": "allowed",
        "ListObjectVersions": "denied",
        "GetObject": "allowed",  # the run reports
        "HeadObject": "allowed",  # authorised as s3:GetObject
        "GetObjectVersion": "denied",
        "PutObject": "denied",
        "CreateMultipartUpload": "denied",
        "DeleteObject": "denied",
        "DeleteObjectVersion": "denied",
    }
    media = {op: _outcome(call) for op, call in _object_ops(viewer, MEDIA, world.versions).items()}
    assert media == {op: "allowed" if op == "ListObjectsV2" else "denied" for op in media}  # names and sizes only
    archive = {op: _outcome(call) for op, call in _object_ops(viewer, ARCHIVE, world.versions).items()}
    assert archive == {op: "denied" for op in archive}
    bucket = {op: _outcome(call) for op, call in _bucket_ops(viewer).items()}
    assert bucket == {op: "denied" for op in bucket}  # HeadBucket and a whole-bucket listing carry no s3:prefix
    # exactly the two prefixes the tools list: no other, not even one below them
    for prefix in ("immich/", "immich/media/upload/", f"{REPORTS}setup-check/", "immich/media", "", ARCHIVE):
        assert _outcome(lambda p=prefix: viewer.list_objects_v2(Bucket=BUCKET, Prefix=p)) == "denied", prefix
    listed = viewer.list_objects_v2(Bucket=BUCKET, Prefix=MEDIA)["Contents"]
    assert (f"{MEDIA}seed/object", 3) in [(o["Key"], o["Size"]) for o in listed]
    assert viewer.get_object(Bucket=BUCKET, Key=f"{REPORTS}seed/object")["Body"].read() == b"new"
    _intact(world)


def test_the_viewer_policy_is_exactly_its_actions() -> None:
    doc = json.loads((IAM / "viewer.json").read_text())
    grants = {
        (action, json.dumps(s["Resource"]), json.dumps(s.get("Condition"), sort_keys=True))
        for s in doc["Statement"]
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert all(s["Effect"] == "Allow" for s in doc["Statement"])
    assert grants == {
        (
            "s3:ListBucket",
            '"arn:aws:s3:::BUCKET_NAME"',
            '{"StringEquals": {"s3:prefix": ["immich/sync-reports/", "immich/media/"]}}',
        ),
        ("s3:GetObject", '"arn:aws:s3:::BUCKET_NAME/immich/sync-reports/*"', "null"),
    }


def test_plain_moto_would_not_have_told_them_apart() -> None:
    """moto alone ignores the s3:prefix condition and answers GetObjectLockConfiguration to any lister:
    the prefix separation above is proven only because tests/strict_iam.py evaluates it."""
    with LocalS3() as server:
        server.client().create_bucket(Bucket=BUCKET)
        writer = server.iam_user("media-writer", shipped("media-writer.json"))
        archiver = server.iam_user("cnpg-archiver", shipped("cnpg-writer.json"))
        server.enforce_iam()
        as_writer = server.client(key_id=writer[0], secret=writer[1])
        as_archiver = server.client(key_id=archiver[0], secret=archiver[1])
        assert _outcome(lambda: as_writer.list_objects_v2(Bucket=BUCKET, Prefix=ARCHIVE)) == "allowed"
        assert _outcome(lambda: as_archiver.list_objects_v2(Bucket=BUCKET, Prefix=MEDIA)) == "allowed"
        lock = _outcome(lambda: as_writer.get_object_lock_configuration(Bucket=BUCKET))
        assert lock == "ObjectLockConfigurationNotFoundError"
        # what moto does enforce without help: actions and resources
        assert _outcome(lambda: as_writer.put_object(Bucket=BUCKET, Key=f"{ARCHIVE}x", Body=b"x")) == "denied"
        assert _outcome(lambda: as_archiver.put_object(Bucket=BUCKET, Key=f"{MEDIA}x", Body=b"x")) == "denied"
