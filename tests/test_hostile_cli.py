"""Hostile input from the cluster, the kubeconfig, the flags and the credentials: one line, never a traceback.

Every case names what is wrong (the object and its field, the flag, the file and its entry, the variable)
in one line on stderr and exits 2; `status` keeps answering in the sections the bad input does not touch.
The cluster is kmock's emulator over HTTP, seeded with objects the API server would never store; the
engine runs through its real CLI against moto. No secret value ever reaches the output (`Cluster.run` and
`run_sync` check every line).
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from immich_tui.demo.fixtures import CRONJOB, DB_CLUSTER, DB_NS, NS, job
from immich_tui.demo.s3 import DEMO_KEY_ID, DEMO_SECRET, LocalS3
from immich_tui.plugin.cli import main
from immich_tui.services import clock
from tests.cluster import Cluster, MakeCluster
from tests.conftest import Result, list_keys

PROG = "kubectl immich-backup"
RunSync = Callable[..., Result]


def one_line_error(result: Result, *needles: str, prog: str = PROG) -> str:
    """The whole stderr is one `<prog>: error: …` line naming every needle, and no traceback anywhere."""
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run(*argv: str, env: dict[str, str] | None = None) -> Result:
    """The plugin in-process, with no cluster unless a --kubeconfig says otherwise."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err, env=env or {})
    return Result(code, out.getvalue(), err.getvalue())


