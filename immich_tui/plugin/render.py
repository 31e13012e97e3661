"""What `kubectl immich-backup` prints for people: kubectl-style tables and summaries of the services' data.

The commands in `immich_tui.plugin.cli` decide what to fetch and which exit code it means; this module only
says how it reads, so the same data renders the same way whichever command shows it (`-o json|yaml` skips
it and dumps the data itself).
"""

from __future__ import annotations

from immich_tui.plugin import output as out
from immich_tui.services import clock
from immich_tui.services.barman import Catalog
from immich_tui.services.cnpg import DbState
from immich_tui.services.drill import LatestDrill
from immich_tui.services.library import LibraryInventory
from immich_tui.services.media import JobHistory, JobInfo
from immich_tui.services.offsite import OffsiteState
from immich_tui.services.status import StatusReport, Target
from sync_engine.text import size

# What the operator still has to do once the media are back: said after `media restore` creates or finishes its Job.
AFTER_MEDIA_RESTORE = (
    "After the media restore, before starting Immich: restore the database to a time no later than the latest "
    "media sync (`kubectl immich-backup db restore`), then in Immich → Administration → Jobs run "
    '"Generate Thumbnails" (All) and "Transcode Videos" (All) — thumbs/ and encoded-video/ are not backed up.'
)


def _mark(state: str) -> str:
    return state.upper()


def render_status(report: StatusReport, target: Target, view: out.View | None = None) -> str:
    view = view or out.View()
    v = report.verdict
    lines = [
        f"Context {report.context or '-'}   namespace {report.namespace}   "
        f"database {target.db_namespace}/{target.db_cluster}",
        f"Verdict: {_mark(v.state)} (stale after {v.stale_after_hours:g}h)",
        "",
        out.table(
            ["CHECK", "STATE", "AGE", "DETAIL"],
            [[c.name, c.state, out.duration(c.age_seconds), c.detail] for c in v.checks],
            out.View(wide=True, headers=view.headers),  # a check's detail is the error itself: never cut
        ),
    ]
    hints = [f"  {c.name}: {c.hint}" for c in v.checks if c.hint and c.state not in ("ok", "off")]
    lines.append("")
    history: JobHistory | None = report.media.value
    if history is not None:
        cj = history.cronjob
        if cj.suspended:
            state = f"SUSPENDED since {out.when(cj.suspended_since)}" if cj.suspended_since else "SUSPENDED"
        else:
            state = f"next run {out.when(cj.next_run)}"
        lines.append(f'Media sync  cronjob/{cj.name} "{cj.schedule}" ({cj.timezone}), {state}')
        j = history.latest_sync  # a media restore Job is not the sync's latest run
        if j is not None:
            reason = f" — {j.exit_reason}" if j.exit_reason else ""
            lines.append(f"            latest job/{j.name} {j.status}, started {out.when(j.started)}{reason}")
        if cj.schedule_error:
            lines.append(f"            warning: {cj.schedule_error}")
    else:
        lines.append(f"Media sync  {report.media.error}")
    offsite: OffsiteState | None = report.offsite.value
    if offsite is not None:
        last = offsite.reports.latest_ok
        if last is not None:
            lines.append(
                f"Offsite     {offsite.total_objects} objects, {size(offsite.total_bytes)} in s3://{offsite.bucket}/"
                f"{offsite.media_prefix} as of run {out.when(last.finished)}"
            )
            lines.append(f"            (read via {offsite.source})")
        else:
            lines.append(f"Offsite     no successful run report yet in s3://{offsite.bucket} (via {offsite.source})")
        if report.offsite.error:  # shown with what an older report still says
            lines.append(f"            error: {report.offsite.error}")
    else:
        lines.append(f"Offsite     {report.offsite.error}")
    db = report.database.value
    if db is not None:
        c = db.cluster
        window = c.window.first_point
        lines.append(
            f"Database    cluster/{c.name} {c.phase}, {c.ready_instances}/{c.instances} ready, archiving via "
            f"{_method(c.method)}"
        )
        lines.append(f"            recoverable from {out.when(window)} to now")
        lines += [f"            warning: scheduledbackup/{s.name}: {s.warning}" for s in db.schedules if s.warning]
    else:
        lines.append(f"Database    {report.database.error}")
    lines += _drill_lines(report.drill.value)
    if hints:
        lines += ["", "What to do:", *hints]
    return "\n".join(lines)


def _drill_lines(latest: LatestDrill | None) -> list[str]:
    """The last restore drill under the status, once there is one (the check row says when there is none)."""
    if latest is None or latest.report is None:
        return []
    r = latest.report
    figures = [
        f"RPO database {out.duration(r.rpo_db_seconds)}, media {out.duration(r.rpo_media_seconds)}",
        f"RTO database {out.duration(r.rto_db_seconds)}",
    ]
    if r.rto_media_seconds_estimate is not None:
        figures.append(f"media ≈ {out.duration(r.rto_media_seconds_estimate)}")
    lines = [f"Drill       {r.outcome} {out.when(latest.stored)}: " + ", ".join(figures)]
    if r.cross_check is not None:
        c = r.cross_check
        lines.append(
            f"            {c.assets:,} assets, {c.missing:,} missing offsite, {c.not_yet_offsite:,} not yet offsite, "
            f"{c.orphans:,} orphans"
        )
    lines.append(f"            report {latest.key}")
    return lines


