"""The drill's database probe against a real PostgreSQL holding Immich's asset table, in both layouts.

The probe is the shell script the drill runs in a Job next to the scratch cluster, so it runs here the same
way: `sh` with psql on PATH and only the libpq environment. The tables are faithful subsets of Immich's DDL
(server/src/schema/tables/asset.table.ts for `asset`, the TypeORM entity for the older `assets`), with the
names that break line- and tab-based output.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from immich_tui.services.immich_schema import (
    LAYOUTS,
    NO_TABLE_EXIT,
    AssetRow,
    PageKey,
    ProbeCollector,
    ProbeError,
    media_relative_path,
    parse_probe,
    parse_probe_page,
    probe_env,
    probe_script,
)
from tests.pg import SERVER_USER, PgLab, PgServer, S3Access

UTC = dt.UTC
AWKWARD = (
    "/data/upload/u1/ab/cd/plain.jpg",
    "/data/library/u1/2024/with space.jpg",
    "/data/library/u1/2024/tab\there.jpg",
    "/data/library/u1/2024/new\nline.jpg",
    "/data/library/u1/2024/ünïcødé 写真 📷.heic",
    '/data/library/u1/2024/it\'s "quoted".jpg',
    "/data/library/u1/2024/back\\slash|pipe,comma.jpg",
    "/mnt/external/holiday.jpg",
)
STATUS_ENUM = "CREATE TYPE assets_status_enum AS ENUM ('active', 'trashed', 'deleted', 'partial')"
CURRENT_DDL = (
    STATUS_ENUM,
    'CREATE TABLE "asset" ('
    ' "id" uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,'
    ' "ownerId" uuid NOT NULL,'
    " \"type\" character varying NOT NULL DEFAULT 'IMAGE',"
    ' "originalPath" character varying NOT NULL,'
    ' "createdAt" timestamp with time zone NOT NULL DEFAULT now(),'
    ' "deletedAt" timestamp with time zone,'
    ' "libraryId" uuid,'
    ' "isExternal" boolean NOT NULL DEFAULT false,'
    ' "isOffline" boolean NOT NULL DEFAULT false,'
    " \"status\" assets_status_enum NOT NULL DEFAULT 'active')",
    'CREATE TABLE "version_history" ('
    ' "id" uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,'
    ' "createdAt" timestamp with time zone NOT NULL DEFAULT now(),'
    ' "version" character varying NOT NULL)',
    'CREATE TABLE "system_metadata" ("key" character varying NOT NULL PRIMARY KEY, "value" jsonb NOT NULL)',
)
PREVIOUS_DDL = (  # a release before the status column and version_history: only the columns TypeORM had then
    'CREATE TABLE "assets" ('
    ' "id" uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,'
    ' "ownerId" uuid NOT NULL,'
    ' "originalPath" character varying NOT NULL,'
    ' "createdAt" timestamp with time zone NOT NULL DEFAULT now(),'
    ' "deletedAt" timestamp with time zone,'
    ' "isExternal" boolean NOT NULL DEFAULT false)',
)


def _lit(text: str) -> str:
    """A string literal; E'' so the test data's tabs and newlines reach the table as themselves."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\t", "\\t").replace("\n", "\\n")
    return f"E'{escaped}'"


def _created(i: int) -> dt.datetime:
    return dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC) + dt.timedelta(days=i, seconds=i)


