"""What is offsite: objects per Immich folder in the bucket, and the sync engine's run reports.

The operator reads S3 with *reader* credentials — an AWS profile, the environment, or a Secret read
through the cluster — never with the CronJob's writer keys. Two Secrets can hold reader keys, and each
read uses the narrower one that suffices: status, offsite and inventory need only the run reports (and,
for exact per-folder totals, a listing of the media prefix), so they use the viewer's keys
(`immich-offsite-viewer`, deploy/iam/viewer.json: no photo and nothing of the database archive can be
downloaded with them) and fall back to the restorer's (`immich-offsite-restorer`) where no viewer Secret
exists or may be read (clusters set up before the viewer existed have only the restorer's). Verify
(HEADs of media objects, version listings) and the database catalog (the archive under
`immich/postgres/`) reach beyond the viewer's policy and always use the restorer's keys.

Run reports are written with the writer's keys, which may leak, so they are not taken at their word: a
report dated in the future (its name's start, or its content's `started_at`/`finished_at`, beyond
`asof.FUTURE_SKEW`) is ignored and listed in `Reports.ignored`, so it can vouch for nothing; a report
that cannot be read or parsed (larger than `report.MAX_REPORT` by its listing or while read, not JSON,
not an object, a field of the wrong type) is skipped for the next one, which `Reports.notes` says, and
named in `Reports.unreadable`, which makes the status an error: the tools wrote no such report. A
report's `mass_change` (the engine found many originals changed or gone) is kept for the verdict.

A reader Secret is cluster data like any other: a key that is not base64, or an access key id that
cannot be sent in a request header, is `InvalidData` naming the Secret and the key. A viewer Secret that
exists but is broken is reported as such, never passed over for the restorer's broader keys.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from immich_tui.services import clock
from immich_tui.services.errors import InvalidData, ServiceError
from immich_tui.services.kube import Access, ClusterError, Forbidden, Kube, NotFound
from immich_tui.services.pointintime import SyncPoint, sync_points
from immich_tui.services.schema import InvalidObject, View
from sync_engine.asof import FUTURE_SKEW
from sync_engine.config import (
    IMMICH_FOLDERS,
    ConfigError,
    S3Settings,
    SyncSettings,
    default_report_prefix,
    normalize_prefix,
    s3_settings,
)
from sync_engine.errors import ObjectTooLarge
from sync_engine.manifests import shown_text
from sync_engine.report import MAX_REPORT, ReportName, RunReport, parse_report_key, stamp
from sync_engine.store import ObjectStore, StaticCredentials, StoreError, check_keys
from sync_engine.verify import VerifyResult, verify

VIEWER_SECRET = "immich-offsite-viewer"  # list and read the run reports, list the media: never download one
RESTORER_SECRET = "immich-offsite-restorer"  # read every object and version: restores, verify, the DB catalog
READ_SECRETS = (VIEWER_SECRET, RESTORER_SECRET)  # status, offsite, inventory: the first that exists is used
RESTORE_SECRETS = (RESTORER_SECRET,)  # verify and the DB catalog need the restorer's reach
_ROLES = {VIEWER_SECRET: "viewer", RESTORER_SECRET: "restorer"}
WRITER_SECRET = "immich-offsite-writer"  # the media writer's keys, in the Immich namespace only
ARCHIVER_SECRET = "immich-offsite-cnpg"  # CNPG's keys for the database archive, in the database namespace
REPORT_DAYS = 62  # report history listed by default (keys start with the run's UTC time)
MAX_SKIPPED = 10  # unreadable or ignored reports read in turn before giving up on an older good one
# A person waits on these reads (status, the TUI, offsite): a few quick tries, then the error, where the
# nightly engine with nobody waiting retries for minutes. Settings asking for less are kept.
INTERACTIVE_ATTEMPTS = 3
INTERACTIVE_CONNECT_SECONDS = 5.0
INTERACTIVE_READ_SECONDS = 30.0


class OffsiteUnavailable(ServiceError):
    """No usable read access to the bucket; the message says what is missing."""


class OffsiteInvalid(OffsiteUnavailable, InvalidData):
    """The restorer Secret holds keys that cannot be keys; the message names the Secret and the key."""


@dataclass
class Reader:
    """Where the operator's S3 access comes from. Holds no secret in its printable fields."""

    source: str
    settings: S3Settings
    media_prefix: str
    report_prefix: str
    credentials: StaticCredentials | None = field(default=None, repr=False)
    profile: str | None = None

    def store(self) -> ObjectStore:
        return ObjectStore(self.settings, credentials=self.credentials, profile=self.profile)


