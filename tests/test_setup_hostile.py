"""`kubectl immich-backup setup` fed what a tired operator or a hostile file hands it: keys pasted into the
wrong line of the `.env`, an env file that is a device, a pipe or a huge file, and characters that no S3
key holds.

Every key-like value goes into every variable in turn, with AWS's rules and with an S3-compatible
endpoint (moto, with --check-s3): whatever setup says, nothing of the value is printed, not even a piece
of it, and an error still names the variable and what is wrong with it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from immich_tui.demo.s3 import LocalS3
from immich_tui.plugin import PROG
from immich_tui.services.setup import VARIABLES
from tests import test_setup
from tests.conftest import Result
from tests.test_setup import BASE, SECRETS, Setup, _s3_changes, _versioned, env_text

# The fixtures of setup's own tests: the Kubernetes emulator with both namespaces, an unversioned bucket.
setup = test_setup.setup
bucket = test_setup.bucket

# Shaped like what S3 stores hand out: AWS (and MinIO) IDs and secrets, Garage's IDs, R2's hex secrets.
HOSTILE = {
    "aws-key-id": "AKIAZ7QX3HOSTILE9KQ2",
    "aws-secret": "u8Wq+3kZr/N5vLx2Tc9mHs7Bp0Yd4Fg6Jh1Ke8Ra",
    "minio-secret": "Pv9sLk2QwErT5yUiOp3aZx8cVb7nMq4Wl6Ej1Rt0",
    "garage-key-id": "GK3f9a1c7e5b2d4068a9c1e3f5",
    "r2-secret": "9d4e1f7a3c8b2e6d0f5a9c3e7b1d4f8a2c6e0b9d3f7a1c5e8b2d6f0a4c9e3b7d",
}
CREDENTIALS = {name for name in VARIABLES if name.endswith(("_ACCESS_KEY_ID", "_SECRET_ACCESS_KEY"))}
OTHERS = sorted(set(VARIABLES) - CREDENTIALS)


def leaked(value: str, text: str, piece: int = 8) -> str | None:
    """Any 8 characters of the value in the text: a shortened quote (`'wJalrXUt…KEY01'`) leaks too."""
    return next((value[i : i + piece] for i in range(len(value) - piece + 1) if value[i : i + piece] in text), None)


def assert_quiet(result: Result, value: str, variable: str) -> None:
    output = result.out + result.err
    assert leaked(value, output) is None, f"{variable}: {leaked(value, output)!r} printed:\n{output}"
    assert result.code in (0, 2), result.err
    if result.code == 2:
        lines = result.err.splitlines()
        assert len(lines) == 1, result.err
        assert lines[0].startswith(f"{PROG}: error: ")
        assert variable in lines[0], lines[0]  # names what to fix ...
        assert len(lines[0]) > len(f"{PROG}: error: {variable}") + 15  # ... and what is wrong with it


CASES = [(name, kind) for name in sorted(VARIABLES) for kind in HOSTILE]
CASE_IDS = [f"{v.removeprefix('OFFSITE_BACKUP_')}-{k}" for v, k in CASES]


@pytest.mark.parametrize(("variable", "kind"), CASES, ids=CASE_IDS)
def test_a_key_in_any_variable_is_never_printed_with_aws_rules(setup: Setup, variable: str, kind: str) -> None:
    value = HOSTILE[kind]
    env = setup.env_file({variable: value})
    for extra in (("--dry-run",), ("--dry-run", "-o", "json")):
        result = setup.run("--env-file", str(env), *extra, secrets=(*SECRETS, value))
        assert_quiet(result, value, variable)
        if variable in OTHERS:
            assert result.code == 2, result.out  # a key is never a region, a bucket, a prefix or an endpoint


@pytest.mark.parametrize(("variable", "kind"), CASES, ids=CASE_IDS)
def test_a_key_in_any_variable_is_never_printed_with_an_s3_compatible_endpoint(
    setup: Setup, s3: LocalS3, bucket: str, variable: str, kind: str
) -> None:
    """Free-form keys are accepted here, so the S3 check runs: nothing of the value is in its report
    either."""
    value = HOSTILE[kind]
    changes = _s3_changes(s3.endpoint, _versioned(s3, bucket))
    changes.update({variable: value})
    env = setup.env_file(changes)
    for extra in ((), ("-o", "json")):
        result = setup.run("--env-file", str(env), "--check-s3", *extra, secrets=(*SECRETS, value))
        assert_quiet(result, value, variable)
        if variable in OTHERS:
            assert result.code == 2, result.out


REFUSED = [
    (
        "OFFSITE_BACKUP_AWS_REGION",
        "aws-secret",
        "OFFSITE_BACKUP_AWS_REGION looks like a secret access key, not a region (is a key on the wrong line?)",
    ),
    (
        "OFFSITE_BACKUP_AWS_REGION",
        "aws-key-id",
        "OFFSITE_BACKUP_AWS_REGION looks like an access key ID, not a region (is a key on the wrong line?)",
    ),
    (
        "OFFSITE_BACKUP_BUCKET_NAME",
        "r2-secret",
        "OFFSITE_BACKUP_BUCKET_NAME looks like an access key or a secret, not a bucket name (is a key on the wrong "
        "line?)",
    ),
    (
        "OFFSITE_BACKUP_MEDIA_PREFIX",
        "aws-secret",
        "OFFSITE_BACKUP_MEDIA_PREFIX looks like a secret access key, not a key prefix (is a key on the wrong line?)",
    ),
    (
        "OFFSITE_BACKUP_MEDIA_PREFIX",
        "minio-secret",
        "OFFSITE_BACKUP_MEDIA_PREFIX looks like a secret access key, not a key prefix (is a key on the wrong line?)",
    ),
    (
        "OFFSITE_BACKUP_ENDPOINT_URL",
        "aws-secret",
        "OFFSITE_BACKUP_ENDPOINT_URL looks like a secret access key, not an http(s) URL (is a key on the wrong line?)",
    ),
]


@pytest.mark.parametrize(("variable", "kind", "message"), REFUSED, ids=[f"{v[15:]}-{k}" for v, k, _ in REFUSED])
def test_a_key_on_the_wrong_line_is_named_as_such(setup: Setup, variable: str, kind: str, message: str) -> None:
    value = HOSTILE[kind]
    result = setup.run("--env-file", str(setup.env_file({variable: value})), secrets=(*SECRETS, value))
    assert result.code == 2
    assert result.err == f"{PROG}: error: {message}\n"
    assert setup.emulator.requests == []


SHOWN = [
    # short words are quoted, as they help and cannot be keys
    (
        "OFFSITE_BACKUP_AWS_REGION",
        "frankfurt",
        "OFFSITE_BACKUP_AWS_REGION 'frankfurt' does not look like an AWS region (such as eu-central-1)",
    ),
    # a long or token-like value is described, never quoted; an endpoint never is, only its scheme
    (
        "OFFSITE_BACKUP_AWS_REGION",
        "minio-writer-secret-1",
        "OFFSITE_BACKUP_AWS_REGION does not look like an AWS region (such as eu-central-1); its value (21 "
        "characters) is not shown, as it may be a key",
    ),
    (
        "OFFSITE_BACKUP_AWS_REGION",
        "minio123",
        "OFFSITE_BACKUP_AWS_REGION does not look like an AWS region (such as eu-central-1); its value (8 "
        "characters) is not shown, as it may be a key",
    ),
    (
        "OFFSITE_BACKUP_BUCKET_NAME",
        "Family_Photos_Offsite_Backup",
        "OFFSITE_BACKUP_BUCKET_NAME is not a valid S3 bucket name (3-63 lowercase letters, digits, dots and "
        "hyphens, starting and ending with a letter or digit); its value (28 characters) is not shown, as it may "
        "be a key",
    ),
    (
        "OFFSITE_BACKUP_ENDPOINT_URL",
        "ftp://minio.local:9000",
        "OFFSITE_BACKUP_ENDPOINT_URL is not an http(s) URL (its scheme is 'ftp')",
    ),
    (
        "OFFSITE_BACKUP_MEDIA_PREFIX",
        "/photos/of/the/family/",
        "OFFSITE_BACKUP_MEDIA_PREFIX starts with '/': S3 keys have none (write immich/media/); its value (22 "
        "characters) is not shown, as it may be a key",
    ),
]


@pytest.mark.parametrize(("variable", "value", "message"), SHOWN, ids=[f"{v[15:]}-{x[:12]}" for v, x, _ in SHOWN])
def test_only_a_short_word_is_quoted(setup: Setup, variable: str, value: str, message: str) -> None:
    result = setup.run("--env-file", str(setup.env_file({variable: value})))
    if f"{value!r}" not in message:
        assert leaked(value, result.err) is None
    assert result.code == 2
    assert result.err == f"{PROG}: error: {message}\n"


# The env file itself ---------------------------------------------------------------------------------
def _plugin(setup: Setup, *argv: str, timeout: float = 30) -> Result:
    """The real console script in a process of its own, its memory capped: a file that never ends must fail
    the test, not the machine."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    script = Path(sys.executable).with_name("kubectl-immich_backup")
    done = subprocess.run(
        [str(script), "setup", *argv, "--kubeconfig", str(setup.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap,
        env={k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG"))},
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_an_env_file_that_never_ends_is_refused(setup: Setup) -> None:
    try:
        result = _plugin(setup, "--env-file", "/dev/zero")
    except subprocess.TimeoutExpired:
        pytest.fail("setup --env-file /dev/zero did not return")
    assert result.code == 2, result.err[-2000:]
    assert result.err == (
        f"{PROG}: error: env file /dev/zero is not a regular file (it is a character device): "
        "setup reads only a file such as .env\n"
    )
    assert setup.emulator.requests == []


def test_a_named_pipe_is_refused_without_waiting_for_a_writer(setup: Setup) -> None:
    fifo = setup.tmp / "env.fifo"
    os.mkfifo(fifo)
    try:
        result = _plugin(setup, "--env-file", str(fifo), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("setup --env-file FIFO did not return")
    assert result.code == 2
    assert result.err == (
        f"{PROG}: error: env file {fifo} is not a regular file (it is a named pipe): setup reads only a file "
        "such as .env\n"
    )
    assert setup.emulator.requests == []


def test_an_env_file_over_a_mebibyte_is_refused(setup: Setup) -> None:
    big = setup.tmp / "big.env"
    text = env_text(BASE)
    big.write_text(text + "#" + "x" * (1024 * 1024 - len(text)) + "\n")
    big.chmod(0o600)
    result = setup.run("--env-file", str(big))
    assert result.code == 2
    assert result.err == (
        f"{PROG}: error: env file {big} is larger than 1 MiB ({big.stat().st_size} bytes): not a .env file\n"
    )
    assert setup.emulator.requests == []
    at_the_cap = setup.tmp / "cap.env"
    at_the_cap.write_text(text + "#" + "x" * (1024 * 1024 - len(text) - 2) + "\n")
    at_the_cap.chmod(0o600)
    assert at_the_cap.stat().st_size == 1024 * 1024
    assert setup.run("--env-file", str(at_the_cap), "--dry-run").code == 0


def test_a_directory_and_a_symlink_to_a_file(setup: Setup) -> None:
    result = setup.run("--env-file", str(setup.tmp))
    assert result.code == 2 and result.err == f"{PROG}: error: env file {setup.tmp} is a directory\n"
    link = setup.tmp / "linked.env"
    link.symlink_to(setup.env_file())
    assert setup.run("--env-file", str(link), "--dry-run").code == 0  # a .env kept elsewhere and linked


NON_ASCII = [
    ("OFFSITE_BACKUP_AWS_ACCESS_KEY_ID", "immich-wr\u00efter\u20ac"),
    ("OFFSITE_BACKUP_AWS_ACCESS_KEY_ID", "\u201cimmich-writer\u201d"),  # typographic quotes from a document
    ("OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID", "immich-\u0441npg"),  # a Cyrillic look-alike letter
    ("OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY", "minio-r\u00e9storer-secret-2"),
]


@pytest.mark.parametrize(("variable", "value"), NON_ASCII, ids=[f"{v[15:]}-{i}" for i, (v, _) in enumerate(NON_ASCII)])
def test_a_key_that_is_not_ascii_is_one_line_naming_the_variable(
    setup: Setup, s3: LocalS3, bucket: str, variable: str, value: str
) -> None:
    """S3-compatible rules accept free-form keys, but no store hands out one outside ASCII, and signing a
    request with it would fail with a traceback."""
    changes = _s3_changes(
        s3.endpoint,
        _versioned(s3, bucket),
        OFFSITE_BACKUP_AWS_ACCESS_KEY_ID="immich-writer",
        OFFSITE_BACKUP_AWS_SECRET_ACCESS_KEY="minio-writer-secret-1",
        OFFSITE_BACKUP_CNPG_AWS_ACCESS_KEY_ID="immich-cnpg",
        OFFSITE_BACKUP_CNPG_AWS_SECRET_ACCESS_KEY="minio-archiver-secret-3",
        OFFSITE_BACKUP_RESTORER_AWS_ACCESS_KEY_ID="immich-restorer",
        OFFSITE_BACKUP_RESTORER_AWS_SECRET_ACCESS_KEY="minio-restorer-secret-2",
    )
    changes[variable] = value
    minio = ("minio-writer-secret-1", "minio-archiver-secret-3", "minio-restorer-secret-2", value)
    result = setup.run("--env-file", str(setup.env_file(changes)), "--check-s3", secrets=minio)
    assert result.code == 2
    assert result.err == (
        f"{PROG}: error: {variable} contains a character that is not ASCII (a typographic quote or a look-alike "
        "letter pasted from a document?)\n"
    )
    assert setup.emulator.requests == []
