"""`pgraft` on the command line: the parser of every command and the dispatch, errors as one line.

pgraft run --model toy2d --reward x --method pgraft --cutoff 0.5 --rule best-of-n --n 4 --out runs/demo
pgraft run --config run.yaml --out runs/demo --resume
pgraft bias-variance --model toy2d-exact --reward x --out runs/bv
pgraft inc --model toy2d-flow --out runs/inc
pgraft invert --model ~/models/sd3 --images photos/ --prompt "a photo" --out runs/invert
pgraft scout --model toy2d --reward x --trials 20 --out runs/scout
pgraft compare --model toy2d --reward x --budget-reward-calls 4096 8192 --out runs/compare
pgraft pretrain toy2d --dataset ring8
pgraft models | pgraft rewards --model toy2d
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the usage is one `--help` away)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import pgraft.cli.bias_variance as bias_variance
    import pgraft.cli.compare as compare
    import pgraft.cli.inc as inc
    import pgraft.cli.info as info
    import pgraft.cli.invert as invert
    import pgraft.cli.run as run
    import pgraft.cli.scout as scout

    parser = Parser(prog="pgraft", description="GRAFT / P-GRAFT rounds with exact answers to check.")
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_parser(sub)
    info.add_parsers(sub)
    bias_variance.add_parser(sub)
    inc.add_parser(sub)
    invert.add_parser(sub)
    scout.add_parser(sub)
    compare.add_parser(sub)
    return parser


def commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    import pgraft.cli.bias_variance as bias_variance
    import pgraft.cli.compare as compare
    import pgraft.cli.inc as inc
    import pgraft.cli.info as info
    import pgraft.cli.invert as invert
    import pgraft.cli.run as run
    import pgraft.cli.scout as scout

    return {
        "run": run.cmd_run,
        "pretrain": info.cmd_pretrain,
        "models": info.cmd_models,
        "rewards": info.cmd_rewards,
        "bias-variance": bias_variance.cmd_bias_variance,
        "inc": inc.cmd_inc,
        "invert": invert.cmd_invert,
        "scout": scout.cmd_scout,
        "compare": compare.cmd_compare,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from pgraft.rewards import RewardError

    args = build_parser().parse_args(argv)
    try:
        return commands()[args.command](args)
    except ValueError as exc:
        print(f"pgraft: error: {exc}", file=sys.stderr)
        return 2
    except RewardError as exc:
        print(f"pgraft: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        during = f" {exc}" if str(exc) else ""
        print(f"pgraft: interrupted{during}; completed rounds are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
