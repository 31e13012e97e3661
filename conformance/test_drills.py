"""The leaked-key and local-damage drills (tests/test_leaked_key.py, tests/test_local_damage_drill.py)
against Ceph RGW, where the versions, their LastModified and the access decisions are RGW's own.

Both run on a versioned bucket owned by a third, admin user (the suite's ACCESS_KEY), which only sets the
bucket up and lists it to choose the drills' times. The writer and the restorer are RGW users of their
own whose every right comes from the bucket policy `conftest.identity_policy` builds from
deploy/iam/media-writer.json and deploy/iam/restorer.json word for word: RGW 16 evaluates each
statement, the s3:prefix condition on the writer's ListBucket included, so none had to be simplified.
One thing is added: RGW lets the owner of an object read it and its versions, and read or change its
ACL, tags, retention and legal hold, through the object's ACL when no statement matches; the writer owns
every object it puts, so the policy denies the writer those explicitly (GetObject outside the run
reports, and `conftest.OWNER_EXTRAS`). The restorer owns nothing and the bucket's ACL names only its
owner, so the policy is all either identity has: the attack is possible with exactly the writer's rights,
and the recovery works with exactly the restorer's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from conformance.conftest import Identity, client
from conformance.rgw import SECRET_KEY, RadosGateway
from immich_tui.demo.library import SampleLibrary
from immich_tui.services.health import Check
from immich_tui.services.media import CronJobInfo, JobHistory
from immich_tui.services.offsite import Offsite, Reader
from immich_tui.services.status import Section, Services, Target
from sync_engine.cli import main
from sync_engine.config import S3Settings
from sync_engine.store import StaticCredentials
from tests.conftest import Result
from tests.forgery import (
    PREFIX,
    REPORTS,
    after,
    assert_verify_names_the_attack,
    iso,
    line_for,
    manifest,
    manifest_key,
    newest_modified,
    report_body,
    run_key,
)

RunSync = Callable[..., Result]
PHOTO = "library/b41e9d22-anna/2024/01/IMG_0049.jpg"
ORIGINALS = ("upload", "library", "profile")


@pytest.fixture
def drill(capsys: pytest.CaptureFixture[str], sync_env: dict[str, str], identities: dict[str, Identity]) -> RunSync:
    """`immich-sync ARGV` in-process with whichever keys `act_as` set; no identity's secret may reach
    its output."""
    secrets = [SECRET_KEY, *(who.secret_key for who in identities.values())]

    def run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        for secret in secrets:
            assert secret not in captured.out and secret not in captured.err
        return Result(code, captured.out, captured.err)

    return run


def act_as(monkeypatch: pytest.MonkeyPatch, who: Identity) -> None:
    for name, value in who.env().items():
        monkeypatch.setenv(name, value)


def md5s(root: Path) -> dict[str, str]:
    """Every original under `root` (upload/, library/, profile/) by its md5."""
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for folder in ORIGINALS
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def versions(owner: Any, bucket: str, prefix: str = PREFIX) -> dict[str, list[tuple[str, str]]]:
    """Each key's versions, newest first, as (VersionId, ETag): what the bucket's owner lists."""
    found: dict[str, list[tuple[str, str]]] = {}
    for page in owner.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        assert not page.get("DeleteMarkers"), page["DeleteMarkers"]
        for v in page.get("Versions", []):
            found.setdefault(v["Key"], []).append((v["VersionId"], v["ETag"]))
    return found


def refused(call: Callable[[], object]) -> str:
    """The error code RGW answers `call` with; the drill expects AccessDenied."""
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        call()
    return str(denied.value.response["Error"]["Code"])


def attack(writer: Any, bucket: str, real_report_key: str) -> tuple[bytes, str, str]:
    """With the writer's keys only: overwrite a photo, then forge a manifest vouching for the new bytes
    and a run report dated 2099 that names it. Returns the bytes written and the two forged keys."""
    forged_bytes = b"\xff\xd8 the attacker's picture " * 64
    writer.put_object(Bucket=bucket, Key=PREFIX + PHOTO, Body=forged_bytes)
    real = json.loads(writer.get_object(Bucket=bucket, Key=real_report_key)["Body"].read())
    report = run_key("20991231T235959Z", coverage=real_report_key.rsplit("-", 3)[1])
    writer.put_object(Bucket=bucket, Key=manifest_key(report), Body=manifest(line_for(PREFIX + PHOTO, forged_bytes)))
    writer.put_object(Bucket=bucket, Key=report, Body=report_body(real, report, *["2099-12-31T23:59:59Z"] * 2))
    return forged_bytes, report, manifest_key(report)


def media_check(
    endpoint: str, bucket: str, restorer: Identity, now: dt.datetime, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Check]:
    """The status's media check as `kubectl immich-backup status` judges it, reading the run reports with
    the restorer's keys, with a CronJob that has never succeeded on its own (no cluster needed)."""
    monkeypatch.setenv("IMMICH_BACKUP_NOW", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=endpoint, path_style=True)
    keys = StaticCredentials(restorer.access_key, restorer.secret_key)
    offsite = Offsite(Reader("restorer keys", settings, PREFIX, REPORTS, keys)).state(listing=False, report_limit=3)
    cronjob = CronJobInfo("immich-media-offsite-sync", "immich", "30 2 * * *", "UTC", False, *[None] * 3, [], "", "")
    no_cnpg = Section(None, "CNPG is not installed")
    verdict = Services(Target()).judge(Section(JobHistory(cronjob, [], 0)), no_cnpg, Section(offsite))
    return offsite, verdict.check("media")


