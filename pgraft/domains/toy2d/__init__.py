"""The 2-D toy: Gaussian mixtures, small denoisers and exact answers for every number a round reports.

`DOMAIN` describes it to the registry; the modules of this package hold its data (`mixture`), models,
rewards, metrics (`metrics`, with the exact targets of `exact`), exact bias–variance curves, pictures and the
judge of inverse noise correction. Heavy imports happen inside the functions below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgraft.domains.base import (
    CurvePanel,
    Domain,
    IncSupport,
    ModelSpec,
    Preset,
    Pretrainer,
    Realism,
    RunDefaults,
    StudyDefaults,
)
from pgraft.domains.toy2d.mixture import DATASETS
from pgraft.domains.toy2d.rewards import REWARDS, SAMPLE_VIEW

NAME = "toy2d"


def _load(exact: bool, kind: str) -> Any:
    def load(**kw: Any) -> Any:
        from pgraft.domains.toy2d.models import load_toy2d, load_toy2d_exact

        return (load_toy2d_exact if exact else load_toy2d)(kind=kind, **kw)

    return load


MODELS = {
    "toy2d": ModelSpec(
        _load(False, "vp"), NAME, "2-D Gaussian mixture, small learned MLP denoiser (DDPM)", ("dataset",)
    ),
    "toy2d-exact": ModelSpec(
        _load(True, "vp"), NAME, "2-D Gaussian mixture, exact analytic score: no learning error", ("dataset",)
    ),
    "toy2d-flow": ModelSpec(
        _load(False, "flow"),
        NAME,
        "2-D Gaussian mixture, small learned MLP rectified flow (train_steps < 3000: under-trained)",
        ("dataset", "train_steps"),
        kind="flow",
    ),
    "toy2d-flow-exact": ModelSpec(
        _load(True, "flow"),
        NAME,
        "2-D Gaussian mixture, exact rectified-flow velocity: no learning error",
        ("dataset",),
        kind="flow",
    ),
}


def _reward_context(model: Any) -> dict[str, Any]:
    from pgraft.domains.toy2d.mixture import get_dataset

    return {"mixture": get_dataset(str(model.info.get("dataset", "ring8")))}


def _evaluator(*args: Any, **kwargs: Any) -> Any:
    from pgraft.domains.toy2d.metrics import ToyEvaluator

    return ToyEvaluator(*args, **kwargs)


def _samples_figure(first: Any, latest: Any, evaluator: Any) -> Any:
    from pgraft.domains.toy2d.plots import samples_figure

    return samples_figure(first, latest, evaluator)


def _exact_curves(*args: Any, **kwargs: Any) -> Any:
    from pgraft.domains.toy2d.exact_curves import model_curves

    return model_curves(*args, **kwargs)


def _quality(model: Any, seed: int) -> Any:
    from pgraft.domains.toy2d.quality import ToyQuality

    return ToyQuality(model, seed)


def _base_vs_corrected(base: Any, corrected: Any, title: str) -> Any:
    from pgraft.domains.toy2d.plots import toy_base_vs_corrected

    return toy_base_vs_corrected(base, corrected, title)


def _pretrain(kind: str) -> Any:
    def run(out: Path | None, steps: int | None, seed: int, options: dict[str, Any]) -> Path:
        from pgraft.domains.toy2d.models import ASSETS, TOY_TRAIN_STEPS, pretrain_toy

        dataset = str(options.get("dataset") or "ring8")
        stem = f"toy2d-{dataset}" if kind == "vp" else f"toy2d-flow-{dataset}"
        return pretrain_toy(dataset, out or ASSETS / f"{stem}.safetensors", kind, steps or TOY_TRAIN_STEPS, seed)

    return run


PRESETS = (
    Preset(
        "Push right: GRAFT basics",
        "Reward = the x coordinate, best of 4. Each round keeps the best of every 4 samples and fine-tunes on "
        "them: the mass moves right, round by round, and the measured reward follows the exact target's.",
        dict(model="toy2d", dataset="ring8", reward="x", reward_args="", method="graft", rule="best-of-n", n=4),
    ),
    Preset(
        "Why P-GRAFT helps: a rare mode",
        "Five modes of unequal weight; the reward favours the rarest (8 %). P-GRAFT shapes the distribution at "
        "noise level t_c and lets the base model finish: compare cutoffs 0.2 and 0.6, and GRAFT (t_c = 0), on "
        "the distance to the exact target and the log-likelihood.",
        dict(
            model="toy2d",
            dataset="asymmetric",
            reward="mode",
            reward_args="index=4",
            method="pgraft",
            cutoff=0.4,
            rule="quantile",
            quantile=0.8,
            rounds=4,
        ),
    ),
    Preset(
        "Reward hacking: a ring off the data",
        "Reward = closeness to a circle of radius 2, where the data has no mass (its modes sit at radius 4). "
        "The reward keeps rising while the log-likelihood under the data falls: the model leaves the data to "
        "please the reward.",
        dict(
            model="toy2d",
            dataset="ring8",
            reward="ring-band",
            reward_args="radius=2.0",
            method="graft",
            rule="quantile",
            quantile=0.75,
            rounds=5,
        ),
    ),
    Preset(
        "Best of 4 = KL 0.636",
        "Best of n accepts a sample at reward quantile u with probability a(u) = u^(n−1): the accepted law is "
        "n F^(n−1) times the current one, at KL log n − (n−1)/n = 0.636 for n = 4 whatever the reward (the rule "
        "plot). On the exact model the accepted samples of round 0 follow round 1's exact target (table: "
        "accepted_reward_mean of round 0 against target_reward of round 1); the fine-tuned model of round 1 "
        "falls short of it by its learning error.",
        dict(
            model="toy2d-exact",
            dataset="asymmetric",
            reward="x",
            reward_args="",
            method="graft",
            rule="best-of-n",
            n=4,
            rounds=1,
            samples=2048,
            num_inference_steps=100,
        ),
    ),
)

DOMAIN = Domain(
    name=NAME,
    description="2-D Gaussian mixtures: every number has an exact answer",
    models=MODELS,
    rewards=REWARDS,
    default_reward="x",
    # A full CLI round: 4,096 candidates x 100 steps and 300 fine-tuning steps take about 2 s on 2 cores.
    defaults=RunDefaults(samples=4096, num_inference_steps=100, finetune_steps=300, batch_size=512, lr=1e-3),
    # The app's rounds run in well under a second (bench/bench_app.py).
    app_defaults=dict(samples=1024, preview=256, num_inference_steps=50, finetune_steps=150, batch_size=256),
    sample_view=SAMPLE_VIEW,
    reward_context=_reward_context,
    evaluator=_evaluator,
    realism=Realism("loglik", higher_is_better=True, bound=0.5, unit="nats per sample"),
    curve_panels=(
        CurvePanel(
            "distance to the exact target (0 = perfect)",
            (("ks_to_target", "KS, rewards"), ("tv_to_target", "TV, samples")),
        ),
        CurvePanel("realism: mean log-likelihood under the data", (("loglik", "log-likelihood"),)),
    ),
    samples_figure=_samples_figure,
    datasets=tuple(sorted(DATASETS)),
    presets=PRESETS,
    # The DDPM's own 1,000-step chain: coarser grids under-state V at small cutoffs (exact toy, 100 steps: by
    # 32 %, 14 % and 11 % at t = 0.1, 0.2, 0.3, outside the bands); 9 cutoffs x 256 states x 8 take ~15 s.
    study=StudyDefaults(num_inference_steps=1000),
    exact_curves=_exact_curves,
    inc=IncSupport(
        quality=_quality,
        tol=1e-5,
        max_iter=100,
        samples_figure=_base_vs_corrected,
        preview=256,
        app_defaults={
            "toy2d-flow": {"steps": "8, 16, 32", "correction_steps": "1, 2, 4", "train_steps": 300, "invert": 1000},
            "toy2d-flow-exact": {"steps": "64, 128", "correction_steps": "1, 2", "train_steps": 3000, "invert": 1000},
        },
    ),
    pretrain={
        "toy2d": Pretrainer(_pretrain("vp"), "the learned toy DDPM of --dataset (reproduces its shipped file)"),
        "toy2d-flow": Pretrainer(_pretrain("flow"), "the learned toy rectified flow of --dataset"),
    },
)
