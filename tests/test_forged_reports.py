"""Run reports and manifests are the writer's word: the status, verify and restore check it against time.

A report dated in the future vouches for nothing (the media check says it ignored one), an unreadable
report named as the newest is passed over for the next one and makes the media check an error naming it,
a report whose content was written before it finished (by S3's LastModified) or disagrees with its name
is named by verify, and a report that says the run tripped the mass-change alarm turns the media check
red whatever the Job did. Everything runs
against moto over HTTP with a real backup of the sample library.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from immich_tui.services.media import CronJobInfo, JobHistory, JobInfo
from immich_tui.services.offsite import Offsite, Reader
from immich_tui.services.status import Section, Services, Target
from sync_engine.config import S3Settings, SyncSettings
from sync_engine.store import ObjectStore, StaticCredentials
from sync_engine.verify import verify
from tests.conftest import Result
from tests.forgery import (
    PREFIX,
    REPORTS,
    iso,
    line_for,
    manifest,
    manifest_key,
    newest_modified,
    report_body,
    run_key,
)

RunSync = Callable[..., Result]
PHOTO = "library/7f3c2a10-admin/2024/01/IMG_0001.jpg"


@pytest.fixture
def backed_up(run_sync: RunSync, s3: LocalS3, bucket: str) -> dict[str, Any]:
    """A real backup; returns its report (as stored) with the time S3 stored it."""
    result = run_sync("backup", "-o", "json")
    assert result.code == 0, result.err
    key = result.json()["report_key"]
    body = json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    return {**body, "stored": newest_modified(s3.client(), bucket)}


def offsite_for(s3: LocalS3, bucket: str) -> Offsite:
    settings = S3Settings(bucket=bucket, region="us-east-1", endpoint_url=s3.endpoint)
    return Offsite(Reader("test", settings, PREFIX, REPORTS, StaticCredentials(DEMO_KEY_ID, DEMO_SECRET)))


def history(succeeded_at: dt.datetime | None) -> JobHistory:
    cronjob = CronJobInfo("immich-media-offsite-sync", "immich", "30 2 * * *", "UTC", False, *[None] * 3, [], "", "")
    jobs = []
    if succeeded_at is not None:
        jobs.append(JobInfo("sync-1", "succeeded", succeeded_at, succeeded_at, 1.0, "pod", "", 0, False))
    return JobHistory(cronjob, jobs, len(jobs))


def media_check(offsite: Offsite, jobs: JobHistory) -> Any:
    state = offsite.state(listing=False, report_limit=3)
    verdict = Services(Target()).judge(Section(jobs), Section(None, "CNPG is not installed"), Section(state))
    return state, verdict.check("media")


def put(s3: LocalS3, bucket: str, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=key, Body=body)


def pin(monkeypatch: pytest.MonkeyPatch, when: float) -> dt.datetime:
    now = dt.datetime.fromtimestamp(when, dt.UTC)
    monkeypatch.setenv("IMMICH_BACKUP_NOW", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return now


# -- the status ----------------------------------------------------------------------------------


def test_a_report_dated_in_the_future_makes_nothing_green(
    backed_up: dict[str, Any], s3: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By its name (2099) or only by its content (a plausible name, finished_at in 2099): ignored, and said."""
    by_name = run_key("20991231T235959Z")
    put(s3, bucket, by_name, report_body(backed_up, by_name, "2099-12-31T23:59:59Z", "2099-12-31T23:59:59Z"))
    started = backed_up["stored"] + 60
    by_content = run_key(started, run_id="0badc0df")
    put(s3, bucket, by_content, report_body(backed_up, by_content, iso(started), "2099-06-30T00:00:00Z"))

    pin(monkeypatch, backed_up["stored"] + 3 * 86400)  # three days on: the real backup is stale
    state, check = media_check(offsite_for(s3, bucket), history(None))
    assert check.state == "stale", check
    assert "ignored a run report dated 2099-12-31T23:59:59Z" in check.detail and "and 1 more" in check.detail
    assert state.reports.latest_ok is not None and state.reports.latest_ok.key == backed_up["report_key"]
    assert {r.key for r in state.reports.ignored} == {by_name, by_content}
    ignored = {r.key: r for r in state.reports.ignored}
    assert ignored[by_content].dated == "2099-06-30T00:00:00Z" and "content" in ignored[by_content].reason
    # still listed as runs, each marked, so the history shows what was written
    assert {r.key: bool(r.ignored) for r in state.reports.runs}[by_name] is True
    assert state.requests == {"ListObjectsV2": 1, "GetObject": 3}


