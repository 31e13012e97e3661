"""`IMMICH_SYNC_SECRETS_DIR` / `--secrets-dir`: the engine's keys, bucket and prefix from a mounted Secret.

In the cluster the Secret is a volume, one file per key, so the keys never sit in the pod's environment
(where `kubectl describe`, a crash dump or any process of the pod's user could read them). These tests run
the real engine, in its own process with no AWS variable in its environment at all, against a moto server
that enforces the writer's IAM policy: a request that is not signed with the files' keys is refused, so a
backup that succeeds proves the signature. The bad cases (no directory, a file that cannot be read, is too
large, or holds what a key cannot) each stop the run before any request with exit 2 and one line naming
the path, never the value. Precedence: flag, then environment, then the directory, then the default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from immich_tui.demo.library import SampleLibrary
from sync_engine.cli import build_parser, main
from sync_engine.config import restore_settings, secret_files, sync_settings
from sync_engine.errors import ConfigError
from sync_engine.settings import SETTING
from tests.strict_iam import StrictIamS3, writer_and_admin
from tests.unprivileged import unprivileged

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "immich-offsite-secrets-dir"
PREFIX = "immich/media/"
MOUNT = "/var/run/secrets/immich-offsite"  # where the CronJob mounts the Secret
SECRET_MARKER = "dir-secret-never-printed-7d3e"  # a fake secret key whose appearance in output fails a test
LABEL = SETTING["secrets_dir"].label


def mounted_secret(root: Path, values: Mapping[str, str | bytes], *, mode: int = 0o400) -> Path:
    """A Secret laid out as the kubelet mounts it: each key a symlink to `..data/KEY`, `..data` a symlink to
    a timestamped directory holding the files (mode 0400, as the manifests set defaultMode)."""
    stamp = root / "..2026_11_27_02_30_00.123456789"
    stamp.mkdir(parents=True)
    for key, value in values.items():
        path = stamp / key
        path.write_bytes(value if isinstance(value, bytes) else value.encode())
        path.chmod(mode)
    (root / "..data").symlink_to(stamp.name)
    for key in values:
        (root / key).symlink_to(f"..data/{key}")
    return root


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The process environment without a single AWS or engine variable (HOME moved, so no ~/.aws either)."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "IMMICH_SYNC_")) and k not in ("BUCKET_NAME", "MEDIA_PREFIX", "LIBRARY_ROOT")
    }
    return {**keep, "HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def engine(argv: list[str], env: dict[str, str], *, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "sync_engine", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[tuple[StrictIamS3, tuple[str, str], tuple[str, str]]]:
    """A moto server that checks every request's signature and the shipped writer policy."""
    with writer_and_admin(BUCKET) as served:
        yield served


def writer_files(server: StrictIamS3, writer: tuple[str, str]) -> dict[str, str]:
    """What `kubectl immich-backup setup` puts into immich-offsite-writer, with the local endpoint."""
    return {
        "AWS_ACCESS_KEY_ID": writer[0] + "\n",  # `kubectl create secret --from-file` keeps an editor's newline
        "AWS_SECRET_ACCESS_KEY": writer[1],
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": BUCKET,
        "MEDIA_PREFIX": PREFIX,
        "AWS_ENDPOINT_URL_S3": server.endpoint,
    }


def media_keys(server: StrictIamS3, admin: tuple[str, str]) -> list[str]:
    client = server.client(key_id=admin[0], secret=admin[1])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


# -- end to end, against an S3 that checks signatures and the writer policy --------------------------------


