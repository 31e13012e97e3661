"""The Barman Cloud catalog read from the bucket alone, proven against a real PostgreSQL archive.

A PostgreSQL server archives its WAL with `barman-cloud-wal-archive` to the local S3 endpoint; three batches
of rows are committed with a WAL switch after each, a base backup is taken after the first and after the
second. The catalog read by `read_catalog` must agree with `barman-cloud-backup-list`, and a point-in-time
recovery from the base backup `base_backup_for` picks must contain exactly the batches committed before the
target time.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from immich_tui.services.barman import (
    BaseBackup,
    Catalog,
    CatalogError,
    base_backup_for,
    list_servers,
    parse_destination,
    read_catalog,
)
from sync_engine.config import S3Settings
from sync_engine.store import ObjectStore, StaticCredentials
from tests.pg import PgError, PgLab, PgServer, S3Access, utc

SERVER_NAME = "immich-db"
PREFIX = "cnpg/immich"
# The server's session zone, so backup.info carries a non-UTC offset (a half-hour one) that must be honoured.
ZONE_NAME, ZONE = "Asia/Kolkata", dt.timezone(dt.timedelta(hours=5, minutes=30))
ROWS = {1: 100, 2: 150, 3: 70}
SEGMENTS_PER_LOG = 0x1_0000_0000 // (1024 * 1024)  # the servers use 1 MiB WAL segments


@dataclass
class Archive:
    bucket: str
    destination: str
    lab: PgLab
    backup_ids: list[str]  # after batch 1, after batch 2
    committed: dict[int, dt.datetime]  # batch -> commit time
    last_wal: str  # the segment completed by the switch after batch 3
    systemid: str


def _store(s3: LocalS3, bucket: str) -> ObjectStore:
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=s3.endpoint)
    return ObjectStore(settings, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))


def _insert_batch(pg: PgServer, batch: int) -> dt.datetime:
    """One transaction per batch; its commit time is PostgreSQL's own record of it (track_commit_timestamp)."""
    pg.sql(f"INSERT INTO readings (batch, n) SELECT {batch}, g FROM generate_series(1, {ROWS[batch]}) AS g")
    return utc(pg.sql(f"SELECT DISTINCT pg_xact_commit_timestamp(xmin) FROM readings WHERE batch = {batch}"))


def _archived_wal_names(s3: LocalS3, bucket: str) -> set[str]:
    names: set[str] = set()
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/{SERVER_NAME}/wals/")
    for page in pages:
        names.update(obj["Key"].rsplit("/", 1)[-1].removesuffix(".gz") for obj in page.get("Contents", ()))
    return names


@pytest.fixture(scope="module")
def archive(s3: LocalS3) -> Iterator[Archive]:
    bucket = f"test-pg-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    destination = f"s3://{bucket}/{PREFIX}"
    with PgLab(S3Access(s3.endpoint, DEMO_KEY_ID, DEMO_SECRET)) as lab:
        barman = lab.barman(destination, SERVER_NAME)
        primary = lab.server("primary")
        primary.initdb()
        primary.configure(
            wal_level="replica",
            archive_mode=True,
            archive_command=barman.archive_command(),
            archive_timeout=1,
            track_commit_timestamp=True,
            timezone=ZONE_NAME,
            log_timezone="UTC",
        )
        primary.start()
        systemid = primary.sql("SELECT system_identifier FROM pg_control_system()")
        primary.sql("CREATE TABLE readings (batch int NOT NULL, n int NOT NULL)")
        committed, backup_ids = {}, []
        for batch in (1, 2, 3):
            committed[batch] = _insert_batch(primary, batch)
            last_wal = primary.sql("SELECT pg_walfile_name(pg_switch_wal())")
            if batch < 3:
                backup_ids.append(barman.backup(primary))

        def archived() -> bool:
            return last_wal in _archived_wal_names(s3, bucket)

        try:
            primary.wait_until(f"{last_wal} in s3://{bucket}", archived)
        except PgError as exc:
            stats = primary.sql("SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")
            raise PgError(f"{exc}\npg_stat_archiver: {stats}") from None
        primary.stop()  # nothing more is archived while the tests compare
        yield Archive(bucket, destination, lab, backup_ids, committed, last_wal, systemid)


