"""`python -m pgraft.cli ...` is the `pgraft` command."""

from pgraft.cli import main

raise SystemExit(main())