@dataclass
class Probe:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Lab:
    lab: PgLab
    pg: PgServer

    def probe(self, database: str, page: dict[str, str] | None = None) -> Probe:
        env = {
            **self.pg.env,
            **(page or {}),
            "PGHOST": str(self.pg.socket_dir),
            "PGPORT": str(self.pg.port),
            "PGUSER": SERVER_USER,
            "PGPASSWORD": "unused-with-trust",
            "PGDATABASE": database,
        }
        done = subprocess.run(
            self.pg.drop.argv(["sh", "-c", probe_script()]),
            env=env,
            cwd=self.lab.workspace.root,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Probe(done.returncode, done.stdout, done.stderr)

    def database(self, name: str, ddl: tuple[str, ...]) -> None:
        self.pg.sql(f'CREATE DATABASE "{name}"')
        for statement in ddl:
            self.pg.sql(statement, name)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with PgLab(S3Access("http://127.0.0.1:9", "unused", "unused")) as pglab:
        pg = pglab.server("immich")
        pg.initdb()
        pg.start()
        yield Lab(pglab, pg)


def test_current_layout_rows_come_back_exactly(lab: Lab) -> None:
    lab.database("immich_current", CURRENT_DDL)
    values = []
    for i, path in enumerate(AWKWARD):
        library = "gen_random_uuid()" if path.startswith("/mnt/") else "NULL"
        values.append(f"(gen_random_uuid(), {_lit(path)}, '{_created(i).isoformat()}', {library})")
    lab.pg.sql(
        'INSERT INTO "asset" ("ownerId", "originalPath", "createdAt", "libraryId") VALUES ' + ", ".join(values),
        "immich_current",
    )
    lab.pg.sql(
        'INSERT INTO "asset" ("ownerId", "originalPath", "createdAt", "deletedAt", "status") VALUES '
        "(gen_random_uuid(), '/data/upload/u1/tr/as/trashed.jpg', '2024-05-01T00:00:00Z', "
        "'2024-06-01T00:00:00Z', 'trashed'), "
        "(gen_random_uuid(), '/data/upload/u1/em/pt/emptied.jpg', '2024-05-02T00:00:00Z', "
        "'2024-06-02T00:00:00Z', 'deleted'), "
        "(gen_random_uuid(), '/data/upload/u1/pa/rt/partial.jpg', '2024-05-03T00:00:00Z', NULL, 'partial')",
        "immich_current",
    )
    lab.pg.sql(
        "INSERT INTO version_history (\"createdAt\", version) VALUES ('2025-01-01Z', 'v1.135.3'), "
        "('2025-08-01Z', 'v1.137.3')",
        "immich_current",
    )
    lab.pg.sql("INSERT INTO system_metadata VALUES ('MediaLocation', '{\"location\": \"/data\"}')", "immich_current")

    done = lab.probe("immich_current")
    assert (done.returncode, done.stderr) == (0, "")
    result = parse_probe(done.stdout)

    assert result.layout == LAYOUTS[0].name == "current"
    assert result.immich_version == "v1.137.3"
    assert result.media_location == "/data"
    assert result.database == "immich_current"
    expected = [AssetRow(path, _created(i)) for i, path in enumerate(AWKWARD)]
    expected.append(AssetRow("/data/upload/u1/tr/as/trashed.jpg", dt.datetime(2024, 5, 1, tzinfo=UTC), True))
    assert sorted(result.rows, key=lambda r: r.original_path) == sorted(expected, key=lambda r: r.original_path)
    assert (result.assets, result.trashed, result.not_expected) == (9, 1, 2)


def test_previous_layout_without_status_or_version(lab: Lab) -> None:
    lab.database("immich_previous", PREVIOUS_DDL)
    paths = ("upload/library/admin/2023/old relative.jpg", "/usr/src/app/upload/upload/u2/aa/bb/x\ty.mp4")
    values = ", ".join(f"(gen_random_uuid(), {_lit(p)}, '{_created(i).isoformat()}')" for i, p in enumerate(paths))
    lab.pg.sql(f'INSERT INTO "assets" ("ownerId", "originalPath", "createdAt") VALUES {values}', "immich_previous")
    lab.pg.sql(
        'INSERT INTO "assets" ("ownerId", "originalPath", "createdAt", "deletedAt") VALUES '
        "(gen_random_uuid(), '/usr/src/app/upload/upload/u2/cc/dd/in trash.jpg', '2023-01-01Z', '2023-02-01Z')",
        "immich_previous",
    )

    done = lab.probe("immich_previous")
    assert (done.returncode, done.stderr) == (0, "")
    result = parse_probe(done.stdout)

    assert (result.layout, result.immich_version, result.media_location) == ("previous", None, None)
    expected = [AssetRow(p, _created(i)) for i, p in enumerate(paths)]
    expected.append(
        AssetRow("/usr/src/app/upload/upload/u2/cc/dd/in trash.jpg", dt.datetime(2023, 1, 1, tzinfo=UTC), True)
    )
    assert sorted(result.rows, key=lambda r: r.original_path) == sorted(expected, key=lambda r: r.original_path)
    assert (result.assets, result.trashed, result.not_expected) == (3, 1, 0)
    assert [media_relative_path(r.original_path) for r in sorted(result.rows, key=lambda r: r.created)] == [
        "upload/u2/cc/dd/in trash.jpg",
        "library/admin/2023/old relative.jpg",
        "upload/u2/aa/bb/x\ty.mp4",
    ]


def test_database_without_immich_fails_with_one_line(lab: Lab) -> None:
    lab.database("not_immich", ('CREATE TABLE "asset_notes" ("originalPath" text)',))

    done = lab.probe("not_immich")

    assert done.returncode == NO_TABLE_EXIT
    assert done.stdout == ""
    assert done.stderr == "no Immich asset table (asset or assets) in database not_immich\n"


def test_the_probe_cannot_write(lab: Lab) -> None:
    """A database whose reads would write (a view over a volatile function) is refused by the probe's
    session; the same read outside the probe does write, so the refusal is the probe's doing."""
    ddl = (
        *CURRENT_DDL[:2],
        'CREATE TABLE "writes" ("n" int)',
        "CREATE FUNCTION sneaky() RETURNS text LANGUAGE sql VOLATILE AS "
        "$$ INSERT INTO writes VALUES (1); SELECT 'v9.9.9'::text $$",
        'CREATE VIEW "version_history" AS SELECT now() AS "createdAt", sneaky() AS "version"',
    )
    lab.database("immich_hostile", ddl)
    lab.pg.sql('SELECT "version" FROM version_history', "immich_hostile")
    assert lab.pg.sql("SELECT count(*) FROM writes", "immich_hostile") == "1"

    done = lab.probe("immich_hostile")

    assert done.returncode != 0
    assert "cannot execute INSERT in a read-only transaction" in done.stderr
    assert lab.pg.sql("SELECT count(*) FROM writes", "immich_hostile") == "1"


def test_parse_probe_refuses_truncated_or_foreign_output(lab: Lab) -> None:
    lab.database("immich_three", CURRENT_DDL)
    lab.pg.sql(
        'INSERT INTO "asset" ("ownerId", "originalPath") SELECT gen_random_uuid(), \'/data/upload/u/\' || n '
        "FROM generate_series(1, 3) AS n",
        "immich_three",
    )
    done = lab.probe("immich_three")
    assert parse_probe(done.stdout).assets == 3
    lines = done.stdout.splitlines()

    with pytest.raises(ProbeError, match="truncated"):
        parse_probe("\n".join(lines[:-1]))
    with pytest.raises(ProbeError, match="2 asset lines, the page counted 3"):
        parse_probe("\n".join([*lines[:2], *lines[3:]]))
    with pytest.raises(ProbeError, match="header"):
        parse_probe("\n".join(lines[1:]))
    with pytest.raises(ProbeError, match="not JSON"):
        parse_probe("\n".join([lines[0], "/data/upload/u/1", *lines[2:]]))
    with pytest.raises(ProbeError, match="empty"):
        parse_probe("")
    for message in (str(e) for e in _errors(lines)):
        assert "\n" not in message


def _errors(lines: list[str]) -> list[ProbeError]:
    found = []
    for bad in ("\n".join(lines[:-1]), "garbage", lines[0].replace('"rows": 3', '"rows": "3"')):
        try:
            parse_probe(bad)
        except ProbeError as exc:
            found.append(exc)
    assert len(found) == 3
    return found


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/data/upload/u1/ab/cd/x.jpg", "upload/u1/ab/cd/x.jpg"),
        ("/data/library/admin/2024/a b.jpg", "library/admin/2024/a b.jpg"),
        ("/usr/src/app/upload/library/admin/2024/x.jpg", "library/admin/2024/x.jpg"),
        ("/usr/src/app/upload/upload/u1/ab/cd/x.jpg", "upload/u1/ab/cd/x.jpg"),
        ("upload/library/admin/x.jpg", "library/admin/x.jpg"),  # before paths were made absolute
        ("/mnt/photos/x.jpg", None),  # external library
        ("/database/x.jpg", None),  # a sibling whose name starts like a location
        ("/data", None),
        ("/data/", None),
        ("/usr/src/app/upload", None),
        ("/data/../etc/passwd", None),
        ("/data/library/../../etc/passwd", None),
        ("/data/library/./x.jpg", None),
        ("/data//library/x.jpg", None),
        ("upload/../secret", None),
        ("../data/library/x.jpg", None),
        ("/usr/src/app/uploadx/library/x.jpg", None),
    ],
)
def test_media_relative_path_defaults(path: str, key: str | None) -> None:
    assert media_relative_path(path) == key