@pytest.fixture(scope="module")
def catalog(s3: LocalS3, archive: Archive) -> Catalog:
    return read_catalog(_store(s3, archive.bucket), archive.destination, SERVER_NAME)


def _segment_number(name: str) -> int:
    return int(name[8:16], 16) * SEGMENTS_PER_LOG + int(name[16:24], 16)


def test_catalog_matches_barman_backup_list(s3: LocalS3, archive: Archive) -> None:
    store = _store(s3, archive.bucket)
    ours = read_catalog(store, archive.destination, SERVER_NAME)
    theirs = archive.lab.barman(archive.destination, SERVER_NAME).backup_list()
    # one delimited LIST of base/, one GET per backup.info, one LIST of wals/
    assert store.request_counts() == {"ListObjectsV2": 2, "GetObject": 2}
    assert [b.backup_id for b in ours.backups] == [b["backup_id"] for b in theirs] == archive.backup_ids
    for mine, listed in zip(ours.backups, theirs, strict=True):
        assert mine.status == listed["status"] == "DONE"
        assert mine.begin_time is not None and mine.end_time is not None
        assert mine.begin_time.tzinfo == dt.UTC and mine.end_time.tzinfo == dt.UTC
        # barman lists times as ctime() in the offset they were written with: the server's zone
        assert mine.begin_time.astimezone(ZONE).ctime() == listed["begin_time"]
        assert mine.end_time.astimezone(ZONE).ctime() == listed["end_time"]
        assert (mine.begin_wal, mine.end_wal) == (listed["begin_wal"], listed["end_wal"])
        assert mine.timeline == listed["timeline"] == 1
        assert mine.size == listed["size"]
        assert mine.systemid == listed["systemid"] == archive.systemid
        assert mine.server_name == SERVER_NAME
    first, second = ours.backups
    # each backup ran between the batch before it and the batch after it
    assert archive.committed[1] < first.begin_time < first.end_time < archive.committed[2]
    assert archive.committed[2] < second.begin_time < second.end_time < archive.committed[3]
    assert ours.first_recoverability_point == first.end_time
    assert ours.last_backup == second.end_time
    assert (ours.destination_path, ours.server_name) == (archive.destination, SERVER_NAME)


def test_wal_range_covers_what_was_archived(s3: LocalS3, archive: Archive, catalog: Catalog) -> None:
    names = _archived_wal_names(s3, archive.bucket)
    segments = sorted(n for n in names if len(n) == 24)
    assert any(n.endswith(".backup") for n in names)  # the backup labels are archived too, but are not segments
    wal = catalog.wal
    assert (wal.first, wal.last, wal.count, wal.timelines) == (segments[0], segments[-1], len(segments), [1])
    assert wal.last is not None and wal.first is not None
    assert wal.last >= archive.last_wal
    assert wal.count == _segment_number(wal.last) - _segment_number(wal.first) + 1  # no gap
    for backup in catalog.backups:
        assert wal.first <= backup.begin_wal <= backup.end_wal <= wal.last
    # when S3 stored the last segment: what bounds a latest-point recovery (the restore drill's RPO)
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=archive.bucket, Prefix=f"{PREFIX}/")
    stored = [
        o["LastModified"]
        for page in pages
        for o in page.get("Contents", ())
        if o["Key"].rsplit("/", 1)[-1].removesuffix(".gz") == wal.last
    ]
    assert len(stored) == 1 and wal.last_stored == stored[0]
    assert all(
        backup.end_time and backup.end_time <= wal.last_stored + dt.timedelta(seconds=1) for backup in catalog.backups
    )


