"""The global flags `kubectl immich-backup` and `immich-tui` share, and the cluster target they name.

Both commands take the same `--kubeconfig`, `--context`, namespaces, `--read-only`… and must read them the
same way. Defining them here, below both entry points, lets each import them without importing the other.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from immich_tui.services.health import DRILL_STALE_AFTER_DAYS, STALE_AFTER_HOURS
from immich_tui.services.media import DEFAULT_CRONJOB
from immich_tui.services.status import Target

GLOBAL_DEFAULTS: dict[str, Any] = {
    "kubeconfig": None,
    "context": None,
    "namespace": "immich",
    "db_namespace": "postgresql",
    "db_cluster": "immich-db",
    "cronjob": DEFAULT_CRONJOB,
    "output": "table",
    "no_headers": False,
    "read_only": False,
    "stale_after": STALE_AFTER_HOURS,
    "s3_profile": None,
    "drill_stale_after": DRILL_STALE_AFTER_DAYS,
}


MAX_STALE_HOURS = 24 * 366.0  # a year: past that, no backup is ever stale and the check means nothing


def bounded(text: str, unit: str, high: float, limit: str) -> float:
    """A number of `unit` above 0 and at most `high` (`limit` says it in words), else an argparse error.
    `nan` compares false with every age, so it would call anything fresh; `inf`, 0 and negative values are
    as meaningless, and each is refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of {unit}") from None
    if not math.isfinite(value) or not 0 < value <= high:
        raise argparse.ArgumentTypeError(f"must be a number of {unit} above 0 and at most {limit}, got {text[:40]!r}")
    return value


def hours(text: str) -> float:
    """`--stale-after`: hours, at most a year."""
    return bounded(text, "hours", MAX_STALE_HOURS, f"{MAX_STALE_HOURS:g} (a year)")


MAX_DRILL_STALE_DAYS = 366.0  # a year, as for --stale-after


def days(text: str) -> float:
    """`--drill-stale-after`: days, at most a year."""
    return bounded(text, "days", MAX_DRILL_STALE_DAYS, f"{MAX_DRILL_STALE_DAYS:g} (a year)")


OUTPUT_FORMATS = ("table", "wide", "name", "json", "yaml")


def global_flags(*, output: bool = True, hidden: bool = False) -> argparse.ArgumentParser:
    """Parsed both before and after the subcommand; SUPPRESS keeps a later default from erasing an earlier value.

    `hidden` gives the same flags with their help suppressed: a subcommand still accepts every one of them,
    but its help stays short and points at `kubectl immich-backup options`, as kubectl's does."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("cluster and output")

    def add(*names: str, help: str, **kwargs: Any) -> None:
        g.add_argument(*names, help=argparse.SUPPRESS if hidden else help, **kwargs)

    add("--kubeconfig", help="path to the kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    add("--context", help="kubeconfig context to use")
    add("-n", "--namespace", help="Immich namespace (default: immich)")
    add("--db-namespace", help="namespace of the CNPG cluster (default: postgresql)")
    add("--db-cluster", help="name of the CNPG cluster (default: immich-db)")
    add("--cronjob", help=f"media sync CronJob (default: {DEFAULT_CRONJOB})")
    if output:  # the TUI has no output format
        add(
            "-o",
            "--output",
            choices=OUTPUT_FORMATS,
            metavar="FORMAT",
            help="table (default), wide (full timestamps, more columns), name (kind/name per line), json or yaml",
        )
        add("--no-headers", action="store_true", help="tables: print the rows only, without headers or summaries")
    add("--read-only", action="store_true", help="refuse every change to the cluster")
    add("--stale-after", type=hours, metavar="HOURS", help="a backup older than this is stale (36)")
    add(
        "--drill-stale-after",
        type=days,
        metavar="DAYS",
        help=f"a restore drill older than this is stale ({DRILL_STALE_AFTER_DAYS:g})",
    )
    add("--s3-profile", help="AWS profile with read access to the bucket (default: $AWS_PROFILE)")
    return p


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in every global flag that was given neither before nor after the subcommand."""
    for name, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def target_from_args(args: argparse.Namespace) -> Target:
    """The cluster target the global flags name, for the plugin and the TUI alike."""
    return Target(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        db_namespace=args.db_namespace,
        db_cluster=args.db_cluster,
        cronjob=args.cronjob,
        read_only=args.read_only,
        stale_after_hours=args.stale_after,
        s3_profile=args.s3_profile,
        drill_stale_after_days=args.drill_stale_after,
    )
