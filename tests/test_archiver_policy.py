"""The archiver's shipped policy (deploy/iam/cnpg-writer.json) under real barman-cloud, on a versioned bucket.

A PostgreSQL server archives its WAL with `barman-cloud-wal-archive` using only the archiver's keys, takes
two base backups with `barman-cloud-backup`, lists them and applies a retention policy with
`barman-cloud-backup-delete` — everything CloudNativePG's Barman Cloud does with these keys. Before it
archives the first WAL of a new cluster, CNPG runs `barman-cloud-check-wal-archive`, whose connectivity
check is a HeadBucket (as is every barman-cloud command's `--test`). AWS authorises HeadBucket as
`s3:ListBucket` with no `s3:prefix` key in the request, so a ListBucket granted only for the archive's
prefix refuses it (403), barman-cloud gives up and the cluster's archiving never starts.
tests/strict_iam.py authorises HeadBucket as AWS does, and DeleteObjects key by key, so what passes here
passes there.

The same keys must still reach nothing of the media: no read, write, delete or prefixed listing under
`immich/media/`. The statement that lets HeadBucket through cannot tell it from a ListObjects without a
prefix (neither carries `s3:prefix`), so such a listing names every key in the bucket: that is asserted
too, so the documented reach is the proven one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from immich_tui.demo.s3 import bucket_policy
from tests.pg import PgError, PgLab, PgServer, S3Access, barman_tool, run
from tests.strict_iam import StrictIamS3, conditions_hold

BUCKET = "immich-offsite-archiver"
IAM = Path(__file__).resolve().parent.parent / "deploy" / "iam"
ARCHIVE, MEDIA, REPORTS = "immich/postgres/", "immich/media/", "immich/sync-reports/"
DESTINATION = f"s3://{BUCKET}/immich/postgres"
SERVER_NAME = "immich-db"
SEEDED = (f"{MEDIA}seed/photo.jpg", f"{REPORTS}seed/report.json")
A_WAL_NAME = "000000010000000000000001"  # `barman-cloud-wal-archive --test` wants one, and exits before reading it


def shipped() -> dict[str, Any]:
    return dict(json.loads((IAM / "cnpg-writer.json").read_text().replace("BUCKET_NAME", BUCKET)))


def without_bucket_check(policy: dict[str, Any]) -> dict[str, Any]:
    """The policy minus its statement for requests without `s3:prefix`: only the prefix-scoped listing."""
    kept = [s for s in policy["Statement"] if "Null" not in s.get("Condition", {})]
    return {**policy, "Statement": kept}


@dataclass
class Run:
    """What barman did with the archiver's keys."""

    server: StrictIamS3
    keys: dict[str, tuple[str, str]]
    lab: PgLab
    backup_ids: list[str]  # in the order taken
    listed_before: list[dict[str, Any]]  # barman-cloud-backup-list before the retention
    listed_after: list[dict[str, Any]]
    kept_begin_wal: str  # the first WAL the kept backup needs

    def client(self, who: str) -> Any:
        key_id, secret = self.keys[who]
        return self.server.client(key_id=key_id, secret=secret)


def barman(lab: PgLab, tool: str, *args: str, keys: tuple[str, str] | None = None) -> str:
    """One barman-cloud command as the server's user, with the lab's keys or `keys`."""
    env = dict(lab.env)
    if keys is not None:
        env.update(AWS_ACCESS_KEY_ID=keys[0], AWS_SECRET_ACCESS_KEY=keys[1])
    return run(lab.drop, [barman_tool(tool), "--endpoint-url", lab.s3.endpoint, *args], env, lab.workspace.root)


def _current_keys(admin: Any, prefix: str) -> set[str]:
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {obj["Key"] for page in pages for obj in page.get("Contents", ())}


def _wal_segments(admin: Any) -> list[str]:
    names = (k.rsplit("/", 1)[-1].removesuffix(".gz") for k in _current_keys(admin, f"{ARCHIVE}{SERVER_NAME}/wals/"))
    return sorted(n for n in names if len(n) == 24)


