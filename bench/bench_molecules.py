"""One default app round of molecules by part, and RDKit scoring speed.

    python bench/bench_molecules.py [--repeats 1] [--threads 2] [--score 2000]

The round is what a click on Run does with the app's defaults for `molecules` (goal on 2 CPU cores: < 20 s
for round 1: sampling, scoring, acceptance, metrics and fine-tuning). Scoring speed: QED, SA, logP and the
per-round metrics (`metrics.molecule_metrics`) in molecules per second on QM9 molecules.
"""

from __future__ import annotations

import argparse
import time

import torch
from round_parts import print_parts, round_parts

from pgraft.graft.config import RunConfig


def app_round(model: str = "molecules") -> dict:
    from pgraft.ui.controls import default_reward, domain_defaults

    return {**domain_defaults(model), "model": model, "reward": default_reward(model), "rounds": 1, "device": "cpu"}


def scoring(n: int) -> dict[str, float]:
    from pgraft.domains.molecules import rewards as R
    from pgraft.domains.molecules.data import qm9
    from pgraft.domains.molecules.metrics import molecule_metrics, reference

    reference()  # set-up: the held-out descriptor reference
    smiles = list(qm9().smiles[1000 : 1000 + n])
    out = {}
    for name, fn in (("qed", R.qed), ("sa", R.sa_score), ("logp", R.logp)):
        R.mol_of.cache_clear()
        t0 = time.perf_counter()
        [fn(R.mol_of(s)) for s in smiles]
        out[f"{name} molecules/s"] = n / (time.perf_counter() - t0)
    R.mol_of.cache_clear()
    t0 = time.perf_counter()
    molecule_metrics(smiles)
    out["round metrics molecules/s"] = n / (time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--score", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    values = app_round()
    print("app round:", {k: values.get(k) for k in ("samples", "num_inference_steps", "finetune_steps", "rule")})
    print_parts(round_parts(RunConfig(**values), args.repeats))
    for name, rate in scoring(args.score).items():
        print(f"{name:<28}{rate:>10.0f}")


if __name__ == "__main__":
    main()
