"""`pgraft` on the command line (`pgraft.cli.commands`); `main` is the console script's entry point."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """Run the `pgraft` command with `argv` (default: the process's arguments); returns the exit code."""
    from pgraft.cli.commands import main as run

    return run(argv)
