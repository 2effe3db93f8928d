"""Wall time of one toy round and its parts: 4,096 samples x 100 steps + 300 fine-tuning steps.

    python bench/bench_toy_round.py [--repeats 3] [--method graft|pgraft]

Prints a table of the median over repeats of each part of round 1 (fine-tuning, sampling the 4,096
candidates plus the preview, scoring, acceptance, metrics). Goal on 2 CPU cores: a whole round < 3 s.
"""

from __future__ import annotations

import argparse

import torch
from round_parts import print_parts, round_parts

from pgraft.graft.config import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="graft", choices=["graft", "pgraft"])
    parser.add_argument("--preview", type=int, default=512)
    args = parser.parse_args()
    cfg = RunConfig(
        model="toy2d",
        reward="x",
        method=args.method,
        cutoff=0.4,
        samples=4096,
        preview=args.preview,
        num_inference_steps=100,
        finetune_steps=300,
        rounds=1,
        device="cpu",
    )
    parts = round_parts(cfg, args.repeats)
    print(
        f"toy round ({args.method}, 4096 samples x 100 steps + {args.preview} preview, 300 fine-tuning steps "
        f"at batch {cfg.batch_size}), torch threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print_parts(parts, decimals=3)
    verdict = "meets" if parts["round_total"] < 3.0 else "misses"
    print(f"goal: whole round < 3 s on 2 CPU cores -> {verdict}")


if __name__ == "__main__":
    main()
