"""Least privilege, proven against moto enforcing IAM with the shipped writer policy.

A server of its own, because enforcement is process-wide in moto, and one that also evaluates the
policy's s3:prefix conditions (tests/strict_iam.py; moto alone ignores them), so a listing outside the
media and report prefixes would fail the backup too. The writer may list, put and abort under those
prefixes, and read only its own run reports (the files cache); HEAD, GET and DELETE of media are
refused, so any such request by the engine would fail the backup. tests/test_identities.py proves the
three identities apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3, bucket_policy
from tests.strict_iam import StrictIamS3

BUCKET = "immich-offsite-iam"
SHIPPED = Path(__file__).parent.parent / "deploy/iam/media-writer.json"
WRITER_POLICY = SHIPPED.read_text().replace("BUCKET_NAME", BUCKET)


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[tuple[LocalS3, dict[str, tuple[str, str]]]]:
    with StrictIamS3() as server:
        server.client().create_bucket(Bucket=BUCKET)
        keys = {
            "writer": server.iam_user("immich-offsite-writer", WRITER_POLICY),
            "admin": server.iam_user("admin", bucket_policy(BUCKET, ["s3:*"])),
        }
        server.enforce_iam()
        yield server, keys


def _use(monkeypatch: pytest.MonkeyPatch, server: LocalS3, key: tuple[str, str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])


def test_full_backup_under_the_shipped_writer_policy(run_sync, monkeypatch, iam_s3, sample: SampleLibrary):
    server, keys = iam_s3
    _use(monkeypatch, server, keys["writer"])
    writer = server.client(key_id=keys["writer"][0], secret=keys["writer"][1])
    # enforcement is really on: the writer cannot read, HEAD or delete media, nor write elsewhere
    writer.put_object(Bucket=BUCKET, Key="immich/media/probe/x", Body=b"x")
    for call in (writer.get_object, writer.head_object, writer.delete_object):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            call(Bucket=BUCKET, Key="immich/media/probe/x")
        assert err.value.response["Error"]["Code"] in ("AccessDenied", "403")
    with pytest.raises(botocore.exceptions.ClientError):
        writer.put_object(Bucket=BUCKET, Key="elsewhere/x", Body=b"x")
    admin = server.client(key_id=keys["admin"][0], secret=keys["admin"][1])
    admin.delete_object(Bucket=BUCKET, Key="immich/media/probe/x")

    first = run_sync("backup", "-o", "json")
    assert first.code == 0, first.err
    wanted = {
        "immich/media/" + k: v for k, v in sample.files.items() if k.startswith(("upload/", "library/", "profile/"))
    }
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="immich/media/")
    stored = {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}
    assert stored == wanted
    assert first.json()["totals"]["uploaded"] == len(wanted)
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    second = run_sync("backup", "-o", "json")
    assert second.code == 0 and second.json()["totals"]["uploaded"] == 0
    # it compared every file with the files cache the first run left, read with its own keys
    assert second.json()["files_cache"] and second.json()["files_cache_entries_read"] == len(wanted)


def test_media_cannot_be_read_back_with_the_writer_keys(run_sync, monkeypatch, iam_s3, sample: SampleLibrary, tmp_path):
    """The writer reads its own run reports (its files cache), never a photo: a restore is refused."""
    server, keys = iam_s3
    _use(monkeypatch, server, keys["writer"])
    assert run_sync("backup").code == 0
    result = run_sync("restore", "--to", str(tmp_path / "restored"))
    assert result.code == 2, result.err
    assert "access denied" in result.err.lower()
    assert len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("key_id", "secret_ok", "needle"),
    [("AKIAUNKNOWN000000000", True, "AWS_ACCESS_KEY_ID"), (None, False, "AWS_SECRET_ACCESS_KEY")],
)
def test_wrong_credentials(run_sync, monkeypatch, iam_s3, key_id, secret_ok, needle):
    server, keys = iam_s3
    writer_id, writer_secret = keys["writer"]
    _use(monkeypatch, server, (key_id or writer_id, writer_secret if secret_ok else "not-the-secret"))
    result = run_sync("backup")
    assert result.code == 2
    assert needle in result.err
    assert "not-the-secret" not in result.err + result.out
    assert len(result.err.strip().splitlines()) == 1
    admin = server.client(key_id=keys["admin"][0], secret=keys["admin"][1])
    assert admin.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