def _recover(archive: Archive, name: str, backup: BaseBackup, target: dt.datetime) -> dict[int, int]:
    """Restore `backup` into a new server, replay the archive up to `target`, promote, count rows per batch."""
    lab = archive.lab
    barman = lab.barman(archive.destination, SERVER_NAME)
    pg = lab.server(name)
    barman.restore(backup.backup_id, pg.data)
    pg.configure(
        restore_command=barman.restore_command(),
        recovery_target_time=target.isoformat(sep=" "),
        recovery_target_action="promote",
        archive_mode=False,  # a restored copy must never archive into the source's server folder
    )
    (pg.data / "recovery.signal").touch()
    pg.start()
    try:
        pg.wait_promoted()
        rows = pg.sql("SELECT batch, count(*) FROM readings GROUP BY batch ORDER BY batch")
    finally:
        pg.stop()
    log = pg.log_file.read_text()
    # the WAL came from the bucket through restore_command, and replay stopped at the target, not at its end
    assert 'restored log file "' in log and "from archive" in log
    assert "recovery stopping before commit of transaction" in log
    return {int(b): int(c) for b, c in (line.split("|") for line in rows.splitlines())}


def _between(low: dt.datetime, high: dt.datetime) -> dt.datetime:
    assert low < high
    return low + (high - low) / 2


def test_recover_to_between_batch_2_and_3(archive: Archive, catalog: Catalog) -> None:
    second = catalog.backups[1]
    assert second.end_time is not None
    target = _between(max(archive.committed[2], second.end_time), archive.committed[3])
    assert archive.committed[2] < target < archive.committed[3]
    backup = base_backup_for(catalog, target)
    assert backup is not None and backup.backup_id == archive.backup_ids[1]
    assert _recover(archive, "until-batch-2", backup, target) == {1: ROWS[1], 2: ROWS[2]}


def test_recover_to_between_batch_1_and_2(archive: Archive, catalog: Catalog) -> None:
    first = catalog.backups[0]
    assert first.end_time is not None
    target = _between(max(archive.committed[1], first.end_time), archive.committed[2])
    backup = base_backup_for(catalog, target)
    assert backup is not None and backup.backup_id == archive.backup_ids[0]
    assert _recover(archive, "until-batch-1", backup, target) == {1: ROWS[1]}


def test_no_backup_before_the_first_one_ended(catalog: Catalog) -> None:
    first = catalog.backups[0]
    assert first.end_time is not None and catalog.first_recoverability_point == first.end_time
    assert base_backup_for(catalog, first.end_time) is None
    assert base_backup_for(catalog, first.end_time + dt.timedelta(microseconds=1)) == first
    with pytest.raises(ValueError, match="time zone"):
        base_backup_for(catalog, first.end_time.replace(tzinfo=None))


def test_wrong_server_name_lists_the_servers_there(s3: LocalS3, archive: Archive) -> None:
    store = _store(s3, archive.bucket)
    assert list_servers(store, archive.destination) == [SERVER_NAME]
    with pytest.raises(CatalogError) as err:
        read_catalog(store, archive.destination, "immich-db-old")
    assert str(err.value) == f"no server 'immich-db-old' at {archive.destination}; servers there: {SERVER_NAME}"


def test_missing_prefix_says_there_is_no_archive(s3: LocalS3, archive: Archive) -> None:
    store = _store(s3, archive.bucket)
    missing = f"s3://{archive.bucket}/cnpg/immich-typo"
    assert list_servers(store, missing) == []
    with pytest.raises(CatalogError) as err:
        read_catalog(store, missing, SERVER_NAME)
    assert str(err.value) == f"no Barman Cloud archive at {missing}: no server folder with base/ or wals/ there"


def test_missing_bucket(s3: LocalS3) -> None:
    store = _store(s3, "no-such-bucket-here")
    with pytest.raises(CatalogError, match=r"^bucket no-such-bucket-here does not exist"):
        read_catalog(store, "s3://no-such-bucket-here/cnpg", SERVER_NAME)
    with pytest.raises(CatalogError, match="is in bucket other"):
        read_catalog(store, "s3://other/cnpg", SERVER_NAME)


def test_parse_destination() -> None:
    assert parse_destination("s3://bucket/some/prefix") == ("bucket", "some/prefix/")
    assert parse_destination("s3://bucket/some/prefix/") == ("bucket", "some/prefix/")
    assert parse_destination("s3://bucket") == ("bucket", "")
    assert parse_destination("s3://bucket/") == ("bucket", "")
    for bad in ("bucket/prefix", "https://bucket/prefix", "s3:///prefix"):
        with pytest.raises(CatalogError, match="s3://bucket/path"):
            parse_destination(bad)


