"""The settings table (`sync_engine/settings.py`) against the README, the command line and bad values.

Each setting is declared once; these tests hold the README's `immich-sync` configuration table to it
(variable, flag, default: a row per setting, nothing missing, nothing extra), and prove the check itself
rejects a README that drifted. Every out-of-range or malformed value is refused before any request with
exit code 2 and one stderr line that names the flag and the variable.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sync_engine import errors
from sync_engine.cli import build_parser, main
from sync_engine.config import restore_settings, s3_settings, sync_settings
from sync_engine.errors import ConfigError, EngineError, ManifestError, SetupError, StoreError, TargetError
from sync_engine.settings import SETTING, SETTINGS, STORAGE_CLASSES, Setting

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESTORE_ONLY = frozenset({"restore"})
CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens: a request would fail with exit 3, never 2


# -- the README's configuration table ----------------------------------------------------------------------


def section(text: str, heading: str, sub: str) -> str:
    """The body of `### sub` inside `## heading`."""
    top = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert top, f"README has no '## {heading}' section"
    part = re.search(rf"^### {re.escape(sub)}\n(.*?)(?=^##|\Z)", top.group(1), re.M | re.S)
    assert part, f"README's '## {heading}' has no '### {sub}'"
    return part.group(1)


def table_rows(body: str) -> list[list[str]]:
    """The cells of the first Markdown table in `body`, header and separator left out."""
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [row for row in rows[2:] if row]


def row_key(scope: str, flag: str | None, env: tuple[str, ...]) -> str:
    return f"{scope}{flag}" if flag else "+".join(env)


def expected_key(setting: Setting) -> str:
    return row_key("restore " if setting.commands == RESTORE_ONLY else "", setting.flag, setting.env)


def disagreements(readme: str) -> list[str]:
    """Every way the README's configuration table differs from the settings table (variable, flag, default)."""
    problems: list[str] = []
    by_key = {expected_key(s): s for s in SETTINGS}
    seen: set[str] = set()
    for variables, flag_cell, default, meaning in (
        row[:4] for row in table_rows(section(readme, "`immich-sync`", "Configuration"))
    ):
        env = tuple(re.findall(r"`([A-Z][A-Z0-9_]*)`", variables))
        flag = re.fullmatch(r"`(restore )?(--[a-z-]+)(?: (\S+))?`", flag_cell)
        if flag_cell != "–" and not flag:
            problems.append(f"row {variables} {flag_cell}: the flag cell is not `[restore ]--flag[ METAVAR]` or –")
            continue
        scope, name, metavar = flag.groups() if flag else ("", None, None)
        key = row_key(scope or "", name, env)
        setting = by_key.get(key)
        if setting is None:
            problems.append(f"row {key}: no such setting in sync_engine/settings.py")
            continue
        if key in seen:
            problems.append(f"row {key}: listed twice")
        seen.add(key)
        if env != setting.env:
            problems.append(f"row {key}: variables {env}, the table says {setting.env}")
        if metavar is not None and metavar != setting.metavar:
            problems.append(f"row {key}: value {metavar!r}, the table says {setting.metavar!r}")
        if default != setting.default_text:
            problems.append(f"row {key}: default {default!r}, the table says {setting.default_text!r}")
        problems += [f"row {key}: {name} is accepted but not mentioned" for name in setting.also if name not in meaning]
    problems += [f"setting {key} has no row in the README" for key in by_key if key not in seen]
    return problems


def test_readme_configuration_table_matches_the_settings_table() -> None:
    assert disagreements(README.read_text("utf-8")) == []


def _row(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("|") and key in line)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: t.replace(_row(t, "`--part-size-mib`"), _row(t, "`--part-size-mib`").replace("`16`", "`8`")),
            "default '`8`'",
        ),
        (lambda t: t.replace("`IMMICH_SYNC_WORKERS`", "`IMMICH_SYNC_THREADS`"), "variables ('IMMICH_SYNC_THREADS',)"),
        (lambda t: t.replace(_row(t, "`--shard I/N`") + "\n", ""), "setting --shard has no row"),
        (lambda t: t.replace("`--shard I/N`", "`--shard N`"), "value 'N'"),
        (lambda t: t.replace("`restore --overwrite`", "`--overwrite`"), "row --overwrite: no such setting"),
        (lambda t: t.replace("`AWS_DEFAULT_REGION` also accepted", "a fallback exists"), "AWS_DEFAULT_REGION"),
        (
            lambda t: t.replace(_row(t, "`--workers`"), _row(t, "`--workers`") + "\n" + _row(t, "`--workers`")),
            "listed twice",
        ),
    ],
    ids=["default", "variable", "missing-row", "metavar", "scope", "also-accepted", "duplicate"],
)
def test_the_readme_check_rejects_a_drifted_copy(change: Callable[[str], str], expected: str) -> None:
    altered = change(README.read_text("utf-8"))
    assert altered != README.read_text("utf-8")
    found = disagreements(altered)
    assert any(expected in problem for problem in found), found


