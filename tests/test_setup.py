"""`kubectl immich-backup setup`: the offsite Secrets from a `.env` file.

Against kmock's Kubernetes emulator over HTTP with the official client, and moto S3: the session's
server for `--check-s3` (versioning and Object Lock states, an answer injected by a proxy for a server
without Object Lock), and one enforcing IAM with the policies shipped in deploy/iam (s3:prefix
conditions included, tests/strict_iam.py), so the check is proven with exactly the permissions the
writer, the archiver, the restorer and the viewer get.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from immich_tui.demo.emulator import CORE_RESOURCES, Denial, EmulatorServer
from immich_tui.demo.s3 import LocalS3, bucket_policy, free_port
from immich_tui.flags import global_flags, with_defaults
from immich_tui.plugin import PROG
from immich_tui.plugin.setup_cmd import add_setup_parser, run_setup
from immich_tui.services.setup import VARIABLES, EnvFileError, load_config, parse_env, read_env_file
from immich_tui.services.status import Services, Target
from sync_engine.report import parse_report_key
from tests.cluster import Cluster
from tests.conftest import Result, list_keys
from tests.s3proxy import Proxy, Request
from tests.strict_iam import StrictIamS3

NS, DB_NS = "immich", "postgresql"
WRITER, ARCHIVER, RESTORER = "immich-offsite-writer", "immich-offsite-cnpg", "immich-offsite-restorer"
VIEWER = "immich-offsite-viewer"
LABELS = {"app.kubernetes.io/managed-by": "immich-backup", "app.kubernetes.io/part-of": "immich-offsite-backup"}

# Shaped like AWS keys (20-character IDs, 40-character secrets), so the strict AWS checks apply.
WRITER_ID = "AKIAWRITER0000EXAMPL"
WRITER_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYwriterKEY1"
ARCHIVER_ID = "AKIAARCHIVER00EXAMPL"
ARCHIVER_KEY = "Hq3MtGbClwBF/2Zp9Utk/h3yCo8nvbarchiverK3"
RESTORER_ID = "AKIARESTORER00EXAMPL"
RESTORER_KEY = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbrestorerK2"
VIEWER_ID = "AKIAVIEWER0000EXAMPL"
VIEWER_KEY = "Vw4MtGbClwBF/2Zp9Utk/h3yCo8nvbviewer0K4x"
SECRETS = (WRITER_ID, WRITER_KEY, ARCHIVER_ID, ARCHIVER_KEY, RESTORER_ID, RESTORER_KEY, VIEWER_ID, VIEWER_KEY)

BASE = {
    "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID": WRITER_ID,
    "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": WRITER_KEY,
    "OFFSITE_BACKUP_AWS_REGION": "eu-central-1",
    "OFFSITE_BACKUP_BUCKET_NAME": "family-photos-offsite",
    "OFFSITE_BACKUP_MEDIA_PREFIX": "immich/media/",
    "OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID": ARCHIVER_ID,
    "OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY": ARCHIVER_KEY,
    "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": RESTORER_ID,
    "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": RESTORER_KEY,
}
# The viewer is optional: BASE leaves it out, as an .env written before it existed does.
WITH_VIEWER: dict[str, str | None] = {
    "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID": VIEWER_ID,
    "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY": VIEWER_KEY,
}


def env_text(values: dict[str, str | None], extra: tuple[str, ...] = ()) -> str:
    """A `.env` as people write them: comments, blank lines, `export`, quotes, foreign variables."""
    lines = ["# offsite backup", "", "IMMICH_VERSION=v1.130.0  # not ours: ignored", ""]
    for i, (name, value) in enumerate(values.items()):
        if value is None:
            continue
        if i % 3 == 1 and value and '"' not in value and " " not in value:
            lines.append(f'export {name}="{value}"')
        elif i % 3 == 2 and value and "'" not in value and " " not in value:
            lines.append(f"{name}='{value}'  # quoted")
        else:
            lines.append(f"{name}={value}")
    return "\n".join([*lines, *extra]) + "\n"


@dataclass
class Setup:
    server: EmulatorServer
    kubeconfig: Path
    tmp: Path

    @property
    def emulator(self) -> Any:
        return self.server.emulator

    def env_file(self, changes: dict[str, str | None] | None = None, *extra: str, mode: int = 0o600) -> Path:
        path = self.tmp / f"env-{len(list(self.tmp.glob('env-*')))}"
        path.write_text(env_text({**BASE, **(changes or {})}, extra))
        path.chmod(mode)
        return path

    def run(self, *argv: str, secrets: tuple[str, ...] = SECRETS) -> Result:
        """The subcommand through its own parser with the plugin's global flags, as the plugin will run it."""
        common = global_flags()
        parser = argparse.ArgumentParser(prog=PROG, parents=[common])
        add_setup_parser(parser.add_subparsers(dest="command", required=True), common)
        args = with_defaults(parser.parse_args(["setup", *argv, "--kubeconfig", str(self.kubeconfig)]))
        target = Target(
            kubeconfig=args.kubeconfig,
            context=args.context,
            namespace=args.namespace,
            db_namespace=args.db_namespace,
            read_only=args.read_only,
        )
        services = Services(target, {})
        stdout, stderr = io.StringIO(), io.StringIO()
        try:
            code = run_setup(args, services, stdout, stderr)
        finally:
            services.close()
        out, err = stdout.getvalue(), stderr.getvalue()
        for value in secrets:
            assert value not in out and value not in err, "a key was printed"
        return Result(code, out, err)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.server.get("v1/secrets", namespace, name)

    def data(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.secret(namespace, name)
        assert secret is not None, f"{namespace}/{name} missing"
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    def put_secret(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": "1"}
        if labels:
            meta["labels"] = labels
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.server.put("v1/secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": encoded})

    def writes(self, since: int = 0) -> list[Any]:
        """Requests that change an object (access reviews are questions, not changes)."""
        return [
            r
            for r in self.emulator.requests[since:]
            if r.method.value in ("POST", "PUT", "PATCH", "DELETE") and "selfsubjectaccessreviews" not in r.url.path
        ]

    def reviews(self, since: int = 0) -> list[Any]:
        return [r for r in self.emulator.requests[since:] if "selfsubjectaccessreviews" in r.url.path]


@pytest.fixture
def bucket(s3: LocalS3) -> str:
    """Unversioned until a test turns versioning on: what setup checks is that state."""
    name = f"setup-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    for name in list(os.environ):
        if name.startswith(("AWS_", "KUBECONFIG")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    server = EmulatorServer().start()
    server.emulator.serve(CORE_RESOURCES)
    for ns in (NS, DB_NS):
        server.put("v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(server.kubeconfig()))
    yield Setup(server, kubeconfig, tmp_path)
    server.stop()


def _expected(key_id: str, secret: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "eu-central-1",
        "BUCKET_NAME": "family-photos-offsite",
        "MEDIA_PREFIX": "immich/media/",
        **extra,
    }


def _archiver_expected(**extra: str) -> dict[str, str]:
    """CNPG reads keys and region; the archiver's Secret carries no media prefix."""
    data = _expected(ARCHIVER_ID, ARCHIVER_KEY, **extra)
    del data["MEDIA_PREFIX"]
    return data


def _rows(out: str) -> dict[tuple[str, str], str]:
    """SECRET NAMESPACE RESULT rows of the summary table."""
    rows = {}
    for line in out.splitlines():
        parts = line.lstrip("# ").split()
        if len(parts) >= 3 and parts[0] in (WRITER, ARCHIVER, RESTORER, VIEWER):
            rows[parts[0], parts[1]] = " ".join(parts[2:]).removesuffix(" -")
    return rows


# Creating and updating -----------------------------------------------------------------------------
def test_creates_the_three_secrets(setup: Setup) -> None:
    """One Secret per identity, each only where its reader runs, each with only its own keys."""
    result = setup.run("--env-file", str(setup.env_file()))
    assert result.code == 0, result.err
    assert result.err == ""
    assert _rows(result.out) == {(WRITER, NS): "created", (ARCHIVER, DB_NS): "created", (RESTORER, NS): "created"}
    assert setup.data(NS, WRITER) == _expected(WRITER_ID, WRITER_KEY)
    assert setup.data(DB_NS, ARCHIVER) == _archiver_expected()
    assert setup.data(NS, RESTORER) == _expected(RESTORER_ID, RESTORER_KEY)
    # the writer's keys never reach the database namespace, nor the archiver's the Immich namespace
    assert setup.secret(DB_NS, WRITER) is None and setup.secret(NS, ARCHIVER) is None
    assert setup.secret(DB_NS, RESTORER) is None
    everywhere = {
        (ns, name): json.dumps(setup.data(ns, name)) for ns, name in ((NS, WRITER), (DB_NS, ARCHIVER), (NS, RESTORER))
    }
    for (ns, name), text in everywhere.items():
        own = {
            WRITER: (WRITER_ID, WRITER_KEY),
            ARCHIVER: (ARCHIVER_ID, ARCHIVER_KEY),
            RESTORER: (RESTORER_ID, RESTORER_KEY),
        }
        assert [v for v in SECRETS if v in text] == list(own[name]), (ns, name)
    for ns, name in ((NS, WRITER), (DB_NS, ARCHIVER), (NS, RESTORER)):
        secret = setup.secret(ns, name)
        assert secret is not None
        assert secret["metadata"]["labels"] == LABELS
        assert secret["type"] == "Opaque"
    creates = setup.writes()
    assert [(r.method.value, r.url.path) for r in creates] == [
        ("POST", f"/api/v1/namespaces/{NS}/secrets"),
        ("POST", f"/api/v1/namespaces/{DB_NS}/secrets"),
        ("POST", f"/api/v1/namespaces/{NS}/secrets"),
    ]


def test_creates_the_viewer_secret_from_its_own_keys(setup: Setup) -> None:
    """The viewer's Secret beside the restorer's, in the Immich namespace, with only the viewer's keys (and
    the media prefix the tools find the run reports from); a dry run shows it redacted, a rerun leaves it."""
    env = setup.env_file(WITH_VIEWER)
    dry = setup.run("--env-file", str(env), "--dry-run")
    assert dry.code == 0, dry.err
    assert _rows(dry.out)[VIEWER, NS] == "would be created"
    [doc] = [d for d in yaml.safe_load_all(dry.out) if d and d["metadata"]["name"] == VIEWER]
    assert doc["metadata"] == {"name": VIEWER, "namespace": NS, "labels": LABELS}
    assert doc["data"]["AWS_SECRET_ACCESS_KEY"] == "<redacted: 40 chars>"
    assert setup.writes() == []
    result = setup.run("--env-file", str(env))
    assert result.code == 0, result.err
    assert result.err == ""
    assert _rows(result.out) == {
        (WRITER, NS): "created",
        (ARCHIVER, DB_NS): "created",
        (RESTORER, NS): "created",
        (VIEWER, NS): "created",
    }
    assert setup.data(NS, VIEWER) == _expected(VIEWER_ID, VIEWER_KEY)
    assert setup.data(NS, RESTORER) == _expected(RESTORER_ID, RESTORER_KEY)
    assert setup.secret(DB_NS, VIEWER) is None
    for ns, name in ((NS, WRITER), (DB_NS, ARCHIVER), (NS, RESTORER)):
        assert VIEWER_ID not in json.dumps(setup.data(ns, name)) and VIEWER_KEY not in json.dumps(setup.data(ns, name))
    viewer = setup.secret(NS, VIEWER)
    assert viewer is not None and viewer["metadata"]["labels"] == LABELS and viewer["type"] == "Opaque"
    before = len(setup.emulator.requests)
    again = setup.run("--env-file", str(env))
    assert again.code == 0 and set(_rows(again.out).values()) == {"unchanged"} and len(_rows(again.out)) == 4
    assert setup.writes(before) == []


def test_viewer_keys_alone_leave_the_restorer_secret_alone(setup: Setup) -> None:
    """Without restorer keys the viewer's Secret is still made; the warning says what still needs the
    restorer's (restores, verify, the database catalog)."""
    no_restorer = {
        **WITH_VIEWER,
        "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": None,
        "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": None,
    }
    result = setup.run("--env-file", str(setup.env_file(no_restorer)))
    assert result.code == 0, result.err
    assert _rows(result.out) == {(WRITER, NS): "created", (ARCHIVER, DB_NS): "created", (VIEWER, NS): "created"}
    assert setup.secret(NS, RESTORER) is None
    assert result.err == (
        "warning: no restorer keys (OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID, "
        f"OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY): Secret {RESTORER} is neither created nor changed; media "
        "restore, verify and db catalog need it\n"
    )


def test_second_run_changes_nothing(setup: Setup) -> None:
    env = setup.env_file()
    assert setup.run("--env-file", str(env)).code == 0
    before = len(setup.emulator.requests)
    again = setup.run("--env-file", str(env))
    assert again.code == 0, again.err
    assert set(_rows(again.out).values()) == {"unchanged"}
    assert len(_rows(again.out)) == 3
    assert setup.writes(before) == []
    assert setup.reviews(before) == []  # nothing to write, nothing to ask RBAC about
    # read-only mode refuses changes; with none to make, it has nothing to refuse
    read_only = setup.run("--env-file", str(env), "--read-only")
    assert read_only.code == 0 and set(_rows(read_only.out).values()) == {"unchanged"}


def test_a_changed_value_updates_only_that_secret(setup: Setup) -> None:
    assert setup.run("--env-file", str(setup.env_file())).code == 0
    writer_before = setup.secret(NS, WRITER)
    before = len(setup.emulator.requests)
    new_key = "Zx9MtGbClwBF/2Zp9Utk/h3yCo8nvbrestorerK3"
    changed = setup.env_file({"OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": new_key})
    result = setup.run("--env-file", str(changed), "-o", "json", secrets=(*SECRETS, new_key))
    assert result.code == 0, result.err
    changes = {(c["name"], c["namespace"]): c for c in result.json()["secrets"]}
    assert changes[RESTORER, NS]["action"] == "updated"
    assert changes[RESTORER, NS]["keys"] == ["AWS_SECRET_ACCESS_KEY"]  # the key's name, never its value
    assert changes[WRITER, NS]["action"] == changes[ARCHIVER, DB_NS]["action"] == "unchanged"
    writes = setup.writes(before)
    assert [(r.method.value, r.url.path) for r in writes] == [("PATCH", f"/api/v1/namespaces/{NS}/secrets/{RESTORER}")]
    # a merge patch, as a real API server needs for a partial object
    assert writes[0].headers.get("Content-Type", "").startswith("application/merge-patch+json")
    assert setup.data(NS, RESTORER) == _expected(RESTORER_ID, new_key)
    assert setup.secret(NS, WRITER) == writer_before


def test_update_adopts_an_existing_secret_and_keeps_foreign_keys(setup: Setup) -> None:
    """A Secret from the old playbook: no labels, a stale endpoint, and a key someone added by hand."""
    old = _expected("AKIAOLDKEY0000EXAMPL", "oldSecretValue/oldSecretValue/oldSecret1")
    setup.put_secret(
        NS, WRITER, {**old, "AWS_ENDPOINT_URL_S3": "https://old.example", "IMMICH_SYNC_STORAGE_CLASS": "GLACIER_IR"}
    )
    result = setup.run("--env-file", str(setup.env_file()), secrets=(*SECRETS, old["AWS_SECRET_ACCESS_KEY"]))
    assert result.code == 0, result.err
    rows = _rows(result.out)
    assert rows[WRITER, NS] == "updated AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3, labels"
    assert rows[ARCHIVER, DB_NS] == "created"
    assert setup.data(NS, WRITER) == _expected(WRITER_ID, WRITER_KEY, IMMICH_SYNC_STORAGE_CLASS="GLACIER_IR")
    secret = setup.secret(NS, WRITER)
    assert secret is not None and secret["metadata"]["labels"] == LABELS


def test_restorer_keys_are_optional_and_an_existing_restorer_is_left_alone(setup: Setup) -> None:
    setup.put_secret(NS, RESTORER, _expected(RESTORER_ID, RESTORER_KEY))
    before = setup.secret(NS, RESTORER)
    env = setup.env_file(
        {"OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": None, "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": None},
        mode=0o644,
    )
    result = setup.run("--env-file", str(env))
    assert result.code == 0, result.err
    assert _rows(result.out) == {(WRITER, NS): "created", (ARCHIVER, DB_NS): "created"}
    assert setup.secret(NS, RESTORER) == before
    warnings = result.err.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: no restorer keys (OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID")
    assert f"{RESTORER} is neither created nor changed" in warnings[0]
    assert warnings[1] == f"warning: {env} is readable by other users (mode 0644) and holds S3 keys: chmod 600 {env}"


def test_one_namespace_for_both(setup: Setup) -> None:
    result = setup.run("--env-file", str(setup.env_file()), "--db-namespace", NS)
    assert result.code == 0, result.err
    assert _rows(result.out) == {(WRITER, NS): "created", (ARCHIVER, NS): "created", (RESTORER, NS): "created"}


def test_an_s3_compatible_endpoint(setup: Setup) -> None:
    """MinIO-style keys and a region such as `auto` are accepted when an endpoint is set."""
    env = setup.env_file(
        {
            "OFFSITE_BACKUP_ENDPOINT_URL": "https://minio.example:9000",
            "OFFSITE_BACKUP_AWS_REGION": "auto",
            "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID": "immich-writer",
            "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": "minio-writer-secret-1",
            "OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID": "immich-cnpg",
            "OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY": "minio-archiver-secret-3",
            "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": "immich-restorer",
            "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": "minio-restorer-secret-2",
            "OFFSITE_BACKUP_MEDIA_PREFIX": "photos",
        }
    )
    minio_secrets = ("minio-writer-secret-1", "minio-restorer-secret-2", "minio-archiver-secret-3")
    result = setup.run("--env-file", str(env), secrets=minio_secrets)
    assert result.code == 0, result.err
    assert setup.data(NS, WRITER)["MEDIA_PREFIX"] == "photos/"
    data = setup.data(DB_NS, ARCHIVER)
    assert data["AWS_ENDPOINT_URL_S3"] == "https://minio.example:9000"
    assert data["AWS_REGION"] == "auto"
    assert data["AWS_ACCESS_KEY_ID"] == "immich-cnpg"


# Dry run -------------------------------------------------------------------------------------------
def test_dry_run_prints_redacted_yaml_and_changes_nothing(setup: Setup) -> None:
    setup.put_secret(NS, WRITER, _expected(WRITER_ID, WRITER_KEY), labels=LABELS)
    result = setup.run("--env-file", str(setup.env_file()), "--dry-run")
    assert result.code == 0, result.err
    assert result.out.startswith("# dry run: nothing is changed in the cluster\n")
    assert _rows(result.out) == {
        (WRITER, NS): "unchanged",
        (ARCHIVER, DB_NS): "would be created",
        (RESTORER, NS): "would be created",
    }
    docs = [d for d in yaml.safe_load_all(result.out) if d]
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs] == [
        (NS, WRITER),
        (DB_NS, ARCHIVER),
        (NS, RESTORER),
    ]
    for doc in docs:
        assert doc["kind"] == "Secret" and doc["metadata"]["labels"] == LABELS
        wanted = set(_archiver_expected()) if doc["metadata"]["name"] == ARCHIVER else set(_expected("a", "b"))
        assert set(doc["data"]) == wanted
        assert all(re.fullmatch(r"<redacted: \d+ chars>", v) for v in doc["data"].values()), doc["data"]
    assert docs[0]["data"]["AWS_SECRET_ACCESS_KEY"] == "<redacted: 40 chars>"
    for value in ("eu-central-1", "family-photos-offsite", "immich/media/"):
        assert value not in result.out  # every value, not only the keys
    assert setup.writes() == [] and setup.reviews() == []
    assert setup.secret(DB_NS, ARCHIVER) is None


def test_dry_run_works_in_read_only_mode(setup: Setup) -> None:
    result = setup.run("--env-file", str(setup.env_file()), "--dry-run", "--read-only")
    assert result.code == 0, result.err
    assert setup.writes() == []


# A bad .env ------------------------------------------------------------------------------------------
BAD_ENV: list[tuple[dict[str, str | None], tuple[str, ...], str]] = [
    ({"OFFSITE_BACKUP_BUCKET_NAME": None}, (), "OFFSITE_BACKUP_BUCKET_NAME is not set in "),
    ({"OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": None}, (), "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY is not set in "),
    ({"OFFSITE_BACKUP_AWS_REGION": ""}, (), "OFFSITE_BACKUP_AWS_REGION is empty in "),
    ({"OFFSITE_BACKUP_MEDIA_PREFIX": '""'}, (), "OFFSITE_BACKUP_MEDIA_PREFIX is empty in "),
    (
        {"OFFSITE_BACKUP_BUCKET_NAME": "Immich_Offsite"},
        (),
        "OFFSITE_BACKUP_BUCKET_NAME 'Immich_Offsite' is not a valid S3 bucket name",
    ),
    ({"OFFSITE_BACKUP_BUCKET_NAME": "ab"}, (), "OFFSITE_BACKUP_BUCKET_NAME 'ab' is not a valid S3 bucket name"),
    (
        {"OFFSITE_BACKUP_AWS_REGION": "frankfurt"},
        (),
        "OFFSITE_BACKUP_AWS_REGION 'frankfurt' does not look like an AWS region",
    ),
    ({"OFFSITE_BACKUP_MEDIA_PREFIX": "/immich/media/"}, (), "OFFSITE_BACKUP_MEDIA_PREFIX '/immich/media/' starts with"),
    (
        {"OFFSITE_BACKUP_MEDIA_PREFIX": "immich/../media/"},
        (),
        "OFFSITE_BACKUP_MEDIA_PREFIX 'immich/../media/' contains",
    ),
    ({"OFFSITE_BACKUP_MEDIA_PREFIX": "immich//media"}, (), "OFFSITE_BACKUP_MEDIA_PREFIX 'immich//media' contains an"),
    (
        {"OFFSITE_BACKUP_ENDPOINT_URL": "ftp://minio.local:9000"},
        (),
        "OFFSITE_BACKUP_ENDPOINT_URL is not an http(s) URL (its scheme is 'ftp')",  # the rest may carry a token
    ),
    (
        {"OFFSITE_BACKUP_ENDPOINT_URL": "https://admin:hunter2hunter2@minio.local"},
        (),
        "OFFSITE_BACKUP_ENDPOINT_URL must not carry credentials",
    ),
    (
        {"OFFSITE_BACKUP_AWS_ACCESS_KEY_ID": "akiawriter0000exampl"},
        (),
        "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID does not look like an AWS access key ID",
    ),
    (
        {"OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": "tooShortSecretValue123"},
        (),
        "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY does not look like an AWS secret access key (40 characters of A-Z, "
        "a-z, 0-9, / and +; it has 22)",
    ),
    (
        {"OFFSITE_BACKUP_AWS_ACCESS_KEY_ID": WRITER_KEY, "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": WRITER_ID},
        (),
        "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID looks like a secret access key: are OFFSITE_BACKUP_AWS_ACCESS_KEY_ID and "
        "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY swapped?",
    ),
    (
        {"OFFSITE_BACKUP_AWS_ACCESS_KEY_ID": "ASIAWRITER0000EXAMPL"},
        (),
        "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID is a temporary key",
    ),
    (
        {"OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": f'"{WRITER_KEY} "'},
        (),
        "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY contains whitespace or control characters",
    ),
    (
        {"OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": f"\"'{WRITER_KEY}'\""},
        (),
        "OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY begins or ends with a quote character",
    ),
    # three identities, three pairs: no two share an access key ID or a secret
    (
        {
            "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": WRITER_ID,
            "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": WRITER_KEY,
        },
        (),
        "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID is the same as OFFSITE_BACKUP_AWS_ACCESS_KEY_ID: the restorer "
        "needs keys of its own, not the media writer's",
    ),
    (
        {"OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": WRITER_KEY},
        (),
        "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY is the same as OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY",
    ),
    (
        {
            "OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID": WRITER_ID,
            "OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY": WRITER_KEY,
        },
        (),
        "OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID is the same as OFFSITE_BACKUP_AWS_ACCESS_KEY_ID: the archiver needs "
        "keys of its own, not the media writer's",
    ),
    (
        {"OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY": WRITER_KEY},
        (),
        "OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY is the same as OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY: the archiver",
    ),
    (
        {
            "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": ARCHIVER_ID,
            "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": ARCHIVER_KEY,
        },
        (),
        "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID is the same as OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID: the "
        "restorer needs keys of its own, not the archiver's",
    ),
    (
        {"OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": ARCHIVER_ID},
        (),
        "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID is the same as OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID",
    ),
    (
        {"OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY": RESTORER_KEY},
        (),
        "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY is the same as OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY",
    ),
    # the viewer's keys are its own too: never the restorer's (which download every photo) nor another's
    (
        {
            "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID": RESTORER_ID,
            "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY": RESTORER_KEY,
        },
        (),
        "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID is the same as OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID: the viewer "
        "needs keys of its own, not the restorer's (one IAM user per identity: media writer, archiver, restorer, "
        "viewer)",
    ),
    (
        {**WITH_VIEWER, "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY": WRITER_KEY},
        (),
        "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY is the same as OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY: the viewer "
        "needs keys of its own, not the media writer's",
    ),
    (
        {**WITH_VIEWER, "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID": ARCHIVER_ID},
        (),
        "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID is the same as OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID: the viewer",
    ),
    (
        {**WITH_VIEWER, "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY": RESTORER_KEY},
        (),
        "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY is the same as OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY",
    ),
    (
        {"OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID": VIEWER_ID},
        (),
        "OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY is not set but OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID is: give "
        "both viewer keys, or neither",
    ),
    (
        {"OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY": VIEWER_KEY},
        (),
        "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID is not set but OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY is",
    ),
    (
        {**WITH_VIEWER, "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID": "ASIAVIEWER0000EXAMPL"},
        (),
        "OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID is a temporary key",
    ),
    # the archiver's keys are required: an .env from before they existed says what to add
    (
        {"OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID": None, "OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY": None},
        (),
        "OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID and OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY are not set in ",
    ),
    (
        {"OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY": None},
        (),
        "OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY is not set but OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID is: give "
        "both archiver keys",
    ),
    (
        {"OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID": "akiaarchiver00exampl"},
        (),
        "OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID does not look like an AWS access key ID",
    ),
    (
        {"OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": None},
        (),
        "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY is not set but OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID is",
    ),
    (
        {},
        ("OFFSITE_BACKUP_BUCKET=immich-offsite",),
        "OFFSITE_BACKUP_BUCKET in ",  # then: is not a setup variable (did you mean OFFSITE_BACKUP_BUCKET_NAME?)
    ),
    ({}, ("OFFSITE_BACKUP_RETENTION_DAYS=30",), "OFFSITE_BACKUP_RETENTION_DAYS in "),
    (
        {"OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY": f'"{WRITER_KEY}'},
        (),
        'the value of OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY has no closing "',
    ),
    ({}, (WRITER_KEY,), "expected NAME=VALUE"),  # a key pasted on a line of its own is not echoed
    ({}, ("OFFSITE_BACKUP_BUCKET_NAME=other-bucket",), "OFFSITE_BACKUP_BUCKET_NAME is set twice (also on line"),
    (
        {"OFFSITE_BACKUP_ENDPOINT_URL": "http://minio:9000", "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID": "ab"},
        (),
        "OFFSITE_BACKUP_AWS_ACCESS_KEY_ID has 2 characters: an access key ID has 3 to 128",
    ),
]


@pytest.mark.parametrize(("changes", "extra", "needle"), BAD_ENV, ids=[c[2][:60] for c in BAD_ENV])
def test_a_bad_env_file_is_one_line_naming_the_variable(
    setup: Setup, changes: dict[str, str | None], extra: tuple[str, ...], needle: str
) -> None:
    result = setup.run("--env-file", str(setup.env_file(changes, *extra)), "--check-s3")
    assert result.code == 2
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"{PROG}: error: ")
    assert needle in lines[0]
    assert "hunter2" not in result.err
    assert setup.emulator.requests == []  # the cluster is not even asked


def test_a_typo_gets_a_suggestion(setup: Setup) -> None:
    result = setup.run("--env-file", str(setup.env_file({}, "OFFSITE_BACKUP_BUCKET=immich-offsite")))
    assert result.err.strip().endswith(
        "OFFSITE_BACKUP_BUCKET in " + str(setup.tmp / "env-0") + " is not a setup variable "
        "(did you mean OFFSITE_BACKUP_BUCKET_NAME?)"
    )


def test_missing_env_file(setup: Setup) -> None:
    missing = setup.tmp / "nope.env"
    result = setup.run("--env-file", str(missing))
    assert result.code == 2
    assert result.err == f"{PROG}: error: env file {missing} does not exist (start from .env.example)\n"
    assert setup.emulator.requests == []


def test_env_syntax() -> None:
    text = (
        "# comment\n"
        "\n"
        "export A=1\n"
        "B = two words  # a comment\n"
        "C='single # kept'\n"
        'D="double \\"quoted\\" \\\\ # kept" # comment\n'
        "E=x#y\n"
        "F=\n"
        "  G=indented\r\n"
    )
    assert parse_env(text) == {
        "A": "1",
        "B": "two words",
        "C": "single # kept",
        "D": 'double "quoted" \\ # kept',
        "E": "x#y",
        "F": "",
        "G": "indented",
    }
    with pytest.raises(EnvFileError, match=r"^\.env:2: unexpected text after the closing quote of A$"):
        parse_env("\nA='x' y\n")


def test_env_example_is_valid_and_documents_every_variable() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    config = load_config(read_env_file(example), str(example))
    assert config.restorer is not None and config.viewer is not None and config.media_prefix == "immich/media/"
    assert config.warnings == ()
    keys = [config.writer, config.archiver, config.restorer, config.viewer]
    assert len({k.access_key for k in keys}) == len({k.secret_key for k in keys}) == 4
    assert all("EXAMPLE" in k.access_key and "EXAMPLE" in k.secret_key for k in keys)  # plainly not real keys
    text = example.read_text()
    for name in VARIABLES:
        assert name in text, name


# Refusals --------------------------------------------------------------------------------------------
def test_read_only_refuses_before_any_write(setup: Setup) -> None:
    result = setup.run("--env-file", str(setup.env_file()), "--read-only")
    assert result.code == 2
    assert result.err == f"{PROG}: error: read-only mode: refusing to create secrets in namespace {NS}\n"
    assert setup.writes() == [] and setup.reviews() == []


def test_rbac_denial_is_one_line_and_nothing_is_written(setup: Setup) -> None:
    setup.put_secret(NS, WRITER, {"AWS_ACCESS_KEY_ID": "AKIAOLDKEY0000EXAMPL"})  # would be patched: RBAC allows
    before = setup.secret(NS, WRITER)
    setup.emulator.denials.append(Denial("create", "secrets"))
    result = setup.run("--env-file", str(setup.env_file()))
    assert result.code == 2
    assert result.err == (f"{PROG}: error: RBAC denies create secrets in namespace {DB_NS}: no RBAC rule allows it\n")
    assert setup.writes() == []  # not even the allowed patch: all or nothing
    assert setup.secret(NS, WRITER) == before


def test_rbac_denial_of_reading_secrets(setup: Setup) -> None:
    setup.emulator.denials.append(Denial("get", "secrets", namespace=DB_NS))
    result = setup.run("--env-file", str(setup.env_file()))
    assert result.code == 2
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith(f"{PROG}: error: RBAC denies get secrets in namespace {DB_NS}: ")
    assert setup.writes() == []


def test_missing_namespace_is_named(setup: Setup) -> None:
    result = setup.run("--env-file", str(setup.env_file()), "--db-namespace", "cnpg-system")
    assert result.code == 2
    assert result.err == (
        f"{PROG}: error: namespace cnpg-system does not exist (create it, or choose another with -n/--db-namespace)\n"
    )
    assert setup.writes() == []


def test_a_writer_secret_left_in_the_database_namespace_is_named(setup: Setup) -> None:
    """An earlier setup copied the writer's keys to the database namespace; setup deletes nothing, but says
    how to remove them once CNPG reads its own Secret."""
    setup.put_secret(DB_NS, WRITER, _expected(WRITER_ID, WRITER_KEY), labels=LABELS)
    result = setup.run("--env-file", str(setup.env_file()))
    assert result.code == 0, result.err
    assert result.err == (
        f"warning: Secret {DB_NS}/{WRITER} is left from an earlier setup, which put the media writer's keys there: "
        f"once the CNPG Cluster or ObjectStore reads {ARCHIVER} (deploy/components), delete it with kubectl -n "
        f"{DB_NS} delete secret {WRITER}, and detach cnpg-writer.json from the writer's IAM user\n"
    )
    assert setup.secret(DB_NS, WRITER) is not None  # left for the operator
    assert [r.method.value for r in setup.writes() if r.method.value == "DELETE"] == []


# --check-s3 --------------------------------------------------------------------------------------------
def _s3_changes(endpoint: str, bucket: str, **more: str | None) -> dict[str, str | None]:
    return {
        "OFFSITE_BACKUP_ENDPOINT_URL": endpoint,
        "OFFSITE_BACKUP_AWS_REGION": "us-east-1",
        "OFFSITE_BACKUP_BUCKET_NAME": bucket,
        **more,
    }


def _versioned(s3: LocalS3, bucket: str, status: str = "Enabled") -> str:
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
    return bucket


def test_check_s3_writes_a_marker_under_the_reports_then_applies(setup: Setup, s3: LocalS3, bucket: str) -> None:
    env = setup.env_file(_s3_changes(s3.endpoint, _versioned(s3, bucket)))
    result = setup.run("--env-file", str(env), "--check-s3")
    assert result.code == 0, result.err
    assert result.err == ""
    keys = list(list_keys(s3, bucket))
    assert len(keys) == 1
    marker = keys[0]
    assert re.fullmatch(r"immich/sync-reports/setup-check/\d{8}T\d{6}Z-[0-9a-f]{8}\.marker", marker), marker
    assert parse_report_key(marker) is None and not marker.endswith(".json")  # never taken for a run report
    body = json.loads(s3.client().get_object(Bucket=bucket, Key=marker)["Body"].read())
    assert body["bucket"] == bucket and body["media_prefix"] == "immich/media/"
    assert not any(v in json.dumps(body) for v in SECRETS)
    assert result.out.splitlines()[:2] == [
        f"S3 check passed: the writer keys listed s3://{bucket}/immich/media/ and wrote s3://{bucket}/{marker}; "
        f"the restorer keys listed the media prefix and read the marker back; the archiver keys listed "
        f"s3://{bucket}/immich/postgres/",
        f"bucket {bucket}: versioning Enabled; Object Lock off (read with the writer keys)",
    ]
    assert set(_rows(result.out).values()) == {"created"}


NO_WRITE_MODES = [("--dry-run",), ("--read-only",), ("--dry-run", "--read-only")]


@pytest.mark.parametrize("mode", NO_WRITE_MODES, ids=["dry-run", "read-only", "both"])
def test_check_s3_writes_nothing_in_a_dry_run_or_read_only(
    setup: Setup, s3: LocalS3, bucket: str, proxy: Proxy, mode: tuple[str, ...]
) -> None:
    """--dry-run writes nothing anywhere and --read-only refuses every write, the bucket's included: the
    keys list, the protection is read, the restorer's read is proven on a key that does not exist, and the
    writer's put is reported as not checked. Every request to S3 went through the proxy's log."""
    env = setup.env_file(_s3_changes(proxy.endpoint, _versioned(s3, bucket)))
    if mode == ("--read-only",):
        assert setup.run("--env-file", str(env)).code == 0  # nothing left to change: read-only refuses none
    proxy.reset()
    before = len(setup.emulator.requests)
    result = setup.run("--env-file", str(env), "--check-s3", *mode)
    assert result.code == 0, result.err
    assert [(r.method, r.op) for r in proxy.log if r.method not in ("GET", "HEAD")] == []  # no PUT, POST, DELETE
    assert proxy.counts["PutObject"] == 0
    assert list_keys(s3, bucket) == {}
    assert setup.writes(before) == []
    assert proxy.counts["ListObjectsV2"] == 3  # the writer, the archiver, the restorer
    probes = {r.key for r in proxy.ops("GetObject")}  # one key, which the store may ask for twice
    assert len(probes) == 1 and re.fullmatch(
        r"immich/sync-reports/setup-check/\d{8}T\d{6}Z-[0-9a-f]{8}\.marker", next(iter(probes))
    )
    why = {1: "--dry-run", 2: "read-only mode", 3: "--dry-run and read-only mode"}[
        ("--dry-run" in mode) + 2 * ("--read-only" in mode)
    ]
    flags = " and ".join(mode)
    lines = [line.removeprefix("# ") for line in result.out.splitlines() if not line.startswith("# dry run:")]
    assert lines[:3] == [
        f"S3 check passed, writing nothing ({why}): the writer keys listed s3://{bucket}/immich/media/; the "
        f"restorer keys listed the media prefix and may read under s3://{bucket}/immich/sync-reports/ (a key "
        f"that does not exist answered NoSuchKey, not AccessDenied); the archiver keys listed "
        f"s3://{bucket}/immich/postgres/",
        f"bucket {bucket}: versioning Enabled; Object Lock off (read with the writer keys)",
        f"write check skipped ({why}): the writer's s3:PutObject is not proven; run setup --check-s3 without "
        f"{flags} to prove it",
    ]
    as_json = setup.run("--env-file", str(env), "--check-s3", *mode, "-o", "json").json()["s3_check"]
    assert as_json["marker"] is None and as_json["write_skipped"] == why
    assert proxy.counts["PutObject"] == 0 and list_keys(s3, bucket) == {}


def test_the_help_says_what_check_s3_proves_without_writing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps at hyphens too (`--dry- run`): one wide line instead
    common = global_flags()
    parser = argparse.ArgumentParser(prog=PROG, parents=[common])
    add_setup_parser(parser.add_subparsers(dest="command", required=True), common)
    with pytest.raises(SystemExit):
        parser.parse_args(["setup", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "With --dry-run or --read-only nothing is written, to the bucket either: the keys list, the protection "
        "is read, the restorer and the viewer read a key that does not exist (NoSuchKey proves s3:GetObject), and "
        "the writer's put is skipped and reported as not proven" in text
    )
    assert "the viewer lists the run reports and is refused a read under the media prefix" in text


def _refusal(bucket: str, state: str) -> str:
    return (
        f"{PROG}: error: S3 check: {state}, so an overwrite or a delete would destroy the only offsite copy: "
        f"enable it (aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled; "
        "see deploy/README.md) or accept that with --allow-unversioned\n"
    )


@pytest.mark.parametrize("status", [None, "Suspended"])
def test_check_s3_refuses_an_unversioned_bucket(setup: Setup, s3: LocalS3, bucket: str, status: str | None) -> None:
    """Never enabled or suspended: one line naming the bucket and the command that enables versioning;
    nothing goes to the cluster, and not even the marker to the bucket."""
    if status:
        _versioned(s3, bucket, status)
    env = setup.env_file(_s3_changes(s3.endpoint, bucket))
    for extra in ((), ("--dry-run",), ("-o", "json")):
        result = setup.run("--env-file", str(env), "--check-s3", *extra)
        assert result.code == 2
        assert result.out == ""
        state = (
            f"versioning is Suspended on bucket {bucket}"
            if status
            else f"versioning was never enabled on bucket {bucket}"
        )
        assert result.err == _refusal(bucket, state)
    assert setup.writes() == [] and setup.secret(NS, WRITER) is None
    assert list_keys(s3, bucket) == {}


def test_allow_unversioned_goes_on_with_a_warning(setup: Setup, s3: LocalS3, bucket: str) -> None:
    env = setup.env_file(_s3_changes(s3.endpoint, bucket))
    result = setup.run("--env-file", str(env), "--check-s3", "--allow-unversioned")
    assert result.code == 0, result.err
    assert f"bucket {bucket}: versioning never enabled; Object Lock off (read with the writer keys)" in result.out
    assert result.err == (
        f"warning: versioning was never enabled on bucket {bucket}, accepted with --allow-unversioned: an overwrite "
        "or a delete (a leaked writer or archiver key, a mistake) replaces or removes the only offsite copy, and no "
        "earlier version can be restored\n"
    )
    assert set(_rows(result.out).values()) == {"created"}
    as_json = setup.run("--env-file", str(env), "--check-s3", "--allow-unversioned", "-o", "json").json()
    assert as_json["s3_check"]["protection"]["versioning"] == "never enabled"
    assert any("--allow-unversioned" in w for w in as_json["warnings"])


def test_allow_unversioned_needs_check_s3(setup: Setup) -> None:
    result = setup.run("--env-file", str(setup.env_file()), "--allow-unversioned")
    assert result.code == 2
    assert result.err == (
        f"{PROG}: error: --allow-unversioned only applies with --check-s3, which reads the bucket's versioning\n"
    )
    assert setup.emulator.requests == []


@pytest.mark.parametrize(
    ("retention", "shown"),
    [
        ({"Mode": "GOVERNANCE", "Days": 30}, "Object Lock on, default retention GOVERNANCE 30 days"),
        ({"Mode": "COMPLIANCE", "Years": 1}, "Object Lock on, default retention COMPLIANCE 1 year"),
        (None, "Object Lock on, no default retention"),
    ],
)
def test_check_s3_reports_object_lock(setup: Setup, s3: LocalS3, retention: dict[str, Any] | None, shown: str) -> None:
    bucket = f"locked-{uuid.uuid4().hex[:12]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)  # versioning comes with it
    if retention:
        config = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": retention}}
        client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=config)
    result = setup.run("--env-file", str(setup.env_file(_s3_changes(s3.endpoint, bucket))), "--check-s3", "-o", "json")
    assert result.code == 0, result.err
    protection = result.json()["s3_check"]["protection"]
    assert protection["versioning"] == "Enabled" and protection["object_lock"] is True
    assert protection["lock_mode"] == (retention or {}).get("Mode")
    text = setup.run("--env-file", str(setup.env_file(_s3_changes(s3.endpoint, bucket))), "--check-s3")
    assert f"bucket {bucket}: versioning Enabled; {shown} (read with the writer keys)" in text.out.splitlines()


def test_a_server_without_object_lock_reads_as_off(setup: Setup, s3: LocalS3, bucket: str, proxy: Proxy) -> None:
    """GetObjectLockConfiguration answered NotImplemented (servers without Object Lock): off, not an error.
    GetBucketVersioning answered NotImplemented: no versioning, refused."""

    def lock(r: Request) -> tuple[str, object] | None:
        return ("error", (501, "NotImplemented")) if r.method == "GET" and "object-lock" in r.query else None

    proxy.rules.append(lock)
    env = setup.env_file(_s3_changes(proxy.endpoint, _versioned(s3, bucket)))
    result = setup.run("--env-file", str(env), "--check-s3")
    assert result.code == 0, result.err
    assert f"bucket {bucket}: versioning Enabled; Object Lock off (read with the writer keys)" in result.out
    assert any("object-lock" in r.query for r in proxy.log)

    def versioning(r: Request) -> tuple[str, object] | None:
        return ("error", (501, "NotImplemented")) if r.method == "GET" and "versioning" in r.query else None

    proxy.rules.append(versioning)
    refused = setup.run("--env-file", str(env), "--check-s3")
    assert refused.code == 2
    assert refused.err == _refusal(bucket, f"the server does not support versioning for bucket {bucket}")


def test_without_restorer_keys_the_protection_is_still_read(setup: Setup, s3: LocalS3, bucket: str) -> None:
    no_restorer = {
        "OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID": None,
        "OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY": None,
    }
    env = setup.env_file(_s3_changes(s3.endpoint, _versioned(s3, bucket), **no_restorer))
    result = setup.run("--env-file", str(env), "--check-s3")
    assert result.code == 0, result.err
    assert (
        f"bucket {bucket}: versioning Enabled; Object Lock off (read with the writer keys)" in result.out.splitlines()
    )


def test_check_s3_missing_bucket_applies_nothing(setup: Setup, s3: LocalS3) -> None:
    env = setup.env_file(_s3_changes(s3.endpoint, "immich-offsite-missing"))
    result = setup.run("--env-file", str(env), "--check-s3")
    assert result.code == 2
    assert result.err == (
        f"{PROG}: error: S3 check: the writer keys cannot list s3://immich-offsite-missing/immich/media/: "
        "the bucket does not exist (NoSuchBucket)\n"
    )
    assert setup.writes() == []
    assert setup.secret(NS, WRITER) is None


def test_check_s3_unreachable_endpoint_applies_nothing(setup: Setup, bucket: str) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = setup.run("--env-file", str(setup.env_file(_s3_changes(endpoint, bucket))), "--check-s3")
    assert result.code == 2
    lines = result.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        f"{PROG}: error: S3 check: the writer keys cannot list s3://{bucket}/immich/media/: cannot reach the S3 "
        "endpoint"
    ), lines[0]
    assert setup.writes() == []


IAM_BUCKET = "immich-offsite-setup"
IamS3 = tuple[LocalS3, dict[str, tuple[str, str]]]


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[IamS3]:
    """The shipped policies (deploy/iam) attached to their users, enforced by moto with their s3:prefix
    conditions (tests/strict_iam.py), on a versioned bucket."""
    deploy = Path(__file__).resolve().parent.parent / "deploy" / "iam"
    with StrictIamS3() as server:
        server.client().create_bucket(Bucket=IAM_BUCKET)
        _versioned(server, IAM_BUCKET)
        keys = {
            user: server.iam_user(user, policy.replace("BUCKET_NAME", IAM_BUCKET))
            for user, policy in (
                ("writer", (deploy / "media-writer.json").read_text()),
                ("archiver", (deploy / "cnpg-writer.json").read_text()),
                ("restorer", (deploy / "restorer.json").read_text()),
                ("viewer", (deploy / "viewer.json").read_text()),
                ("writer-twin", (deploy / "media-writer.json").read_text()),
                ("restorer-twin", (deploy / "restorer.json").read_text()),
                ("archiver-twin", (deploy / "cnpg-writer.json").read_text()),
                ("admin", json.dumps(bucket_policy(IAM_BUCKET, ["s3:*"]))),
                ("lister", json.dumps(_list_only())),
                ("blind", json.dumps(_list_only(protection=False))),
            )
        }
        server.enforce_iam()
        yield server, keys


def _list_only(*, protection: bool = True) -> dict[str, Any]:
    """Lists and (unless `protection` is False) reads the bucket's versioning and Object Lock; reads no object."""
    actions = ["s3:ListBucket"]
    if protection:
        actions += ["s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration"]
    statement = {"Effect": "Allow", "Action": actions, "Resource": "arn:aws:s3:::BUCKET_NAME"}
    return {"Version": "2012-10-17", "Statement": [statement]}


def _iam_env(
    setup: Setup,
    server: LocalS3,
    writer: tuple[str, str],
    restorer: tuple[str, str] | None,
    archiver: tuple[str, str],
    viewer: tuple[str, str] | None = None,
) -> Path:
    return setup.env_file(
        _s3_changes(
            server.endpoint,
            IAM_BUCKET,
            OFFSITE_BACKUP_AWS_ACCESS_KEY_ID=writer[0],
            OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY=writer[1],
            OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID=archiver[0],
            OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY=archiver[1],
            OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID=restorer[0] if restorer else None,
            OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY=restorer[1] if restorer else None,
            OFFSITE_BACKUP_VIEWER_AWS_ACCESS_KEY_ID=viewer[0] if viewer else None,
            OFFSITE_BACKUP_VIEWER_AWS_SECRET_ACCESS_KEY=viewer[1] if viewer else None,
        )
    )


def test_check_s3_passes_with_exactly_the_shipped_policies(setup: Setup, iam_s3: IamS3) -> None:
    server, keys = iam_s3
    env = _iam_env(setup, server, keys["writer"], keys["restorer"], keys["archiver"])
    result = setup.run("--env-file", str(env), "--check-s3", secrets=())
    assert result.code == 0, result.err
    assert "S3 check passed" in result.out
    # media-writer.json lets setup read both protection settings; restorer.json grants neither
    assert f"bucket {IAM_BUCKET}: versioning Enabled; Object Lock off (read with the writer keys)" in result.out
    assert not any(k in result.out + result.err for pair in keys.values() for k in pair)
    assert setup.data(NS, WRITER)["AWS_ACCESS_KEY_ID"] == keys["writer"][0]
    assert setup.data(DB_NS, ARCHIVER)["AWS_ACCESS_KEY_ID"] == keys["archiver"][0]
    # and without restorer keys the writer still reads both
    alone = setup.run(
        "--env-file", str(_iam_env(setup, server, keys["writer"], None, keys["archiver"])), "--check-s3", secrets=()
    )
    assert alone.code == 0, alone.err
    assert f"bucket {IAM_BUCKET}: versioning Enabled; Object Lock off (read with the writer keys)" in alone.out


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (
            "wrong writer secret",
            "S3 check: the writer keys cannot list s3://immich-offsite-setup/immich/media/: S3 rejected the "
            "signature: OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY is wrong (SignatureDoesNotMatch)",
        ),
        (
            "unknown restorer key",
            "S3 check: the restorer keys cannot list s3://immich-offsite-setup/immich/media/: S3 does not know the "
            "access key in OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID (InvalidAccessKeyId)",
        ),
        ("restorer may not read", "S3 check: the restorer keys cannot read s3://immich-offsite-setup/immich/"),
        (
            "writer may not read versioning",
            "S3 check: the writer keys cannot read the versioning state of s3://immich-offsite-setup "
            "(s3:GetBucketVersioning): access denied (AccessDenied)",
        ),
        (
            "archiver holds the media writer's policy",
            "S3 check: the archiver keys cannot list s3://immich-offsite-setup/immich/postgres/: access denied "
            "(AccessDenied)",
        ),
        (
            "wrong archiver secret",
            "S3 check: the archiver keys cannot list s3://immich-offsite-setup/immich/postgres/: S3 rejected the "
            "signature: OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY is wrong (SignatureDoesNotMatch)",
        ),
    ],
)
def test_check_s3_wrong_keys_apply_nothing(setup: Setup, iam_s3: IamS3, who: str, message: str) -> None:
    server, keys = iam_s3
    writer, restorer, archiver = keys["writer"], keys["restorer"], keys["archiver"]
    if who == "wrong writer secret":
        writer = (writer[0], "x" * 40)
    elif who == "unknown restorer key":
        restorer = ("AKIAUNKNOWN000000000", restorer[1])
    elif who == "restorer may not read":
        restorer = keys["lister"]
    elif who == "writer may not read versioning":
        writer = keys["blind"]
    elif who == "archiver holds the media writer's policy":
        archiver = keys["writer-twin"]  # the media writer's policy on the archiver's user: it cannot archive
    else:
        archiver = (archiver[0], "y" * 40)
    env = _iam_env(setup, server, writer, restorer, archiver)
    result = setup.run("--env-file", str(env), "--check-s3", secrets=(writer[1], restorer[1], archiver[1]))
    assert result.code == 2
    lines = result.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{PROG}: error: {message}"), lines[0]
    if who == "restorer may not read":
        assert lines[0].endswith("access denied (AccessDenied)")
    assert setup.writes() == []
    assert setup.secret(NS, WRITER) is None


