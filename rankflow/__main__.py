from rankflow.cli import main

raise SystemExit(main())
