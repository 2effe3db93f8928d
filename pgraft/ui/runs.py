"""The Rounds tab's run list: every run of a session kept (its folder, settings and figures' data), the
summary table, the comparison of ticked runs, and earlier runs reopened from `--runs-dir` (no gradio here).

Where runs live. Without `--runs-dir` each run is a folder inside the session's own temporary folder, deleted
with the session. With `python app.py --runs-dir DIR` every run is written to `DIR/<name>` and kept; the runs
found there (run folders pgraft wrote: a `pgraft-run.json` mark, `config.yaml`, complete round folders) are
listed by the server, and the page can only pick a name from that list: nothing the browser sends is a path.
Reopening reads `config.yaml` as plain YAML and the rounds' safetensors files; no pickle is loaded and
nothing is recomputed. Every session of the app sees the runs of `DIR`: use it for a lab notebook on one's
own machine, not on a server shared with strangers.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundResult
from pgraft.graft.storage import MANIFEST, RunStore
from pgraft.plots.compare import RunSummary
from pgraft.registry import domain_of
from pgraft.ui.views import RunView

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


@dataclass
class RunRecord:
    """One run of the run list."""

    name: str
    """Unique among the runs listed, a plain folder name."""
    config: RunConfig
    folder: Path
    view: RunView
    status: str = "running"
    """running, finished, stopped or failed."""

    def describe(self) -> str:
        c = self.config
        how = f"P-GRAFT t_c {c.cutoff:g}" if c.method == "pgraft" else "GRAFT"
        param = _rule_param(c)
        return f"{how} · {c.rule}{param} · {c.reward}{_args(c)}"

    def row(self) -> dict[str, Any]:
        """The run list's row: name, settings, final reward and realism."""
        c = self.config
        last = self.view.rows[-1] if self.view.rows else {}
        realism = domain_of(c.model).realism
        row: dict[str, Any] = {
            "run": self.name,
            "settings": self.describe(),
            "model": c.model + (f" ({c.dataset})" if c.model.startswith("toy") else ""),
            "rounds": len(self.view.rows) - 1 if self.view.rows else 0,
            "samples": c.samples,
            "final reward": _round(last.get("reward_mean")),
        }
        if realism is not None:
            row[f"final {realism.metric}"] = _round(last.get(realism.metric))
        row["status"] = self.status
        return row

    def summary(self) -> RunSummary:
        latest = self.view.latest
        assert latest is not None
        return RunSummary(
            self.name,
            self.view.table(),
            latest.rewards.numpy(),
            latest.preview_samples.numpy(),
            latest.preview_rewards.numpy(),
        )


def _round(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, (int, float)) and np.isfinite(value) else value


def _rule_param(c: RunConfig) -> str:
    from pgraft.core.acceptance import RULES

    name = RULES[c.rule].param.name
    return f" {name}={getattr(c, name):g}"


def _args(c: RunConfig) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in c.reward_args.items())})" if c.reward_args else ""


def run_name(index: int, config: RunConfig, stamp: bool) -> str:
    """`03-pgraft-0.4-quantile` (with a date and time in front when kept in `--runs-dir`)."""
    how = f"pgraft-{config.cutoff:g}" if config.method == "pgraft" else "graft"
    name = f"{index:02d}-{how}-{config.rule}"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{name}" if stamp else name


def summary_table(records: list[RunRecord]) -> pd.DataFrame:
    if not records:
        return pd.DataFrame({"run": [], "settings": [], "final reward": []})
    return pd.DataFrame([r.row() for r in records])


def find_runs(root: Path | None) -> list[str]:
    """Names of the run folders directly under `root` with a config and at least one complete round, newest
    first (empty without a root)."""
    if root is None or not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        if not NAME.match(folder.name) or not folder.is_dir() or folder.is_symlink():
            continue
        if (folder / MANIFEST).is_file() and (folder / "config.yaml").is_file() and _complete_rounds(folder):
            found.append(folder)
    found.sort(key=lambda f: f.stat().st_mtime, reverse=True)
    return [f.name for f in found]


def _complete_rounds(folder: Path) -> list[int]:
    try:
        return RunStore(folder, mode="resume").completed_rounds()
    except (ValueError, OSError):
        return []


def reopen(root: Path, name: str, setup_of: Any) -> RunRecord:
    """The run `name` of `root` as a record, from its files (`ValueError` when it is not one of `find_runs`).

    `setup_of(config)` builds the run's setup (model, rule, evaluator) for the figures; nothing is sampled."""
    if name not in find_runs(root):
        raise ValueError(f"run: {name!r} is not one of the runs found in the runs folder")
    folder = root / name
    config = RunConfig.from_yaml(folder / "config.yaml")
    store = RunStore(folder, mode="resume")
    view = RunView(setup_of(config))
    for r in store.completed_rounds():
        t, metrics = store.load_round(r)
        view.add(
            RoundResult(
                r,
                metrics,
                t["samples"],
                t["rewards"],
                t["accepted"].bool(),
                t["groups"],
                t["preview_samples"],
                t["preview_rewards"],
                t["preview_groups"],
                t.get("x_cut"),
                folder / "rounds" / f"round_{r:03d}",
            )
        )
    done = len(view.rows) - 1 == config.rounds
    return RunRecord(name, config, folder, view, "finished" if done else "stopped")
