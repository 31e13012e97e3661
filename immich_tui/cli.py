"""Entry points of the operator tools."""

from __future__ import annotations

import sys


def tui_main() -> int:
    print("immich-tui: not yet available in this version; use `kubectl immich-backup`", file=sys.stderr)
    return 2


def plugin_main() -> int:
    from immich_tui.plugin.cli import main

    return main()
