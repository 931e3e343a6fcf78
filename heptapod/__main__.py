from heptapod.cli import main

raise SystemExit(main())