def test_readme_exit_codes_are_the_engines() -> None:
    rows = table_rows(section(README.read_text("utf-8"), "`immich-sync`", "Exit codes"))
    documented = {int(row[0]) for row in rows}
    defined = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert documented == defined


# -- the command line comes from the table -----------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_comes_from_the_table_with_its_variable_and_default_in_the_help() -> None:
    for command, parser in _subparsers(build_parser()).items():
        actions = {flag: action for action in parser._actions for flag in action.option_strings}
        takes = [s for s in SETTINGS if command in s.commands and s.flag]
        for setting in takes:
            action = actions[setting.flag]  # type: ignore[index]
            assert action.dest == setting.attr and action.default is None, (command, setting.flag)
            text = action.help or ""
            if setting.env:
                assert f"env {setting.env[0]}" in text, (command, setting.flag, text)
            if setting.required or setting.default is not None or setting.shown:
                default = "required" if setting.required else f"default {setting.default_text.replace('`', '')}"
                assert default in text, (command, setting.flag, text)
        # and no setting's flag appears where the table does not list the command
        others = {s.flag for s in SETTINGS if s.flag and command not in s.commands} - {s.flag for s in takes}
        assert not others & set(actions), (command, others & set(actions))


def test_flag_over_variable_over_default() -> None:
    parser = _subparsers(build_parser())["backup"]
    env = {"BUCKET_NAME": "b-env", "AWS_REGION": "eu-west-1", "MEDIA_PREFIX": "m", "LIBRARY_ROOT": str(ROOT)}
    plain = sync_settings(parser.parse_args([]), env)
    assert (plain.workers, plain.part_size, plain.settle_seconds, plain.s3.bucket) == (64, 16 << 20, 60.0, "b-env")
    env |= {"IMMICH_SYNC_WORKERS": "8", "IMMICH_SYNC_SETTLE_SECONDS": "0", "IMMICH_SYNC_PATH_STYLE": "yes"}
    from_env = sync_settings(parser.parse_args([]), env)
    assert (from_env.workers, from_env.settle_seconds, from_env.s3.path_style) == (8, 0.0, True)
    flagged = sync_settings(parser.parse_args(["--workers", "4", "--bucket", "b-flag", "--settle-seconds", "5"]), env)
    assert (flagged.workers, flagged.s3.bucket, flagged.settle_seconds) == (4, "b-flag", 5.0)
    env["IMMICH_SYNC_WORKERS"] = "  "  # blank counts as unset
    assert sync_settings(parser.parse_args([]), env).workers == 64
    # the operator tools resolve the same S3 variables without any flags
    assert s3_settings(None, {"BUCKET_NAME": "bkt", "AWS_DEFAULT_REGION": "us-east-2"}).region == "us-east-2"
    restore = restore_settings(_subparsers(build_parser())["restore"].parse_args(["--to", "/x"]), env)
    assert (restore.restore_tier, restore.restore_days, restore.folders[-1]) == ("Standard", 7, "backups")


def test_each_error_carries_its_exit_code() -> None:
    assert ConfigError("x").exit_code == TargetError("x").exit_code == SetupError("x").exit_code == 2
    assert StoreError("x", transport=True).exit_code == SetupError("x", transport=True).exit_code == 3
    assert ManifestError("x").exit_code == 1
    assert all(issubclass(e, EngineError) for e in (ConfigError, TargetError, StoreError, SetupError, ManifestError))
    assert ConfigError("--x / X: bad").describe() == "configuration error: --x / X: bad"


# -- bad values: exit 2, one line naming the flag and the variable -----------------------------------------


def _ids(cases: list[tuple[tuple[str, ...], dict[str, str], str, str]]) -> list[str]:
    return [" ".join([*argv, *(f"{k}={v}" for k, v in env.items())]) for argv, env, _, _ in cases]