def test_a_leaked_writer_key_cannot_outwit_the_restorer(
    drill: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    rgw: RadosGateway,
    guarded_bucket: str,
    identities: dict[str, Identity],
    sample: SampleLibrary,
    tmp_path: Path,
) -> None:
    """The writer's keys back up the library; the same keys, leaked, overwrite a photo and plant a forged
    manifest and a run report dated 2099. With the restorer's keys, verify names both, a plain restore
    refuses the photo, a restore as of before the attack brings every original back byte for byte, and
    the status's media check is not turned green by the 2099 report."""
    bucket, writer, restorer = guarded_bucket, identities["writer"], identities["restorer"]
    owner = client(rgw.endpoint)
    act_as(monkeypatch, writer)
    backup = drill("backup", "-o", "json")
    assert backup.code == 0, backup.out
    real_report = backup.json()["report_key"]
    original = md5s(sample.root)
    # RGW lists LastModified to the millisecond: the next whole second still holds every backed-up byte
    before_attack = float(math.ceil(newest_modified(owner, bucket)))

    act_as(monkeypatch, restorer)
    clean = drill("verify", "-o", "json")
    assert clean.code == 0, clean.out  # no false alarm on an honest bucket
    assert clean.json()["versioned"] is True and clean.json()["run_reports_read"] == 1

    # the attack, with nothing but the writer's keys, at least a second after `before_attack`
    after(before_attack)
    as_writer = client(rgw.endpoint, writer.access_key, writer.secret_key)
    forged_bytes, forged_report, forged_manifest = attack(as_writer, bucket, real_report)
    [(_, forged_etag), (true_version, _)] = versions(owner, bucket, PREFIX + PHOTO)[PREFIX + PHOTO]
    assert forged_etag.strip('"') == hashlib.md5(forged_bytes).hexdigest()
    # ...which stretch no further: the true bytes can be neither deleted, nor hidden, nor read back
    assert refused(lambda: as_writer.delete_object(Bucket=bucket, Key=PREFIX + PHOTO, VersionId=true_version)) == (
        "AccessDenied"
    )
    assert refused(lambda: as_writer.delete_object(Bucket=bucket, Key=PREFIX + PHOTO)) == "AccessDenied"
    assert refused(lambda: as_writer.get_object(Bucket=bucket, Key=PREFIX + PHOTO)) == "AccessDenied"
    suspend = {"Status": "Suspended"}
    assert refused(lambda: as_writer.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=suspend)) == (
        "AccessDenied"
    )
    assert refused(lambda: as_writer.delete_bucket_policy(Bucket=bucket)) == "AccessDenied"
    as_restorer = client(rgw.endpoint, restorer.access_key, restorer.secret_key)
    assert refused(lambda: as_restorer.put_object(Bucket=bucket, Key=PREFIX + PHOTO, Body=b"")) == "AccessDenied"
    assert refused(lambda: as_restorer.delete_object(Bucket=bucket, Key=PREFIX + PHOTO)) == "AccessDenied"

    # verify, with the restorer's keys: both the overwritten photo and the forged report are named
    verify = drill("verify", "-o", "json")
    assert verify.code == 1, verify.out
    text = drill("verify")
    assert text.code == 1
    assert_verify_names_the_attack(verify.json(), text.out, PHOTO, before_attack, forged_report, forged_manifest)
    as_it_was = drill("verify", "-o", "json", "--as-of", iso(before_attack))
    assert as_it_was.code == 0, as_it_was.out  # the bucket as it was before the attack is whole

    # restore without --as-of: the forged manifest is not believed, the overwritten photo not restored
    now = drill("restore", "--to", str(tmp_path / "now"), "-o", "json", "--only", "library")
    assert now.code == 1, now.out
    plain = now.json()
    kinds = {(p["path"], p["kind"]) for p in plain["problems"]}
    assert (PHOTO, "changed-in-s3") in kinds and (forged_manifest, "untrusted-manifest") in kinds
    assert (forged_report, "untrusted-report") in kinds
    assert not (tmp_path / "now" / PHOTO).exists()
    assert plain["last_sync_report"] == real_report  # the 2099 report is not the last sync

    # restore as of before the attack: the true bytes, byte for byte
    then = tmp_path / "then"
    result = drill("restore", "--to", str(then), "-o", "json", "--as-of", iso(before_attack))
    assert result.code == 0, result.out
    report = result.json()
    assert md5s(then) == original and len(original) > 50
    assert report["versioned"] is True and report["untrusted_reports"] == 0
    assert report["last_sync_report"] == real_report

    # the status: the report that finished in 2099 must not make a three-day-old backup look fresh
    three_days_on = dt.datetime.fromtimestamp(before_attack, dt.UTC) + dt.timedelta(days=3)
    offsite, check = media_check(rgw.endpoint, bucket, restorer, three_days_on, monkeypatch)
    assert check.state == "stale", check
    assert "ignored a run report dated 2099-12-31T23:59:59Z" in check.detail
    assert offsite.reports.latest_ok is not None and offsite.reports.latest_ok.key == real_report
    assert [r.key for r in offsite.reports.ignored] == [forged_report]


