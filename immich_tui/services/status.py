"""One entry point to every service for a given cluster target, and the status they add up to.

The plugin and the TUI both hold a `Services`; each section of the status is read on its own
thread and fails on its own, so a missing CNPG or an unreadable bucket never hides the rest.

A section whose data does not fit its schema (`errors.InvalidData`: a Job whose `status.conditions` is
text, a Cluster with `spec.instances: three`, a run report that is not one, a restorer Secret whose
key cannot be a key) is `invalid`: its error names the object and the field, and the verdict is an
error (exit 2) whatever the rest says. An offsite section that is merely unavailable (no read
credentials) stays informative, as the verdict rests on the sync and the database.

The drill section is the newest restore drill report (`drill.latest_drill`), read with the same reader
keys as the run reports it sits beside; it only counts once a drill has run (`health.drill_check`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from immich_tui.services import clock, health
from immich_tui.services.cnpg import Database, DbState
from immich_tui.services.drill import LatestDrill, latest_drill
from immich_tui.services.errors import InvalidData, ServiceError
from immich_tui.services.kube import ClusterError, Kube, Unreachable
from immich_tui.services.library import Library
from immich_tui.services.media import DEFAULT_CRONJOB, JobHistory, JobInfo, MediaBackup
from immich_tui.services.offsite import (
    RESTORE_SECRETS,
    Offsite,
    OffsiteState,
    OffsiteUnavailable,
    Reader,
    resolve_reader,
)
from sync_engine.store import StoreError

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "immich"
    db_namespace: str = "postgresql"
    db_cluster: str = "immich-db"
    cronjob: str = DEFAULT_CRONJOB
    read_only: bool = False
    stale_after_hours: float = health.STALE_AFTER_HOURS
    s3_profile: str | None = None
    drill_stale_after_days: float = health.DRILL_STALE_AFTER_DAYS


@dataclass
class Section:
    """A part of the status: its value, or the one-line reason it could not be read."""

    value: Any = None
    error: str = ""
    unreachable: bool = field(default=False, repr=False)
    invalid: bool = field(default=False, repr=False)  # the data broke its schema (the error names where)


@dataclass
class StatusReport:
    context: str
    namespace: str
    media: Section
    database: Section
    offsite: Section
    verdict: health.Verdict
    at: Any = field(default_factory=clock.now)
    drill: Section = field(default_factory=Section)  # value: LatestDrill | None (None: no drill on record)


def _section(fn: Callable[[], T]) -> Section:
    try:
        return Section(fn())
    except ServiceError as exc:
        return Section(None, str(exc), isinstance(exc, Unreachable), isinstance(exc, InvalidData))


def _syncs(history: JobHistory) -> list[JobInfo]:
    """The runs of the sync itself, newest first: only they say how current the offsite copy is."""
    return [job for job in history.jobs if job.kind == "sync"]


def _offsite_problem(offsite: Section) -> str:
    """What in the offsite data is not what the tools write (a run report that is not one, a broken
    restorer Secret), or "": the media check rests on it, so it cannot be judged green."""
    if offsite.invalid:
        return offsite.error
    state: OffsiteState | None = offsite.value
    return state.reports.problem() if state is not None else ""


class Services:
    def __init__(self, target: Target, env: Mapping[str, str] | None = None) -> None:
        self.target = target
        self.env = dict(os.environ if env is None else env)
        self._kube: Kube | None = None
        self._reader: Reader | None = None
        self._restorer: Reader | None = None

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            self._kube = Kube(self.target.kubeconfig, self.target.context, read_only=self.target.read_only)
        return self._kube

    @property
    def media(self) -> MediaBackup:
        return MediaBackup(self.kube, self.target.namespace, self.target.cronjob)

    @property
    def database(self) -> Database:
        return Database(self.kube, self.target.db_namespace, self.target.db_cluster)

    @property
    def library(self) -> Library:
        return Library(self.kube, self.target.namespace)

    def _kube_or_none(self) -> Kube | None:
        try:
            return self.kube
        except ClusterError:
            return None  # environment or profile credentials still work without a cluster

    def reader(self) -> Reader:
        """What status, offsite and inventory read with: the viewer's keys, else the restorer's."""
        if self._reader is None:
            self._reader = resolve_reader(
                self._kube_or_none(), self.target.namespace, self.env, profile=self.target.s3_profile
            )
        return self._reader

    def restorer_reader(self) -> Reader:
        """What verify and the database catalog read with: the restorer's keys, whose policy reaches every
        media object, its versions and the database archive."""
        if self._restorer is None:
            self._restorer = resolve_reader(
                self._kube_or_none(),
                self.target.namespace,
                self.env,
                profile=self.target.s3_profile,
                secrets=RESTORE_SECRETS,
            )
        return self._restorer

    def offsite(self) -> Offsite:
        return Offsite(self.reader, restorer=self.restorer_reader)

    def latest_drill(self) -> LatestDrill | None:
        """The newest restore drill report under the report prefix (None: no drill has run yet)."""
        offsite = self.offsite()
        try:
            return latest_drill(offsite.store, offsite.reader.report_prefix, clock.now())
        except StoreError as exc:
            raise OffsiteUnavailable(str(exc)) from None

    def close(self) -> None:
        if self._kube is not None:
            self._kube.close()

    # The verdict ---------------------------------------------------------------------------------
    def status(self, report_limit: int = 3) -> StatusReport:
        kube = self.kube  # connection errors surface here, before threads start
        with ThreadPoolExecutor(max_workers=3) as pool:
            media = pool.submit(_section, lambda: self.media.history(limit=5))
            database = pool.submit(_section, self.database.state)
            offsite = pool.submit(self._offsite_and_drill, report_limit)
            m, d, (o, r) = media.result(), database.result(), offsite.result()
        problem = _offsite_problem(o)
        if problem and not o.error:  # the state is still shown (an older report stood in); the error says why
            o.error, o.invalid = problem, True
        if m.unreachable and d.unreachable:
            raise Unreachable(m.error)  # nothing to judge: say so once, as an error
        return StatusReport(kube.context, self.target.namespace, m, d, o, self.judge(m, d, o, r), drill=r)

    def _offsite_and_drill(self, report_limit: int) -> tuple[Section, Section]:
        """The offsite state, then the drill reports beside the run reports with the same reader: read one
        after the other, so the reader Secret is read once, and not again when it could not be read."""
        offsite = _section(lambda: self.offsite().state(listing=False, report_limit=report_limit))
        if self._reader is None:  # no read access: the offsite section already says why
            return offsite, Section(None, offsite.error or "no read access to the bucket")
        return offsite, _section(self.latest_drill)

    def judge(
        self, media: Section, database: Section, offsite: Section, drill: Section | None = None
    ) -> health.Verdict:
        """`drill` None: drill reports were not read, and the drill check says so without counting."""
        now = clock.now()
        threshold = self.target.stale_after_hours * 3600
        history: JobHistory | None = media.value
        last_success = None
        latest_state, latest_reason = None, ""
        suspended, suspended_since = False, None
        if history is not None:
            last_success = self.media_last_success(history, offsite.value)
            finished = [j for j in _syncs(history) if j.status in ("succeeded", "failed")]
            if finished:
                latest_state, latest_reason = finished[0].status, finished[0].exit_reason
            suspended, suspended_since = history.cronjob.suspended, history.cronjob.suspended_since
        mass_change, ignored = self.report_warnings(offsite.value)
        media_check = health.media_check(
            last_success,
            latest_state,
            latest_reason,
            threshold,
            now,
            media.error,
            mass_change=mass_change,
            ignored=ignored,
            invalid=_offsite_problem(offsite),
            suspended=suspended,
            suspended_since=suspended_since,
        )
        db: DbState | None = database.value
        if database.invalid:  # an error whatever its text says (it quotes the object, which may say anything)
            checks = [
                health.Check("database", "error", None, database.error),
                health.Check("wal", "error", None, database.error),
            ]
        elif db is None:
            checks = [
                health.database_check(None, "", threshold, now, database.error),
                health.wal_check("", "", "", None, now, database.error),
            ]
        else:
            arch = db.cluster.continuous_archiving
            checks = [
                health.database_check(db.last_backup, db.cluster.last_backup_succeeded.status, threshold, now),
                health.wal_check(arch.status, arch.reason, arch.message, arch.since, now),
            ]
        if drill is None:
            drill_check = health.Check("drill", "off", None, "drill reports not read")
        else:
            drill_check = health.drill_check(drill.value, self.target.drill_stale_after_days, now, drill.error)
        return health.verdict([media_check, *checks, drill_check], self.target.stale_after_hours)

    @staticmethod
    def report_warnings(offsite: OffsiteState | None) -> tuple[str, str]:
        """(the latest run report's suspicious mass change, the run reports that were not believed)."""
        if offsite is None:
            return "", ""
        reports = offsite.reports
        latest = reports.latest
        mass = ""
        if latest is not None and latest.mass_change is not None and latest.mass_change.tripped:
            mass = f"{latest.mass_change.describe()} (run report {latest.key})"
        ignored = ""
        if reports.ignored:
            first = reports.ignored[0]
            more = len(reports.ignored) - 1
            ignored = f"ignored a run report dated {first.dated} ({first.reason})" + (
                f" and {more} more" if more else ""
            )
        return mass, ignored

    @staticmethod
    def media_last_success(history: JobHistory, offsite: OffsiteState | None) -> Any:
        """The newest of the CronJob's lastSuccessfulTime, a succeeded sync Job, and an `ok` run report: a
        media restore that succeeded copied the bucket back, it did not bring the bucket up to date."""
        candidates = [history.cronjob.last_success]
        candidates += [j.finished for j in _syncs(history) if j.status == "succeeded"]
        if offsite is not None and offsite.reports.latest_ok is not None:
            candidates.append(offsite.reports.latest_ok.finished)
        known = [c for c in candidates if c]
        return max(known) if known else None
