"""The new Cluster's name: one CNPG accepts (a DNS-1035 label of at most 50 characters, as its admission
webhook checks), refused in the plan before it can name a Cluster or a file, and the default always fits."""

from __future__ import annotations

import datetime as dt

import pytest

from immich_tui.services import clock
from immich_tui.services.recovery import RecoveryError, default_name, plan_recovery
from tests.cluster import Cluster, MakeCluster
from tests.crd_schema import validate
from tests.test_restore_db import _source

REFUSED = [
    ("../escaped", "a lowercase letter first"),
    ("/tmp/x", "a lowercase letter first"),
    ("immich-db/../../x", "a lowercase letter first"),
    ("Immich-DB", "a lowercase letter first"),
    ("immich.db.restore", "a lowercase letter first"),
    ("immich_db", "a lowercase letter first"),
    ("immich-db-", "a lowercase letter first"),
    ("-immich-db", "a lowercase letter first"),
    ("9-lives", "a lowercase letter first"),
    ("immich db", "a lowercase letter first"),
    ("immich-db\nrestore", "a lowercase letter first"),
    ("immich-dé", "a lowercase letter first"),
    ("x" * 51, "at most 50 characters (it has 51)"),
]


@pytest.mark.parametrize(("name", "why"), REFUSED, ids=[repr(n)[:24] for n, _ in REFUSED])
def test_a_name_cnpg_would_refuse_is_refused_by_the_plan(name: str, why: str) -> None:
    cluster, backups = _source("plugin")
    with pytest.raises(RecoveryError) as caught:
        plan_recovery(cluster, backups, media_sync=clock.now() - dt.timedelta(hours=6), name=name)
    message = str(caught.value)
    assert "\n" not in message
    assert "is not a valid name for the new cluster" in message
    assert why in message


@pytest.mark.parametrize("name", ["a", "immich-db-restore-1", "r2d2", "x" * 50])
def test_names_cnpg_accepts(name: str) -> None:
    cluster, backups = _source("plugin")
    plan = plan_recovery(cluster, backups, media_sync=clock.now() - dt.timedelta(hours=6), name=name)
    assert plan.name == plan.manifest["metadata"]["name"] == name
    validate(plan.manifest)


def test_the_default_name_fits_even_for_a_long_source_name() -> None:
    cluster, backups = _source("in-tree")
    cluster.name = "immich-database-of-the-family-photo-library-x"  # 45 characters
    plan = plan_recovery(cluster, backups, media_sync=clock.now() - dt.timedelta(hours=6))
    assert len(plan.name) <= 50 and plan.name.startswith("immich-database-of-the-famil")
    assert default_name("immich-db-with-a-dash-at-the-cut-here", clock.now()).count("--") == 0


def test_plugin_db_restore_refuses_a_bad_name_in_one_line(make_cluster: MakeCluster) -> None:
    cluster: Cluster = make_cluster()
    when = clock.iso(clock.now()) or ""
    for extra in ((), ("--apply",), ("-o", "yaml")):
        result = cluster.run("db", "restore", "--name", "../escaped", "--target-time", when, *extra)
        assert result.code == 2, result.out
        assert result.out == ""
        lines = result.err.splitlines()
        assert len(lines) == 1, result.err
        assert lines[0].startswith("kubectl immich-backup: error: '../escaped' is not a valid name for the new cluster")
    assert cluster.requests("POST", "/clusters") == []