def _method(method: str) -> str:
    return {"plugin": "Barman Cloud Plugin", "barmanObjectStore": "in-tree barmanObjectStore"}.get(method, method)


def _trigger(job: JobInfo) -> str:
    """Who started a Job: its CronJob's schedule, an operator (`sync`, `kubectl create job --from`), or a restore."""
    if job.kind == "restore":
        return "restore"
    return "manual" if job.manual else "schedule"


def render_jobs(history: JobHistory, view: out.View | None = None) -> str:
    view = view or out.View()
    cj = history.cronjob
    head = [
        f'cronjob/{cj.name}  schedule "{cj.schedule}" ({cj.timezone})  suspended: {"yes" if cj.suspended else "no"}',
        f"last schedule {out.ago(cj.last_schedule) if cj.last_schedule else '-'}   "
        f"last success {out.ago(cj.last_success) if cj.last_success else '-'}   next run {out.when(cj.next_run)}",
    ]
    if cj.schedule_error:
        head.append(f"warning: {cj.schedule_error}")
    rows = [
        [
            j.name,
            _trigger(j),
            j.status,
            out.stamp(j.started or j.created, view),
            out.duration(j.duration_seconds),
            *([j.pod] if view.wide else []),
            j.exit_reason,
        ]
        for j in history.jobs
    ]
    started = "STARTED" if view.wide else "AGE"
    headers = ["NAME", "TRIGGER", "STATUS", started, "DURATION", *(["POD"] if view.wide else []), "REASON"]
    if not view.headers:
        return out.table(headers, rows, view)
    shown = f"{len(history.jobs)} of {history.total} jobs" + (
        f" ({', '.join(f'{n} {s}' for s, n in sorted(history.counts.items()))})" if history.counts else ""
    )
    body = out.table(headers, rows, view) if rows else "no jobs yet"
    return "\n".join([*head, "", body, "", shown])


def render_inventory(inv: LibraryInventory, view: out.View | None = None) -> str:
    view = view or out.View()
    if inv.source == "none":
        return f"library inventory unavailable: {inv.detail}"
    source = (
        f"live count through {inv.detail} at {out.when(inv.taken_at)}"
        if inv.source == "live"
        else f"last successful run report {inv.detail} ({out.when(inv.taken_at)}); live count unavailable: "
        f"{inv.fallback_reason}"
    )
    pending_label = "PENDING" if inv.source == "live" else "NOT STORED"
    rows = [
        [
            f.name,
            f.files if f.exists else "missing",
            size(f.bytes),
            out.stamp(f.newest, view),
            "-" if not f.backed_up else f"{f.pending} ({size(f.pending_bytes)})" if f.pending else "0",
            "yes" if f.backed_up else "skipped",
            "yes" if f.marker else "MISSING",
        ]
        for f in inv.folders
    ]
    headers = [
        "FOLDER",
        "FILES",
        "SIZE",
        "NEWEST" if view.wide else "LAST CHANGE",
        pending_label,
        "BACKED UP",
        ".immich",
    ]
    if not view.headers:
        return out.table(headers, rows, view)
    return "\n".join(
        [
            f"Source: {source}",
            "",
            out.table(headers, rows, view),
            "",
            f"{inv.total_files} files, {size(inv.total_bytes)}",
        ]
    )


def render_offsite(state: OffsiteState, view: out.View | None = None) -> str:
    view = view or out.View()
    rows = [
        [
            f.folder,
            f.objects,
            size(f.bytes),
            ", ".join(f"{k} {v}" for k, v in sorted(f.storage_classes.items())) or "-",
            out.stamp(f.newest, view),
        ]
        for f in state.folders
    ]
    runs = [
        [
            out.stamp(r.started, view),
            r.status,
            r.listing,
            f"{r.uploaded} ({size(r.uploaded_bytes)})",
            r.files,
            r.deferred + r.failed + r.unstable,
            out.duration(r.duration_seconds),
        ]
        for r in state.reports.runs
    ]
    folder_headers = ["FOLDER", "OBJECTS", "SIZE", "STORAGE", "NEWEST" if view.wide else "LAST WRITE"]
    run_headers = [
        "STARTED" if view.wide else "AGE",
        "STATUS",
        "LISTING",
        "UPLOADED",
        "FILES",
        "NOT STORED",
        "DURATION",
    ]
    if not view.headers:
        return out.table(folder_headers, rows, view)
    lines = [
        f"s3://{state.bucket}/{state.media_prefix}   read via {state.source}",
        f"totals from {state.basis}",
        "",
        out.table(folder_headers, rows, view) if rows else "no objects",
        "",
        f"{state.total_objects} objects, {size(state.total_bytes)}",
        "",
        f"Recent runs ({len(state.reports.runs)} of {state.reports.total} reports):",
        out.table(run_headers, runs, view) if runs else "no run reports yet",
    ]
    return "\n".join(lines)