def test_an_unreadable_newest_report_falls_back_to_the_next_one(
    backed_up: dict[str, Any], s3: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = pin(monkeypatch, backed_up["stored"] + 600)
    junk = run_key(backed_up["stored"] + 120, run_id="0badc0de")
    malformed = run_key(backed_up["stored"] + 60, run_id="0badc0df")
    put(s3, bucket, junk, b"\x00\xff not a report")
    put(s3, bucket, malformed, json.dumps({"run_id": 5, "started_at": []}).encode())
    state, check = media_check(offsite_for(s3, bucket), history(None))
    assert state.reports.latest_ok is not None and state.reports.latest_ok.key == backed_up["report_key"]
    assert state.basis == f"run report {backed_up['report_key']}"
    notes = " ".join(state.reports.notes)
    assert junk in notes and malformed in notes and "not a run report" in notes
    assert state.reports.total == 3 and now
    # the older report still dates the last success, but the tools wrote no such reports: an error, named
    assert list(state.reports.unreadable) == [junk, malformed]
    assert check.state == "error" and "last success" in check.detail
    assert check.detail.startswith(f"run report {junk}: not a run report (") and "(and 1 more)" in check.detail


def test_a_tripped_mass_change_turns_the_media_check_red_whatever_the_job_did(
    backed_up: dict[str, Any], s3: LocalS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = backed_up["stored"] + 60
    key = run_key(started, run_id="0badc0de", status="aborted")
    alarm = {"tripped": True, "changed": 150, "in_bucket": 203, "examples": [PREFIX + PHOTO]}
    body = report_body(backed_up, key, iso(started), iso(started + 5), status="aborted", mass_change=alarm)
    put(s3, bucket, key, body)
    now = pin(monkeypatch, started + 600)
    state, check = media_check(offsite_for(s3, bucket), history(now - dt.timedelta(minutes=5)))
    assert check.state == "error", check
    assert check.detail.startswith("suspicious mass change: 150 of 203 files changed")
    assert state.reports.latest is not None and state.reports.latest.key == key
    alarmed = state.reports.latest.mass_change
    assert alarmed is not None and alarmed.tripped and alarmed.examples == [PREFIX + PHOTO]
    # the next run's report without the alarm clears it
    calm = run_key(started + 120, run_id="0badc0df")
    body = report_body(backed_up, calm, iso(started + 120), iso(started + 125), mass_change={"tripped": False})
    put(s3, bucket, calm, body)
    assert media_check(offsite_for(s3, bucket), history(now - dt.timedelta(minutes=5)))[1].state == "ok"


# -- verify reads every run report -----------------------------------------------------------------


def test_verify_names_a_report_written_before_it_finished_or_whose_name_and_content_disagree(
    backed_up: dict[str, Any], s3: LocalS3, bucket: str, sample: Any
) -> None:
    """A name within the clock skew, content that S3's LastModified gives away: judged an hour later, when
    its finished_at is no longer in the future, it was plainly written before it finished."""
    stored = backed_up["stored"]
    early = run_key(stored - 60, run_id="0badc0de")
    finished = stored + 3600  # claims to have finished an hour after S3 stored it
    put(s3, bucket, early, report_body(backed_up, early, iso(stored - 60), iso(finished)))
    put(s3, bucket, manifest_key(early), manifest(line_for(PREFIX + PHOTO, b"other bytes")))
    renamed = run_key(stored - 120, run_id="0badc0df")
    put(s3, bucket, renamed, report_body(backed_up, renamed, iso(stored - 7200), iso(stored - 7100)))

    settings = SyncSettings(library_root=sample.root, media_prefix=PREFIX, report_prefix=REPORTS, s3=_s3(s3, bucket))
    store = ObjectStore(settings.s3, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET))
    result = verify(settings, store, now=stored + 7200)
    assert not result.ok
    found = {(p["kind"], p["key"], p.get("reason")) for p in result.problems}
    assert ("untrusted-report", early, "written-early") in found
    assert ("untrusted-manifest", manifest_key(early), "content") in found  # its run's report is forged
    assert ("untrusted-report", renamed, "content") in found
    assert result.run_reports_read == 3 and result.untrusted_reports == 3
    assert result.verified == result.recorded  # the forged manifest vouched for nothing
    from sync_engine.asof import FUTURE_SKEW, WRITE_SKEW

    assert WRITE_SKEW == FUTURE_SKEW == 900  # the tolerances the README documents

    assert ("untrusted-report", early, "future") not in found  # by then its finished_at is in the past
    today = verify(settings, ObjectStore(settings.s3, credentials=StaticCredentials(DEMO_KEY_ID, DEMO_SECRET)))
    reasons = {p.get("reason") for p in today.problems if p["key"] == early}
    assert reasons == {"future", "written-early"}  # checked right away, it is also dated in the future


def _s3(s3: LocalS3, bucket: str) -> S3Settings:
    return S3Settings(bucket=bucket, region="us-east-1", endpoint_url=s3.endpoint)


# -- restore does not believe a forged manifest ------------------------------------------------------


def test_restore_does_not_restore_what_only_a_forged_manifest_vouches_for(
    run_sync: RunSync, backed_up: dict[str, Any], s3: LocalS3, bucket: str, tmp_path: Path
) -> None:
    injected = PREFIX + "upload/injected/evil.jpg"
    put(s3, bucket, injected, b"evil")
    forged = run_key("20991231T235959Z")
    put(s3, bucket, manifest_key(forged), manifest(line_for(injected, b"evil")))
    result = run_sync("restore", "--to", str(tmp_path / "r"), "-o", "json", "--only", "upload")
    assert result.code == 1, result.out
    report = result.json()
    problems = {(p["path"], p["kind"]) for p in report["problems"]}
    assert problems == {(manifest_key(forged), "untrusted-manifest"), ("upload/injected/evil.jpg", "untrusted-record")}
    assert report["untrusted_reports"] == 1 and report["totals"]["failed"] == 1
    assert not (tmp_path / "r/upload/injected/evil.jpg").exists()
    steps = " ".join(report["next_steps"])
    assert "not trusted" in steps and "--as-of" in steps
    text = run_sync("restore", "--to", str(tmp_path / "t"), "--only", "upload")
    assert "untrusted-manifest" in text.out and "dated 2099-12-31T23:59:59Z, in the future" in text.out