BAD: list[tuple[tuple[str, ...], dict[str, str], str, str]] = [
    (("--part-size-mib", "9999"), {}, "part_size_mib", "must be between 5 and 5120, got 9999"),
    ((), {"IMMICH_SYNC_PART_SIZE_MIB": "9999"}, "part_size_mib", "must be between 5 and 5120, got 9999"),
    (("--part-size-mib", "4"), {}, "part_size_mib", "must be between 5 and 5120, got 4"),
    (("--part-size-mib", "16.5"), {}, "part_size_mib", "must be a whole number, got '16.5'"),
    (("--multipart-threshold-mib", "5121"), {}, "multipart_threshold_mib", "must be between 5 and 5120, got 5121"),
    (
        ("--multipart-threshold-mib", "8"),
        {},
        "multipart_threshold_mib",
        "must be at least the part size (16 MiB), got 8",
    ),
    (("--memory-mib", "32"), {}, "memory_mib", "must be at least the multipart threshold (64 MiB), got 32"),
    (("--memory-mib", "-1"), {}, "memory_mib", "must be at least 1, got -1"),
    (("--workers", "0"), {}, "workers", "must be between 1 and 256, got 0"),
    (("--workers", "257"), {}, "workers", "must be between 1 and 256, got 257"),
    ((), {"IMMICH_SYNC_WORKERS": "abc"}, "workers", "must be a whole number, got 'abc'"),
    (("--max-attempts", "0"), {}, "max_attempts", "must be at least 1, got 0"),
    (("--settle-seconds", "-1"), {}, "settle_seconds", "must not be negative, got -1"),
    (("--settle-seconds", "nan"), {}, "settle_seconds", "must be a finite number, got 'nan'"),
    ((), {"IMMICH_SYNC_SETTLE_SECONDS": "inf"}, "settle_seconds", "must be a finite number, got 'inf'"),
    (("--full-listing-days", "-0.5"), {}, "full_listing_days", "must not be negative, got -0.5"),
    ((), {"IMMICH_SYNC_FULL_LISTING_DAYS": "Infinity"}, "full_listing_days", "must be a finite number, got 'Infinity'"),
    (("--full-listing-days", "a week"), {}, "full_listing_days", "must be a number, got 'a week'"),
    (("--checksum-mode", "crc32"), {}, "checksum_mode", "must be one of when_required, when_supported, got 'crc32'"),
    (("--storage-class", "GOLD"), {}, "storage_class", f"must be one of {', '.join(STORAGE_CLASSES)}, got 'GOLD'"),
    (
        (),
        {"IMMICH_SYNC_PATH_STYLE": "maybe"},
        "path_style",
        "must be one of 1/true/yes/on or 0/false/no/off, got 'maybe'",
    ),
    (("--shard", "3/2"), {}, "shard", "need 0 <= I < N, got 3/2"),
    ((), {"BUCKET_NAME": "Bad_Bucket"}, "bucket", "'Bad_Bucket' is not a valid S3 bucket name"),
    ((), {"AWS_ENDPOINT_URL_S3": "ftp://x"}, "endpoint_url", "'ftp://x' is not an http(s) URL"),
    ((), {"MEDIA_PREFIX": ""}, "prefix", "required but not set"),
    (
        (),
        {"REPORT_PREFIX": "immich/media/upload/r"},
        "report_prefix",
        "immich/media/upload/r/ must not be inside an Immich folder of the media prefix immich/media/",
    ),
]
BAD_RESTORE: list[tuple[tuple[str, ...], dict[str, str], str, str]] = [
    (("--restore-days", "0"), {}, "restore_days", "must be between 1 and 36500, got 0"),
    ((), {"IMMICH_SYNC_RESTORE_DAYS": "36501"}, "restore_days", "must be between 1 and 36500, got 36501"),
    (("--restore-tier", "Fast"), {}, "restore_tier", "must be one of Standard, Bulk, Expedited, got 'Fast'"),
    (("--workers", "-3"), {}, "workers", "must be between 1 and 256, got -3"),
    (("--max-attempts", "nan"), {}, "max_attempts", "must be a whole number, got 'nan'"),
]


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """A complete, valid configuration whose endpoint nothing listens on: any request would exit 3."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "IMMICH_SYNC_")) or name in ("BUCKET_NAME", "MEDIA_PREFIX", "LIBRARY_ROOT"):
            monkeypatch.delenv(name, raising=False)
    (tmp_path / "library").mkdir()
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAOFFLINE",
        "AWS_SECRET_ACCESS_KEY": "offline-secret",
        "AWS_REGION": "us-east-1",
        "BUCKET_NAME": "immich-offsite",
        "MEDIA_PREFIX": "immich/media/",
        "AWS_ENDPOINT_URL_S3": CLOSED_PORT,
        "IMMICH_SYNC_MAX_ATTEMPTS": "1",
        "LIBRARY_ROOT": str(tmp_path / "library"),
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    return env


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.splitlines() == [f"immich-sync: error: configuration error: {expected}"]
    assert captured.out == ""


@pytest.mark.parametrize("command", ["backup", "plan", "verify"])
@pytest.mark.parametrize(("argv", "env", "name", "problem"), BAD, ids=_ids(BAD))
def test_bad_value_is_refused_before_any_request(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    offline_env: dict[str, str],
    command: str,
    argv: tuple[str, ...],
    env: dict[str, str],
    name: str,
    problem: str,
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    _refused(capsys, [command, *argv], f"{SETTING[name].label}: {problem}")


@pytest.mark.parametrize(("argv", "env", "name", "problem"), BAD_RESTORE, ids=_ids(BAD_RESTORE))
def test_bad_restore_value_is_refused_before_anything_is_written(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    offline_env: dict[str, str],
    tmp_path: Path,
    argv: tuple[str, ...],
    env: dict[str, str],
    name: str,
    problem: str,
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    target = tmp_path / "restored"
    _refused(capsys, ["restore", "--to", str(target), *argv], f"{SETTING[name].label}: {problem}")
    assert not target.exists()


def test_a_bad_value_exits_2_from_a_real_process(offline_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sync_engine", "backup", "--log-format", "json"],
        env={**os.environ, "IMMICH_SYNC_PART_SIZE_MIB": "9999", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and '"exit_code": 2' in lines[0], proc.stderr
    assert "--part-size-mib / IMMICH_SYNC_PART_SIZE_MIB: must be between 5 and 5120, got 9999" in lines[0]