def test_media_relative_path_recorded_location() -> None:
    assert media_relative_path("/srv/immich/library/u/x.jpg", "/srv/immich") == "library/u/x.jpg"
    assert media_relative_path("/srv/immich/library/u/x.jpg", "/srv/immich/") == "library/u/x.jpg"
    assert media_relative_path("/data/library/u/x.jpg", "/srv/immich") is None
    assert media_relative_path("/srv/immich", "/srv/immich") is None
    assert media_relative_path("/srv/immich/../x", "/srv/immich") is None
    assert media_relative_path("upload/library/u/x.jpg", "upload") == "library/u/x.jpg"


def test_layout_is_immichs_table_not_a_namesake(lab: Lab) -> None:
    """A table called `asset` without Immich's path column is someone else's: the older layout is read;
    when both Immich tables exist the current one is."""
    lab.database("immich_namesake", ('CREATE TABLE "asset" ("id" int)', *PREVIOUS_DDL))
    lab.pg.sql(
        'INSERT INTO "assets" ("ownerId", "originalPath") VALUES (gen_random_uuid(), \'/data/upload/a.jpg\')',
        "immich_namesake",
    )
    older = parse_probe(lab.probe("immich_namesake").stdout)
    assert (older.layout, [r.original_path for r in older.rows]) == ("previous", ["/data/upload/a.jpg"])

    lab.database("immich_both", (*CURRENT_DDL, *PREVIOUS_DDL))
    lab.pg.sql(
        'INSERT INTO "asset" ("ownerId", "originalPath") VALUES (gen_random_uuid(), \'/data/upload/b.jpg\')',
        "immich_both",
    )
    both = parse_probe(lab.probe("immich_both").stdout)
    assert (both.layout, [r.original_path for r in both.rows]) == ("current", ["/data/upload/b.jpg"])


