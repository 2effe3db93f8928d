"""Text-to-image: diffusers pipeline folders on the user's disk (`--model PATH`), LoRA fine-tuning, rewards
on transformers models from local folders. The paper's headline experiment is Stable Diffusion 2 with a
VQAScore reward.

No model is registered by name: `resolve_model` recognises a pipeline folder (or a Hub id, loaded from
diffusers' cache) and its family from `model_index.json`. Heavy imports happen inside the functions below.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pgraft.domains.base import CurvePanel, Domain, ModelSpec, Realism, RunDefaults, StudyDefaults
from pgraft.domains.t2i.rewards import REWARDS, SAMPLE_VIEW
from pgraft.families.loading import PIPELINE_OPTIONS, looks_like_pipeline

NAME = "t2i"


def _load(name: str, device: str = "cpu", **options: Any) -> Any:
    from pgraft.families.loading import load_pipeline_model

    return load_pipeline_model(name, device, **options)


def resolve(name: str) -> ModelSpec | None:
    """A spec for a pipeline folder (its class checked now, so a wrong folder fails before any work)."""
    if not looks_like_pipeline(name):
        return None
    from pathlib import Path

    from pgraft.families.loading import pipeline_class

    kind = pipeline_class(name) if Path(name).expanduser().exists() else "pipeline from the Hub cache"
    return ModelSpec(
        partial(_load, name), NAME, f"{kind} at {name}", options=PIPELINE_OPTIONS, conditional=True, kind="vp"
    )


def _evaluator(*args: Any, **kwargs: Any) -> Any:
    from pgraft.domains.t2i.metrics import T2IEvaluator

    return T2IEvaluator(*args, **kwargs)


def _samples_figure(first: Any, latest: Any, evaluator: Any) -> Any:
    from pgraft.domains.t2i.metrics import samples_figure

    return samples_figure(first, latest, evaluator)


DOMAIN = Domain(
    name=NAME,
    description="text-to-image diffusers pipelines (Stable Diffusion 1.x / 2.x, SDXL, SD3, Flux) from local folders",
    models={},
    rewards=REWARDS,
    default_reward="jpeg-compressibility",
    # A demo round near a minute on one GPU at 512 px: 4 prompts x 16 candidates x 20 guided steps, 50 LoRA steps.
    defaults=RunDefaults(
        samples=16, num_inference_steps=20, finetune_steps=50, batch_size=4, lr=1e-4, rounds=2, preview=4
    ),
    # The app's prompt list (the command line takes any: --prompts, --prompt-file). Short object prompts as in
    # DDPO's animal set, and compositional ones of the kind VQAScore is meant for.
    prompt_choices=(
        "a photo of a cat",
        "a photo of a dog",
        "a photo of a horse",
        "a red apple on a wooden table",
        "two blue birds sitting on a branch",
        "a lighthouse on a cliff at sunset",
        "a teapot to the left of a cup",
        "an astronaut riding a horse",
    ),
    sample_view=SAMPLE_VIEW,
    evaluator=_evaluator,
    realism=Realism("clip_fid_base", higher_is_better=False, bound=0.5, unit="Fréchet distance in CLIP features"),
    curve_panels=(
        CurvePanel(
            "realism in CLIP features (needs a CLIP reward folder)",
            (("clip_fid_base", "Fréchet distance to the base"), ("clip_diversity", "diversity within a prompt")),
        ),
    ),
    samples_figure=_samples_figure,
    study=StudyDefaults(states=32, continuations=4, num_inference_steps=20),
    resolve_model=resolve,
)