@dataclass
class FolderObjects:
    folder: str
    objects: int = 0
    bytes: int = 0
    storage_classes: dict[str, int] = field(default_factory=dict)
    newest: dt.datetime | None = None


@dataclass
class MassChange:
    """What a run said when it found many originals changed or gone (`mass_change` of its report)."""

    tripped: bool
    changed: int | None = None
    in_bucket: int | None = None
    examples: list[str] = field(default_factory=list)

    def describe(self) -> str:
        changed = f"{self.changed:,}" if self.changed is not None else "many"
        in_bucket = f"{self.in_bucket:,}" if self.in_bucket is not None else "?"
        return f"suspicious mass change: {changed} of {in_bucket} files changed"


@dataclass
class IgnoredReport:
    """A run report that vouches for nothing, and why."""

    key: str
    dated: str  # the time it claims, UTC
    reason: str


@dataclass
class RunSummary:
    key: str
    started: dt.datetime | None
    finished: dt.datetime | None
    status: str  # ok | partial | aborted
    listing: str  # full | incremental
    files: int = 0
    bytes: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    deferred: int = 0
    failed: int = 0
    unstable: int = 0
    duration_seconds: float = 0.0
    error: str = ""
    per_folder: dict[str, dict[str, int]] = field(default_factory=dict)
    mass_change: MassChange | None = None
    ignored: str = ""  # why this report vouches for nothing (dated in the future); empty when it is believed


@dataclass
class Reports:
    runs: list[RunSummary]  # newest first, bodies loaded
    total: int  # report objects in the listed window
    latest_ok: RunSummary | None  # the newest believed `ok` report
    latest: RunSummary | None = None  # the newest believed report of any status
    ignored: list[IgnoredReport] = field(default_factory=list)  # newest first
    notes: list[str] = field(default_factory=list)  # reports skipped for an older one, and why
    points: list[SyncPoint] = field(default_factory=list)  # successful syncs by the listing, oldest first
    listed_since: dt.datetime | None = None  # how far back the listing reached
    unreadable: dict[str, str] = field(default_factory=dict)  # key -> why, newest first: not a run report

    def problem(self) -> str:
        """One line naming the newest report read that is not a run report (and how many more), or ""."""
        if not self.unreadable:
            return ""
        key, why = next(iter(self.unreadable.items()))
        more = len(self.unreadable) - 1
        return f"run report {shown_text(key)}: {why}" + (f" (and {more} more)" if more else "")


@dataclass
class OffsiteState:
    source: str
    bucket: str
    media_prefix: str
    basis: str  # "bucket listing" | "run report <key>"
    folders: list[FolderObjects]
    reports: Reports
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def total_objects(self) -> int:
        return sum(f.objects for f in self.folders)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.folders)


def _decode(secret: View) -> dict[str, str]:
    out = {}
    for key, value in secret.text_map("data").items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8", "replace").strip()
        except (binascii.Error, ValueError):
            raise InvalidObject(f"{secret.what}: data.{shown_text(key, 80)} is not base64") from None
    return out