def test_check_s3_in_a_dry_run_still_catches_a_restorer_that_may_not_read(setup: Setup, iam_s3: IamS3) -> None:
    """Without the marker to read back, the restorer's GetObject is proven on a key that does not exist:
    keys that may only list get AccessDenied there, as they would on the marker."""
    server, keys = iam_s3
    env = _iam_env(setup, server, keys["writer"], keys["lister"], keys["archiver"])
    result = setup.run("--env-file", str(env), "--check-s3", "--dry-run", secrets=())
    assert result.code == 2
    assert result.err.startswith(
        f"{PROG}: error: S3 check: the restorer keys cannot read s3://{IAM_BUCKET}/immich/sync-reports/setup-check/"
    )
    assert result.err.endswith("access denied (AccessDenied)\n") and len(result.err.splitlines()) == 1
    good = _iam_env(setup, server, keys["writer"], keys["restorer"], keys["archiver"])
    passed = setup.run("--env-file", str(good), "--check-s3", "--dry-run", secrets=())
    assert passed.code == 0, passed.err
    assert "# S3 check passed, writing nothing (--dry-run)" in passed.out
    assert setup.writes() == []


def test_check_s3_proves_the_viewer_with_exactly_the_shipped_policy(setup: Setup, iam_s3: IamS3) -> None:
    """viewer.json lists the run reports, reads the marker back and is refused a GET under the media prefix;
    in a dry run the read is proven on a key that does not exist, and nothing is written anywhere."""
    server, keys = iam_s3
    env = _iam_env(setup, server, keys["writer"], keys["restorer"], keys["archiver"], keys["viewer"])
    media = f"s3://{IAM_BUCKET}/immich/media/"
    dry = setup.run("--env-file", str(env), "--check-s3", "--dry-run", secrets=())
    assert dry.code == 0, dry.err
    assert (
        "; the viewer keys listed the run reports and may read them (NoSuchKey), and were refused a read under "
        f"{media} (AccessDenied)"
    ) in dry.out
    assert setup.writes() == []
    result = setup.run("--env-file", str(env), "--check-s3", secrets=())
    assert result.code == 0, result.err
    first = result.out.splitlines()[0]
    assert first.startswith("S3 check passed: ")
    assert first.endswith(
        f"; the viewer keys listed the run reports and read the marker back, and were refused a read under {media} "
        "(AccessDenied)"
    )
    assert not any(k in result.out + result.err for pair in keys.values() for k in pair)
    assert setup.data(NS, VIEWER)["AWS_ACCESS_KEY_ID"] == keys["viewer"][0]
    as_json = setup.run("--env-file", str(env), "--check-s3", "-o", "json", secrets=()).json()
    assert as_json["s3_check"]["viewer"] is True and as_json["s3_check"]["restorer"] is True