def _read_in_pages(lab: Lab, database: str, **size: int) -> tuple[ProbeCollector, list[str]]:
    """What the drill does: one probe per page, each asked to start where the previous page ended."""
    collector = ProbeCollector()
    outputs: list[str] = []
    while not collector.done:
        done = lab.probe(database, probe_env(collector.next_after, **size))
        assert (done.returncode, done.stderr) == (0, "")
        outputs.append(done.stdout)
        collector.add(parse_probe_page(done.stdout))
        assert len(outputs) <= 100, "the pages never ended"
    return collector, outputs


def _paged_database(lab: Lab, name: str) -> None:
    """Every awkward path (each one, in turn, the key a page starts after), two assets sharing a path, a
    path that is SQL, and rows with no file to expect: 14 rows."""
    lab.database(name, CURRENT_DDL)
    paths = (*AWKWARD, "/data/upload/u1/sa/me/twice.jpg", "/data/upload/u1/sa/me/twice.jpg")
    paths += ("/data/upload/u1/x/'); DROP TABLE asset; --.jpg",)
    values = ", ".join(f"(gen_random_uuid(), {_lit(p)}, '{_created(i).isoformat()}')" for i, p in enumerate(paths))
    lab.pg.sql(f'INSERT INTO "asset" ("ownerId", "originalPath", "createdAt") VALUES {values}', name)
    lab.pg.sql(
        'INSERT INTO "asset" ("ownerId", "originalPath", "deletedAt", "status") VALUES '
        "(gen_random_uuid(), '/data/upload/u1/tr/as/trashed.jpg', '2024-06-01Z', 'trashed'), "
        "(gen_random_uuid(), '/data/upload/u1/em/pt/emptied.jpg', '2024-06-02Z', 'deleted'), "
        "(gen_random_uuid(), '/data/upload/u1/pa/rt/partial.jpg', NULL, 'partial')",
        name,
    )


