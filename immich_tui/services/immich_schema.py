"""What a restored Immich database says about its media: the asset table, its originals and Immich's version.

The restore drill has to ask a database it did not design, across Immich releases, which files it expects.
The facts below come from Immich's own sources (github.com/immich-app/immich, server/):

- Table. Until the July 2025 migration `src/schema/migrations/1752267649968-StandardizeNames.ts` (Immich
  v1.137) the table was `assets` (TypeORM entity `src/entities/asset.entity.ts`, `@Entity('assets')`); that
  migration renames it `asset` (`src/schema/tables/asset.table.ts`, `@Table('asset')`). Both keep the
  quoted camel-case columns `"originalPath"` (text/varchar, not null), `"createdAt"` (timestamptz, the upload
  time), `"deletedAt"` (timestamptz, set while the asset is in the trash), `"libraryId"` (set for external
  library assets) and, since 2024, `"status"` (enum `assets_status_enum`: active, trashed, deleted, and since
  `1759089915352-AddPartialAssetStatus.ts` partial).
- Trash. A trashed asset (`deletedAt` set, status trashed) keeps its file until the trash is emptied, and
  restoring it from the trash needs that file: it counts as an asset whose original must be offsite, and
  its number is reported apart. Emptying the trash sets status `deleted` and queues the file's removal
  (the AssetDelete job then deletes file and row); a `partial` asset is an upload still in progress. Neither
  has a file anyone can expect, so their rows are counted apart and not checked.
- Version. Every server start records its version in `version_history` (`src/schema/tables/
  version-history.table.ts`: `id`, `"createdAt"`, `version`, e.g. "v1.136.0"); the newest row is the version
  that last ran against the database. Releases before the table existed report no version.
- Media location. `originalPath` is the absolute path under the server's media location. Older servers used
  `IMMICH_MEDIA_LOCATION || './upload'` (`src/constants.ts`, `APP_MEDIA_LOCATION`) with the working directory
  `/usr/src/app` and stored paths relative to it ("upload/library/…"); the migration
  `1752759108283-ConvertToAbsolutePaths.ts` rewrote them to `/usr/src/app/upload/…`. Current servers
  (`src/services/storage.service.ts`, `detectMediaLocation`) take IMMICH_MEDIA_LOCATION, else whichever one
  of `/data` and `/usr/src/app/upload` exists (`/usr/src/app/upload` when both or neither), record it in
  `system_metadata` under the key `MediaLocation` (`{"location": …}`), and rewrite every stored path when it
  changes. The PVC holds the media location itself, so the path relative to it ("upload/<user>/ab/cd/x.jpg",
  "library/<user>/2024/x.jpg") is the object key under the media prefix. Paths outside it belong to external
  libraries, which are not backed up.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from immich_tui.services.errors import ServiceError

PROBE_FORMAT = "immich-probe/1"  # the header's tag: output of another script or version is refused
MEDIA_LOCATIONS: tuple[str, ...] = ("/data", "/usr/src/app/upload")  # current default first
RELATIVE_LOCATION = "upload"  # the stored prefix before paths became absolute (media location './upload')
NO_TABLE_EXIT = 3  # the probe's exit code when the database has no Immich asset table
# One probe page: a few MiB of log, far below the kubelet's 10 MiB rotation of a container's log (a rotated
# log would be read from its middle), and few enough Jobs for a library of millions.
PAGE_ROWS = 20_000
PAGE_BYTES = 4 * 1024 * 1024


class ProbeError(ServiceError):
    """The probe's output is not what `probe_script` prints: truncated, another program's, or tampered."""


@dataclass(frozen=True)
class ImmichLayout:
    """One release range's asset table; the probe tries them in order and reads the first one present."""

    name: str
    table: str
    path_column: str
    created_column: str
    deleted_column: str | None


LAYOUTS: tuple[ImmichLayout, ...] = (
    ImmichLayout("current", "asset", "originalPath", "createdAt", "deletedAt"),
    ImmichLayout("previous", "assets", "originalPath", "createdAt", "deletedAt"),
)


