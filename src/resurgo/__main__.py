from resurgo.cli.main import main

raise SystemExit(main())
