"""From the round runner's results to the figures and table the Rounds tab shows (no gradio here).

`RunView` keeps what the pictures need of a run: its setup (rule, exact chain), round 0 (the base, the
"before") and the latest round, and every round's metrics. `figures()` turns it into plotly figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pgraft.graft.runner import RoundResult
from pgraft.graft.setup import RunSetup
from pgraft.plots.rounds import acceptance_cut, metrics_table, reward_histogram, round_curves, rule_reshaping
from pgraft.plots.samples import images_before_after
from pgraft.plots.style import placeholder
from pgraft.registry import get_domain

EMPTY_HISTOGRAM = "Press Run: the base model's rewards (round 0) appear here, then each round's, and the accepted part."
EMPTY_SAMPLES = "Samples before and after, drawn from the same seeds, appear here after round 0."
EMPTY_CURVES = "Reward, acceptance rate and quality, round by round, appear here."


@dataclass(frozen=True)
class Figures:
    histogram: go.Figure
    reshaping: go.Figure | None
    """None when the one on screen is still right (see `RunView.figures`)."""
    samples: go.Figure
    curves: go.Figure
    table: pd.DataFrame


@dataclass
class RunView:
    setup: RunSetup
    first: RoundResult | None = None
    latest: RoundResult | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    reshaping_shown: bool = False
    """Whether this run's rule plot is on screen (a preview of another rule replaces it)."""

    def add(self, result: RoundResult) -> None:
        if self.first is None:
            self.first = result
        self.latest = result
        self.rows.append(result.metrics)

    @property
    def domain(self) -> str:
        return self.setup.base.domain

    def table(self) -> pd.DataFrame:
        return metrics_table(self.rows)

    def figures(self) -> Figures:
        assert self.first is not None and self.latest is not None
        rule = self.setup.rule
        latest = self.latest
        rewards, accepted = latest.rewards.numpy(), latest.accepted.numpy()
        histogram = reward_histogram(
            self.first.rewards.numpy(),
            rewards,
            accepted,
            latest.round,
            acceptance_cut(rule, rewards, accepted),
            rule.describe(),
        )
        # A rank rule's a(u) does not depend on the rewards: draw it once per run (each plotly figure costs the
        # browser a few hundred milliseconds); value rules (threshold, soft) change with every round's rewards.
        reshaping = None
        if rule.needs_rewards_scale or not self.reshaping_shown:
            source = f"round {latest.round}" if rule.needs_rewards_scale else ""
            reshaping = rule_reshaping(rule, rewards, source)
            self.reshaping_shown = True
        return Figures(
            histogram,
            reshaping,
            self.samples_figure(),
            round_curves(self.table(), get_domain(self.domain).curve_panels),
            self.table(),
        )

    def samples_figure(self) -> go.Figure:
        assert self.first is not None and self.latest is not None
        first, latest = self.first, self.latest
        if len(first.preview_samples) == 0:
            return placeholder("No preview samples: set 'preview samples' above 0 to see before/after pictures.")
        draw = get_domain(self.domain).samples_figure
        if draw is not None:
            figure: go.Figure = draw(first, latest, self.setup.evaluator)
            return figure
        if first.preview_samples.dim() >= 3:
            pick = _spread(first.preview_groups.numpy(), 12)
            cands = _spread(latest.groups.numpy(), 12)
            prompts = list(getattr(self.setup, "prompts", None) or [])
            named = len(prompts) > 1
            return images_before_after(
                first.preview_samples.numpy()[pick],
                latest.preview_samples.numpy()[pick],
                first.preview_rewards.numpy()[pick],
                latest.preview_rewards.numpy()[pick],
                latest.samples.numpy()[cands],
                latest.rewards.numpy()[cands],
                latest.accepted.numpy()[cands],
                latest.round,
                preview_labels=_names(prompts, first.preview_groups.numpy()[pick]) if named else None,
                candidate_labels=_names(prompts, latest.groups.numpy()[cands]) if named else None,
            )
        return placeholder(f"No sample picture for the {self.domain} domain yet.")


def _names(prompts: list[str], groups: np.ndarray) -> list[str]:
    """The prompt of each sample (its group indexes the run's prompts), shortened to fit under an image."""
    return [str(prompts[int(g)])[:10] if 0 <= int(g) < len(prompts) else "" for g in groups]


def per_prompt_rewards(result: RoundResult, prompts: list[str]) -> dict[str, float]:
    """The round's mean reward per prompt (empty for fewer than two prompts)."""
    if len(prompts) < 2:
        return {}
    rewards, groups = result.rewards.numpy(), result.groups.numpy()
    return {p: float(rewards[groups == g].mean()) for g, p in enumerate(prompts) if np.any(groups == g)}


def _spread(groups: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to `count` samples taken in turn from each group (prompt), so every prompt shows."""
    ids = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    out: list[int] = []
    for i in range(max((len(x) for x in ids), default=0)):
        out += [int(x[i]) for x in ids if i < len(x)]
    return np.asarray(out[:count], dtype=int)


def empty_figures() -> tuple[go.Figure, go.Figure, go.Figure]:
    return placeholder(EMPTY_HISTOGRAM, 360, width=42), placeholder(EMPTY_SAMPLES, 440), placeholder(EMPTY_CURVES, 300)