def damage(paths: list[Path]) -> None:
    """Every other file truncated to nothing, the rest scrambled in place with size and mtime kept."""
    for n, path in enumerate(paths):
        if n % 2:
            path.write_bytes(b"")
        else:
            st = path.stat()
            data = bytearray(path.read_bytes())
            data[: min(256, len(data))] = os.urandom(min(256, len(data)))
            path.write_bytes(bytes(data))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_tenth_of_the_library_damaged_trips_the_breaker_and_every_original_restores(
    drill: RunSync,
    monkeypatch: pytest.MonkeyPatch,
    rgw: RadosGateway,
    guarded_bucket: str,
    identities: dict[str, Identity],
    sample: SampleLibrary,
    tmp_path: Path,
) -> None:
    """A failing disk or ransomware on the node damages a tenth of the originals in place: the writer's
    next backup must hold every damaged file (`suspicious-mass-change`, exit 1) so that not one object
    gains a version, and the restorer must get every original back, now and as of before the damage."""
    bucket = guarded_bucket
    owner = client(rgw.endpoint)
    good = md5s(sample.root)
    act_as(monkeypatch, identities["writer"])
    first = drill("backup", "-o", "json")
    assert first.code == 0, first.out
    stored = versions(owner, bucket)
    assert len(stored) == len(good) and all(len(v) == 1 for v in stored.values())
    time.sleep(2.2)  # ctimes older than the racy window
    before_damage = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    time.sleep(1.1)  # S3 times are not finer than the server's: the damage lands strictly after the mark
    victims = sorted(rel for rel in good if (sample.root / rel).stat().st_size)[::10]  # a tenth of the originals
    damage([sample.root / rel for rel in victims])

    night = drill("backup", "-o", "json")
    assert night.code == 1, night.out
    report = night.json()
    assert report["mass_change"]["tripped"] is True and report["mass_change"]["changed"] == len(victims)
    held = sorted(p["path"] for p in report["problems"] if p["kind"] == "suspicious-mass-change")
    assert held == victims and report["overwrites"] == []
    assert versions(owner, bucket) == stored  # not one version added: zero overwrites

    act_as(monkeypatch, identities["restorer"])
    for name, extra in (("current", []), ("as-of", ["--as-of", before_damage])):
        target = tmp_path / name
        restored = drill("restore", "--to", str(target), "-o", "json", "--only", ",".join(ORIGINALS), *extra)
        assert restored.code == 0, restored.out
        assert md5s(target) == good, name