def _put_all(s3: LocalS3, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))


def _info(**fields: str) -> bytes:
    return "".join(f"{k}={v}\n" for k, v in fields.items()).encode()


def test_layout_details(s3: LocalS3, bucket: str) -> None:
    """What a long-lived archive accumulates: a failed and an unfinished backup, compressed WAL of every kind
    barman writes, backup labels, a promotion to timeline 2 with its history and partial segment, other data."""
    base, wals = "pg/immich-db/base", "pg/immich-db/wals"
    objects = {
        f"{base}/20240101T000000/backup.info": _info(
            status="DONE",
            begin_time="2024-01-01 00:00:00.250000+01:00",
            end_time="2024-01-01 00:05:00+01:00",
            begin_wal="000000010000000000000002",
            end_wal="000000010000000000000002",
            timeline="1",
            size="None",
            systemid="7300000000000000001",
            copy_stats="{'total_time': 1.5}",
        ),
        f"{base}/20240101T000000/data.tar.gz": b"x",
        f"{base}/20240102T000000/backup.info": _info(status="FAILED", begin_time="2024-01-02 00:00:00+00:00"),
        f"{base}/20240103T000000/data.tar": b"x",  # no backup.info yet: still uploading
        f"{base}/20240104T000000/backup.info": _info(
            status="DONE", begin_time="2024-01-04 00:00:00", end_time="2024-01-04 00:10:00", timeline="2"
        ),
        f"{wals}/0000000100000000/000000010000000000000002.gz": b"",
        f"{wals}/0000000100000000/000000010000000000000002.00000028.backup.gz": b"",
        f"{wals}/0000000100000000/000000010000000000000003.bz2": b"",
        f"{wals}/0000000100000000/000000010000000000000004.xz": b"",
        f"{wals}/0000000100000000/000000010000000000000005.snappy": b"",
        f"{wals}/0000000100000000/000000010000000000000006.partial": b"",
        f"{wals}/00000002.history.gz": b"",
        f"{wals}/0000000200000000/000000020000000000000006.zst": b"",
        f"{wals}/0000000200000000/000000020000000000000007.lz4": b"",
        f"{wals}/0000000200000000/000000020000000000000007": b"",  # same segment twice counts once
        f"{wals}/0000000200000000/000000020000000000000008.tmp": b"",  # not barman's
        "pg/stray/readme.txt": b"",  # a folder beside the servers, without base/ or wals/
        "pg/other-db/wals/00000001.history": b"",
    }
    _put_all(s3, bucket, objects)
    store = _store(s3, bucket)
    assert list_servers(store, f"s3://{bucket}/pg") == ["immich-db", "other-db"]
    catalog = read_catalog(store, f"s3://{bucket}/pg/", "immich-db")
    assert [(b.backup_id, b.status) for b in catalog.backups] == [
        ("20240101T000000", "DONE"),
        ("20240102T000000", "FAILED"),
        ("20240104T000000", "DONE"),
    ]
    first = catalog.backups[0]
    assert first.begin_time == dt.datetime(2023, 12, 31, 23, 0, 0, 250000, tzinfo=dt.UTC)
    assert first.end_time == dt.datetime(2023, 12, 31, 23, 5, tzinfo=dt.UTC)
    assert (first.size, first.timeline, first.systemid) == (None, 1, "7300000000000000001")
    assert catalog.backups[1].end_time is None and catalog.backups[1].begin_wal == ""
    assert catalog.backups[2].end_time == dt.datetime(2024, 1, 4, 0, 10, tzinfo=dt.UTC)  # no offset: UTC
    assert catalog.first_recoverability_point == first.end_time
    assert catalog.last_backup == catalog.backups[2].end_time
    # position first, then timeline: timeline 2 continues where timeline 1 ended
    assert (catalog.wal.first, catalog.wal.last, catalog.wal.count, catalog.wal.timelines) == (
        "000000010000000000000002",
        "000000020000000000000007",
        6,
        [1, 2],
    )
    only_history = read_catalog(store, f"s3://{bucket}/pg", "other-db")
    assert (only_history.backups, only_history.wal.count, only_history.wal.timelines) == ([], 0, [1])
    assert only_history.first_recoverability_point is None and only_history.last_backup is None


