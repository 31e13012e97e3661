"""The leaked-key drill: what a writer key can do to a versioned bucket, and that the restorer sees through it.

moto enforces IAM with the shipped policies (deploy/iam/media-writer.json for the writer,
deploy/iam/restorer.json for the restorer: s3:ListBucket, s3:ListBucketVersions, s3:GetObject,
s3:GetObjectVersion, s3:RestoreObject, exactly), with their prefix conditions evaluated
(tests/strict_iam.py).
The engine backs up the sample library with the writer's keys; then, with the same keys, an attacker
overwrites a photo and forges a manifest and a run report dated in the future, all of which the writer's
policy allows. With the restorer's keys, `verify` must fail naming the overwritten photo and the forged
report, `restore --as-of` a time before the attack must bring back the true bytes byte for byte, and
the status's media check must not be turned green by the forged report.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from immich_tui.demo.library import SampleLibrary
from immich_tui.demo.s3 import LocalS3, bucket_policy
from immich_tui.services.media import CronJobInfo, JobHistory
from immich_tui.services.offsite import Offsite, Reader
from immich_tui.services.status import Section, Services, Target
from sync_engine.config import S3Settings
from sync_engine.store import StaticCredentials
from tests.conftest import Result
from tests.forgery import (
    PREFIX,
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
from tests.strict_iam import StrictIamS3

RunSync = Callable[..., Result]
DRILL = "immich-leaked-drill"
EXACT = "immich-leaked-exact"
IAM = Path(__file__).resolve().parent.parent / "deploy/iam"
RESTORER_ACTIONS = {"s3:ListBucket", "s3:ListBucketVersions", "s3:GetObject", "s3:GetObjectVersion", "s3:RestoreObject"}
PHOTO = "library/b41e9d22-anna/2024/01/IMG_0049.jpg"
ORIGINALS = ("upload", "library", "profile")


def shipped(name: str, bucket: str) -> str:
    return (IAM / name).read_text().replace("BUCKET_NAME", bucket)


def _actions(policy: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for statement in policy["Statement"]:
        actions = statement["Action"]
        found |= {actions} if isinstance(actions, str) else set(actions)
    return found


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[tuple[LocalS3, dict[str, tuple[str, str]]]]:
    with StrictIamS3() as server:
        root = server.client()
        for bucket in (DRILL, EXACT):
            root.create_bucket(Bucket=bucket)
            root.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        keys = {
            "writer": server.iam_user("drill-writer", shipped("media-writer.json", DRILL)),
            "restorer": server.iam_user("drill-restorer", shipped("restorer.json", DRILL)),
            "exact-writer": server.iam_user("exact-writer", shipped("media-writer.json", EXACT)),
            "exact-restorer": server.iam_user("exact-restorer", shipped("restorer.json", EXACT)),
            "admin": server.iam_user("drill-admin", bucket_policy(DRILL, ["s3:*"])),
        }
        server.enforce_iam()
        yield server, keys


def use(monkeypatch: pytest.MonkeyPatch, server: LocalS3, bucket: str, key: tuple[str, str]) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint)
    monkeypatch.setenv("BUCKET_NAME", bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for folder in ORIGINALS
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def attack(writer: Any, bucket: str, real_report_key: str) -> tuple[bytes, str, str]:
    """With the writer's keys only: overwrite a photo, then forge a manifest that vouches for the new
    bytes and a run report dated 2099 that names it (a report from the future is what makes a stale
    backup look fresh). Returns the bytes written and the forged keys."""
    forged_bytes = b"\xff\xd8 the attacker's picture " * 64
    writer.put_object(Bucket=bucket, Key=PREFIX + PHOTO, Body=forged_bytes)
    real = json.loads(writer.get_object(Bucket=bucket, Key=real_report_key)["Body"].read())
    report = run_key("20991231T235959Z", coverage=real_report_key.rsplit("-", 3)[1])
    writer.put_object(Bucket=bucket, Key=manifest_key(report), Body=manifest(line_for(PREFIX + PHOTO, forged_bytes)))
    body = report_body(real, report, "2099-12-31T23:59:59Z", "2099-12-31T23:59:59Z")
    writer.put_object(Bucket=bucket, Key=report, Body=body)
    return forged_bytes, report, manifest_key(report)


def media_check(server: LocalS3, bucket: str, key: tuple[str, str], now: dt.datetime, monkeypatch: Any) -> Any:
    """The status's media check as `kubectl immich-backup status` judges it, with the restorer's keys reading
    the run reports and a CronJob that has never succeeded on its own."""
    monkeypatch.setenv("IMMICH_BACKUP_NOW", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=server.endpoint)
    reader = Reader("restorer keys", settings, PREFIX, "immich/sync-reports/", StaticCredentials(*key))
    offsite = Offsite(reader).state(listing=False, report_limit=3)
    cronjob = CronJobInfo("immich-media-offsite-sync", "immich", "30 2 * * *", "UTC", False, *[None] * 3, [], "", "")
    no_cnpg = Section(None, "CNPG is not installed")
    verdict = Services(Target()).judge(Section(JobHistory(cronjob, [], 0)), no_cnpg, Section(offsite))
    return offsite, verdict.check("media")


def test_the_leaked_writer_key_drill(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, iam_s3: Any, sample: SampleLibrary, tmp_path: Path
) -> None:
    server, keys = iam_s3
    use(monkeypatch, server, DRILL, keys["writer"])
    backup = run_sync("backup", "-o", "json")
    assert backup.code == 0, backup.err
    real_report = backup.json()["report_key"]
    original = files_under(sample.root)
    admin = server.client(key_id=keys["admin"][0], secret=keys["admin"][1])
    before_attack = newest_modified(admin, DRILL)

    use(monkeypatch, server, DRILL, keys["restorer"])
    clean = run_sync("verify", "-o", "json")
    assert clean.code == 0, clean.out  # no false alarm on an honest bucket

    # the attack, with nothing but the writer's keys (which may not delete, nor read a photo)
    after(before_attack)
    writer = server.client(key_id=keys["writer"][0], secret=keys["writer"][1])
    forged_bytes, forged_report, forged_manifest = attack(writer, DRILL, real_report)
    with pytest.raises(botocore.exceptions.ClientError):
        writer.delete_object(Bucket=DRILL, Key=PREFIX + PHOTO, VersionId="null")

    # verify, with the restorer's keys: both the overwritten photo and the forged report are named
    verify = run_sync("verify", "-o", "json")
    assert verify.code == 1, verify.out
    text = run_sync("verify")
    assert text.code == 1
    assert_verify_names_the_attack(verify.json(), text.out, PHOTO, before_attack, forged_report, forged_manifest)

    # restore without --as-of: the forged manifest is not believed, the overwritten photo is not restored
    now = run_sync("restore", "--to", str(tmp_path / "now"), "-o", "json", "--only", "library")
    assert now.code == 1, now.out
    plain = now.json()
    kinds = {(p["path"], p["kind"]) for p in plain["problems"]}
    assert (PHOTO, "changed-in-s3") in kinds and (forged_manifest, "untrusted-manifest") in kinds
    assert (forged_report, "untrusted-report") in kinds
    detail = next(p["detail"] for p in plain["problems"] if p["path"] == PHOTO)
    assert forged_manifest in detail and "not trusted" in detail
    assert not (tmp_path / "now" / PHOTO).exists()
    assert plain["last_sync_report"] == real_report  # the 2099 report is not the last sync

    # restore as of before the attack: the true bytes, byte for byte
    then = tmp_path / "then"
    result = run_sync("restore", "--to", str(then), "-o", "json", "--as-of", iso(before_attack))
    assert result.code == 0, result.out
    report = result.json()
    assert files_under(then) == original
    assert (then / PHOTO).read_bytes() != forged_bytes and report["versioned"] is True
    assert report["untrusted_reports"] == 0 and report["last_sync_report"] == real_report
    assert clean.json()["versioned"] is True and clean.json()["run_reports_read"] == 1

    # the status: the forged report (finished 2099) must not make a stale backup look fresh
    three_days_on = dt.datetime.fromtimestamp(before_attack, dt.UTC) + dt.timedelta(days=3)
    offsite, check = media_check(server, DRILL, keys["restorer"], three_days_on, monkeypatch)
    assert check.state == "stale", check
    assert "ignored a run report dated 2099-12-31T23:59:59Z" in check.detail
    assert offsite.reports.latest_ok is not None and offsite.reports.latest_ok.key == real_report
    assert [r.key for r in offsite.reports.ignored] == [forged_report]


def test_restore_as_of_and_verify_need_no_more_than_the_restorers_five_actions(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, iam_s3: Any, sample: SampleLibrary, tmp_path: Path
) -> None:
    """The same drill's reads under the shipped restorer policy, which is exactly s3:ListBucket,
    s3:ListBucketVersions, s3:GetObject, s3:GetObjectVersion and s3:RestoreObject: no other request
    (GetBucketVersioning, say) is needed."""
    assert _actions(json.loads(shipped("restorer.json", EXACT))) == RESTORER_ACTIONS
    server, keys = iam_s3
    use(monkeypatch, server, EXACT, keys["exact-writer"])
    backup = run_sync("backup", "-o", "json")
    assert backup.code == 0, backup.err
    writer = server.client(key_id=keys["exact-writer"][0], secret=keys["exact-writer"][1])
    restorer = server.client(key_id=keys["exact-restorer"][0], secret=keys["exact-restorer"][1])
    with pytest.raises(botocore.exceptions.ClientError):
        restorer.get_bucket_versioning(Bucket=EXACT)  # enforcement is on: this one is not granted
    before_attack = newest_modified(restorer, EXACT)
    after(before_attack)
    attack(writer, EXACT, backup.json()["report_key"])

    use(monkeypatch, server, EXACT, keys["exact-restorer"])
    verify = run_sync("verify", "-o", "json")
    assert verify.code == 1 and verify.json()["overwritten"] == 1
    clean = run_sync("verify", "-o", "json", "--as-of", iso(before_attack))
    assert clean.code == 0, clean.out
    then = tmp_path / "then"
    result = run_sync("restore", "--to", str(then), "-o", "json", "--as-of", iso(before_attack))
    assert result.code == 0, result.out
    assert files_under(then) == files_under(sample.root)
