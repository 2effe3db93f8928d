"""`python -m pgraft ...` is the `pgraft` command."""

from pgraft.cli import main

raise SystemExit(main())
