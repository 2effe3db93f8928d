"""`pgraft models`, `pgraft rewards` and `pgraft pretrain`: what is registered, and rebuilding shipped files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parsers(sub: Any) -> None:
    sub.add_parser("models", help="list the registered base models")
    rw = sub.add_parser("rewards", help="list the rewards of a model's domain")
    rw.add_argument("--model", default="toy2d")
    pre = sub.add_parser("pretrain", help="train a shipped base model from its seed (reproduces its shipped file)")
    pre.add_argument("name", help="what to train; `pgraft pretrain --help` lists the choices after the domains load")
    pre.add_argument("--dataset", default="ring8", help="toy models: the mixture to train on")
    pre.add_argument("--steps", type=int, default=None, help="training steps (default: those of the shipped file)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--out", type=Path, default=None, help="weights file (default: the shipped asset path)")
    pre.add_argument(
        "--size", default="default", help="digits UNet size: default (shipped), deep (the next size up) or tiny (tests)"
    )
    pre.add_argument("--eval-samples", type=int, default=1000, help="digits: samples judged for the model card")
    pre.add_argument("--data", type=Path, default=None, help="layouts: train on a real data set read from this path")
    pre.add_argument("--format", default=None, help="layouts: the format of --data (publaynet, rico, magazine, crello)")


def cmd_models(args: argparse.Namespace) -> int:
    from pgraft.registry import MODELS

    for name, spec in MODELS.items():
        print(f"{name:20s} {spec.domain:8s} {spec.description}")
    return 0


def cmd_rewards(args: argparse.Namespace) -> int:
    from pgraft.registry import domain_rewards, get_model_spec, sample_view

    model = get_model_spec(args.model)
    domain = model.domain
    for name, reward in sorted(domain_rewards(domain).items()):
        params = ", ".join(f"{k}={v}" for k, v in reward.params.items())
        print(f"{name:16s} {reward.description}" + (f"  [args: {params}]" if params else ""))
    print(f"module:function  your own reward: takes {sample_view(domain).description}, returns one float per sample")
    if model.conditional:
        print("                 (a second argument, if it has one, receives each sample's prompt)")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from pgraft.registry import DOMAINS

    pretrainers = {name: p for d in DOMAINS.values() for name, p in d.pretrain.items()}
    if args.name not in pretrainers:
        raise ValueError(f"pretrain: unknown model {args.name!r}; choose one of {sorted(pretrainers)}")
    options = {
        "dataset": args.dataset,
        "size": args.size,
        "eval_samples": args.eval_samples,
        "data": args.data,
        "format": args.format,
    }
    print(f"wrote {pretrainers[args.name].run(args.out, args.steps, args.seed, options)}")
    return 0
