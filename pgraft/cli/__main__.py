"""`python -m pgraft.cli ...` is the `pgraft` command."""

from pgraft.cli.main import main

raise SystemExit(main())
