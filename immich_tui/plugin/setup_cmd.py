"""`kubectl immich-backup setup`: create or update the offsite Secrets from a `.env` file.

The `.env` is validated before the cluster is contacted; the cluster is read before anything is
written; with `--check-s3` the keys prove themselves against the bucket, and the bucket's versioning
must be Enabled (or accepted off with `--allow-unversioned`), before any write; and every planned write
is cleared with read-only mode and RBAC before the first one is made. `--dry-run` writes nothing anywhere
and `--read-only` refuses every write, the bucket's included: `--check-s3` then proves what reads can
and says that the writer's put was not checked. Exit codes: 0 done (or nothing to do), 2 an error (the
flags, the `.env`, the cluster, RBAC, the S3 check) — then nothing was changed in the cluster, unless it
failed between two writes, which the message names.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

import yaml

from immich_tui.plugin import PROG
from immich_tui.plugin import output as out
from immich_tui.services.errors import ServiceError
from immich_tui.services.setup import (
    S3Check,
    SecretChange,
    SecretSetup,
    SetupError,
    build_secrets,
    check_s3,
    credential_values,
    env_file_warnings,
    load_config,
    read_env_file,
    redacted,
    stale_writer_warning,
)
from immich_tui.services.status import Services

DESCRIPTION = (
    "Create or update the Secrets the offsite backup reads, from the OFFSITE_BACKUP_* variables of a .env file, "
    "one per identity: immich-offsite-writer (the media writer) in the Immich namespace, immich-offsite-cnpg (the "
    "archiver, CNPG's s3Credentials) in the database namespace, immich-offsite-restorer (read-only keys for "
    "restores) and, when its keys are given, immich-offsite-viewer (the run reports only, for status and the "
    "offsite totals) in the Immich namespace. A Secret is written only when it differs from the file; nothing is "
    "deleted. See .env.example."
)


def add_setup_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """The `setup` subcommand, with the global flags of `common` (namespaces, kubeconfig, --read-only)."""
    p = sub.add_parser(
        "setup",
        parents=[common],
        help="create or update the offsite Secrets from a .env file",
        description=DESCRIPTION,
    )
    p.add_argument("--env-file", default=".env", metavar="PATH", help="the OFFSITE_BACKUP_* variables (default .env)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the Secrets with every value redacted and what would change; change nothing in the cluster",
    )
    p.add_argument(
        "--check-s3",
        action="store_true",
        help="first prove the keys and the bucket: the writer, the archiver and the restorer list their prefixes, "
        "the viewer lists the run reports and is refused a read under the media prefix, versioning and Object Lock "
        "are read and reported (versioning must be Enabled), then the writer writes a marker under the run reports "
        "and the restorer and the viewer read it back. With --dry-run or --read-only nothing is written, to the "
        "bucket either: the keys list, the protection is read, the restorer and the viewer read a key that does "
        "not exist (NoSuchKey proves s3:GetObject), and the writer's put is skipped and reported as not proven",
    )
    p.add_argument(
        "--allow-unversioned",
        action="store_true",
        help="with --check-s3: go on when the bucket's versioning is not Enabled (with a warning). Without "
        "versioning an overwrite or a delete destroys the only offsite copy and no earlier version can be restored",
    )


def _scrub(text: str, secrets: list[str]) -> str:
    """A last guard: no key ever reaches the terminal, even through a message from a library."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, "<redacted>")
    return text


def _check_text(check: S3Check) -> str:
    where = f"s3://{check.bucket}"
    if check.write_skipped:
        restorer = (
            f"; the restorer keys listed the media prefix and may read under {where}/{check.report_prefix} (a key "
            "that does not exist answered NoSuchKey, not AccessDenied)"
            if check.restorer
            else ""
        )
        text = (
            f"S3 check passed, writing nothing ({check.write_skipped}): the writer keys listed "
            f"{where}/{check.media_prefix}{restorer}; the archiver keys listed {where}/{check.archive_prefix}"
        )
        viewer = "listed the run reports and may read them (NoSuchKey)"
    else:
        restorer = "; the restorer keys listed the media prefix and read the marker back" if check.restorer else ""
        text = (
            f"S3 check passed: the writer keys listed {where}/{check.media_prefix} and wrote "
            f"{where}/{check.marker}{restorer}; the archiver keys listed {where}/{check.archive_prefix}"
        )
        viewer = "listed the run reports and read the marker back"
    if check.viewer:
        text += f"; the viewer keys {viewer}, and were refused a read under {where}/{check.media_prefix} (AccessDenied)"
    if check.protection is not None:
        text += f"\nbucket {check.bucket}: {check.protection.describe()}"
    if check.write_skipped:
        reasons = (("--dry-run", "--dry-run"), ("read-only mode", "--read-only"))
        flags = " and ".join(flag for why, flag in reasons if why in check.write_skipped)
        text += (
            f"\nwrite check skipped ({check.write_skipped}): the writer's s3:PutObject is not proven; run setup "
            f"--check-s3 without {flags} to prove it"
        )
    return text