def _replace(cluster: Cluster, key: str, namespace: str, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Store the object again with `change` applied, as a broken controller or API could serve it."""
    obj = copy.deepcopy(cluster.get(key, namespace, name))
    assert obj is not None
    obj["metadata"] = {"name": name, "namespace": namespace, **{k: obj["metadata"][k] for k in ("labels",) if k in obj}}
    change(obj)
    cluster.server.put(key, obj)


# -- objects from the API ----------------------------------------------------------------------------------


def test_a_job_whose_conditions_are_text_is_named_and_the_other_sections_still_answer(
    make_cluster: MakeCluster,
) -> None:
    cluster = make_cluster()
    cronjob = cluster.get("batch/v1/cronjobs", NS, CRONJOB)
    assert cronjob is not None
    broken = job(f"{CRONJOB}-99999999", cronjob["metadata"]["uid"], clock.now() - dt.timedelta(minutes=5), "succeeded")
    broken["status"]["conditions"] = "Complete"
    cluster.server.put("batch/v1/jobs", broken)
    expected = f"Job {NS}/{CRONJOB}-99999999: status.conditions is 'Complete' (text), not a list"

    status = cluster.run("status", "-o", "json")
    assert status.code == 2, status.err
    data = status.json()
    assert data["media"]["error"] == expected and data["media"]["value"] is None
    assert data["database"]["value"]["cluster"]["name"] == DB_CLUSTER and not data["database"]["error"]
    assert data["offsite"]["value"]["bucket"]  # the bucket was still read
    assert data["verdict"]["state"] == "error"
    states = {c["name"]: c["state"] for c in data["verdict"]["checks"]}
    assert states == {"media": "error", "database": "ok", "wal": "ok", "drill": "off"}
    table = cluster.run("status")
    assert table.code == 2 and "Verdict: ERROR" in table.out and expected in table.out
    assert "Traceback" not in table.err
    one_line_error(cluster.run("jobs"), expected)


def test_a_cluster_with_instances_three_is_named_and_the_media_still_answer(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    three: Callable[[dict[str, Any]], None] = lambda c: c["spec"].update(instances="three")  # noqa: E731
    _replace(cluster, "postgresql.cnpg.io/v1/clusters", DB_NS, DB_CLUSTER, three)
    expected = f"CNPG Cluster {DB_NS}/{DB_CLUSTER}: spec.instances is 'three' (text), not a whole number"

    status = cluster.run("status", "-o", "json")
    assert status.code == 2, status.err
    data = status.json()
    assert data["database"]["error"].startswith(expected) and data["database"]["value"] is None
    assert data["media"]["value"]["cronjob"]["name"] == CRONJOB and not data["media"]["error"]
    states = {c["name"]: c["state"] for c in data["verdict"]["checks"]}
    assert states == {"media": "ok", "database": "error", "wal": "error", "drill": "off"}
    for argv in (("db", "status"), ("db", "backups"), ("db", "restore"), ("db", "backup")):
        one_line_error(cluster.run(*argv), expected)


def test_a_cluster_whose_conditions_are_not_objects_is_named(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    _replace(
        cluster,
        "postgresql.cnpg.io/v1/clusters",
        DB_NS,
        DB_CLUSTER,
        lambda c: c["status"].update(conditions=["Ready", {"type": "ContinuousArchiving"}]),
    )
    one_line_error(
        cluster.run("db", "status"),
        f"CNPG Cluster {DB_NS}/{DB_CLUSTER}: status.conditions[0] is 'Ready' (text), not an object",
    )


# -- flags -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-5", "0", "1e9", "soon"])
def test_stale_after_must_be_a_number_of_hours(value: str) -> None:
    """`nan` compares false with every age, so the status called any backup fresh (HEALTHY)."""
    result = run("status", f"--stale-after={value}")
    assert result.code == 2
    one_line_error(result, "argument --stale-after", repr(value))
    assert result.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ("db", "restore", "--target-time", "0001-01-01T00:00:00+14:00"),
        ("db", "restore", "--target-time", "9999-12-31T23:59:59-14:00"),
        ("db", "restore", "--target-time", "0001-01-01T00:00:00Z"),
        ("db", "restore", "--as-of", "0001-01-01T00:00:00+14:00"),
        ("media", "restore", "--as-of", "0001-01-01T00:00:00+14:00"),
    ],
    ids=["year-1-east", "year-9999-west", "year-1-utc", "db-as-of", "media-as-of"],
)
def test_a_time_outside_the_calendar_is_refused(make_cluster: MakeCluster, argv: tuple[str, ...]) -> None:
    """0001-01-01T00:00:00+14:00 lies before the first moment a datetime holds in UTC (OverflowError)."""
    cluster = make_cluster()
    one_line_error(cluster.run(*argv), f"{argv[2]} {argv[3]!r}")
    assert not cluster.requests("POST")  # nothing was created


@pytest.mark.parametrize(
    "path",
    ["garbage", "s3://[::1", "s3://bucket:99999/x", "s3://bu cket/cnpg", "s3://b?x=1/cnpg", "s3://"],
)
def test_db_catalog_names_a_destination_path_that_is_not_one(tmp_path: Path, path: str) -> None:
    """Checked before anything else is read: no cluster and no bucket is needed to say it."""
    env = {"AWS_ACCESS_KEY_ID": DEMO_KEY_ID, "AWS_SECRET_ACCESS_KEY": DEMO_SECRET, "AWS_REGION": "us-east-1"}
    kubeconfig = str(tmp_path / "none")
    for argv in (("--server-name", "immich-db"), ()):
        result = run("db", "catalog", "--destination-path", path, *argv, "--kubeconfig", kubeconfig, env=env)
        assert result.code == 2
        one_line_error(result, "--destination-path: destinationPath must look like s3://bucket/path", repr(path))


def test_db_catalog_names_a_server_name_that_is_not_a_folder(tmp_path: Path) -> None:
    result = run("db", "catalog", "--destination-path", "s3://b/cnpg", "--server-name", "a/b")
    one_line_error(result, "--server-name must be a single folder name, got 'a/b'")


# -- the kubeconfig ------------------------------------------------------------------------------------------

TOKEN = "kubeconfig-token-never-printed-77aa"


def _kubeconfig(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "home", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "me", "user": {"token": TOKEN}}],
        "contexts": [{"name": "home", "context": {"cluster": "home", "user": "me"}}],
        "current-context": "home",
    }
    config.update(changes)
    return config


def _with_cluster(**fields: Any) -> bytes:
    return yaml.safe_dump(
        _kubeconfig(clusters=[{"name": "home", "cluster": {"server": "https://127.0.0.1:1", **fields}}])
    ).encode()


def _with_user(**fields: Any) -> bytes:
    return yaml.safe_dump(_kubeconfig(users=[{"name": "me", "user": {"token": TOKEN, **fields}}])).encode()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\xff\xfe\x89PNG binary", "is not UTF-8 text (byte 2)"),
        (b"- a\n- b\n", "is a list in YAML, not a kubeconfig"),
        (b"just a scalar\n", "is text in YAML, not a kubeconfig"),
        (b"clusters: [unclosed\n", "is not YAML at line 2"),
        (yaml.safe_dump(_kubeconfig(clusters="home")).encode(), "clusters is text, not a list"),
        (yaml.safe_dump(_kubeconfig(users=["me"])).encode(), "users[0] is not a mapping with a name"),
        (yaml.safe_dump(_kubeconfig(contexts=[{"name": "home", "context": "home"}])).encode(), "context is text"),
        (_with_cluster(**{"certificate-authority-data": "!!!notbase64"}), "certificate-authority-data is not base64"),
        (_with_user(**{"client-key-data": 12345}), "client-key-data is not base64"),
        (yaml.safe_dump(_kubeconfig(**{"current-context": ["home"]})).encode(), "current-context is a list"),
    ],
    ids=["binary", "list", "scalar", "not-yaml", "clusters-text", "user-text", "context-text", "ca", "key", "current"],
)
def test_a_kubeconfig_that_is_not_one_is_named(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "kubeconfig"
    path.write_bytes(content)
    for argv in (("status",), ("jobs",), ("db", "status")):
        result = run(*argv, "--kubeconfig", str(path))
        assert result.code == 2
        line = one_line_error(result, str(path), expected)
        assert TOKEN not in line


def test_a_kubeconfig_that_is_a_device_is_not_read(tmp_path: Path) -> None:
    one_line_error(run("status", "--kubeconfig", "/dev/zero"), "kubeconfig /dev/zero is not a regular file")


# -- credentials ---------------------------------------------------------------------------------------------


def _secret_key(cluster: Cluster, name: str, value: bytes | str) -> None:
    def change(secret: dict[str, Any]) -> None:
        encoded = value if isinstance(value, str) else base64.b64encode(value).decode()
        secret["data"] = {**secret["data"], name: encoded}

    _replace(cluster, "v1/secrets", NS, "immich-offsite-restorer", change)


@pytest.mark.parametrize(
    ("value", "what"),
    [("AKIA\u4e2dREADER".encode(), "a non-ASCII character at position 5"), (b"AKIA\x07READER", "a control character")],
)
def test_a_restorer_secret_whose_access_key_id_cannot_be_sent(
    make_cluster: MakeCluster, value: bytes, what: str
) -> None:
    cluster = make_cluster()
    _secret_key(cluster, "AWS_ACCESS_KEY_ID", value)
    expected = f"Secret {NS}/immich-offsite-restorer: AWS_ACCESS_KEY_ID holds {what}"
    one_line_error(cluster.run("offsite"), expected)
    status = cluster.run("status", "-o", "json")
    assert status.code == 2
    data = status.json()
    assert data["offsite"]["error"].startswith(expected)
    assert data["media"]["value"] is not None and data["database"]["value"] is not None
    assert data["verdict"]["checks"][0]["state"] == "error" and expected in data["verdict"]["checks"][0]["detail"]


def test_a_restorer_secret_value_that_is_not_base64_is_named(make_cluster: MakeCluster) -> None:
    cluster = make_cluster()
    _secret_key(cluster, "AWS_REGION", "###")
    one_line_error(cluster.run("offsite"), f"Secret {NS}/immich-offsite-restorer: data.AWS_REGION is not base64")


@pytest.mark.parametrize(
    ("key_id", "what"),
    [
        ("AKIA\u4e2dWRITER", "a non-ASCII character at position 5"),
        ("AKIA\u00e9WRITER", "a non-ASCII character at position 5"),  # Latin-1: it would be sent, mangled
        ("AKIA WRITER", "a space at position 5"),
        ("AKIAWRITER\n", "a control character at position 11"),
    ],
    ids=["cjk", "latin-1", "space", "newline"],
)
def test_the_engine_names_an_access_key_id_it_cannot_send(
    run_sync: RunSync, monkeypatch: pytest.MonkeyPatch, s3: LocalS3, bucket: str, key_id: str, what: str
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    for command in ("backup", "verify"):
        result = run_sync(command)
        assert result.code == 2
        one_line_error(result, f"configuration error: AWS_ACCESS_KEY_ID holds {what}", prog="immich-sync")
        assert key_id.strip() not in result.err
    assert list_keys(s3, bucket) == {}  # nothing was written
