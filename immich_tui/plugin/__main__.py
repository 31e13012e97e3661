"""`python -m immich_tui.plugin`: the plugin without its console script, as the tools image runs it."""

from immich_tui.plugin.cli import main

raise SystemExit(main())