def test_a_backup_reads_its_keys_bucket_and_prefix_from_the_secrets_dir(
    iam_s3: tuple[StrictIamS3, tuple[str, str], tuple[str, str]], sample: SampleLibrary, tmp_path: Path
) -> None:
    server, writer, admin = iam_s3
    secrets = mounted_secret(tmp_path / "secret", writer_files(server, writer))
    env = clean_env(
        tmp_path, IMMICH_SYNC_SECRETS_DIR=str(secrets), LIBRARY_ROOT=str(sample.root), IMMICH_SYNC_SETTLE_SECONDS="0"
    )
    assert not [name for name in env if name.startswith("AWS_")]
    done = engine(["backup", "--log-format", "json", "--no-progress", "-o", "json"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert writer[1] not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["bucket"], report["status"]) == (BUCKET, "ok")
    uploaded = media_keys(server, admin)
    assert len(uploaded) == 203 and all(k.startswith(PREFIX) for k in uploaded)
    # the same keys with one character of the secret changed: S3 refuses the signature, so it was the files'
    files = writer_files(server, writer) | {"AWS_SECRET_ACCESS_KEY": SECRET_MARKER}
    wrong = mounted_secret(tmp_path / "wrong", files)
    refused = engine(["plan", "--no-progress"], env | {"IMMICH_SYNC_SECRETS_DIR": str(wrong)})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "AWS_SECRET_ACCESS_KEY is wrong" in refused.stderr
    assert SECRET_MARKER not in refused.stdout + refused.stderr


def test_the_environment_s_keys_win_over_the_secrets_dir(
    iam_s3: tuple[StrictIamS3, tuple[str, str], tuple[str, str]], sample: SampleLibrary, tmp_path: Path
) -> None:
    """Someone running the engine by hand with keys in the environment gets those, whatever the directory
    holds; `--secrets-dir` given as a flag is read like the variable."""
    server, writer, _ = iam_s3
    files = writer_files(server, writer) | {"AWS_SECRET_ACCESS_KEY": SECRET_MARKER}
    secrets = mounted_secret(tmp_path / "secret", files)
    env = clean_env(tmp_path, LIBRARY_ROOT=str(sample.root), IMMICH_SYNC_SETTLE_SECONDS="0")
    keys = {"AWS_ACCESS_KEY_ID": writer[0], "AWS_SECRET_ACCESS_KEY": writer[1]}
    done = engine(["plan", "--no-progress", "--secrets-dir", str(secrets)], env | keys)
    assert done.returncode == 0, done.stdout + done.stderr
    assert SECRET_MARKER not in done.stdout + done.stderr


def _parsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_flag_over_environment_over_secrets_dir_over_default(tmp_path: Path) -> None:
    secrets = mounted_secret(
        tmp_path / "secret",
        {
            "AWS_REGION": "eu-west-1",
            "BUCKET_NAME": "bucket-from-file",
            "MEDIA_PREFIX": "from-file/media",
            "IMMICH_SYNC_WORKERS": "8",
            "IMMICH_SYNC_SECRETS_DIR": "/somewhere/else",  # a directory cannot name another one
        },
    )
    backup, restore, plan = (_parsers()[name] for name in ("backup", "restore", "plan"))
    env = {"LIBRARY_ROOT": str(ROOT), "IMMICH_SYNC_SECRETS_DIR": str(secrets)}
    files = secret_files(backup.parse_args([]), env)
    assert files.directory == secrets
    plain = sync_settings(backup.parse_args([]), env, files)
    got = (plain.s3.bucket, plain.s3.region, plain.media_prefix, plain.report_prefix, plain.workers)
    assert got == ("bucket-from-file", "eu-west-1", "from-file/media/", "from-file/sync-reports/", 8)
    assert plain.settle_seconds == 60.0  # neither flag, variable nor file: the default
    # the environment wins, setting by setting: AWS_DEFAULT_REGION there beats AWS_REGION in a file; a blank
    # variable counts as unset, so the file's value stands
    env |= {"BUCKET_NAME": "bucket-from-env", "AWS_DEFAULT_REGION": "us-east-2", "IMMICH_SYNC_WORKERS": " "}
    from_env = sync_settings(backup.parse_args([]), env, files)
    assert (from_env.s3.bucket, from_env.s3.region, from_env.workers) == ("bucket-from-env", "us-east-2", 8)
    flagged = sync_settings(backup.parse_args(["--bucket", "bucket-from-flag"]), env, files)
    assert flagged.s3.bucket == "bucket-from-flag"
    restored = restore_settings(restore.parse_args(["--to", str(tmp_path / "t")]), {}, files)
    assert (restored.s3.bucket, restored.media_prefix, restored.restore_days) == (
        "bucket-from-file",
        "from-file/media/",
        7,
    )
    assert "bucket-from-file" not in repr(files) and "BUCKET_NAME" in repr(files)  # a repr names keys, not values
    # the flag names the directory too, and wins over the variable
    other = mounted_secret(tmp_path / "other", {"BUCKET_NAME": "bucket-from-flag-dir"})
    args = plan.parse_args(["--secrets-dir", str(other)])
    assert secret_files(args, env).directory == other
    bare = {"LIBRARY_ROOT": str(ROOT), "AWS_REGION": "r", "MEDIA_PREFIX": "m"}
    by_flag = sync_settings(args, bare, secret_files(args, env))
    assert by_flag.s3.bucket == "bucket-from-flag-dir"
    # no directory given: nothing is read
    assert secret_files(backup.parse_args([]), {}).values == {}


def test_a_bad_value_in_a_file_names_the_file(tmp_path: Path) -> None:
    secrets = mounted_secret(tmp_path / "secret", {"BUCKET_NAME": "Bad_Bucket"})
    args = build_parser().parse_args(["plan", "--secrets-dir", str(secrets)])
    env = {"LIBRARY_ROOT": str(ROOT), "AWS_REGION": "us-east-1", "MEDIA_PREFIX": "m/"}
    with pytest.raises(ConfigError) as caught:
        sync_settings(args, env, secret_files(args, env))
    assert str(caught.value) == (
        f"--bucket / BUCKET_NAME (from {secrets}/BUCKET_NAME): 'Bad_Bucket' is not a valid S3 bucket name"
    )
    with pytest.raises(ConfigError) as caught:
        sync_settings(args, {"LIBRARY_ROOT": str(ROOT)}, secret_files(args, env))
    assert str(caught.value) == f"--prefix / MEDIA_PREFIX: required but not set (nor a file in {secrets})"


# -- what is refused: one line, exit 2, the path named and no value printed -------------------------------


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("AWS_", "IMMICH_SYNC_")) or name in ("BUCKET_NAME", "MEDIA_PREFIX", "LIBRARY_ROOT"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "library").mkdir()
    monkeypatch.setenv("LIBRARY_ROOT", str(tmp_path / "library"))


