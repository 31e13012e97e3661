"""Backup of the sample library: key layout, decision rule, integrity, reports, request counts."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3
from sync_engine.config import MiB
from sync_engine.etag import multipart_etag
from tests.conftest import list_keys, open_multipart_uploads
from tests.s3proxy import Proxy

PREFIX = "immich/media/"
DEFAULT = ("upload/", "library/", "profile/")


def expected_keys(sample: SampleLibrary, folders: tuple[str, ...] = DEFAULT) -> dict[str, int]:
    return {PREFIX + rel: size for rel, size in sample.files.items() if rel.startswith(folders)}


def test_backup_uploads_default_folders_with_exact_keys(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    report = result.json()
    want = expected_keys(sample)
    got = list_keys(s3, bucket, PREFIX)
    assert {k: o["Size"] for k, o in got.items()} == want
    assert report["totals"]["uploaded"] == len(want)
    assert report["totals"]["uploaded_bytes"] == sum(want.values())
    # byte for byte: spaces and non-ASCII letters survive, markers and empty files are included
    assert PREFIX + "library/7f3c2a10-admin/2024/06/Café – Zürich.jpg" in got
    assert PREFIX + "library/7f3c2a10-admin/2024/06/Holiday photo (1).jpg" in got
    assert got[PREFIX + "upload/.immich"]["Size"] == 0
    assert not [k for k in got if k.startswith(tuple(PREFIX + f for f in ("thumbs/", "encoded-video/", "backups/")))]


def test_every_object_etag_matches_local_bytes(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    assert run_sync("backup").code == 0
    multipart_seen = 0
    for key, obj in list_keys(s3, bucket, PREFIX).items():
        data = (sample.root / key.removeprefix(PREFIX)).read_bytes()
        etag = obj["ETag"].strip('"')
        if len(data) >= 16 * MiB:
            parts = [hashlib.md5(data[i : i + 16 * MiB]).digest() for i in range(0, len(data), 16 * MiB)]
            assert etag == multipart_etag(parts)
            multipart_seen += 1
        else:
            assert etag == hashlib.md5(data).hexdigest()
    assert multipart_seen == 1


def test_second_run_is_a_noop_listing_only(run_sync, proxy: Proxy, sync_env, monkeypatch, sample: SampleLibrary):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    time.sleep(2.1)  # the copy is older than the racy window: the first run confirms every file as `ok`
    assert run_sync("backup").code == 0
    proxy.reset()
    result = run_sync("backup", "-o", "json")
    assert result.code == 0
    assert result.json()["totals"]["uploaded"] == 0
    objects = len(expected_keys(sample))
    assert proxy.counts["ListObjectsV2"] <= math.ceil(objects / 1000) + 3 + 1  # +1: the access check
    media_puts = [r for r in proxy.ops("PutObject") if r.key.startswith(PREFIX)]
    assert media_puts == []
    # the run report only: no manifest when nothing was uploaded, and no files cache when every file is
    # exactly as the previous one says (the report names that one)
    assert [r.key for r in proxy.ops("PutObject")] == [result.json()["report_key"]]
    assert result.json()["files_cache_key"] == result.json()["files_cache"]
    assert [r.key for r in proxy.ops("GetObject")] == [result.json()["files_cache"]]  # the previous files cache
    assert proxy.counts["HeadObject"] == proxy.counts["DeleteObject"] == 0


def test_adopts_bucket_written_by_the_old_aws_loop(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    legacy = s3.client()
    for rel in expected_keys(sample):
        legacy.put_object(Bucket=bucket, Key=rel, Body=(sample.root / rel.removeprefix(PREFIX)).read_bytes())
    result = run_sync("backup", "-o", "json")
    assert result.code == 0
    assert result.json()["totals"]["uploaded"] == 0
    assert result.json()["totals"]["unchanged"] == len(expected_keys(sample))


def test_decision_rule_missing_size_changed(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    time.sleep(2.1)  # the copy is older than the racy window: the first run confirms every file as `ok`
    assert run_sync("backup").code == 0
    lib = sample.root
    old = time.time() - 3600
    (lib / "upload/new-photo.jpg").write_bytes(b"x" * 1000)
    os.utime(lib / "upload/new-photo.jpg", (old, old))
    grown = lib / "library/7f3c2a10-admin/2024/06/Holiday photo (1).jpg"
    grown.write_bytes(grown.read_bytes() + b"more")
    os.utime(grown, (old, old))
    touched = lib / "profile/7f3c2a10-admin/avatar.jpg"  # same bytes, newer mtime
    edited = lib / "profile/b41e9d22-anna/avatar.jpg"  # same size, different bytes
    data = bytearray(edited.read_bytes())
    data[0] ^= 0xFF
    edited.write_bytes(bytes(data))
    now = time.time()
    os.utime(touched, (now, now))

    plan = run_sync("plan", "-o", "json", "--settle-seconds", "0").json()
    by_reason = plan["totals"]["by_reason"]
    assert {k: v for k, v in by_reason.items() if not k.startswith("unchanged")} == {
        "missing": 1,
        "size-differs": 1,
        "changed": 2,
    }
    assert by_reason.get("unchanged", 0) + by_reason.get("unchanged-since-last-run", 0) == 200

    result = run_sync("backup", "-o", "json", "--settle-seconds", "0")
    report = result.json()
    assert result.code == 0
    assert report["totals"]["uploaded"] == 3  # the touched file's ETag proved identical content
    assert report["totals"]["unchanged"] == 201
    assert report["requests"]["PutObject"] == 3  # the report counts media requests, not its own writes
    stored = s3.client().get_object(Bucket=bucket, Key=PREFIX + "profile/b41e9d22-anna/avatar.jpg")["Body"].read()
    assert stored == bytes(data)


def test_settling_files_are_deferred_and_counted(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    assert run_sync("backup").code == 0  # the copied library, confirmed as it is
    fresh = sample.root / "upload/just-uploaded.jpg"
    fresh.write_bytes(b"y" * 5000)
    result = run_sync("backup", "-o", "json", "--settle-seconds", "600")
    assert result.code == 0
    report = result.json()
    assert report["totals"]["deferred"] == 1
    assert report["totals"]["deferred_bytes"] == 5000
    assert PREFIX + "upload/just-uploaded.jpg" not in list_keys(s3, bucket, PREFIX)
    again = run_sync("backup", "-o", "json", "--settle-seconds", "0").json()
    assert again["totals"]["uploaded"] == 1


def test_opt_in_folders(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    assert run_sync("backup", "--include", "backups").code == 0
    keys = list_keys(s3, bucket, PREFIX)
    assert PREFIX + "backups/immich-db-backup-20240801T020000.sql.gz" in keys
    assert not [k for k in keys if k.startswith(PREFIX + "thumbs/")]
    assert run_sync("backup", "--only", "thumbs").code == 0
    assert [k for k in list_keys(s3, bucket, PREFIX) if k.startswith(PREFIX + "thumbs/")]


def test_report_and_manifest_are_written_outside_the_media_prefix(
    run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary
):
    report = run_sync("backup", "-o", "json").json()
    assert report["report_key"].startswith("immich/sync-reports/")
    assert not report["report_key"].startswith(PREFIX)
    client = s3.client()
    stored = json.loads(client.get_object(Bucket=bucket, Key=report["report_key"])["Body"].read())
    assert stored["totals"]["uploaded"] == len(expected_keys(sample))
    assert stored["engine_version"] and stored["duration_seconds"] >= 0
    assert set(stored["per_folder"]) == {"upload", "library", "profile"}
    import gzip

    lines = gzip.decompress(client.get_object(Bucket=bucket, Key=stored["manifest_key"])["Body"].read()).splitlines()
    manifest = [json.loads(line) for line in lines]
    assert len(manifest) == len(expected_keys(sample))
    assert {"key", "size", "mtime", "etag", "part_size"} <= set(manifest[0])
    big = [m for m in manifest if m["size"] >= 16 * MiB]
    assert big and big[0]["part_size"] == 16 * MiB and big[0]["etag"].endswith("-2")


def test_shards_partition_the_key_space(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    seen: list[int] = []
    for i in range(3):
        report = run_sync("backup", "-o", "json", "--shard", f"{i}/3").json()
        assert report["shard"] == f"{i}/3"
        seen.append(report["totals"]["uploaded"])
    assert sum(seen) == len(expected_keys(sample)) and all(seen)
    assert {k: o["Size"] for k, o in list_keys(s3, bucket, PREFIX).items()} == expected_keys(sample)
    again = [run_sync("backup", "-o", "json", "--shard", f"{i}/3").json()["totals"]["uploaded"] for i in range(3)]
    assert again == [0, 0, 0]


def test_verify_matches_then_detects_tampering(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    assert run_sync("backup").code == 0
    ok = run_sync("verify", "-o", "json")
    assert ok.code == 0
    assert ok.json()["verified"] == len(expected_keys(sample))
    client = s3.client()
    victim = PREFIX + "profile/7f3c2a10-admin/avatar.jpg"
    body = client.get_object(Bucket=bucket, Key=victim)["Body"].read()
    client.put_object(Bucket=bucket, Key=victim, Body=bytes(reversed(body)))
    client.delete_object(Bucket=bucket, Key=PREFIX + "upload/.immich")
    bad = run_sync("verify", "-o", "json")
    assert bad.code == 1
    data = bad.json()
    assert data["etag_mismatch"] == 1 and data["missing"] == 1
    assert {p["key"] for p in data["problems"]} == {victim, PREFIX + "upload/.immich"}
    text = run_sync("verify")
    assert "MISMATCH" in text.out and victim in text.out


def test_plan_changes_nothing(run_sync, proxy: Proxy, monkeypatch, sample: SampleLibrary):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    result = run_sync("plan")
    assert result.code == 0
    assert "upload/" in result.out and "to upload" in result.out
    assert "missing" in result.out
    assert proxy.counts["PutObject"] == proxy.counts["CreateMultipartUpload"] == 0


def test_inventory_counts_every_folder(run_sync, sample: SampleLibrary):
    result = run_sync("inventory", "-o", "json")
    assert result.code == 0
    rows = {r["folder"]: r for r in result.json()["folders"]}
    for folder, row in rows.items():
        files = sample.folder_files(folder)
        assert row["files"] == len(files) and row["bytes"] == sum(files.values()), folder
        assert row["marker"] is True
    assert rows["upload"]["backed_up"] and not rows["thumbs"]["backed_up"]
    assert "skipped" in run_sync("inventory").out


def test_nothing_left_behind(run_sync, s3: LocalS3, bucket: str):
    assert run_sync("backup").code == 0
    assert open_multipart_uploads(s3, bucket) == []


def test_s3_compatibility_options(run_sync, s3: LocalS3, bucket: str, sample: SampleLibrary):
    """Path-style addressing, botocore's default CRC checksums and a storage class all work end to end."""
    result = run_sync(
        "backup", "--path-style", "--checksum-mode", "when_supported", "--storage-class", "STANDARD_IA", "-o", "json"
    )
    assert result.code == 0, result.err
    objects = list_keys(s3, bucket, PREFIX)
    assert len(objects) == len(expected_keys(sample))
    assert {o.get("StorageClass") for o in objects.values()} == {"STANDARD_IA"}
    assert run_sync("verify").code == 0


def test_plan_lists_files_with_reasons(run_sync, sample: SampleLibrary):
    (sample.root / "upload/new.jpg").write_bytes(b"n" * 10)
    os.utime(sample.root / "upload/new.jpg", (time.time() - 3600,) * 2)
    text = run_sync("plan", "--files")
    assert text.code == 0
    assert "missing" in text.out and "upload/new.jpg" in text.out
    data = run_sync("plan", "--files", "-o", "json").json()
    entry = next(f for f in data["files"] if f["path"] == "upload/new.jpg")
    assert entry == {"path": "upload/new.jpg", "key": PREFIX + "upload/new.jpg", "size": 10, "reason": "missing"}
    assert len(data["files"]) == data["totals"]["uploaded"] == len(expected_keys(sample)) + 1
