"""`python -m sync_engine`: the image's ENTRYPOINT, the same command line as `immich-sync`."""

from sync_engine.cli import main

raise SystemExit(main())
