"""Document layouts: the stand-in for the paper's layout-generation domain (shared/docs/domains.md §A).

`DOMAIN` describes it to the registry. The package holds the seeded PubLayNet-like page generator and the
slot representation (`generator`), measures and rewards on pages (`measures`, `rewards`), the x₀-predicting
self-conditioned transformer on diffusers' schedulers (`models`), its training, quality report and card
(`training`, `cards`), P-GRAFT's targets for an x₀ model checked on an exact 1-D toy (`targets`), readers of
real data sets (`io`), per-round realism metrics (`metrics`) and drawings (`draw`). Heavy imports happen
inside the functions below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgraft.domains.base import CurvePanel, Domain, ModelSpec, Preset, Pretrainer, Realism, RunDefaults, StudyDefaults
from pgraft.domains.layouts.rewards import REWARDS, SAMPLE_VIEW

NAME = "layouts"


def _load(device: str = "cpu") -> Any:
    from pgraft.domains.layouts.models import load_layout_model

    return load_layout_model(device)


def _evaluator(*args: Any, **kwargs: Any) -> Any:
    from pgraft.domains.layouts.metrics import LayoutsEvaluator

    return LayoutsEvaluator(*args, **kwargs)


def _samples_figure(first: Any, latest: Any, evaluator: Any) -> Any:
    from pgraft.domains.layouts.metrics import samples_figure

    return samples_figure(first, latest, evaluator)


def _pretrain(out: Path | None, steps: int | None, seed: int, options: dict[str, Any]) -> Path:
    from pgraft.domains.layouts.training import QUALITY_SAMPLES, pretrain_layouts

    size = str(options.get("size") or "default")
    data = options.get("data")
    return pretrain_layouts(
        out,
        steps,
        seed,
        size,
        Path(data) if data else None,
        options.get("format"),
        int(options.get("eval_samples") or QUALITY_SAMPLES),
    )


MODELS = {
    "layouts": ModelSpec(
        _load,
        NAME,
        "PubLayNet-like pages (20 slots: class + box), x0-predicting self-conditioned transformer (570 k parameters)",
    )
}

PRESETS = (
    Preset(
        "Reward hacking: overlap drops elements",
        "Reward = minus the overlap of the boxes. The reward rises, but watch 'elements' per page: pages with "
        "fewer boxes overlap less, so the model learns to drop elements (measured: 9.7 -> 6.4 in one round, "
        "Fréchet 0.3 -> 18). The 'aesthetic' reward charges for every element away from the data's count: it "
        "drops far fewer (9.7 -> 9.5); raise its count_penalty to hold the count.",
        dict(
            model="layouts", reward="overlap", reward_args="", method="graft", rule="quantile", quantile=0.75, rounds=2
        ),
    ),
    Preset(
        "Title at the top",
        "A hard constraint: reward 1 when the topmost element is a title (half the synthetic pages), threshold "
        "1 accepts exactly those. One P-GRAFT round (cutoff 0.2) lifts it 0.55 -> 1.0 with the element count "
        "held (9.7 -> 9.6, Fréchet 0.33 -> 2.0); GRAFT gets there too but moves further from the data "
        "(Fréchet 2.6, 9.9 elements).",
        dict(
            model="layouts",
            reward="title-at-top",
            reward_args="",
            method="pgraft",
            cutoff=0.2,
            rule="threshold",
            threshold=1.0,
            rounds=1,
        ),
    ),
)

DOMAIN = Domain(
    name=NAME,
    description="PubLayNet-like document layouts (synthetic pages or real data sets from disk) and layout rewards",
    models=MODELS,
    rewards=REWARDS,
    default_reward="title-at-top",
    defaults=RunDefaults(
        samples=512, num_inference_steps=25, finetune_steps=100, batch_size=128, lr=2e-4, rounds=2, preview=24
    ),
    app_defaults=dict(samples=256, finetune_steps=60, batch_size=64, rounds=1),
    sample_view=SAMPLE_VIEW,
    evaluator=_evaluator,
    realism=Realism("frechet", higher_is_better=False, bound=5.0, unit="Fréchet distance in layout features"),
    curve_panels=(
        CurvePanel("elements per page", (("elements", "samples"),)),
        CurvePanel(
            "alignment and overlap (x100)",
            (
                ("overlap_x100", "overlap"),
                ("data_overlap_x100", "overlap of the data"),
                ("alignment_x100", "alignment"),
                ("data_alignment_x100", "alignment of the data"),
            ),
        ),
        CurvePanel(
            "Fréchet distance in layout features",
            (("frechet", "to held-out pages"), ("frechet_base", "to the base model")),
        ),
    ),
    presets=PRESETS,
    study=StudyDefaults(states=128, continuations=8, num_inference_steps=20),
    samples_figure=_samples_figure,
    pretrain={
        "layouts": Pretrainer(_pretrain, "the layouts model and its card (synthetic pages, or --data PATH --format F)")
    },
)