GOOD = {
    "AWS_ACCESS_KEY_ID": "AKIAFILEWRITER",
    "AWS_SECRET_ACCESS_KEY": SECRET_MARKER,
    "AWS_REGION": "us-east-1",
    "BUCKET_NAME": "immich-offsite",
    "MEDIA_PREFIX": PREFIX,
    "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",  # nothing listens: a request would end in exit 3, never 2
    "IMMICH_SYNC_MAX_ATTEMPTS": "1",
}
KEYS = ": S3 keys are printable ASCII, without spaces"  # what a key's file cannot hold, and why
BAD_FILES: dict[str, tuple[dict[str, str | bytes | None], str]] = {
    "key-not-ascii": (
        {"AWS_ACCESS_KEY_ID": "AKIA\u00a0FILE"},
        "{dir}/AWS_ACCESS_KEY_ID holds a non-ASCII character at position 5" + KEYS,
    ),
    "secret-space": (
        {"AWS_SECRET_ACCESS_KEY": SECRET_MARKER + " "},
        "{dir}/AWS_SECRET_ACCESS_KEY holds a space at position 30" + KEYS,
    ),
    "secret-control-character": (
        {"AWS_SECRET_ACCESS_KEY": SECRET_MARKER[:4] + "\x00" + SECRET_MARKER[4:]},
        "{dir}/AWS_SECRET_ACCESS_KEY holds a control character at position 5",
    ),
    "secret-two-newlines": (  # one trailing newline is taken off, not two
        {"AWS_SECRET_ACCESS_KEY": SECRET_MARKER + "\n\n"},
        "{dir}/AWS_SECRET_ACCESS_KEY holds a control character at position 30",
    ),
    "token-too-large": ({"AWS_SESSION_TOKEN": "A" * (64 * 1024 + 1)}, "{dir}/AWS_SESSION_TOKEN is larger than 64 KiB"),
    "prefix-not-utf8": ({"MEDIA_PREFIX": b"immich/\xff/"}, "{dir}/MEDIA_PREFIX is not UTF-8 text"),
    "region-escape-sequence": (
        {"AWS_REGION": "us-east-1\x1b[2J"},
        "{dir}/AWS_REGION holds a control character at position 10",
    ),
    "only-the-key-id": (
        {"AWS_SECRET_ACCESS_KEY": None},
        "{dir} holds AWS_ACCESS_KEY_ID but not AWS_SECRET_ACCESS_KEY",
    ),
}


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.splitlines() == [f"immich-sync: error: configuration error: {LABEL}: {expected}"]
    assert captured.out == ""
    assert SECRET_MARKER not in captured.err