def render_db_status(state: DbState) -> str:
    c = state.cluster
    lines = [
        f"cluster/{c.name} in {c.namespace}: {c.phase}, {c.ready_instances}/{c.instances} instances ready",
        f"image                {c.image or '-'}",
        f"archiving            {_method(c.method)}"
        + (
            f" (ObjectStore {c.object_store})"
            if c.method == "plugin"
            else f" ({c.object_store})"
            if c.object_store
            else ""
        ),
        f"server name          {c.server_name}",
    ]
    for cond in (c.continuous_archiving, c.last_backup_succeeded):
        detail = f" — {cond.message or cond.reason}" if (cond.message or cond.reason) else ""
        lines.append(f"{cond.type:<21}{cond.status}{detail}")
    lines.append(f"recovery window  {out.when(c.window.first_point)} → now")
    lines.append(f"last backup      {out.when(state.last_backup)}")
    if c.window.last_failure:
        lines.append(f"last failure     {out.when(c.window.last_failure)}")
    if state.object_store is not None:
        os_ = state.object_store
        lines.append(
            f"object store     {os_.name}: {os_.destination_path}"
            + (f" ({os_.endpoint_url})" if os_.endpoint_url else "")
        )
        for server, w in sorted(os_.windows.items()):
            lines.append(f"  serverRecoveryWindow[{server}]  first {out.when(w.first_point)},")
            lines.append(f"  {'':<{len(server) + 22}}  last success {out.when(w.last_success)}")
    lines += [f"warning: scheduledbackup/{s.name}: {s.warning}" for s in state.schedules if s.warning]
    return "\n".join(lines)


def render_catalog(catalog: Catalog, view: out.View | None = None) -> str:
    view = view or out.View()
    rows = [
        [
            b.backup_id,
            b.status,
            *(
                [clock.iso(b.begin_time) or "-", clock.iso(b.end_time) or "-"]
                if view.wide
                else [
                    out.age(b.end_time or b.begin_time),
                    out.duration((b.end_time - b.begin_time).total_seconds() if b.begin_time and b.end_time else None),
                ]
            ),
            b.begin_wal,
            b.end_wal,
            b.timeline,
            size(b.size),
        ]
        for b in reversed(catalog.backups)
    ]
    wal = catalog.wal
    times = ["BEGIN", "END"] if view.wide else ["AGE", "DURATION"]
    headers = ["BACKUP ID", "STATUS", *times, "BEGIN WAL", "END WAL", "TL", "SIZE"]
    if not view.headers:
        return out.table(headers, rows, view)
    return "\n".join(
        [
            f"{catalog.destination_path} · serverName {catalog.server_name}",
            "",
            out.table(headers, rows, view) if rows else "no base backups",
            "",
            f"WAL archive: {wal.count} files, {wal.first or '-'} → {wal.last or '-'} (timelines "
            f"{', '.join(map(str, wal.timelines)) or '-'})",
            f"recoverable from {out.when(catalog.first_recoverability_point)} (end of the oldest DONE backup)",
        ]
    )


def render_db_backups(state: DbState, view: out.View | None = None) -> str:
    view = view or out.View()
    rows = [
        [
            b.name,
            b.phase,
            b.method,
            out.stamp(b.started or b.created, view),
            out.duration((b.stopped - b.started).total_seconds() if b.started and b.stopped else None),
            b.backup_id,
            b.error,
        ]
        for b in state.backups
    ]
    sched = [
        [
            s.name,
            s.schedule,
            s.method,
            "yes" if s.suspended else "no",
            out.stamp(s.last_schedule, view),
            (clock.iso(s.next_schedule) or "-") if view.wide else out.ago(s.next_schedule) if s.next_schedule else "-",
        ]
        for s in state.schedules
    ]
    when = "STARTED" if view.wide else "AGE"
    headers = ["NAME", "PHASE", "METHOD", when, "DURATION", "BACKUP ID", "ERROR"]
    sched_headers = ["SCHEDULEDBACKUP", "SCHEDULE", "METHOD", "SUSPENDED", "LAST SCHEDULE", "NEXT"]
    if not view.headers:
        return "\n".join(t for t in (out.table(headers, rows, view), out.table(sched_headers, sched, view)) if t)
    return "\n".join(
        [
            out.table(headers, rows, view) if rows else "no backups",
            f"{len(state.backups)} of {state.total_backups} backups",
            "",
            out.table(sched_headers, sched, view) if sched else "no scheduled backups",
            *(f"warning: scheduledbackup/{s.name}: {s.warning}" for s in state.schedules if s.warning),
        ]
    )