def test_a_table_read_in_pages_joins_into_exactly_the_rows_of_one_reading(lab: Lab) -> None:
    """A pod's log is rotated at 10 MiB, so the drill reads the table a page per Job: by rows, and by bytes
    (one byte still returns one row per page). Every page boundary is an awkward path, including one
    shared by two assets and one that is SQL; the pages join into the one-page reading, row for row."""
    _paged_database(lab, "immich_paged")
    whole = parse_probe(lab.probe("immich_paged").stdout)
    assert (whole.assets, whole.trashed, whole.not_expected) == (12, 1, 2)

    by_rows, outputs = _read_in_pages(lab, "immich_paged", page_rows=4)
    assert (len(outputs), by_rows.pages, by_rows.seen) == (4, 4, 14)  # 4 + 4 + 4 + 2
    by_bytes, outputs = _read_in_pages(lab, "immich_paged", page_bytes=1)
    assert (len(outputs), by_bytes.pages) == (14, 14)
    for paged in (by_rows.result(), by_bytes.result()):
        assert sorted(paged.rows, key=repr) == sorted(whole.rows, key=repr)
        assert (paged.assets, paged.trashed, paged.not_expected) == (12, 1, 2)
        assert (paged.layout, paged.database) == (whole.layout, whole.database)
    assert lab.pg.sql('SELECT count(*) FROM "asset"', "immich_paged") == "14"  # the SQL path was only a path


def test_pages_that_do_not_join_into_one_reading_are_refused(lab: Lab) -> None:
    """A page that starts elsewhere, a page that repeats an asset, a page missing and a page cut short are
    refused: a probe whose pages do not add up must not pass for a smaller library."""
    _paged_database(lab, "immich_joins")

    def page(after: PageKey | None) -> str:
        done = lab.probe("immich_joins", probe_env(after, page_rows=5))
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = parse_probe_page(page(None))
    assert first.last is not None and len(first.rows) == 5
    second = page(first.last)
    third_after = parse_probe_page(second).last

    joined = ProbeCollector()
    joined.add(first)
    with pytest.raises(ProbeError, match="probe page 2 does not start where page 1 ended"):
        joined.add(parse_probe_page(page(third_after)))  # page 2 skipped

    overlapping = ProbeCollector()
    overlapping.add(first)
    one = json.loads(page(None).splitlines()[1])  # the first row: the forged page starts after it
    early = parse_probe_page(page(PageKey(one["p"], one["i"])))
    early.after = first.last  # a forged header: the page claims to follow page 1 but repeats its rows
    with pytest.raises(ProbeError, match="repeats asset"):
        overlapping.add(early)

    short = ProbeCollector()
    short.add(first)
    with pytest.raises(ProbeError, match="holds 5 of the database's 14 assets"):
        short.result()
    with pytest.raises(ProbeError, match="holds 5 of the database's 14 assets"):
        parse_probe(page(None))
    lines = second.splitlines()
    with pytest.raises(ProbeError, match="4 asset lines, the page counted 5"):
        parse_probe_page("\n".join([*lines[:2], *lines[3:]]))