def _changes_table(changes: list[SecretChange], dry_run: bool) -> str:
    def result(action: str) -> str:
        if not dry_run or action == "unchanged":
            return action
        return {"created": "would be created", "updated": "would be updated"}[action]

    rows = [
        [c.name, c.namespace, result(c.action), ", ".join(c.keys) if c.action == "updated" else ""] for c in changes
    ]
    # what setup changed is read whole, never cut to a width: an operator checks every key it names
    return out.table(["SECRET", "NAMESPACE", "RESULT", "CHANGED"], rows, out.View(wide=True))


def run_setup(args: argparse.Namespace, services: Services, stdout: TextIO, stderr: TextIO) -> int:
    """Validate the `.env`, read the cluster, check S3 if asked, then write what differs (unless a dry run)."""
    secrets: list[str] = []
    dry_run = bool(getattr(args, "dry_run", False))
    fmt = getattr(args, "output", "table") or "table"
    try:
        if getattr(args, "allow_unversioned", False) and not getattr(args, "check_s3", False):
            raise SetupError("--allow-unversioned only applies with --check-s3, which reads the bucket's versioning")
        path = Path(getattr(args, "env_file", ".env") or ".env")
        values = read_env_file(path)
        secrets = credential_values(values)
        config = load_config(values, str(path))
        secrets = sorted({*secrets, *config.secret_values()})
        target = services.target
        manifests = build_secrets(config, target.namespace, target.db_namespace)
        setup = SecretSetup(services.kube)
        plans = setup.plan(manifests)
        stale = stale_writer_warning(services.kube, target.namespace, target.db_namespace)
        if not dry_run:
            setup.preflight(plans)
        check = None
        if getattr(args, "check_s3", False):
            # a dry run writes nothing anywhere, and read-only mode refuses every write: the bucket's too
            skip_write = " and ".join(
                why for why, on in (("--dry-run", dry_run), ("read-only mode", services.target.read_only)) if on
            )
            check = check_s3(
                config, allow_unversioned=bool(getattr(args, "allow_unversioned", False)), skip_write=skip_write
            )
        changes = [p.change for p in plans] if dry_run else setup.apply(plans)
    except ServiceError as exc:
        print(f"{PROG}: error: {_scrub(str(exc), secrets)}", file=stderr)
        return exc.exit_code

    warnings = [
        *config.warnings,
        *(check.warnings if check else ()),
        *([stale] if stale else []),
        *env_file_warnings(path),
    ]
    if fmt in ("json", "yaml"):
        data: dict[str, Any] = {
            "dry_run": dry_run,
            "secrets": changes,
            "s3_check": check,
            "warnings": warnings,
        }
        if dry_run:
            data["manifests"] = [redacted(m) for m in manifests]
        print(_scrub(out.dump(data, fmt), secrets), file=stdout)
        return 0

    lines: list[str] = []
    if check is not None:
        lines.append(_check_text(check))
    lines.append(_changes_table(changes, dry_run))
    if dry_run:
        header = ["dry run: nothing is changed in the cluster", *lines]
        text = "\n".join(f"# {row}" for block in header for row in block.splitlines())
        docs = yaml.safe_dump_all([redacted(m) for m in manifests], sort_keys=False, explicit_start=True)
        print(_scrub(f"{text}\n{docs.rstrip()}", secrets), file=stdout)
    else:
        print(_scrub("\n".join(lines), secrets), file=stdout)
    for warning in warnings:
        print(_scrub(f"warning: {warning}", secrets), file=stderr)
    return 0
