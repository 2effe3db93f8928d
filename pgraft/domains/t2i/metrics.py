"""Per-round realism and pictures of text-to-image runs.

Next to the reward every round reports, when a CLIP folder is known (the reward's own `model=` when it is a
CLIP reward):

- `clip_fid_base`: the Fréchet distance between this round's images and round 0's (the base model, from the
  same seeds) in CLIP image-embedding space: how far fine-tuning moved the images;
- `clip_diversity`: the mean pairwise distance of the unit embeddings within each prompt's images, averaged
  over prompts (a collapse to one image per prompt shows as a fall).

The round folder gets `preview.png` (the preview seeds, the same every round) and `candidates.png` (accepted
candidates framed), decoded by the pipeline's VAE.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import torch

from pgraft.features import frechet_distance, gaussian_stats
from pgraft.images import candidates_png, preview_png

GRID = {"value_range": (0.0, 1.0), "scale": 1, "border": 3}


def clip_folder(reward: Any) -> str | None:
    """The CLIP folder of a CLIP-based reward (its `model=` argument), else None."""
    folder = str(getattr(reward, "args", {}).get("model") or "")
    config = Path(folder) / "config.json" if folder else None
    if config is None or not config.is_file():
        return None
    try:
        kind = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    return folder if kind == "clip" else None


class T2IEvaluator:
    def __init__(
        self,
        model: Any,
        reward: Any,
        rule: Any,
        cutoff_timestep: float | None,
        stochastic_continuation: bool,
        prompts: list[str] | None = None,
    ) -> None:
        self.model = model
        self.folder = clip_folder(reward)
        self.prompts = list(prompts or [])
        self.base: torch.Tensor | None = None

    def round_metrics(self, round_index: int, samples: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        if self.folder is None or len(samples) < 2:
            return {}
        from pgraft.domains.t2i.rewards import clip_image_embeddings

        feats = clip_image_embeddings(samples, self.folder, self.model.device).double()
        if round_index == 0:
            self.base = feats
        groups = max(1, len(self.prompts))
        per = len(feats) // groups
        spread = [torch.pdist(feats[g * per : (g + 1) * per]).mean() for g in range(groups) if per > 1]
        return {
            "clip_fid_base": frechet_distance(*gaussian_stats(feats), *gaussian_stats(self.base))
            if self.base is not None
            else float("nan"),
            "clip_diversity": float(torch.stack(spread).mean()) if spread else float("nan"),
        }

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]:
        def key(x: torch.Tensor) -> list[Hashable]:
            return [bytes(torch.floor(row / resolution).to(torch.int32).numpy().tobytes()) for row in x.float()]

        return key

    def round_artifacts(self, result: Any) -> dict[str, bytes]:
        per = 8
        files = {}
        if len(result.preview_samples):
            files["preview.png"] = preview_png(
                self._decode_by_group(result.preview_samples, result.preview_groups, per),
                _first(result.preview_groups, per),
                per,
                per,
                **GRID,
            )
        images = self._decode_by_group(result.samples, result.groups, per)
        files["candidates.png"] = candidates_png(
            images, _first(result.groups, per), _pick(result.accepted, result.groups, per), per, per, **GRID
        )
        return files

    def _decode_by_group(self, latents: torch.Tensor, groups: torch.Tensor, per: int) -> torch.Tensor:
        idx = _indices(groups, per)
        decoded: torch.Tensor = self.model.decode(latents[idx])
        return decoded


def _indices(groups: torch.Tensor, per: int) -> torch.Tensor:
    picks = [torch.nonzero(groups == g).flatten()[:per] for g in torch.unique(groups)]
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def _first(groups: torch.Tensor, per: int) -> torch.Tensor:
    return groups[_indices(groups, per)]


def _pick(values: torch.Tensor, groups: torch.Tensor, per: int) -> torch.Tensor:
    return values[_indices(groups, per)]


def samples_figure(first: Any, latest: Any, evaluator: Any) -> Any:
    """Preview images of round 0 and of the latest round from the same seeds, and the latest candidates with
    the accepted ones framed (decoded by the pipeline's VAE)."""
    from pgraft.plots.samples import images_before_after

    model = evaluator.model
    per = 6
    pick = _indices(first.preview_groups, per)
    cands = _indices(latest.groups, per)

    def unit_to_model(x: torch.Tensor) -> Any:  # the picture takes [-1, 1]
        return (model.decode(x) * 2 - 1).numpy()

    return images_before_after(
        unit_to_model(first.preview_samples[pick]),
        unit_to_model(latest.preview_samples[pick]),
        first.preview_rewards[pick].numpy(),
        latest.preview_rewards[pick].numpy(),
        unit_to_model(latest.samples[cands]),
        latest.rewards[cands].numpy(),
        latest.accepted[cands].numpy(),
        latest.round,
    )
