"""`make demo`: the operator TUI on an embedded sandbox — no cluster, no cloud account.

The sandbox is a generated Immich library, a local S3 endpoint (moto on 127.0.0.1) already holding a
first real backup and a fortnight of nightly run reports, and a simulated cluster (kmock's Kubernetes
emulator) with the sync CronJob, its Jobs, the Immich server pod and a CNPG cluster. Pressing `t`
starts a Job that really runs `immich-sync backup` on the sample library; its log streams in the Jobs
tab. Without a terminal (CI logs, pipes) the same sandbox is shown through `kubectl immich-backup`.
"""

from __future__ import annotations

import sys

from immich_tui.plugin.cli import main as plugin_main


def tour() -> int:
    """The non-interactive demo: the plugin's answers on the sandbox, as an operator would type them."""
    from immich_tui.demo.world import Sandbox

    print("Starting the sandbox: sample library, local S3 with a first backup, simulated cluster…", flush=True)
    with Sandbox() as box:
        codes = []
        for argv in (
            ["status"],
            ["jobs", "--limit", "5"],
            ["sync", "--wait"],
            ["offsite"],
            ["db", "backups"],
            ["db", "catalog"],
        ):
            print(f"\n$ kubectl immich-backup {' '.join(argv)}", flush=True)
            codes.append(plugin_main([*argv, "--kubeconfig", str(box.kubeconfig)], env=box.env))
        print("\nRun `make demo` in a terminal for the interactive TUI on the same sandbox.")
    return 0 if all(code in (0, 1) for code in codes) else 1


def main() -> int:
    if sys.stdin.isatty() and sys.stdout.isatty():
        from immich_tui.cli import tui_main

        return tui_main(["--demo"])
    return tour()


if __name__ == "__main__":
    raise SystemExit(main())
