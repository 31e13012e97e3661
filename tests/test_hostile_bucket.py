"""Hostile objects in the bucket: run reports that are not reports, and objects far larger than their kind.

A run report that is `[]`, has a `per_folder` that is not an object or a count that is not a number is
named, key and field, in one line: `status` shows it as the offsite section's error and exits 2 while the
media and database sections still answer (an older report still stands in for the totals), `offsite`
prints what it could read and exits 2, `inventory` and `db restore` warn, and `immich-sync verify` does
not trust it. Counters a newer engine adds to `totals` are ignored, never an error.

Every object these tools read from the bucket has a size cap, checked from the listing's size before the
GET where there is a listing, and enforced while reading (reading stops past it): a 300 MiB report or
backup.info costs no memory, which is measured in a child process (peak RSS) and by the requests a
proxy sees. Everything runs against moto over HTTP, the cluster is kmock's emulator.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from immich_tui.demo.fixtures import NS
from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from sync_engine import trust
from sync_engine.config import S3Settings
from sync_engine.errors import ObjectTooLarge
from sync_engine.report import MAX_REPORT
from sync_engine.store import ObjectStore, StaticCredentials
from tests.cluster import READER_SECRET_VALUE, Cluster, MakeCluster
from tests.conftest import SECRET, Result
from tests.forgery import REPORTS, iso, report_body, run_key
from tests.s3proxy import Proxy, Request, hold

RunSync = Callable[..., Result]
MiB = 1024 * 1024
PROG = "kubectl immich-backup"

# Peak RSS of the measured command, then its exit code, then its stdout (as tests/test_untrusted_restore.py).
MEASURE = textwrap.dedent(
    """
    import resource, subprocess, sys
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=240)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    sys.stdout.write(f"{peak}\\n{proc.returncode}\\n" + proc.stdout)
    sys.stderr.write(proc.stderr)
    """
)
# The plugin's own footprint (Python, the kubernetes client, botocore) is about 80 MiB; reading a 300 MiB
# object whole, and parsing it, took 677 MiB (a report, by `status`) and 975 MiB (a backup.info).
RSS_BOUND = 150 * MiB


def measured(argv: list[str], env: dict[str, str]) -> tuple[int, int, str, str]:
    """(peak RSS in bytes, exit code, stdout, stderr) of `python -m <argv>` in a child process."""
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, sys.executable, "-m", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.getcwd(),
    )
    peak_kib, code, out = proc.stdout.split("\n", 2)
    return int(peak_kib) * 1024, int(code), out, proc.stderr


def child_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        **extra,
    }


def put(s3: LocalS3, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def giant(size: int) -> bytes:
    """Valid JSON of `size` bytes that a reader keeping it whole would hold, then parse."""
    head, tail = b'{"run_id": "0badc0de", "pad": "', b'"}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


def one_line(text: str, prefix: str, *needles: str) -> str:
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith(prefix), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _synced(cluster: Cluster, s3: LocalS3, bucket: str) -> dict[str, Any]:
    """A real nightly run through the cluster; returns its report as stored."""
    result = cluster.run("sync", "--wait")
    assert result.code == 0, result.err + result.out
    keys = [k for k in _report_keys(s3, bucket)]
    assert len(keys) == 1
    return dict(json.loads(s3.client().get_object(Bucket=bucket, Key=keys[0])["Body"].read()))


def _report_keys(s3: LocalS3, bucket: str) -> Iterator[str]:
    for obj in s3.client().list_objects_v2(Bucket=bucket, Prefix=REPORTS).get("Contents", []):
        if obj["Key"].endswith(".json"):
            yield obj["Key"]


def _newest_key(run_id: str = "0badc0de") -> tuple[str, float]:
    """A report key newer than any real run's, yet well inside the clock-skew allowance (not "future")."""
    started = time.time() + 60
    return run_key(started, run_id=run_id), started


def _bodies(real: dict[str, Any], key: str, started: float) -> dict[str, tuple[bytes, str]]:
    """Reports that are not run reports, with what the line naming each must say."""

    def changed(**fields: Any) -> bytes:
        return report_body(real, key, iso(started), iso(started + 5), **fields)

    totals = {**real["totals"], "files": "many"}
    return {
        "list": (b"[]", "a JSON list, not an object"),
        "per_folder": (changed(per_folder="nope"), "per_folder must be an object"),
        "totals": (changed(totals=totals), "totals.files: 'many' is not a count"),
    }


# -- reports that are not reports -----------------------------------------------------------------------------