def read_secret(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    if name in (WRITER_SECRET, ARCHIVER_SECRET):  # a guard against ever wiring keys that write into the tools
        raise ValueError("the operator tools never read the writer's or the archiver's secret")
    body = kube.call(Access("get", "secrets", namespace, name=name), kube.core.read_namespaced_secret, name, namespace)
    return _decode(View.of("Secret", body, namespace=namespace))


def _settings(values: Mapping[str, str], who: str) -> tuple[S3Settings, str, str]:
    try:
        settings = s3_settings(None, values, workers=8)
    except ConfigError as exc:
        raise OffsiteUnavailable(f"{who}: {exc}") from None
    settings = dataclasses.replace(
        settings,
        max_attempts=min(settings.max_attempts, INTERACTIVE_ATTEMPTS),
        connect_timeout=min(settings.connect_timeout, INTERACTIVE_CONNECT_SECONDS),
        read_timeout=min(settings.read_timeout, INTERACTIVE_READ_SECONDS),
    )
    media = values.get("MEDIA_PREFIX", "").strip()
    if not media:
        raise OffsiteUnavailable(f"{who}: MEDIA_PREFIX is not set")
    media = normalize_prefix(media)
    return (
        settings,
        media,
        normalize_prefix(values.get("IMMICH_SYNC_REPORT_PREFIX", "")) or default_report_prefix(media),
    )


def _first_secret(kube: Kube, namespace: str, names: tuple[str, ...]) -> tuple[str, dict[str, str], list[str]]:
    """The first of `names` that exists and may be read: (its name, its keys, why each Secret before it was
    passed over). A missing or forbidden Secret moves on to the next; a cluster that cannot be asked at all
    stops the search, as every other Secret would fail the same way. A Secret that exists but is malformed
    raises: its keys are never swapped for another identity's without a word."""
    problems: list[str] = []
    for name in names:
        try:
            return name, read_secret(kube, namespace, name), problems
        except NotFound:
            problems.append(f"Secret {namespace}/{name} does not exist")
        except Forbidden as exc:
            problems.append(str(exc))
        except ClusterError as exc:
            problems.append(str(exc))
            break
    return "", {}, problems


def resolve_reader(
    kube: Kube | None,
    namespace: str,
    env: Mapping[str, str] | None = None,
    *,
    profile: str | None = None,
    secrets: tuple[str, ...] = READ_SECRETS,
) -> Reader:
    """An AWS profile or environment keys first (with BUCKET_NAME, MEDIA_PREFIX, AWS_REGION from the
    environment or else from a reader Secret), then the keys of the first of `secrets` that exists: by
    default the viewer's, else the restorer's; `RESTORE_SECRETS` for what needs the restorer's reach."""
    env = dict(os.environ if env is None else env)
    profile = profile or env.get("AWS_PROFILE") or None
    name, secret, problems = _first_secret(kube, namespace, secrets) if kube is not None else ("", {}, [])
    config_keys = ("BUCKET_NAME", "MEDIA_PREFIX", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "IMMICH_SYNC_REPORT_PREFIX")
    merged = {k: secret[k] for k in config_keys if secret.get(k)}
    merged.update({k: env[k] for k in (*config_keys, "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL") if env.get(k)})
    if profile:
        settings, media, reports = _settings(merged, f"AWS profile {profile}")
        return Reader(f"AWS profile {profile}", settings, media, reports, profile=profile)
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        creds = StaticCredentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN"))
        settings, media, reports = _settings(merged, "environment credentials")
        return Reader("environment (AWS_ACCESS_KEY_ID)", settings, media, reports, credentials=creds)
    if secret.get("AWS_ACCESS_KEY_ID") and secret.get("AWS_SECRET_ACCESS_KEY"):
        creds = StaticCredentials(secret["AWS_ACCESS_KEY_ID"], secret["AWS_SECRET_ACCESS_KEY"])
        who = f"Secret {namespace}/{name}"
        try:
            check_keys(creds.access_key, None)
        except ConfigError as exc:
            raise OffsiteInvalid(f"{who}: {exc}") from None
        settings, media, reports = _settings({**secret, **merged}, who)
        return Reader(who, settings, media, reports, credentials=creds)
    if name:
        problems.append(f"Secret {namespace}/{name} lacks AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    roles = " or the ".join(_ROLES.get(n, n) for n in secrets)
    raise OffsiteUnavailable(
        "no S3 read credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY with "
        f"BUCKET_NAME, MEDIA_PREFIX and AWS_REGION, or create the {roles} Secret"
        + (f" ({'; '.join(problems)})" if problems else "")
    )


_FUTURE = f"dated in the future (more than {FUTURE_SKEW / 60:.0f} minutes ahead)"


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _mass_change(value: object) -> MassChange | None:
    """A report's `mass_change`, checked field by field (a report is untrusted input)."""
    if not isinstance(value, dict):
        return None
    examples = value.get("examples")
    shown = (
        [shown_text(e if isinstance(e, str) else json.dumps(e)[:200], 120) for e in examples[:5]]
        if isinstance(examples, list)
        else []
    )
    return MassChange(value.get("tripped") is True, _count(value.get("changed")), _count(value.get("in_bucket")), shown)


def summarize(report: RunReport) -> RunSummary:
    totals = report.totals
    return RunSummary(
        key=report.report_key,
        started=clock.parse(report.started_at),
        finished=clock.parse(report.finished_at),
        status=report.status,
        listing=report.listing,
        files=totals.files,
        bytes=totals.bytes,
        uploaded=totals.uploaded,
        uploaded_bytes=totals.uploaded_bytes,
        deferred=totals.deferred,
        failed=totals.failed,
        unstable=totals.unstable,
        duration_seconds=report.duration_seconds,
        error=report.error,
        per_folder={
            name: {
                "files": s.files,
                "bytes": s.bytes,
                "uploaded": s.uploaded,
                "uploaded_bytes": s.uploaded_bytes,
                "deferred": s.deferred,
                "failed": s.failed,
                "unstable": s.unstable,
            }
            for name, s in report.per_folder.items()
        },
    )


class Offsite:
    """The bucket as the operator sees it: run reports and listings with `reader` (the viewer's keys where
    there are some), verify and the database catalog with `restorer`. Either may be given as a function
    called when first needed, so reading the reports never needs the restorer's Secret and verify or the
    catalog never the viewer's; without a `restorer`, `reader` serves both."""

    def __init__(self, reader: Reader | Callable[[], Reader], restorer: Callable[[], Reader] | None = None) -> None:
        self._reader = reader if isinstance(reader, Reader) else None
        self._resolve = reader
        self._restorer = restorer
        self._store: ObjectStore | None = None

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            resolve = self._resolve
            self._reader = resolve if isinstance(resolve, Reader) else resolve()
        return self._reader

    def restorer(self) -> Reader:
        """The restorer's access: verify HEADs media objects and lists versions, the catalog reads the
        database archive, neither of which the viewer's policy allows."""
        return self._restorer() if self._restorer is not None else self.reader

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = self.reader.store()
            except ConfigError as exc:
                raise OffsiteUnavailable(f"{self.reader.source}: {exc}") from None
        return self._store

    def store_for(self, destination_path: str) -> ObjectStore:
        """The restorer's access to another location of the same endpoint (CNPG's barman destinationPath):
        the database archive is beyond the viewer's policy."""
        from immich_tui.services.barman import parse_destination

        bucket, _ = parse_destination(destination_path)
        reader = self.restorer()
        settings = S3Settings(
            bucket=bucket,
            region=reader.settings.region,
            endpoint_url=reader.settings.endpoint_url,
            path_style=reader.settings.path_style,
            checksum_mode=reader.settings.checksum_mode,
        )
        try:
            return ObjectStore(settings, credentials=reader.credentials, profile=reader.profile)
        except ConfigError as exc:
            raise OffsiteUnavailable(f"{reader.source}: {exc}") from None

    def reports(self, limit: int = 10, days: float = REPORT_DAYS) -> Reports:
        """The newest run reports; one bounded listing (keys since `days` ago) and `limit` GETs, plus one
        more for each unreadable or future-dated report passed over (at most MAX_SKIPPED)."""
        now = clock.now()
        since = now - dt.timedelta(days=days)
        start = f"{self.reader.report_prefix}{stamp(since.timestamp())}"
        try:
            listing = list(self.store.list_objects(self.reader.report_prefix, start_after=start))
        except StoreError as exc:
            raise OffsiteUnavailable(str(exc)) from None
        parsed = [parse_report_key(o.key) for o in listing if o.key.endswith(".json")]
        sizes = {o.key: o.size for o in listing}
        names = sorted((n for n in parsed if n is not None), key=lambda n: (n.started, n.key), reverse=True)
        horizon = now.timestamp() + FUTURE_SKEW
        loaded: dict[str, RunSummary] = {}
        unreadable: dict[str, str] = {}
        # dated in the future by their names: ignored without being read for the verdict
        future = {
            n.key: IgnoredReport(n.key, clock.iso(_utc(n.started)) or "", _FUTURE) for n in names if n.started > horizon
        }
        ignored: dict[str, IgnoredReport] = dict(future)

        def load(name: ReportName) -> RunSummary | None:
            if name.key not in loaded and name.key not in unreadable:
                try:
                    if sizes.get(name.key, 0) > MAX_REPORT:  # the listing already tells: not worth a GET
                        raise ValueError(
                            f"{sizes[name.key]:,} bytes, over the {MAX_REPORT:,}-byte cap for a run report: not read"
                        )
                    run = loaded[name.key] = self._summary(name, horizon)
                except ValueError as exc:
                    unreadable[name.key] = shown_text(str(exc), 160)
                else:
                    if run.ignored and name.key not in ignored:
                        dates = [d for d in (run.started, run.finished) if d is not None]
                        dated = clock.iso(max(dates)) if dates else clock.iso(_utc(name.started))
                        ignored[name.key] = IgnoredReport(name.key, dated or "", run.ignored)
            return loaded.get(name.key)

        def newest(*, ok_only: bool) -> RunSummary | None:
            """The newest report (of status ok, with `ok_only`) that can be read and believed."""
            skipped = 0
            for name in names:
                if (ok_only and name.status != "ok") or name.key in future:
                    continue
                run = load(name)
                if run is not None and not run.ignored:
                    return run
                if run is None:
                    notes.append(f"run report {shown_text(name.key)} skipped: {unreadable[name.key]}")
                skipped += 1
                if skipped >= MAX_SKIPPED:
                    notes.append(f"{skipped} newer run reports were unreadable or ignored; older ones were not read")
                    return None
            return None

        runs = [run for run in (load(n) for n in names[:limit]) if run is not None]
        notes: list[str] = []
        latest_ok = newest(ok_only=True)
        latest = newest(ok_only=False)
        order = {n.key: i for i, n in enumerate(names)}
        shown = sorted(ignored.values(), key=lambda r: order.get(r.key, 0))
        points = sync_points(o for o in listing if o.key.endswith(".json"))
        bad = {n.key: unreadable[n.key] for n in names if n.key in unreadable}  # newest first
        return Reports(runs, len(names), latest_ok, latest, shown, list(dict.fromkeys(notes)), points, since, bad)

    def sync_points(self, before: dt.datetime, days: float = REPORT_DAYS) -> tuple[list[SyncPoint], dt.datetime]:
        """Successful syncs from `days` before `before` on, and where the listing began: one listing of the
        report prefix, no report read (what `pointintime.align` needs for a restore as of `before`)."""
        since = before - dt.timedelta(days=days)
        start = f"{self.reader.report_prefix}{stamp(since.timestamp())}"
        try:
            listing = list(self.store.list_objects(self.reader.report_prefix, start_after=start))
        except StoreError as exc:
            raise OffsiteUnavailable(str(exc)) from None
        return sync_points(o for o in listing if o.key.endswith(".json")), since

    def _summary(self, name: ReportName, horizon: float) -> RunSummary:
        """One report, read and checked; ValueError when it is not a report (OffsiteUnavailable when the
        reader may not read reports at all)."""
        try:
            data = json.loads(self.store.get_bytes(name.key, max_bytes=MAX_REPORT, what="run report"))
            report = RunReport.from_json(data)
        except ObjectTooLarge:
            cap = f"larger than the {MAX_REPORT:,}-byte cap for a run report"
            raise ValueError(f"{cap}: reading stopped there") from None
        except StoreError as exc:
            if exc.code in ("AccessDenied", "403"):
                raise OffsiteUnavailable(f"{self.reader.source} may not read run reports: {exc}") from None
            raise ValueError(str(exc)) from None
        except RecursionError:
            raise ValueError("not a run report: nested too deeply") from None
        except ValueError as exc:  # not JSON, not UTF-8, a field of the wrong type
            raise ValueError(f"not a run report ({exc})") from None
        report.report_key = name.key
        run = summarize(report)
        run.mass_change = _mass_change(data.get("mass_change"))
        if name.started > horizon:
            run.ignored = _FUTURE
        for when in (run.started, run.finished):
            if when is not None and when.timestamp() > horizon:
                run.ignored = f"its content is dated {clock.iso(when)}, in the future"
        return run

    def folders_from_listing(self) -> list[FolderObjects]:
        """Every object under the media prefix, counted per Immich folder (one LIST per 1,000 objects)."""
        rows = {name: FolderObjects(name) for name in IMMICH_FOLDERS}
        prefix = self.reader.media_prefix
        try:
            for obj in self.store.list_objects(prefix):
                folder = obj.key[len(prefix) :].split("/", 1)[0]
                row = rows.setdefault(folder, FolderObjects(folder))
                row.objects += 1
                row.bytes += obj.size
                row.storage_classes[obj.storage_class] = row.storage_classes.get(obj.storage_class, 0) + 1
                when = dt.datetime.fromtimestamp(obj.last_modified, dt.UTC)
                if row.newest is None or when > row.newest:
                    row.newest = when
        except StoreError as exc:
            raise OffsiteUnavailable(str(exc)) from None
        return list(rows.values())

    @staticmethod
    def folders_from_report(run: RunSummary) -> list[FolderObjects]:
        """Totals as of the last successful run: its files per folder are what it left in the bucket."""
        rows = []
        for name in IMMICH_FOLDERS:
            stats = run.per_folder.get(name)
            if stats:
                stored = stats["files"] - stats["deferred"] - stats["failed"] - stats["unstable"]
                stored_bytes = stats["bytes"]
                rows.append(FolderObjects(name, max(0, stored), stored_bytes, {}, run.finished))
        return rows

    def verify(self) -> VerifyResult:
        """The engine's own verify with the restorer's credentials: manifests against a fresh listing. The
        viewer's keys would leave it half-blind (no HEAD of a media object, no version listing, so no
        overwrite or delete could be seen), so they are never used for it."""
        reader = self.restorer()
        settings = SyncSettings(
            library_root=Path("/"),
            media_prefix=reader.media_prefix,
            report_prefix=reader.report_prefix,
            s3=reader.settings,
        )
        try:
            store = self.store if self._restorer is None else reader.store()
            return verify(settings, store)
        except ConfigError as exc:
            raise OffsiteUnavailable(f"{reader.source}: {exc}") from None
        except StoreError as exc:
            raise OffsiteUnavailable(str(exc)) from None

    def state(self, *, listing: bool = True, report_limit: int = 10) -> OffsiteState:
        reports = self.reports(limit=report_limit)
        if listing:
            folders, basis = self.folders_from_listing(), "bucket listing"
        elif reports.latest_ok:
            folders, basis = self.folders_from_report(reports.latest_ok), f"run report {reports.latest_ok.key}"
        else:
            folders, basis = [], "no successful run report yet"
        return OffsiteState(
            self.reader.source,
            self.reader.settings.bucket,
            self.reader.media_prefix,
            basis,
            folders,
            reports,
            self.store.request_counts(),
        )
