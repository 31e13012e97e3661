"""`--as-of TIME`: restore and verify the bucket as it was at a time, from the versions S3 kept.

The bucket is filled by the real backup over HTTP (moto), then changed behind its back the way a leaked
writer key or a mistake would: an overwrite leaves the old bytes as a noncurrent version, a delete leaves
a delete marker. `restore --as-of` must bring back the bytes of then, byte for byte, and cost what a
plain restore costs when every object has one version; a bucket without versioning still works from
its current objects and says what it cannot bring back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from sync_engine.config import S3Settings
from sync_engine.store import ObjectStore, StaticCredentials
from tests.conftest import Result
from tests.forgery import PREFIX, after, iso, newest_modified

RunSync = Callable[..., Result]
ORIGINALS = ("upload", "library", "profile")
PHOTO = "library/7f3c2a10-admin/2024/01/IMG_0001.jpg"
GONE = "library/7f3c2a10-admin/2024/01/IMG_0002.jpg"
ROOT = Path(__file__).resolve().parent.parent


def files_under(root: Path, folders: tuple[str, ...] = ORIGINALS) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for folder in folders
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def versioned(s3: LocalS3, bucket: str) -> None:
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def store_for(s3: LocalS3, bucket: str) -> ObjectStore:
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=s3.endpoint)
    return ObjectStore(settings, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))


@pytest.fixture
def backed_up(run_sync: RunSync, s3: LocalS3, bucket: str, sample: SampleLibrary) -> float:
    """The sample library backed up into a versioned bucket; returns the time of the backup (S3's clock)."""
    versioned(s3, bucket)
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    return newest_modified(s3.client(), bucket)


def restore(run_sync: RunSync, target: Path, *args: str) -> Result:
    return run_sync("restore", "--to", str(target), "-o", "json", *args)


# -- the time itself -----------------------------------------------------------------------------


def test_as_of_takes_a_time_with_its_offset_and_nothing_else() -> None:
    from sync_engine.asof import parse_as_of

    assert parse_as_of("2026-11-27T02:30:00Z") == parse_as_of("2026-11-27T03:30:00+01:00") == 1795746600.0
    for naive in ("2026-11-27T02:30:00", "2026-11-27"):
        with pytest.raises(ValueError, match="has no offset"):
            parse_as_of(naive)
    for garbage in ("yesterday", "", "2026-13-40T00:00:00Z", "1795746600"):
        with pytest.raises(ValueError, match="ISO 8601"):
            parse_as_of(garbage)


@pytest.mark.parametrize("command", ["restore", "verify"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-11-27T02:30:00", "has no offset"),
        ("last tuesday", "must be an ISO 8601 time"),
        ("2099-11-27T02:30:00Z", "is in the future"),
    ],
    ids=["naive", "garbage", "future"],
)
def test_a_bad_as_of_is_one_line_and_exit_2_before_any_request(
    tmp_path: Path, command: str, value: str, problem: str
) -> None:
    """Nothing listens on the endpoint: a request would fail with exit 3, so exit 2 proves none was sent."""
    (tmp_path / "library").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IMMICH_SYNC_"))}
    env |= {
        "AWS_ACCESS_KEY_ID": "AKIAOFFLINE",
        "AWS_SECRET_ACCESS_KEY": "offline-secret",
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": "immich-offsite",
        "MEDIA_PREFIX": "immich/media/",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "IMMICH_SYNC_MAX_ATTEMPTS": "1",
        "LIBRARY_ROOT": str(tmp_path / "library"),
        "PYTHONPATH": str(ROOT),
    }
    target = tmp_path / "restored"
    argv = ["restore", "--to", str(target)] if command == "restore" else ["verify"]
    proc = subprocess.run(
        [sys.executable, "-m", "sync_engine", *argv, "--as-of", value],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"immich-sync: error: configuration error: --as-of: {problem}")
    assert value in lines[0]
    assert proc.stdout == "" and not target.exists()


# -- versions, page by page ------------------------------------------------------------------------


def test_versions_of_one_key_that_run_over_pages_stay_one_history(s3: LocalS3, bucket: str) -> None:
    from sync_engine.versions import histories

    versioned(s3, bucket)
    client = s3.client()
    for i in range(5):
        client.put_object(Bucket=bucket, Key=f"{PREFIX}a/{i}.jpg", Body=b"a" * i)
    for n in range(6):
        client.put_object(Bucket=bucket, Key=f"{PREFIX}a/2.jpg", Body=b"v%d" % n)
    client.delete_object(Bucket=bucket, Key=f"{PREFIX}a/3.jpg")
    store = store_for(s3, bucket)
    small = list(histories(store.list_versions(PREFIX, page_size=3)))
    whole = list(histories(store.list_versions(PREFIX)))
    assert store.request_counts()["ListObjectVersions"] == 4 + 1  # 12 entries by 3, then all at once
    assert [(h.key, len(h.versions)) for h in small] == [(h.key, len(h.versions)) for h in whole]
    assert [len(h.versions) for h in whole] == [1, 1, 7, 2, 1]
    two, three = whole[2], whole[3]
    assert two.at(None) is not None and two.at(None).size == 2 and two.first().size == 2  # type: ignore[union-attr]
    assert [v.latest for v in two.versions] == [True] + [False] * 6
    assert three.at(None) is None and three.first() is not None and three.versions[0].deleted


def test_an_unversioned_bucket_lists_null_versions_and_says_so(s3: LocalS3, unversioned_bucket: str) -> None:
    from sync_engine.versions import VersionListing

    bucket = unversioned_bucket
    client = s3.client()
    client.put_object(Bucket=bucket, Key=f"{PREFIX}a/1.jpg", Body=b"1")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}a/1.jpg", Body=b"22")
    listing = VersionListing(store_for(s3, bucket), PREFIX, required=True)
    found = list(listing)
    assert [(h.key, [v.version_id for v in h.versions]) for h in found] == [(f"{PREFIX}a/1.jpg", ["null"])]
    assert listing.versioned is False and not found[0].keeps_versions


