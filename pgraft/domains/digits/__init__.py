"""8×8 digits: the project's offline stand-ins for the paper's image experiments (docs/method.md §5).

`DOMAIN` describes it to the registry; the modules of this package hold its data and models (`models`),
training and model cards, the reward classifier, rewards, metrics (Fréchet distances in the classifier's
features), sample grids and the judge of inverse noise correction. Heavy imports happen inside the
functions below.
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
from pgraft.domains.digits.rewards import REWARDS, SAMPLE_VIEW

PRETRAINABLE = ("digits", "digits-prompted", "digits-prompted-early", "digits-flow", "digits-classifier")

NAME = "digits"


def _load(name: str) -> Any:
    def load(device: str = "cpu", train_steps: int | None = None) -> Any:
        from pgraft.domains.digits.models import load_digits_model

        if train_steps is None:
            return load_digits_model(name, device)
        from pgraft.domains.digits.training import trained_weights  # the same run stopped at train_steps

        return load_digits_model(name, device, path=trained_weights(name, train_steps))

    return load


MODELS = {
    "digits": ModelSpec(_load("digits"), NAME, "8x8 digits, UNet2DModel DDPM (651 k parameters)"),
    "digits-prompted": ModelSpec(
        _load("digits-prompted"),
        NAME,
        "8x8 digits, class-conditional UNet2DModel DDPM; the prompt is the digit ('7', 'a 7', 'seven')",
        conditional=True,
        default_reward="prompt-match",
    ),
    "digits-prompted-early": ModelSpec(
        _load("digits-prompted-early"),
        NAME,
        "8x8 digits, an early snapshot of digits-prompted (150 training steps): follows its prompt about 3 times "
        "in 4, so a prompt reward has room to move",
        conditional=True,
        default_reward="prompt-match",
    ),
    "digits-flow": ModelSpec(
        _load("digits-flow"),
        NAME,
        "8x8 digits, UNet2DModel rectified flow (651 k parameters; train_steps < 4000: the same run stopped "
        "early, under-trained)",
        ("train_steps",),
        kind="flow",
    ),
}


def _evaluator(*args: Any, **kwargs: Any) -> Any:
    from pgraft.domains.digits.metrics import DigitsEvaluator

    return DigitsEvaluator(*args, **kwargs)


def _quality(model: Any, seed: int) -> Any:
    from pgraft.domains.digits.quality import DigitsQuality

    return DigitsQuality(model, seed)


def _base_vs_corrected(base: Any, corrected: Any, title: str) -> Any:
    from pgraft.plots.inc import images_base_vs_corrected

    return images_base_vs_corrected(base, corrected, title)


def _pretrain(name: str) -> Pretrainer:
    def run(out: Path | None, steps: int | None, seed: int, options: dict[str, Any]) -> Path:
        from pgraft.domains.digits.training import QUALITY_SAMPLES, pretrain_named

        size = str(options.get("size") or "default")
        samples = int(options.get("eval_samples") or QUALITY_SAMPLES)
        return pretrain_named(name, out, steps, seed, size, samples)

    what = "the reward classifier" if name == "digits-classifier" else f"the {name} model"
    return Pretrainer(run, f"{what} and its card (reproduces its shipped file)")


PRESETS = (
    Preset(
        "Reward hacking on digits: one digit wins",
        "Reward = the classifier's probability of a 3. The reward climbs round by round (0.11, 0.38, 0.72 with "
        "the defaults) because the samples turn into 3s: the class entropy falls and the Fréchet distance to "
        "real digits grows. Add rounds to watch diversity collapse.",
        dict(model="digits", reward="digit-prob", reward_args="digit=3", method="graft", rule="best-of-n", n=4),
    ),
    Preset(
        "Prompted digits: follow the prompt",
        "A class-conditional model with prompts 3 and 8; the reward is the classifier's probability of the "
        "prompted digit, and each prompt's samples are judged among themselves.",
        dict(
            model="digits-prompted",
            prompts=["3", "8"],
            reward="prompt-match",
            reward_args="",
            method="graft",
            rule="best-of-n",
            n=4,
        ),
    ),
    Preset(
        "Prompted digits with room to move: a weak base",
        "An early snapshot of the prompted model (150 training steps) follows prompts 3 and 8 only about 3 times "
        "in 4. GRAFT raises prompt-match 0.76 -> 0.92 -> 0.99 -> 1.00 over three rounds, and realism first "
        "improves with it (Fréchet distance 43 -> 26 -> 27) before it falls (42 at round 3). Then choose "
        "P-GRAFT at cutoff 0.5: it stays near 0.75, because at that noise level the state explains only 11 % of "
        "the reward's variance (R² in the Bias–variance tab; 37 % at cutoff 0.25): this base settles its digit "
        "late, below the cutoff, where P-GRAFT keeps the base model.",
        dict(
            model="digits-prompted-early",
            prompts=["3", "8"],
            reward="prompt-match",
            reward_args="",
            method="graft",
            rule="best-of-n",
            n=4,
            rounds=3,
        ),
    ),
)

DOMAIN = Domain(
    name=NAME,
    description="8x8 digits (sklearn), UNet2DModel diffusion models and a CNN classifier as the reward model",
    models=MODELS,
    rewards=REWARDS,
    default_reward="digit-prob",
    # Measured: reward "digit-prob" of a 3 rises 0.11 -> 0.38 -> 0.72 in two rounds, a few seconds of CPU each.
    defaults=RunDefaults(samples=256, num_inference_steps=25, finetune_steps=40, batch_size=64, lr=2e-3, rounds=2),
    app_defaults=dict(preview=12),
    sample_view=SAMPLE_VIEW,
    evaluator=_evaluator,
    realism=Realism("fid_real", higher_is_better=False, bound=5.0, unit="Fréchet distance"),
    curve_panels=(
        CurvePanel(
            "Fréchet distance in classifier features",
            (("fid_real", "to real digits"), ("fid_base", "to the base model")),
        ),
        CurvePanel(
            "diversity",
            (("class_entropy", "class entropy (nats; 2.30 = all ten)"), ("diversity", "mean pairwise distance")),
        ),
    ),
    prompt_choices=tuple(str(d) for d in range(10)),
    presets=PRESETS,
    # bench/bench_bias_variance.py: 10 cutoffs x 256 states x 8 continuations at 20 steps in about 22 s.
    study=StudyDefaults(num_inference_steps=20),
    inc=IncSupport(
        quality=_quality,
        # On the linear grid most real digits have no preimage under the step sigma 0.144 -> 0.001 (least squares
        # levels off at 0.006-0.036): at 1e-4, 72 % (K = 8) and 89 % (K = 16) were dropped, so that grid keeps
        # 1e-2, a twelfth of the digits' grey-level step. The karras grid ends with short steps, and at 1e-4 it
        # drops 0.2 % at K = 8 and none at K = 16 (README, "Inverse noise correction").
        tol=1e-4,
        tol_by_grid={"linear": 1e-2},
        max_iter=400,
        grid="karras",
        samples_figure=_base_vs_corrected,
        preview=32,
        app_defaults={
            "digits-flow": {"steps": "8, 16", "correction_steps": "1, 2, 4", "invert": 300, "train_steps": 4000}
        },
    ),
    pretrain={name: _pretrain(name) for name in PRETRAINABLE},
)
