from sync_engine.cli import main

raise SystemExit(main())