def test_a_report_that_breaks_its_schema_is_named_by_status_offsite_and_inventory(
    make_cluster: MakeCluster, s3: LocalS3, bucket: str
) -> None:
    cluster = make_cluster()
    real = _synced(cluster, s3, bucket)
    real_key = real["report_key"]
    key, started = _newest_key()
    for case, (body, needle) in _bodies(real, key, started).items():
        put(s3, bucket, key, body)
        named = f"run report {key}: not a run report ("

        status = cluster.run("status", "-o", "json")
        assert status.code == 2, (case, status.err)
        data = status.json()
        assert named in data["offsite"]["error"] and needle in data["offsite"]["error"], case
        assert "\n" not in data["offsite"]["error"]
        assert data["offsite"]["value"]["basis"] == f"run report {real_key}"  # the older report stands in
        assert data["media"]["value"] is not None and not data["media"]["error"]
        assert data["database"]["value"] is not None and not data["database"]["error"]
        checks = {c["name"]: c for c in data["verdict"]["checks"]}
        assert checks["media"]["state"] == "error" and named in checks["media"]["detail"], case
        assert checks["database"]["state"] == checks["wal"]["state"] == "ok"

        table = cluster.run("status")
        assert table.code == 2 and "Verdict: ERROR" in table.out
        assert [line.strip() for line in table.out.splitlines() if line.strip().startswith("error: ")] == [
            f"error: {data['offsite']['error']}"
        ]

        offsite = cluster.run("offsite", "--from-report")
        assert offsite.code == 2, case
        one_line(offsite.err, f"{PROG}: error: {named}", needle)
        assert "Recent runs (1 of 2 reports)" in offsite.out  # what could be read is still shown

        inventory = cluster.run("inventory", "--from-report")
        assert inventory.code == 0, case
        one_line(inventory.err, f"warning: {named}", needle, "an older report was used")
        assert real_key in inventory.out

        s3.client().delete_object(Bucket=bucket, Key=key)

    # counters a newer engine adds are ignored: the report is read and believed
    newer = report_body(real, key, iso(started), iso(started + 5), totals={**real["totals"], "zz_new": 7, "x": "y"})
    put(s3, bucket, key, newer)
    status = cluster.run("status", "-o", "json")
    assert status.code == 0, status.err
    assert status.json()["offsite"]["value"]["basis"] == f"run report {key}"
    assert not status.json()["offsite"]["error"]


def test_verify_names_a_report_that_breaks_its_schema(run_sync: RunSync, s3: LocalS3, bucket: str) -> None:
    backup = run_sync("backup", "-o", "json")
    assert backup.code == 0, backup.err
    real = json.loads(s3.client().get_object(Bucket=bucket, Key=backup.json()["report_key"])["Body"].read())
    planted: dict[str, str] = {}
    for n, case in enumerate(("list", "per_folder", "totals")):
        key, started = _newest_key(run_id=f"0badc0d{n}")
        body, needle = _bodies(real, key, started)[case]
        put(s3, bucket, key, body)
        planted[key] = needle
    result = run_sync("verify", "-o", "json")
    assert result.code == 1  # verify cannot vouch for what it cannot read: a difference
    assert "Traceback" not in result.err
    data = result.json()
    problems = {p["key"]: p for p in data["problems"] if p["kind"] == "untrusted-report"}
    assert set(problems) == set(planted)
    for key, needle in planted.items():
        assert problems[key]["reason"] == "unreadable" and needle in problems[key]["detail"], problems[key]
    assert data["verified"] == data["recorded"] > 0  # the real run is checked as before


# -- size caps ---------------------------------------------------------------------------------------------


def _reader_through(cluster: Cluster, endpoint: str) -> None:
    """The restorer Secret pointed at `endpoint` (the counting proxy in front of moto)."""
    secret = copy.deepcopy(cluster.get("v1/secrets", NS, "immich-offsite-restorer"))
    assert secret is not None
    secret["metadata"] = {"name": "immich-offsite-restorer", "namespace": NS}
    secret["data"]["AWS_ENDPOINT_URL_S3"] = base64.b64encode(endpoint.encode()).decode()
    cluster.server.put("v1/secrets", secret)


def test_a_300_mib_report_is_named_from_its_listing_and_never_read(
    make_cluster: MakeCluster, s3: LocalS3, bucket: str, proxy: Proxy, tmp_path: Path
) -> None:
    """The listing says 300 MiB, over the 16 MiB cap for a run report: no GET, one line naming it, and the
    status (in a child process) stays at its usual size. Unbounded, it peaked at 677 MiB."""
    cluster = make_cluster()
    real = _synced(cluster, s3, bucket)
    key, _ = _newest_key()
    size = 300 * MiB
    put(s3, bucket, key, giant(size))
    _reader_through(cluster, proxy.endpoint)
    proxy.reset()

    argv = ["immich_tui.plugin.cli", "status", "-o", "json", "--kubeconfig", str(cluster.kubeconfig)]
    peak, code, out, err = measured(argv, child_env(tmp_path))
    assert "Traceback" not in err, err[-2000:]
    assert READER_SECRET_VALUE not in out + err
    assert peak < RSS_BOUND, f"peak RSS {peak / MiB:.0f} MiB"
    assert code == 2, err
    data = json.loads(out)
    assert data["offsite"]["error"] == (
        f"run report {key}: {size:,} bytes, over the {MAX_REPORT:,}-byte cap for a run report: not read"
    )
    assert data["offsite"]["value"]["basis"] == f"run report {real['report_key']}"
    assert [r.key for r in proxy.ops("GetObject")] == [real["report_key"]]