# -- restore as of a time -----------------------------------------------------------------------


def test_restore_as_of_brings_back_the_bytes_of_then(
    run_sync: RunSync, backed_up: float, sample: SampleLibrary, s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    """An overwrite, a delete and a new file after the backup: as of the backup, the library of then."""
    original = files_under(sample.root)
    after(backed_up)
    client = s3.client()
    client.put_object(Bucket=bucket, Key=PREFIX + PHOTO, Body=b"not the photo")
    client.delete_object(Bucket=bucket, Key=PREFIX + GONE)
    client.put_object(Bucket=bucket, Key=PREFIX + "upload/new-since.jpg", Body=b"new")

    target = tmp_path / "then"
    result = restore(run_sync, target, "--as-of", iso(backed_up))
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["as_of"] == iso(backed_up) and report["versioned"] is True
    assert files_under(target) == original  # byte for byte, the overwritten and the deleted photo included
    assert report["written_after_as_of"] == 1 and not (target / "upload/new-since.jpg").exists()
    assert report["totals"]["downloaded"] == len(original)
    assert "as it was at" in run_sync("restore", "--to", str(tmp_path / "text"), "--as-of", iso(backed_up)).out

    now = tmp_path / "now"  # without --as-of: what S3 holds now, the changed photo refused
    plain = restore(run_sync, now).json()
    assert [(p["path"], p["kind"]) for p in plain["problems"]] == [(PHOTO, "changed-in-s3")]
    assert not (now / GONE).exists() and (now / "upload/new-since.jpg").read_bytes() == b"new"


def test_as_of_costs_what_a_plain_restore_and_verify_cost(
    run_sync: RunSync, backed_up: float, sample: SampleLibrary, tmp_path: Path
) -> None:
    """Every object has one version: ListObjectVersions replaces ListObjectsV2 one for one."""
    plain = restore(run_sync, tmp_path / "plain").json()
    as_of = restore(run_sync, tmp_path / "as-of", "--as-of", iso(backed_up + 60)).json()
    assert plain["status"] == as_of["status"] == "ok"
    assert files_under(tmp_path / "plain") == files_under(tmp_path / "as-of") == files_under(sample.root)
    p, a = plain["requests"], as_of["requests"]
    assert a["GetObject"] == p["GetObject"] and a["HeadObject"] == p["HeadObject"] == 1
    lists = ("ListObjectsV2", "ListObjectVersions")
    assert sum(a.get(op, 0) for op in lists) <= sum(p.get(op, 0) for op in lists)
    assert sum(a.values()) <= sum(p.values()) <= 2 * sum(a.values())
    assert sum(a.values()) <= 2 * sum(p.values())

    vp = run_sync("verify", "-o", "json").json()
    va = run_sync("verify", "-o", "json", "--as-of", iso(backed_up + 60)).json()
    assert vp["ok"] and va["ok"] and va["as_of"] and vp["verified"] == va["verified"] > 0
    assert sum(va["requests"].values()) <= 2 * sum(vp["requests"].values())
    assert va["requests"].get("GetObject") == vp["requests"].get("GetObject")


def test_store_listing_pages_cost_the_same_for_versions(s3: LocalS3, bucket: str) -> None:
    """1,000 entries a page for both listings: 1,200 objects of one version each take two requests each."""
    from sync_engine.versions import VersionListing

    versioned(s3, bucket)
    client = s3.client()
    for i in range(1200):
        client.put_object(Bucket=bucket, Key=f"{PREFIX}upload/u/{i:05d}.jpg", Body=b"x")
    store = store_for(s3, bucket)
    current = [o.key for page in store.list_pages(PREFIX) for o in page]
    kept = [h.key for h in VersionListing(store, PREFIX, required=True)]
    assert current == kept and len(kept) == 1200
    assert store.request_counts() == {"ListObjectsV2": 2, "ListObjectVersions": 2}


def test_verify_as_of_a_clean_time_is_ok_and_now_names_what_changed(
    run_sync: RunSync, backed_up: float, s3: LocalS3, bucket: str
) -> None:
    after(backed_up)
    client = s3.client()
    client.put_object(Bucket=bucket, Key=PREFIX + PHOTO, Body=b"not the photo")
    client.delete_object(Bucket=bucket, Key=PREFIX + GONE)
    client.put_object(Bucket=bucket, Key=PREFIX + "library/x.xmp", Body=b"<x/>")
    client.put_object(Bucket=bucket, Key=PREFIX + "library/x.xmp", Body=b"<y/>")  # a sidecar Immich rewrote

    now = run_sync("verify", "-o", "json")
    assert now.code == 1
    data = now.json()
    assert (data["overwritten"], data["deleted"], data["size_mismatch"], data["missing"]) == (1, 1, 1, 1)
    found = {(p["kind"], p["key"], p.get("tampered")) for p in data["problems"]}
    assert found == {("size-mismatch", PREFIX + PHOTO, "overwritten"), ("missing", PREFIX + GONE, "deleted")}
    assert len(data["problems"]) == 2  # one entry per key
    over = next(p for p in data["problems"] if p.get("tampered") == "overwritten")
    assert over["first_upload"] <= iso(backed_up) < over["changed"][0]
    assert "first uploaded" in over["detail"] and "--as-of" in over["detail"]
    assert not any("x.xmp" in p["key"] for p in data["problems"])
    text = run_sync("verify")
    assert "MISMATCH" in text.out and "1 originals overwritten" in text.out and PHOTO in text.out

    then = run_sync("verify", "-o", "json", "--as-of", iso(backed_up))
    assert then.code == 0, then.out
    assert then.json()["verified"] == data["recorded"] and then.json()["as_of"] == iso(backed_up)


# -- a bucket without versioning -------------------------------------------------------------------


def test_as_of_without_versioning_uses_the_current_objects_and_says_what_cannot_exist(
    run_sync: RunSync, sample: SampleLibrary, s3: LocalS3, unversioned_bucket: str, tmp_path: Path
) -> None:
    bucket = unversioned_bucket
    assert run_sync("backup").code == 0
    backed = newest_modified(s3.client(), bucket)
    after(backed)
    client = s3.client()
    client.put_object(Bucket=bucket, Key=PREFIX + PHOTO, Body=b"not the photo")
    client.put_object(Bucket=bucket, Key=PREFIX + "upload/new-since.jpg", Body=b"new")

    target = tmp_path / "then"
    result = restore(run_sync, target, "--as-of", iso(backed))
    assert result.code == 1
    report = result.json()
    assert report["versioned"] is False and report["written_after_as_of"] == 2
    assert [(p["path"], p["kind"]) for p in report["problems"]] == [(PHOTO, "no-version-as-of")]
    assert "older bytes cannot exist" in report["problems"][0]["detail"]
    assert any("keeps no object versions" in n and "cannot exist" in n for n in report["notes"])
    want = files_under(sample.root)
    del want[PHOTO]
    assert files_under(target) == want  # everything else as it was

    verify = run_sync("verify", "-o", "json", "--as-of", iso(backed))
    assert verify.code == 1
    data = verify.json()
    assert data["missing"] == 1 and data["versioned"] is False
    assert "older bytes cannot exist" in data["problems"][0]["detail"]
    plain = run_sync("verify", "-o", "json").json()
    assert plain["overwritten"] == 0 and any("keeps no object versions" in n for n in plain["notes"])
