"""The `immich-tui` command: its flags, and starting the Textual app on a cluster or on the sandbox.

`kubectl immich-backup tui` opens the same app through `run_tui`; the plugin itself lives in
`immich_tui.plugin.cli`, which imports this module (never the other way round).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from immich_tui.flags import global_flags, target_from_args, with_defaults
from immich_tui.services.status import Services, Target


def tui_parser(prog: str = "immich-tui") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        parents=[global_flags(output=False)],
        description="Terminal UI: is Immich backed up offsite, and since when? Act on the media sync and the "
        "CloudNativePG backups.",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run on an embedded sandbox: sample library, local S3 (moto) and a simulated cluster",
    )
    return parser


def run_tui(args: argparse.Namespace) -> int:
    """Open the app on the cluster the flags name, or with `--demo` on the embedded sandbox (an optional extra)."""
    from immich_tui.app import ImmichApp

    with_defaults(args)
    blink = os.environ.get("IMMICH_TUI_CURSOR_BLINK", "1") != "0"
    if getattr(args, "demo", False):
        from immich_tui.demo import DEMO_EXTRA_HINT, missing_packages

        if missing_packages():
            print(f"immich-tui: --demo needs the sandbox's servers: {DEMO_EXTRA_HINT}", file=sys.stderr)
            return 2
        from immich_tui.demo.world import Sandbox

        print("Starting the sandbox: sample library, local S3, simulated cluster…", file=sys.stderr, flush=True)
        with Sandbox() as box:
            target = Target(
                kubeconfig=str(box.kubeconfig),
                context="sandbox",
                read_only=args.read_only,
                stale_after_hours=args.stale_after,
                drill_stale_after_days=args.drill_stale_after,
            )
            services = Services(target, env=box.env)
            ImmichApp(services, cursor_blink=blink).run()
            services.close()
        return 0
    services = Services(target_from_args(args))
    try:
        ImmichApp(services, cursor_blink=blink).run()
    finally:
        services.close()
    return 0


def tui_main(argv: Sequence[str] | None = None) -> int:
    """The `immich-tui` console script."""
    args = tui_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return run_tui(args)


if __name__ == "__main__":
    raise SystemExit(tui_main())
