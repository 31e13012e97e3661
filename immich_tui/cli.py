"""Entry points of the operator tools. They arrive with the cluster services; until then they say so."""

from __future__ import annotations

import sys


def tui_main() -> int:
    print("immich-tui: not yet available in this version; use `immich-sync` for backups", file=sys.stderr)
    return 2


def plugin_main() -> int:
    print("kubectl immich-backup: not yet available in this version", file=sys.stderr)
    return 2