@pytest.fixture(scope="module")
def locked_s3() -> Iterator[tuple[LocalS3, dict[str, tuple[str, str]]]]:
    """A server of its own: moto enforces IAM process-wide."""
    with LocalS3() as server:
        server.client().create_bucket(Bucket="locked")
        server.client().put_object(Bucket="locked", Key="cnpg/immich-db/base/20240101T000000/backup.info", Body=b"")
        listing = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::locked"]}],
        }
        keys = {"outsider": server.iam_user("outsider", None), "lister": server.iam_user("lister", listing)}
        server.enforce_iam()
        yield server, keys


def test_access_denied(locked_s3: tuple[LocalS3, dict[str, tuple[str, str]]]) -> None:
    server, keys = locked_s3
    settings = S3Settings(bucket="locked", region="us-east-1", endpoint_url=server.endpoint, max_attempts=1)
    outsider = ObjectStore(settings, credentials=StaticCredentials(*keys["outsider"]))
    with pytest.raises(CatalogError) as err:
        read_catalog(outsider, "s3://locked/cnpg", "immich-db")
    assert str(err.value) == (
        "access denied to s3://locked/cnpg/immich-db/base/: the credentials may not list or read it"
    )
    lister = ObjectStore(settings, credentials=StaticCredentials(*keys["lister"]))
    assert list_servers(lister, "s3://locked/cnpg") == ["immich-db"]
    with pytest.raises(CatalogError) as err:
        read_catalog(lister, "s3://locked/cnpg", "immich-db")
    assert str(err.value) == (
        "access denied to s3://locked/cnpg/immich-db/base/20240101T000000/backup.info: "
        "the credentials may not list or read it"
    )


def test_plugin_db_catalog_reads_the_bucket_without_a_cluster(s3: LocalS3, archive: Archive, tmp_path: Path) -> None:
    """The day the cluster is gone: `kubectl immich-backup db catalog` with reader keys and the archive path."""
    import io

    from immich_tui.plugin.cli import main

    env = {
        "AWS_ACCESS_KEY_ID": DEMO_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": DEMO_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3.endpoint,
        "BUCKET_NAME": archive.bucket,
        "MEDIA_PREFIX": "immich/media/",
    }
    missing = tmp_path / "no-kubeconfig"
    argv = [
        "db",
        "catalog",
        "--destination-path",
        archive.destination,
        "--server-name",
        SERVER_NAME,
        "--kubeconfig",
        str(missing),
    ]
    out, err = io.StringIO(), io.StringIO()
    assert main([*argv, "-o", "json"], stdout=out, stderr=err, env=env) == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert [b["backup_id"] for b in data["backups"]] == archive.backup_ids
    assert all(b["status"] == "DONE" for b in data["backups"])
    # the newest segment in the bucket: the server may archive one more after the switch (archive_timeout
    # or its shutdown checkpoint), as test_wal_range_covers_what_was_archived allows too
    segments = sorted(n for n in _archived_wal_names(s3, archive.bucket) if len(n) == 24)
    assert data["wal"]["last"] == segments[-1] and data["wal"]["last"] >= archive.last_wal
    table = io.StringIO()
    assert main(argv, stdout=table, stderr=io.StringIO(), env=env) == 0
    assert archive.backup_ids[1] in table.getvalue() and "recoverable from" in table.getvalue()
    wrong = io.StringIO()
    code = main(
        [*argv[:-4], "--server-name", "nope", "--kubeconfig", str(missing)], stdout=io.StringIO(), stderr=wrong, env=env
    )
    assert code == 2 and f"no server 'nope' at {archive.destination}; servers there: {SERVER_NAME}" in wrong.getvalue()
