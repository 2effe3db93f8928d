"""Wall time of one toy round and its parts: 4,096 samples x 100 steps + 300 fine-tuning steps.

    python bench/bench_toy_round.py [--repeats 3] [--method graft|pgraft]

Prints a table of the median over repeats of each part of round 1 (fine-tuning, sampling the 4,096
candidates plus the preview, scoring, acceptance, metrics). Goal on 2 CPU cores: a whole round < 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pgraft.config import RunConfig
from pgraft.rounds import RoundRunner, run_to_end

PARTS = ("time_finetune", "time_sampling", "time_scoring", "time_acceptance", "time_metrics")


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
    runner = RoundRunner(cfg)  # model loading and the exact reference are set-up, not round time
    rows: dict[str, list[float]] = {p: [] for p in (*PARTS, "round_total")}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        results = run_to_end(runner)
        total = time.perf_counter() - t0
        m0, m1 = results[0].metrics, results[1].metrics
        for p in PARTS:
            rows[p].append(m1.get(p, 0.0))
        rows["round_total"].append(total - sum(m0.get(p, 0.0) for p in PARTS))
    print(
        f"toy round ({args.method}, 4096 samples x 100 steps + {args.preview} preview, 300 fine-tuning steps "
        f"at batch {cfg.batch_size}), torch threads {torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'part':<18}{'seconds':>10}")
    for p, values in rows.items():
        print(f"{p.removeprefix('time_'):<18}{statistics.median(values):>10.3f}")
    verdict = "meets" if statistics.median(rows["round_total"]) < 3.0 else "misses"
    print(f"goal: whole round < 3 s on 2 CPU cores -> {verdict}")


if __name__ == "__main__":
    main()