@dataclass(frozen=True)
class AssetRow:
    """One asset whose original must be offsite; `trashed` ones still have their file, so they count too."""

    original_path: str
    created: dt.datetime | None
    trashed: bool = False


@dataclass
class ProbeResult:
    """`assets` is the number of rows (every asset whose original must exist); `trashed` of them are in the
    trash; `not_expected` rows (trash emptied, upload unfinished) were left out; `media_location` is what the
    server recorded, None before releases recorded it."""

    layout: str
    immich_version: str | None
    assets: int
    rows: list[AssetRow]
    trashed: int = 0
    not_expected: int = 0
    media_location: str | None = None
    database: str | None = None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rows_sql(layout: ImmichLayout) -> tuple[str, str]:
    """One page of rows for one layout, split where the status goes (the column, or NULL before it existed).

    Pages follow the key (originalPath, id) from where the last one ended (psql variables `after_path` and
    `after_id`, empty for the first page) and end at `page_rows` rows or once `page_bytes` of output is
    reached (the first row always fits). The last line is the page's end line, counted from the same rows."""
    path = f"a.{_ident(layout.path_column)}"
    deleted = f"a.{_ident(layout.deleted_column)}" if layout.deleted_column else "NULL::timestamptz"
    head = (
        "WITH page AS (SELECT "
        f"{path} AS k1, a.{_ident('id')}::text AS k2, json_build_object("
        f"'p', {path}, "
        f"'i', a.{_ident('id')}::text, "
        f"'c', a.{_ident(layout.created_column)}, "
        f"'d', {deleted}, "
        "'s', "
    )
    tail = (
        f")::text AS line FROM {_ident(layout.table)} AS a "
        f"WHERE :'after_id' = '' OR ({path}, a.{_ident('id')}::text) > (:'after_path', :'after_id') "
        "ORDER BY 1, 2 LIMIT :page_rows), "
        "sized AS (SELECT line, row_number() OVER w AS n, sum(octet_length(line) + 1) OVER w AS upto "
        "FROM page WINDOW w AS (ORDER BY k1, k2 ROWS UNBOUNDED PRECEDING)), "
        "kept AS (SELECT line, n FROM sized WHERE upto <= :page_bytes OR n = 1) "
        "SELECT line FROM (SELECT line, n FROM kept UNION ALL "
        f"SELECT json_build_object('end', '{PROBE_FORMAT}', 'rows', (SELECT count(*) FROM {_ident(layout.table)}), "
        "'page', (SELECT count(*) FROM kept))::text, NULL) AS out ORDER BY n NULLS LAST;"
    )
    return head, tail


def _detect_sql() -> str:
    """One line: the first layout whose table exists and has its path column, whether it has a status
    column, whether version_history and system_metadata exist, and the database's name (last: it may hold
    the separator)."""
    tables = ", ".join(_literal(layout.table) for layout in LAYOUTS)
    order = " ".join(f"WHEN {_literal(layout.table)} THEN {i}" for i, layout in enumerate(LAYOUTS))
    checks = " OR ".join(
        f"(c.relname = {_literal(layout.table)} AND a.attname = {_literal(layout.path_column)})" for layout in LAYOUTS
    )
    return (
        "SELECT coalesce((SELECT c.relname::text || '|' || bool_or(a2.attname = 'status')::text "
        "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "JOIN pg_attribute a2 ON a2.attrelid = c.oid AND a2.attnum > 0 AND NOT a2.attisdropped "
        f"WHERE c.oid IN (SELECT to_regclass(quote_ident(t)) FROM unnest(ARRAY[{tables}]) AS t) "
        f"AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND ({checks}) "
        f"GROUP BY c.relname ORDER BY CASE c.relname {order} END LIMIT 1), '|') "
        "|| '|' || (to_regclass('version_history') IS NOT NULL)::text "
        "|| '|' || (to_regclass('system_metadata') IS NOT NULL)::text "
        "|| '|' || current_database();"
    )