def test_a_report_that_grew_after_the_listing_is_read_up_to_the_cap_only(
    make_cluster: MakeCluster, s3: LocalS3, bucket: str, proxy: Proxy
) -> None:
    """Listed at a few KiB; by the GET it is 40 MiB. Reading stops past the cap, and the line says so."""
    cluster = make_cluster()
    real = _synced(cluster, s3, bucket)
    key, started = _newest_key()
    put(s3, bucket, key, report_body(real, key, iso(started), iso(started + 5)))
    _reader_through(cluster, proxy.endpoint)

    def swap(_: Request) -> None:
        put(s3, bucket, key, giant(40 * MiB))

    proxy.rules.append(hold(lambda r: r.op == "GetObject" and r.key == key, swap))
    status = cluster.run("status", "-o", "json")
    assert status.code == 2, status.err
    assert status.json()["offsite"]["error"] == (
        f"run report {key}: larger than the {MAX_REPORT:,}-byte cap for a run report: reading stopped there"
    )


def test_a_300_mib_backup_info_costs_no_memory(s3: LocalS3, bucket: str, tmp_path: Path) -> None:
    """No listing sizes a backup.info (backups are found as folders): the cap holds while reading."""
    info = "cnpg/immich-db/base/20260101T000000/backup.info"
    put(s3, bucket, info, b"status=DONE\n" + b"x" * (300 * MiB))
    env = child_env(
        tmp_path,
        AWS_ACCESS_KEY_ID=DEMO_KEY_ID,
        AWS_SECRET_ACCESS_KEY=DEMO_SECRET,
        AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=s3.endpoint,
        BUCKET_NAME=bucket,
        MEDIA_PREFIX="immich/media/",
    )
    argv = ["immich_tui.plugin.cli", "db", "catalog", "--destination-path", f"s3://{bucket}/cnpg"]
    argv += ["--server-name", "immich-db", "--kubeconfig", str(tmp_path / "none")]
    peak, code, out, err = measured(argv, env)
    assert peak < RSS_BOUND, f"peak RSS {peak / MiB:.0f} MiB"
    assert code == 2 and out == ""
    one_line(
        err,
        f"{PROG}: error: backup.info s3://{bucket}/{info} is larger than the 1,048,576-byte cap",
        "reading stopped there",
    )


@pytest.mark.parametrize("path", ["direct", "botocore"])
def test_get_bytes_reads_no_further_than_the_cap(s3: LocalS3, bucket: str, path: str) -> None:
    """Python's own allocation count while reading a 64 MiB object with a 1 MiB cap: a few MiB at most."""
    put(s3, bucket, "big", os.urandom(64 * MiB))
    settings = S3Settings(
        bucket=bucket,
        region="us-east-1",
        endpoint_url=s3.endpoint,
        checksum_mode="when_required" if path == "direct" else "when_supported",  # the direct path or not
    )
    store = ObjectStore(settings, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))
    tracemalloc.start()
    try:
        with pytest.raises(ObjectTooLarge) as err:
            store.get_bytes("big", max_bytes=MiB, what="run report")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(err.value) == (
        f"run report s3://{bucket}/big is larger than the {MiB:,}-byte cap for a run report: reading stopped there"
    )
    assert peak < 8 * MiB, f"{peak / MiB:.1f} MiB allocated"
    put(s3, bucket, "exact", b"y" * MiB)
    assert store.get_bytes("exact", max_bytes=MiB) == b"y" * MiB  # the cap itself is allowed


def test_a_files_cache_that_grew_after_the_listing_is_not_read_past_the_cap(
    run_sync: RunSync, proxy: Proxy, monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str
) -> None:
    """The run compares every file by content instead, and says why; nothing is uploaded again."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
    first = run_sync("backup", "-o", "json")
    assert first.code == 0, first.err
    cache = first.json()["files_cache_key"]
    monkeypatch.setattr(trust, "MAX_COMPRESSED", 256 * 1024)  # the cap, not the I/O: 512 MiB is too big to test

    def swap(_: Request) -> None:
        put(s3, bucket, cache, os.urandom(1 * MiB))

    proxy.rules.append(hold(lambda r: r.op == "GetObject" and r.key == cache, swap))
    second = run_sync("backup", "-o", "json")
    assert second.code == 0, second.err
    report = second.json()
    assert report["files_cache_note"] == (
        f"files cache s3://{bucket}/{cache} is larger than the 262,144-byte cap for a files cache: "
        "reading stopped there"
    )
    assert report["totals"]["uploaded"] == 0 and report["totals"]["unchanged"] == report["totals"]["files"]
    assert SECRET not in second.out + second.err