@pytest.mark.parametrize("command", ["backup", "restore"])
@pytest.mark.parametrize(("files", "expected"), BAD_FILES.values(), ids=list(BAD_FILES))
def test_a_bad_file_is_refused_before_any_request(
    no_aws: None,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    command: str,
    files: dict[str, str | bytes | None],
    expected: str,
) -> None:
    values = {k: v for k, v in (GOOD | files).items() if v is not None}
    secrets = mounted_secret(tmp_path / "secret", values)
    argv = [command, "--secrets-dir", str(secrets)]
    if command == "restore":
        argv += ["--to", str(tmp_path / "restored")]
    _refused(capsys, argv, expected.format(dir=secrets))
    assert not (tmp_path / "restored").exists()


def test_a_missing_or_wrong_directory_is_refused(
    no_aws: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "not-mounted"
    monkeypatch.setenv("IMMICH_SYNC_SECRETS_DIR", str(missing))
    _refused(capsys, ["backup"], f"{missing} does not exist")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _refused(capsys, ["plan", "--secrets-dir", str(a_file)], f"{a_file} is not a directory")
    # a key that is a directory, or a FIFO nobody writes to (reading it would hang the run), is no file
    secrets = mounted_secret(tmp_path / "secret", GOOD)
    (secrets / "..data" / "BUCKET_NAME").unlink()
    (secrets / "..data" / "BUCKET_NAME").mkdir()
    _refused(capsys, ["verify", "--secrets-dir", str(secrets)], f"{secrets}/BUCKET_NAME is not a regular file")
    (secrets / "..data" / "BUCKET_NAME").rmdir()
    os.mkfifo(secrets / "..data" / "BUCKET_NAME")
    _refused(capsys, ["backup", "--secrets-dir", str(secrets)], f"{secrets}/BUCKET_NAME is not a regular file")


def _unprivileged_run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Root reads a mode-000 file anyway: the engine runs without any privilege for permission bits to count."""
    prefix = unprivileged("the unreadable secrets tests").prefix if os.geteuid() == 0 else ()
    return engine(argv, env, prefix=prefix)


@pytest.mark.parametrize("locked", ["file", "directory"])
def test_an_unreadable_file_or_directory_is_refused(tmp_path: Path, locked: str) -> None:
    (tmp_path / "library").mkdir()
    secrets = mounted_secret(tmp_path / "secret", GOOD)
    if locked == "file":
        os.chmod(secrets / "..data" / "AWS_SECRET_ACCESS_KEY", 0o000)
        where = f"{secrets}/AWS_SECRET_ACCESS_KEY"
    else:
        os.chmod(secrets, 0o000)
        where = str(secrets)
    env = clean_env(tmp_path, IMMICH_SYNC_SECRETS_DIR=str(secrets), LIBRARY_ROOT=str(tmp_path / "library"))
    try:
        done = _unprivileged_run(["backup", "--no-progress"], env)
    finally:
        os.chmod(secrets, 0o755)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"immich-sync: error: configuration error: {LABEL}: {where} cannot be read (Permission denied)"
    ]
    assert SECRET_MARKER not in done.stdout + done.stderr


def test_a_mode_0400_file_is_read_by_the_unprivileged_owner(tmp_path: Path) -> None:
    """The kubelet's 0400 with fsGroup (0440, group-readable) is readable by the pod's user: here the owner."""
    (tmp_path / "library").mkdir()
    secrets = mounted_secret(tmp_path / "secret", GOOD | {"BUCKET_NAME": "Bad_Bucket"})
    env = clean_env(tmp_path, IMMICH_SYNC_SECRETS_DIR=str(secrets), LIBRARY_ROOT=str(tmp_path / "library"))
    done = _unprivileged_run(["backup", "--no-progress"], env)
    # the value was read (and judged): the one line names the file it came from
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"immich-sync: error: configuration error: --bucket / BUCKET_NAME (from {secrets}/BUCKET_NAME): "
        "'Bad_Bucket' is not a valid S3 bucket name"
    ]


def test_the_help_documents_the_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sync_engine", "backup", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--secrets-dir DIR" in done.stdout and "env IMMICH_SYNC_SECRETS_DIR" in done.stdout
    top = subprocess.run(
        [sys.executable, "-m", "sync_engine", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "IMMICH_SYNC_SECRETS_DIR" in top.stdout
