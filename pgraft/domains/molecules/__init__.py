"""Molecules: QM9 SELFIES strings, a masked discrete diffusion model, RDKit rewards (docs/domains.md §B).

`DOMAIN` describes it to the registry; the modules hold the data (`data`: QM9 from the `qm9pack` wheel's CSV
files, NCI 5K), the model and its process (`model`), training and the card (`training`, `cards`), rewards
(`rewards`) and per-round metrics, files and pictures (`metrics`). RDKit, selfies and qm9pack (the `mol`
extra) are imported only inside the callables below, so registering the domain costs nothing and works
without the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgraft.domains.base import CurvePanel, Domain, ModelSpec, Preset, Pretrainer, Realism, RunDefaults
from pgraft.domains.molecules.rewards import REWARDS, SAMPLE_VIEW

NAME = "molecules"


def _load(name: str, temperature: float | None) -> Any:
    def load(device: str = "cpu") -> Any:
        from pgraft.domains.molecules.model import load_molecules_model

        return load_molecules_model(device, temperature, name)

    return load


def _evaluator(*args: Any, **kwargs: Any) -> Any:
    from pgraft.domains.molecules.metrics import MoleculesEvaluator

    return MoleculesEvaluator(*args, **kwargs)


def _samples_figure(first: Any, latest: Any, evaluator: Any) -> Any:
    from pgraft.domains.molecules.metrics import samples_figure

    return samples_figure(first, latest, evaluator)


def _pretrain(out: Path | None, steps: int | None, seed: int, options: dict[str, Any]) -> Path:
    from pgraft.domains.molecules.training import pretrain

    return pretrain(out, steps, seed, options)


PRESETS = (
    Preset(
        "Molecules: raise QED, de-duplicated",
        "Reward = QED (drug-likeness). Top-K counting each molecule once (key: canonical SMILES). QED rises round "
        "by round while uniqueness and the in-QM9 rate hold; with SELFIES validity is 100 % by construction, so "
        "watch in_qm9, uniqueness and distinct_accepted_frac.",
        dict(model="molecules", reward="qed", reward_args="", method="graft", rule="dedup-top-k", k=100),
    ),
    Preset(
        "Why de-duplication matters: one molecule fills the top-K",
        "A low-entropy model (the molecules model at temperature 0.5) repeats its favourite molecules. Reward = "
        "similarity to aspirin. Plain top-K lets one molecule take many of the K slots and fine-tuning copies it "
        "further: distinct_accepted_frac and uniqueness fall round by round. Switch the rule to dedup-top-k: "
        "every slot is a different molecule and uniqueness holds.",
        dict(
            model="molecules-narrow",
            reward="similarity",
            reward_args="",
            method="graft",
            rule="top-k",
            k=100,
            rounds=4,
            finetune_steps=200,
        ),
    ),
)

DOMAIN = Domain(
    name=NAME,
    description="QM9 molecules as SELFIES strings, masked discrete diffusion, RDKit rewards (QED, SA, logP, ...)",
    models={
        NAME: ModelSpec(
            _load(NAME, None),
            NAME,
            "QM9 SELFIES, masked (absorbing) discrete diffusion transformer, sampled at temperature 0.8 (see its card)",
            kind="masked",
        ),
        "molecules-narrow": ModelSpec(
            _load("molecules-narrow", 0.5),
            NAME,
            "the molecules model sampled at temperature 0.5: a low-entropy model that repeats molecules",
            kind="masked",
        ),
    },
    rewards=REWARDS,
    default_reward="qed",
    # Measured (tests/test_molecules_rounds.py): one dedup-top-k round on qed, K 200 of 1,000, 100 steps at 2e-4:
    # mean QED 0.472 -> 0.523, uniqueness 0.991 -> 0.972, in-QM9 0.437 -> 0.508 (200 steps at 3e-4: uniqueness 0.952).
    defaults=RunDefaults(samples=1000, num_inference_steps=25, finetune_steps=100, batch_size=128, lr=2e-4, rounds=2),
    # bench/bench_molecules.py: 100 fine-tuning steps of 128 rows took 40 s of a 43 s app round on 2 contended cores.
    app_defaults=dict(samples=500, num_inference_steps=20, finetune_steps=40, batch_size=64, preview=12),
    sample_view=SAMPLE_VIEW,
    evaluator=_evaluator,
    realism=Realism("in_qm9", higher_is_better=True, bound=0.05, unit="share of samples in QM9"),
    curve_panels=(
        CurvePanel("realism", (("in_qm9", "in QM9"), ("novelty", "novel vs train"), ("validity", "valid"))),
        CurvePanel(
            "diversity",
            (
                ("uniqueness", "unique"),
                ("distinct_accepted_frac", "distinct accepted / K"),
                ("internal_diversity", "1 - mean Tanimoto"),
            ),
        ),
        CurvePanel("Fréchet distance (RDKit descriptors) to QM9", (("fd_descriptors", "to held-out QM9"),)),
    ),
    samples_figure=_samples_figure,
    presets=PRESETS,
    pretrain={NAME: Pretrainer(_pretrain, "the masked SELFIES diffusion model and its card (reproduces its file)")},
)