@pytest.mark.parametrize(
    ("who", "message"),
    [
        (
            "restorer-twin",  # a user of its own, but given the restorer's policy
            f"S3 check: the viewer keys may read under s3://{IAM_BUCKET}/immich/media/ (a key that does not exist "
            "there answered NoSuchKey, not AccessDenied), so they could download every photo: give the viewer's IAM "
            "user deploy/iam/viewer.json only",
        ),
        (
            "archiver-twin",
            f"S3 check: the viewer keys cannot list s3://{IAM_BUCKET}/immich/sync-reports/: access denied "
            "(AccessDenied)",
        ),
        ("lister", f"S3 check: the viewer keys cannot read s3://{IAM_BUCKET}/immich/sync-reports/setup-check/"),
    ],
)
def test_check_s3_refuses_a_viewer_that_could_download_photos_or_cannot_read_reports(
    setup: Setup, iam_s3: IamS3, who: str, message: str
) -> None:
    """One line naming what is wrong, nothing applied; a viewer that could read the media is refused before
    the writer puts anything into the bucket."""
    server, keys = iam_s3
    admin = server.client(key_id=keys["admin"][0], secret=keys["admin"][1])
    before = {o["Key"] for o in admin.list_objects_v2(Bucket=IAM_BUCKET).get("Contents", [])}
    env = _iam_env(setup, server, keys["writer"], keys["restorer"], keys["archiver"], keys[who])
    for dry in ((), ("--dry-run",)):
        result = setup.run("--env-file", str(env), "--check-s3", *dry, secrets=())
        assert result.code == 2
        [line] = result.err.splitlines()
        assert line.startswith(f"{PROG}: error: {message}"), line
        if who == "lister":
            assert line.endswith("access denied (AccessDenied)")
        assert not any(k in result.out + result.err for pair in keys.values() for k in pair)
    assert setup.writes() == [] and setup.secret(NS, VIEWER) is None
    if who != "lister":  # refused before the writer's marker
        assert {o["Key"] for o in admin.list_objects_v2(Bucket=IAM_BUCKET).get("Contents", [])} == before