def probe_script() -> str:
    """A POSIX sh script for any image with psql and the libpq environment: it must run inside a Job in the
    cluster, where nothing of this package is installed. Every statement runs in one read-only repeatable
    read transaction (count and rows agree), on a session that is read-only by default as well, so no
    statement of it, nor one slipped into it, can change the restored database. Each output line is one JSON
    value (paths may hold tabs and newlines; JSON escapes them): a header, one line per asset, an end line.

    It prints one page (`PROBE_PAGE_ROWS`, `PROBE_PAGE_BYTES`) from after `PROBE_AFTER_PATH`/`PROBE_AFTER_ID`:
    a pod's log is the only way out of the Job, and the kubelet rotates it at 10 MiB, so a large library is
    read a page per Job (`ProbeCollector`). The values reach SQL only as psql's quoted variables."""
    cases = "\n".join(
        f"  {layout.table}) layout={layout.name}; rows_head={_sh_quote(_rows_sql(layout)[0])}; "
        f"rows_tail={_sh_quote(_rows_sql(layout)[1])} ;;"
        for layout in LAYOUTS
    )
    names = " or ".join(layout.table for layout in LAYOUTS)
    return f"""#!/bin/sh
# Immich restore drill probe ({PROBE_FORMAT}): read-only; prints one JSON value per line.
set -eu
PGOPTIONS="${{PGOPTIONS:-}} -c default_transaction_read_only=on"
PGCLIENTENCODING=UTF8
PGTZ=UTC
export PGOPTIONS PGCLIENTENCODING PGTZ
detect=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c {_sh_quote(_detect_sql())})
IFS='|' read -r table has_status has_version has_metadata database <<EOF
$detect
EOF
case "$table" in
{cases}
  *) echo "no Immich asset table ({names}) in database $database" >&2; exit {NO_TABLE_EXIT} ;;
esac
if [ "$has_status" = true ]; then status_sql='a."status"::text'; else status_sql='NULL::text'; fi
if [ "$has_version" = true ]; then
  version_sql='(SELECT "version" FROM version_history ORDER BY "createdAt" DESC LIMIT 1)'
else
  version_sql='NULL::text'
fi
if [ "$has_metadata" = true ]; then
  location_sql='(SELECT "value"->>'"'location'"' FROM system_metadata WHERE "key" = '"'MediaLocation'"')'
else
  location_sql='NULL::text'
fi
rows_sql="$rows_head$status_sql$rows_tail"
table_sql=$(printf '"%s"' "$table")
page_rows=${{PROBE_PAGE_ROWS:-{PAGE_ROWS}}}
page_bytes=${{PROBE_PAGE_BYTES:-{PAGE_BYTES}}}
case "$page_rows$page_bytes" in
  *[!0-9]*) echo "PROBE_PAGE_ROWS and PROBE_PAGE_BYTES must be whole numbers" >&2; exit 2 ;;
esac
psql -X -q -A -t -v ON_ERROR_STOP=1 -v after_path="${{PROBE_AFTER_PATH:-}}" -v after_id="${{PROBE_AFTER_ID:-}}" \
  -v page_rows="$page_rows" -v page_bytes="$page_bytes" <<EOF
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT json_build_object('format', '{PROBE_FORMAT}', 'layout', '$layout', 'version', $version_sql,
  'media_location', $location_sql, 'database', current_database(),
  'rows', (SELECT count(*) FROM $table_sql),
  'after', CASE WHEN :'after_id' = '' THEN NULL ELSE json_build_array(:'after_path', :'after_id') END)::text;
$rows_sql
COMMIT;
EOF
"""


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _time(value: object, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProbeError(f"probe output: {what} is not a time")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ProbeError(f"probe output: {what} {value[:40]!r} is not a time") from exc
    if moment.tzinfo is None:
        raise ProbeError(f"probe output: {what} {value[:40]!r} has no time zone")
    return moment.astimezone(dt.UTC)


def _optional_text(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ProbeError(f"probe output: header field {key} is not text")
    return value


def _load(line: str, number: int) -> dict[str, object]:
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise ProbeError(f"probe output line {number} is not JSON") from exc
    if not isinstance(value, dict):
        raise ProbeError(f"probe output line {number} is not a JSON object")
    return value


@dataclass(frozen=True)
class PageKey:
    """Where a page ended: the next one starts after this (originalPath, id), in the database's own order."""

    path: str
    id: str


@dataclass
class ProbePage:
    """One page of the probe's output, checked on its own: header, rows and end line agree."""

    layout: str
    immich_version: str | None
    media_location: str | None
    database: str | None
    total: int  # the asset table's rows, counted in the page's snapshot
    after: PageKey | None  # the key the page was asked to start after, as the probe echoed it
    rows: list[tuple[str, AssetRow | None]]  # (id, row); None for a row with no file to expect
    last: PageKey | None


def probe_env(after: PageKey | None, page_rows: int = PAGE_ROWS, page_bytes: int = PAGE_BYTES) -> dict[str, str]:
    """The environment that asks `probe_script` for the page after `after` (the first page for None)."""
    return {
        "PROBE_AFTER_PATH": after.path if after else "",
        "PROBE_AFTER_ID": after.id if after else "",
        "PROBE_PAGE_ROWS": str(page_rows),
        "PROBE_PAGE_BYTES": str(page_bytes),
    }


def _count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProbeError(f"probe output {what} has no row count")
    return value


def _after(value: object) -> PageKey | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
        or not value[1]
    ):
        raise ProbeError("probe output header names no page start")
    return PageKey(value[0], value[1])


def parse_probe_page(output: str) -> ProbePage:
    """Everything is checked, because a probe cut short (a killed Job, a truncated log) must not pass for
    a database with fewer assets: the end line's count of the page's rows must match the rows seen, and the
    header's and end line's table counts must agree."""
    lines = [line for line in output.split("\n") if line.strip()]
    if not lines:
        raise ProbeError("probe output is empty")
    header = _load(lines[0], 1)
    if header.get("format") != PROBE_FORMAT:
        raise ProbeError(f"probe output does not start with the {PROBE_FORMAT} header")
    layouts = {layout.name for layout in LAYOUTS}
    layout = header.get("layout")
    if layout not in layouts:
        raise ProbeError(f"probe output names an unknown layout {str(layout)[:40]!r}")
    total = _count(header.get("rows"), "header")
    after = _after(header.get("after"))
    if len(lines) < 2:
        raise ProbeError("probe output is truncated: no end line")
    end = _load(lines[-1], len(lines))
    if end.get("end") != PROBE_FORMAT:
        raise ProbeError("probe output is truncated: no end line")
    if end.get("rows") != total:
        raise ProbeError(f"probe output's end line counts {end.get('rows')!r} assets, its header {total}")
    page = _count(end.get("page"), "end line")
    if len(lines) - 2 != page:
        raise ProbeError(f"probe output has {len(lines) - 2} asset lines, the page counted {page}")
    rows: list[tuple[str, AssetRow | None]] = []
    last: PageKey | None = None
    for number, line in enumerate(lines[1:-1], start=2):
        data = _load(line, number)
        path = data.get("p")
        if not isinstance(path, str) or not path:
            raise ProbeError(f"probe output line {number} has no original path")
        ident = data.get("i")
        if not isinstance(ident, str) or not ident:
            raise ProbeError(f"probe output line {number} has no asset id")
        status = data.get("s")
        if status is not None and not isinstance(status, str):
            raise ProbeError(f"probe output line {number} has a status that is not text")
        created = _time(data.get("c"), f"line {number} creation time")
        deleted = _time(data.get("d"), f"line {number} deletion time")
        last = PageKey(path, ident)
        if status in ("deleted", "partial"):
            rows.append((ident, None))
            continue
        rows.append((ident, AssetRow(path, created, deleted is not None or status == "trashed")))
    return ProbePage(
        layout=str(layout),
        immich_version=_optional_text(header, "version"),
        media_location=_optional_text(header, "media_location"),
        database=_optional_text(header, "database"),
        total=total,
        after=after,
        rows=rows,
        last=last,
    )


class ProbeCollector:
    """The pages of one probe, joined only when they are provably one reading of one database: each page
    starts where the previous one ended, all agree on the table and its count, no asset comes twice, and
    together they hold exactly the counted rows. The scratch database has no writer, so a page that
    disagrees means output that is not the probe's and fails the drill rather than shrinking it."""

    def __init__(self) -> None:
        self.first: ProbePage | None = None
        self.next_after: PageKey | None = None
        self.pages = 0
        self.seen = 0
        self._ids: set[str] = set()
        self._rows: list[AssetRow] = []
        self._not_expected = 0

    @property
    def done(self) -> bool:
        return self.first is not None and self.seen == self.first.total

    def add(self, page: ProbePage) -> None:
        first = self.first
        if page.after != self.next_after:
            raise ProbeError(f"probe page {self.pages + 1} does not start where page {self.pages} ended")
        if first is not None and (page.layout, page.database, page.total) != (
            first.layout,
            first.database,
            first.total,
        ):
            raise ProbeError(
                f"probe page {self.pages + 1} reads another table or count ({page.total} assets, "
                f"page 1 counted {first.total}): the database changed while it was read"
            )
        if first is None:
            self.first = first = page
        self.pages += 1
        if not page.rows and self.seen < first.total:
            raise ProbeError(f"probe page {self.pages} is empty after {self.seen} of {first.total} assets")
        for ident, row in page.rows:
            if ident in self._ids:
                raise ProbeError(f"probe page {self.pages} repeats asset {ident[:40]!r}")
            self._ids.add(ident)
            if row is None:
                self._not_expected += 1
            else:
                self._rows.append(row)
        self.seen += len(page.rows)
        if self.seen > first.total:
            raise ProbeError(f"probe pages hold {self.seen} assets, the database counted {first.total}")
        self.next_after = page.last

    def result(self) -> ProbeResult:
        first = self.first
        if first is None or not self.done:
            total = first.total if first else "?"
            raise ProbeError(f"probe output holds {self.seen} of the database's {total} assets")
        return ProbeResult(
            layout=first.layout,
            immich_version=first.immich_version,
            assets=len(self._rows),
            rows=self._rows,
            trashed=sum(row.trashed for row in self._rows),
            not_expected=self._not_expected,
            media_location=first.media_location,
            database=first.database,
        )


def parse_probe(output: str) -> ProbeResult:
    """A probe whose one page holds every asset (a library below one page, or a test's)."""
    collector = ProbeCollector()
    collector.add(parse_probe_page(output))
    return collector.result()


def _relative_to(path: str, location: str) -> str | None:
    base = location.rstrip("/")
    if not base or not path.startswith(base + "/"):
        return None
    return _clean(path[len(base) + 1 :])


def _clean(rest: str) -> str | None:
    """Immich builds paths with path.join, which never leaves '.', '..' or empty parts: one that has them
    was not written by Immich, and '..' could name a key outside the library, so it maps to nothing."""
    parts = rest.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return "/".join(parts)


def media_relative_path(original_path: str, location: str | None = None) -> str | None:
    """The object key under the media prefix for an asset's original, or None when the file is not in the
    backed-up library (an external library, a path escaping the location, the location itself).

    `location` is the media location the server recorded (ProbeResult.media_location) and wins when given,
    since IMMICH_MEDIA_LOCATION may be anything; otherwise the two defaults and the older relative form."""
    if "\x00" in original_path:
        return None
    if location:
        if not location.startswith("/"):
            location = location.removeprefix("./")
        return _relative_to(original_path, location)
    for candidate in MEDIA_LOCATIONS:
        if original_path.startswith(candidate + "/"):
            return _relative_to(original_path, candidate)
    if not original_path.startswith("/"):
        return _relative_to(original_path.removeprefix("./"), RELATIVE_LOCATION)
    return None
