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
from immich_tui.services.library import LibraryInventory
from immich_tui.services.media import JobHistory
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


def render_status(report: StatusReport, target: Target) -> str:
    v = report.verdict
    lines = [
        f"Context {report.context or '-'}   namespace {report.namespace}   "
        f"database {target.db_namespace}/{target.db_cluster}",
        f"Verdict: {_mark(v.state)} (stale after {v.stale_after_hours:g}h)",
        "",
        out.table(
            ["CHECK", "STATE", "AGE", "DETAIL"],
            [[c.name, c.state, out.duration(c.age_seconds), c.detail] for c in v.checks],
        ),
    ]
    hints = [f"  {c.name}: {c.hint}" for c in v.checks if c.hint and c.state != "ok"]
    lines.append("")
    history: JobHistory | None = report.media.value
    if history is not None:
        cj = history.cronjob
        state = "SUSPENDED" if cj.suspended else f"next run {out.when(cj.next_run)}"
        lines.append(f'Media sync  cronjob/{cj.name} "{cj.schedule}" ({cj.timezone}), {state}')
        if history.jobs:
            j = history.jobs[0]
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
                f"{offsite.media_prefix} as of run {out.when(last.finished)} (read via {offsite.source})"
            )
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
            f"{_method(c.method)}; recoverable from {out.when(window)} to now"
        )
        lines += [f"            warning: scheduledbackup/{s.name}: {s.warning}" for s in db.schedules if s.warning]
    else:
        lines.append(f"Database    {report.database.error}")
    if hints:
        lines += ["", "What to do:", *hints]
    return "\n".join(lines)


def _method(method: str) -> str:
    return {"plugin": "Barman Cloud Plugin", "barmanObjectStore": "in-tree barmanObjectStore"}.get(method, method)


def render_jobs(history: JobHistory) -> str:
    cj = history.cronjob
    head = [
        f'cronjob/{cj.name}  schedule "{cj.schedule}" ({cj.timezone})  suspended: {"yes" if cj.suspended else "no"}',
        f"last schedule {out.when(cj.last_schedule)}   last success {out.when(cj.last_success)}   "
        f"next run {out.when(cj.next_run)}",
    ]
    if cj.schedule_error:
        head.append(f"warning: {cj.schedule_error}")
    rows = [
        [
            j.name + (" (manual)" if j.manual else ""),
            j.status,
            out.when(j.started),
            out.duration(j.duration_seconds),
            j.pod,
            j.exit_reason,
        ]
        for j in history.jobs
    ]
    shown = f"{len(history.jobs)} of {history.total} jobs" + (
        f" ({', '.join(f'{n} {s}' for s, n in sorted(history.counts.items()))})" if history.counts else ""
    )
    body = out.table(["JOB", "STATUS", "STARTED", "DURATION", "POD", "REASON"], rows) if rows else "no jobs yet"
    return "\n".join([*head, "", body, "", shown])


def render_inventory(inv: LibraryInventory) -> str:
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
            out.when(f.newest) if f.newest else "-",
            "-" if not f.backed_up else f"{f.pending} ({size(f.pending_bytes)})" if f.pending else "0",
            "yes" if f.backed_up else "skipped",
            "yes" if f.marker else "MISSING",
        ]
        for f in inv.folders
    ]
    return "\n".join(
        [
            f"Source: {source}",
            "",
            out.table(["FOLDER", "FILES", "SIZE", "NEWEST", pending_label, "BACKED UP", ".immich"], rows),
            "",
            f"{inv.total_files} files, {size(inv.total_bytes)}",
        ]
    )


def render_offsite(state: OffsiteState) -> str:
    rows = [
        [
            f.folder,
            f.objects,
            size(f.bytes),
            ", ".join(f"{k} {v}" for k, v in sorted(f.storage_classes.items())) or "-",
            out.when(f.newest),
        ]
        for f in state.folders
    ]
    runs = [
        [
            clock.iso(r.started),
            r.status,
            r.listing,
            f"{r.uploaded} ({size(r.uploaded_bytes)})",
            r.files,
            r.deferred + r.failed + r.unstable,
            out.duration(r.duration_seconds),
        ]
        for r in state.reports.runs
    ]
    lines = [
        f"s3://{state.bucket}/{state.media_prefix}   read via {state.source}   totals from {state.basis}",
        "",
        out.table(["FOLDER", "OBJECTS", "SIZE", "STORAGE", "NEWEST"], rows) if rows else "no objects",
        "",
        f"{state.total_objects} objects, {size(state.total_bytes)}",
        "",
        f"Recent runs ({len(state.reports.runs)} of {state.reports.total} reports):",
        out.table(["STARTED", "STATUS", "LISTING", "UPLOADED", "FILES", "NOT STORED", "DURATION"], runs)
        if runs
        else "no run reports yet",
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
            lines.append(
                f"  serverRecoveryWindow[{server}]  first {out.when(w.first_point)}, "
                f"last success {out.when(w.last_success)}"
            )
    lines += [f"warning: scheduledbackup/{s.name}: {s.warning}" for s in state.schedules if s.warning]
    return "\n".join(lines)


def render_catalog(catalog: Catalog) -> str:
    rows = [
        [
            b.backup_id,
            b.status,
            out.when(b.begin_time),
            out.when(b.end_time),
            b.begin_wal,
            b.end_wal,
            b.timeline,
            size(b.size),
        ]
        for b in reversed(catalog.backups)
    ]
    wal = catalog.wal
    return "\n".join(
        [
            f"{catalog.destination_path} · serverName {catalog.server_name}",
            "",
            out.table(["BACKUP ID", "STATUS", "BEGIN", "END", "BEGIN WAL", "END WAL", "TL", "SIZE"], rows)
            if rows
            else "no base backups",
            "",
            f"WAL archive: {wal.count} files, {wal.first or '-'} → {wal.last or '-'} (timelines "
            f"{', '.join(map(str, wal.timelines)) or '-'})",
            f"recoverable from {out.when(catalog.first_recoverability_point)} (end of the oldest DONE backup)",
        ]
    )


def render_db_backups(state: DbState) -> str:
    rows = [
        [
            b.name,
            b.phase,
            b.method,
            out.when(b.started),
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
            out.when(s.last_schedule),
            out.when(s.next_schedule),
            s.warning,
        ]
        for s in state.schedules
    ]
    return "\n".join(
        [
            out.table(["BACKUP", "PHASE", "METHOD", "STARTED", "DURATION", "BACKUP ID", "ERROR"], rows)
            if rows
            else "no backups",
            f"{len(state.backups)} of {state.total_backups} backups",
            "",
            out.table(["SCHEDULEDBACKUP", "SCHEDULE", "METHOD", "SUSPENDED", "LAST", "NEXT", "WARNING"], sched)
            if sched
            else "no scheduled backups",
        ]
    )