# Through the plugin ------------------------------------------------------------------------------------
def test_setup_through_the_kubectl_plugin(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    """`kubectl immich-backup setup` on the seeded cluster: the writer Secret there (one key, no labels)
    is adopted, the database namespace gets the archiver's Secret, the restorer Secret takes the new keys."""
    cluster = make_cluster()
    env = tmp_path / "setup.env"
    env.write_text(env_text(BASE))
    env.chmod(0o600)
    cluster.secrets = (*cluster.secrets, *SECRETS)
    before = len(cluster.emulator.requests)
    result = cluster.run("setup", "--env-file", str(env))
    assert result.code == 0, result.err
    assert _rows(result.out) == {
        (WRITER, NS): "updated AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, BUCKET_NAME, MEDIA_PREFIX, labels",
        (ARCHIVER, DB_NS): "created",
        (RESTORER, NS): (
            "updated AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, BUCKET_NAME, AWS_ENDPOINT_URL_S3, labels"
        ),
    }
    secret = cluster.get("v1/secrets", DB_NS, ARCHIVER)
    assert secret is not None and secret["metadata"]["labels"] == LABELS
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == _archiver_expected()
    assert cluster.get("v1/secrets", DB_NS, WRITER) is None
    assert len(cluster.requests("PATCH", "/secrets/")) == 2
    again = cluster.run("setup", "--env-file", str(env))
    assert again.code == 0 and set(_rows(again.out).values()) == {"unchanged"}
    assert [r for r in cluster.emulator.requests[before:] if r.method.value == "DELETE"] == []
