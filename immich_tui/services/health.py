"""The one health verdict the plugin, the TUI and monitoring share.

Three checks — media last success age, database last backup age, WAL archiving — each `ok`,
`stale`, `failing` or `unknown`, and the media check also `suspended`. The verdict is `healthy` when all
are ok, `error` when the state could not be read at all, otherwise `degraded`. Exit codes follow: 0, 2, 1.

The media check is also `error` when the latest run report says the run found a suspicious mass change
(many originals changed or gone at once), whatever the Job's result: a stale backup can wait, a bucket
being overwritten cannot. It is `error` too when a run report it read is not one (or the restorer Secret
holds keys that cannot be keys): the tools wrote no such thing, and the report it hides may be the one
that raised the alarm. A run report that vouches for nothing (dated in the future) is named in the
check's detail, so a green check is never silently the work of a forged report.

A suspended CronJob makes the media check `suspended` (degraded) however fresh the last success is: the
copy is current today, but nothing will keep it so, and a suspension forgotten after maintenance is the
quiet way a backup stops. It rests only on the sync's own runs: a media restore says nothing about
whether the offsite copy is current.

A fourth check, `drill`, says whether a restore was last proven to work: `ok` when the newest drill report
passed and is younger than the drill threshold (35 days by default: a monthly drill and a few days of
slack), `stale` when older, `failing` when the newest drill failed, `unknown` when drill reports exist but
none can be believed. It is `off` until the first drill report exists, and `off` checks never count in the
verdict: a cluster that never ran a drill is not less safe than it was before drills existed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from immich_tui.services import clock

if TYPE_CHECKING:
    from immich_tui.services.drill import LatestDrill

STALE_AFTER_HOURS = 36.0
DRILL_STALE_AFTER_DAYS = 35.0
DRILL_HINT = "`kubectl immich-backup drill` restores the database and a media sample into scratch space and checks them"


@dataclass
class Check:
    name: str  # media | database | wal | drill
    state: str  # ok | stale | failing | suspended | unknown | error | off (not counted)
    age_seconds: float | None
    detail: str
    hint: str = ""


@dataclass
class Verdict:
    state: str  # healthy | degraded | error
    checks: list[Check]
    stale_after_hours: float
    at: dt.datetime = field(default_factory=clock.now)

    @property
    def exit_code(self) -> int:
        return {"healthy": 0, "degraded": 1}.get(self.state, 2)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)


def _age(when: dt.datetime | None, now: dt.datetime) -> float | None:
    return clock.age_seconds(when, now)


def media_check(
    last_success: dt.datetime | None,
    latest_state: str | None,
    latest_reason: str,
    threshold: float,
    now: dt.datetime,
    error: str = "",
    *,
    mass_change: str = "",
    ignored: str = "",
    invalid: str = "",
    suspended: bool = False,
    suspended_since: dt.datetime | None = None,
) -> Check:
    """`mass_change`: what the latest run report says of a suspicious mass change; `ignored`: the run
    reports that were not believed, said after the detail; `invalid`: what in the offsite data is not what
    the tools write (a run report that is not one), which makes the check an error, said first."""
    if error:
        return Check("media", "error", None, error)
    age = _age(last_success, now)
    if mass_change:
        return Check(
            "media",
            "error",
            age,
            "; ".join(part for part in (invalid, mass_change, ignored) if part),
            "many originals changed or disappeared in one run: compare the bucket with `immich-sync verify`, and if "
            "they were not meant to change, rotate the writer's keys and restore with `immich-sync restore --as-of` "
            "a time before it",
        )
    check = _media_age_check(last_success, latest_state, latest_reason, threshold, now, age)
    if suspended:
        check = _suspended(check, suspended_since, now)
    if invalid:
        return Check(
            "media",
            "error",
            age,
            "; ".join(part for part in (invalid, check.detail, ignored) if part),
            "the offsite data this check rests on is not what the tools write: fix or remove what the detail "
            "names (`immich-sync verify` names every run report it does not trust)",
        )
    if ignored:
        check.detail += f"; {ignored}"
        check.hint = check.hint or "a run report that vouches for nothing was found: run `immich-sync verify`"
    return check


def _suspended(check: Check, since: dt.datetime | None, now: dt.datetime) -> Check:
    """A suspended CronJob is at least degraded; a failing or stale check stays what it is, and says why."""
    note = f"suspended since {clock.ago(since, now)} ({clock.iso(since)})" if since else "suspended"
    resume = "the nightly sync is suspended: `kubectl immich-backup resume` once the maintenance is over"
    if check.state == "ok":
        return Check("media", "suspended", check.age_seconds, f"{note}; {check.detail}", resume)
    hint = check.hint if check.state == "failing" else resume  # a failed run is fixed before it is resumed
    return Check(check.name, check.state, check.age_seconds, f"{check.detail}; {note}", hint)


def _media_age_check(
    last_success: dt.datetime | None,
    latest_state: str | None,
    latest_reason: str,
    threshold: float,
    now: dt.datetime,
    age: float | None,
) -> Check:
    if latest_state == "failed":
        hint = "see `kubectl immich-backup logs` for the failed run, then `kubectl immich-backup sync --wait`"
        detail = "the latest sync failed" + (f" ({latest_reason})" if latest_reason else "")
        if last_success:
            detail += f"; last success {clock.ago(last_success, now)}"
        return Check("media", "failing", age, detail, hint)
    if last_success is None:
        return Check(
            "media",
            "unknown",
            None,
            "no successful media sync on record",
            "run `kubectl immich-backup sync --wait` to make the first one",
        )
    if age is not None and age > threshold:
        return Check(
            "media",
            "stale",
            age,
            f"last success {clock.ago(last_success, now)}",
            "is the CronJob suspended or failing? see `kubectl immich-backup jobs`",
        )
    return Check("media", "ok", age, f"last success {clock.ago(last_success, now)}")


def database_check(
    last_backup: dt.datetime | None,
    last_backup_condition: str,
    threshold: float,
    now: dt.datetime,
    error: str = "",
) -> Check:
    if error:
        return Check("database", "error" if "not installed" not in error else "unknown", None, error)
    age = _age(last_backup, now)
    if last_backup_condition == "False":
        return Check(
            "database",
            "failing",
            age,
            "the last base backup failed (LastBackupSucceeded=False)",
            "see `kubectl immich-backup db backups` for the error",
        )
    if last_backup is None:
        return Check(
            "database",
            "unknown",
            None,
            "no completed base backup on record",
            "run `kubectl immich-backup db backup --wait`",
        )
    if age is not None and age > threshold:
        return Check(
            "database",
            "stale",
            age,
            f"last base backup {clock.ago(last_backup, now)}",
            "check the ScheduledBackup (6-field cron, not suspended)",
        )
    return Check("database", "ok", age, f"last base backup {clock.ago(last_backup, now)}")


def wal_check(
    status: str, reason: str, message: str, since: dt.datetime | None, now: dt.datetime, error: str = ""
) -> Check:
    if error:
        return Check("wal", "error" if "not installed" not in error else "unknown", None, error)
    if status == "True":
        return Check("wal", "ok", None, "continuous archiving works")
    if status == "False":
        detail = f"WAL archiving failing since {clock.ago(since, now)}" if since else "WAL archiving failing"
        return Check(
            "wal",
            "failing",
            _age(since, now),
            f"{detail}: {message or reason}".rstrip(": "),
            "check the object store credentials and the instance logs",
        )
    return Check("wal", "unknown", None, "no ContinuousArchiving condition on the cluster")


def _drill_figures(latest: LatestDrill) -> str:
    """RPO/RTO and the missing-asset count of a drill, as one clause."""
    report = latest.report
    if report is None:
        return ""
    parts = []
    if report.rpo_db_seconds is not None:
        parts.append(f"RPO DB {clock.short(report.rpo_db_seconds)}")
    if report.rpo_media_seconds is not None:
        parts.append(f"media {clock.short(report.rpo_media_seconds)}")
    if report.rto_db_seconds is not None:
        parts.append(f"RTO DB {clock.short(report.rto_db_seconds)}")
    if report.cross_check is not None:
        parts.append(f"{report.cross_check.missing:,} missing")
    return ", ".join(parts)


def _drill_failure(latest: LatestDrill) -> str:
    """What the failed drill found: missing originals, failed samples, else its first problem."""
    report = latest.report
    assert report is not None
    parts = []
    check, sample = report.cross_check, report.sample
    if check is not None and check.missing:
        example = f" (e.g. {check.missing_examples[0]})" if check.missing_examples else ""
        parts.append(f"{check.missing:,} asset(s) missing their original offsite{example}")
    if sample is not None and sample.failed:
        parts.append(f"{len(sample.failed):,} of {sample.requested:,} sampled object(s) failed verification")
    if not parts and report.problems:
        parts.append(report.problems[0])
    return "; ".join(parts) or f"outcome {report.outcome}"


def drill_check(latest: LatestDrill | None, stale_after_days: float, now: dt.datetime, error: str = "") -> Check:
    """The restore drill, judged by its newest believable report, dated by S3's LastModified (the age)."""
    if error:  # drill reports unreadable (no read access): said, never counted, like a missing drill
        return Check("drill", "off", None, f"drill reports not readable: {error}")
    if latest is None:
        return Check("drill", "off", None, "no restore drill on record", DRILL_HINT)
    ignored = ""
    if latest.ignored:
        first = latest.ignored[0]
        more = len(latest.ignored) - 1
        ignored = f"ignored drill report {first.key} ({first.reason})" + (f" and {more} more" if more else "")
    if latest.report is None:
        return Check(
            "drill",
            "unknown",
            None,
            f"no drill report can be believed: {ignored}",
            "drill reports are written by the drill alone: find who wrote these, then run a drill",
        )
    age = _age(latest.stored, now)
    when = f"last drill {clock.ago(latest.stored, now)}"
    figures = _drill_figures(latest)
    tail = "".join(f"; {part}" for part in (ignored,) if part)
    if latest.report.outcome != "ok":
        return Check(
            "drill",
            "failing",
            age,
            f"{when} failed: {_drill_failure(latest)}{tail}",
            f"read the drill report {latest.key}; fix what it names, then run the drill again",
        )
    if age is not None and age > stale_after_days * 86400:
        return Check(
            "drill",
            "stale",
            age,
            f"{when} (older than {stale_after_days:g} days){', ' + figures if figures else ''}{tail}",
            "is the CronJob immich-restore-drill suspended or failing? " + DRILL_HINT,
        )
    return Check("drill", "ok", age, f"{when} passed{': ' + figures if figures else ''}{tail}")


def verdict(checks: list[Check], threshold_hours: float = STALE_AFTER_HOURS) -> Verdict:
    states = {c.state for c in checks if c.state != "off"}
    if "error" in states:
        state = "error"
    elif states == {"ok"}:
        state = "healthy"
    else:
        state = "degraded"
    return Verdict(state, checks, threshold_hours)