def _archive_two_backups(lab: PgLab, admin: Any) -> tuple[PgServer, list[str]]:
    primary = lab.server("primary")
    primary.initdb()
    cloud = lab.barman(DESTINATION, SERVER_NAME)
    primary.configure(
        wal_level="replica", archive_mode=True, archive_command=cloud.archive_command(), archive_timeout=1
    )
    primary.start()
    primary.sql("CREATE TABLE readings (batch int NOT NULL, n int NOT NULL)")
    backup_ids = []
    for batch in (1, 2):
        primary.sql(f"INSERT INTO readings SELECT {batch}, g FROM generate_series(1, 100) AS g")
        primary.sql("SELECT pg_switch_wal()")
        backup_ids.append(cloud.backup(primary))
    last_wal = primary.sql("SELECT pg_walfile_name(pg_switch_wal())")
    try:
        primary.wait_until(f"{last_wal} archived", lambda: last_wal in _wal_segments(admin))
    except PgError as exc:
        stats = primary.sql("SELECT last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver")
        raise PgError(f"{exc}\npg_stat_archiver: {stats}") from None
    return primary, backup_ids


@pytest.fixture(scope="module")
def archived() -> Iterator[Run]:
    with StrictIamS3() as server:
        admin = server.client()
        admin.create_bucket(Bucket=BUCKET)
        admin.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        for key in SEEDED:
            admin.put_object(Bucket=BUCKET, Key=key, Body=b"not the archiver's")
        keys = {
            "archiver": server.iam_user("cnpg-archiver", shipped()),
            "archiver without the bucket check": server.iam_user("cnpg-narrow", without_bucket_check(shipped())),
            "admin": server.iam_user("admin", bucket_policy(BUCKET, ["s3:*"])),
        }
        server.enforce_iam()
        admin = server.client(key_id=keys["admin"][0], secret=keys["admin"][1])
        with PgLab(S3Access(server.endpoint, *keys["archiver"])) as lab:
            # what CNPG runs before archiving the first WAL of a new cluster: HeadBucket, then a listing
            barman(lab, "barman-cloud-check-wal-archive", DESTINATION, SERVER_NAME)
            primary, backup_ids = _archive_two_backups(lab, admin)
            cloud = lab.barman(DESTINATION, SERVER_NAME)
            listed_before = cloud.backup_list()
            kept_begin_wal = next(b["begin_wal"] for b in listed_before if b["backup_id"] == backup_ids[1])
            barman(lab, "barman-cloud-backup-delete", "--retention-policy", "REDUNDANCY 1", DESTINATION, SERVER_NAME)
            listed_after = cloud.backup_list()
            primary.stop()
            yield Run(server, keys, lab, backup_ids, listed_before, listed_after, kept_begin_wal)


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        code = exc.response["Error"]["Code"]
        return "denied" if code in ("AccessDenied", "403") else code
    return "allowed"


def test_barman_archives_backs_up_lists_and_applies_retention(archived: Run) -> None:
    first, second = archived.backup_ids
    assert [b["backup_id"] for b in archived.listed_before] == [first, second]
    assert all(b["status"] == "DONE" for b in archived.listed_before)
    assert [b["backup_id"] for b in archived.listed_after] == [second]  # REDUNDANCY 1 removed the older one
    admin = archived.client("admin")
    base = _current_keys(admin, f"{ARCHIVE}{SERVER_NAME}/base/")
    assert base and all(k.startswith(f"{ARCHIVE}{SERVER_NAME}/base/{second}/") for k in base)
    segments = _wal_segments(admin)
    assert segments and segments[0] == archived.kept_begin_wal  # the WAL only the deleted backup needed is gone
    # its deletes were DeleteObjects batches, allowed key by key; on a versioned bucket they leave noncurrent
    # versions, which only the lifecycle (or someone with s3:DeleteObjectVersion) removes
    versions = admin.list_object_versions(Bucket=BUCKET, Prefix=f"{ARCHIVE}{SERVER_NAME}/base/{first}/")
    assert versions.get("Versions") and versions.get("DeleteMarkers")


def test_every_barman_connectivity_check_passes(archived: Run) -> None:
    """`--test` is a HeadBucket; CNPG's check of a new server's WAL archive is one, then a listing."""
    for tool in ("barman-cloud-wal-archive", "barman-cloud-backup-list", "barman-cloud-backup-delete"):
        args = ["--test", DESTINATION, SERVER_NAME]
        if tool == "barman-cloud-wal-archive":
            args.append(A_WAL_NAME)
        if tool == "barman-cloud-backup-delete":
            args += ["--retention-policy", "REDUNDANCY 1"]
        barman(archived.lab, tool, *args)
    barman(archived.lab, "barman-cloud-check-wal-archive", DESTINATION, "another-db")


