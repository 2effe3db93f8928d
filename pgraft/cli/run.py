"""`pgraft run`: GRAFT / P-GRAFT rounds headless, with a progress bar and one printed row per round.

pgraft run --model toy2d --reward x --method pgraft --cutoff 0.5 --rule best-of-n --n 4 --out runs/demo
pgraft run --config run.yaml --out runs/demo --resume
accelerate launch --multi_gpu --num_processes 4 -m pgraft run --config run.yaml --out runs/full --report-to tensorboard

On several processes every rank runs this command; only the main process prints, writes the run folder and
logs to the trackers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

SHOWN = (
    "round",
    "reward_mean",
    "reward_std",
    "accept_rate",
    "n_accepted",
    "target_reward",
    "learning_gap",
    "ks_to_target",
    "loglik",
    "modes_covered",
    "fid_real",
    "confident",
    "finetune_loss",
)
BY_MODEL_HELP = "the model's domain default"


def add_config_flags(p: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    """One flag per `RunConfig` field, except those in `skip` (see `cli.flags`)."""
    from pgraft.cli.flags import add_dataclass_flags
    from pgraft.graft.config import BY_MODEL, RunConfig

    add_dataclass_flags(p, RunConfig, skip, defaults=dict.fromkeys(BY_MODEL, BY_MODEL_HELP))
    p.add_argument("--config", type=Path, help="YAML file with the same option names; flags override it")
    p.add_argument(
        "--rewards",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first and use the rewards it registers by name (as the app's --rewards; repeatable; "
        "give it again with --resume)",
    )


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run GRAFT or P-GRAFT rounds and write them to a run folder")
    add_config_flags(p)
    p.add_argument("--out", type=Path, help="run folder (default: runs/<model>-<method>-<timestamp>)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue an existing run after its last complete round")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--report-to",
        default="none",
        metavar="TRACKERS",
        help="log each round to experiment trackers, comma-separated: none (default), tensorboard, trackio, wandb, "
        "mlflow (optional packages; tensorboard comes with pgraft[trackers])",
    )
    p.add_argument(
        "--tracker-dir", type=Path, help="where file-based trackers (tensorboard, mlflow) write (default: OUT/trackers)"
    )


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a run: the `--config` file's, then the flags given (reward arguments merged)."""
    from pgraft.cli.flags import values_of
    from pgraft.graft.config import RunConfig

    if getattr(args, "rewards", None):
        from pgraft.registry import load_reward_modules

        load_reward_modules(args.rewards)
    values: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        if not args.config.exists():
            raise ValueError(f"--config: {str(args.config)!r} does not exist")
        values = RunConfig.read_yaml(args.config)
    given = values_of(args, RunConfig)
    if "reward_args" in given and isinstance(values.get("reward_args"), dict):
        given["reward_args"] = {**values["reward_args"], **given["reward_args"]}
    values.update(given)
    return values


def config_from_args(args: argparse.Namespace) -> Any:
    from pgraft.graft.config import RunConfig

    return RunConfig.from_dict(config_values(args), source="arguments")


def describe_defaults(values: dict[str, Any], config: Any) -> str | None:
    """`"defaults of the digits domain: --samples 256, ..."` for the fields left to the model's defaults."""
    from pgraft.cli.flags import flag_name
    from pgraft.graft.config import defaulted_fields
    from pgraft.registry import get_model_spec

    used = defaulted_fields(values)
    if not used:
        return None
    parts = ", ".join(f"{flag_name(name)} {getattr(config, name)}" for name in used)
    return f"defaults of the {get_model_spec(config.model).domain} domain: {parts}"


def domain_columns(domain: str) -> tuple[str, ...]:
    """The columns of `metrics.csv` a domain's realism and curve panels name (`Domain.realism`,
    `Domain.curve_panels`): the per-round figures that show what the reward costs."""
    from pgraft.registry import DOMAINS

    d = DOMAINS.get(domain)
    if d is None:
        return ()
    cols = [d.realism.metric] if d.realism is not None else []
    for panel in d.curve_panels:
        cols += [metric for metric, _label in panel.metrics if not metric.startswith("data_")]  # data: constant
    return tuple(dict.fromkeys(cols))


def _print_row(metrics: dict[str, Any], header: bool, extra: tuple[str, ...] = ()) -> None:
    """One line per round: the common columns, then `extra` (the domain's realism and, for layouts and
    molecules, what shows reward hacking) where the round has them."""
    cols = [c for c in SHOWN if c in metrics]
    cols += [c for c in extra if c in metrics and c not in cols]
    if header:
        print("  ".join(f"{c:>13}" for c in cols))
    cells = []
    for c in cols:
        v = metrics[c]
        cells.append(f"{v:>13d}" if isinstance(v, int) else f"{v:>13.4g}")
    print("  ".join(cells), flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from pgraft.cli.progress import StageBar
    from pgraft.core.distributed import Processes
    from pgraft.core.events import Cancelled, Finished, Notice, Progress
    from pgraft.graft.config import RunConfig
    from pgraft.graft.runner import RoundResult, RoundRunner
    from pgraft.graft.trackers import Trackers, check_installed, parse_report_to
    from pgraft.rewards import RewardError

    values = config_values(args)
    config = RunConfig.from_dict(values, source="arguments")
    report_to = parse_report_to(args.report_to)
    check_installed(report_to)
    hint = Processes.launch_hint()
    processes = Processes.detect(config.device)
    main = processes.is_main

    def say(message: str, err: bool = False) -> None:
        if main:
            print(message, file=sys.stderr if err else sys.stdout, flush=True)

    if hint:
        say(f"warning: {hint}", err=True)
    # every rank must write to the same folder: the default's timestamp is the main process's
    stamp = processes.broadcast(time.strftime("%Y%m%d-%H%M%S"))
    out = args.out or Path("runs") / f"{config.model}-{config.method}-{stamp}"
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    runner = RoundRunner(config, out=out, mode=mode, allow_import=True, processes=processes)
    say(
        f"pgraft: {config.method} on {config.model}, reward {runner.setup.reward.name}, rule "
        f"{runner.setup.rule.describe()}, {config.rounds} rounds of {config.samples} samples -> {out}"
    )
    say(f"pgraft: {processes.describe(runner.device)}")
    used = describe_defaults(values, config)
    if used:
        say(f"pgraft: {used}")
    bar = StageBar(quiet=args.quiet or not main)
    from pgraft.registry import get_model_spec

    shown_extra = domain_columns(get_model_spec(config.model).domain)
    trackers = None
    header = True
    try:
        for ev in runner.run():
            if isinstance(ev, Progress):
                bar.update(ev.describe(), ev.done, ev.total)
            elif isinstance(ev, RoundResult):
                bar.close()
                if main:
                    _print_row(ev.metrics, header, shown_extra)
                    if report_to and trackers is None:  # once the folder exists (a resumed run appends)
                        trackers = Trackers(report_to, out.name, args.tracker_dir or out / "trackers", config.to_dict())
                    if trackers is not None:
                        trackers.log_round(ev.round, ev.metrics, ev.rewards, ev.path)
                header = False
            elif isinstance(ev, Notice):
                say(f"warning: {ev.message}", err=True)
            elif isinstance(ev, Cancelled | Finished):
                break
    except RewardError as exc:
        bar.close()
        say(f"pgraft: error: {exc}. Completed rounds are kept in {out}; no partial round was written.", err=True)
        return 1
    finally:
        if trackers is not None:
            trackers.close()
    say(f"done: metrics in {out / 'metrics.csv'}, rounds in {out / 'rounds'}")
    return 0
