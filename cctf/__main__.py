from cctf.cli import main

raise SystemExit(main())