def test_without_the_bucket_check_statement_archiving_cannot_start(archived: Run) -> None:
    """The prefix-scoped ListBucket alone, as the policy was: the HeadBucket is refused and barman gives up."""
    narrow = archived.keys["archiver without the bucket check"]
    with pytest.raises(PgError) as refused:
        barman(archived.lab, "barman-cloud-check-wal-archive", DESTINATION, "another-db", keys=narrow)
    assert "An error occurred (403) when calling the HeadBucket operation: Forbidden" in str(refused.value)
    with pytest.raises(PgError, match="HeadBucket operation: Forbidden"):
        barman(archived.lab, "barman-cloud-wal-archive", "--test", DESTINATION, SERVER_NAME, A_WAL_NAME, keys=narrow)
    # what it could do is unchanged: list and write under the archive
    client = archived.server.client(key_id=narrow[0], secret=narrow[1])
    assert _outcome(lambda: client.list_objects_v2(Bucket=BUCKET, Prefix=ARCHIVE)) == "allowed"
    assert _outcome(lambda: client.list_objects_v2(Bucket=BUCKET)) == "denied"


def test_the_archiver_still_cannot_reach_the_media(archived: Run) -> None:
    archiver = archived.client("archiver")
    for prefix in (MEDIA, REPORTS):
        key = f"{prefix}seed/photo.jpg" if prefix == MEDIA else f"{prefix}seed/report.json"
        outcomes = {
            "ListObjectsV2": _outcome(lambda p=prefix: archiver.list_objects_v2(Bucket=BUCKET, Prefix=p)),
            "ListObjectVersions": _outcome(lambda p=prefix: archiver.list_object_versions(Bucket=BUCKET, Prefix=p)),
            "GetObject": _outcome(lambda k=key: archiver.get_object(Bucket=BUCKET, Key=k)),
            "HeadObject": _outcome(lambda k=key: archiver.head_object(Bucket=BUCKET, Key=k)),
            "PutObject": _outcome(lambda p=prefix: archiver.put_object(Bucket=BUCKET, Key=f"{p}intruder", Body=b"x")),
            "DeleteObject": _outcome(lambda k=key: archiver.delete_object(Bucket=BUCKET, Key=k)),
        }
        assert outcomes == {op: "denied" for op in outcomes}, prefix
    # a batch delete is judged key by key: one media key in it and nothing is deleted
    batch = [{"Key": SEEDED[0]}, {"Key": f"{ARCHIVE}{SERVER_NAME}/nothing"}]
    answer = archiver.delete_objects(Bucket=BUCKET, Delete={"Objects": batch})
    assert not answer.get("Deleted") and {e["Code"] for e in answer["Errors"]} == {"AccessDenied"}
    admin = archived.client("admin")
    for key in SEEDED:
        assert admin.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"not the archiver's"
        assert len(admin.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]) == 1
        assert "DeleteMarkers" not in admin.list_object_versions(Bucket=BUCKET, Prefix=key)
    assert _current_keys(admin, MEDIA) == {SEEDED[0]}


def test_what_the_bucket_check_statement_also_allows(archived: Run) -> None:
    """A ListObjects without a prefix carries no `s3:prefix` either: it lists every key's name (and size and
    ETag) in the bucket, the media's included. It reads, writes and deletes nothing; versions stay unlisted."""
    archiver = archived.client("archiver")
    assert _outcome(lambda: archiver.head_bucket(Bucket=BUCKET)) == "allowed"
    listed = {obj["Key"] for obj in archiver.list_objects_v2(Bucket=BUCKET).get("Contents", ())}
    assert set(SEEDED) <= listed
    assert any(k.startswith(f"{ARCHIVE}{SERVER_NAME}/wals/") for k in listed)
    assert _outcome(lambda: archiver.list_object_versions(Bucket=BUCKET)) == "denied"
    assert _outcome(lambda: archiver.get_object(Bucket=BUCKET, Key=SEEDED[0])) == "denied"
    # GetBucketLocation carries no s3:prefix, so its prefix-conditioned grant never applies (barman needs none)
    assert _outcome(lambda: archiver.get_bucket_location(Bucket=BUCKET)) == "denied"


def test_the_null_operator() -> None:
    """`Null` "true": the request lacks the key; "false": it carries one, even an empty one."""
    absent = {"Condition": {"Null": {"s3:prefix": "true"}}}
    present = {"Condition": {"Null": {"s3:prefix": "false"}}}
    assert conditions_hold(absent, {}) and not conditions_hold(absent, {"s3:prefix": ""})
    assert conditions_hold(present, {"s3:prefix": ""}) and not conditions_hold(present, {})
    assert not conditions_hold({"Condition": {"NumericEquals": {"s3:max-keys": "1"}}}, {"s3:max-keys": "1"})
