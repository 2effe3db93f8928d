"""The Rounds tab's run list: the list and its tick boxes, the comparison of the ticked runs, and reopening
an earlier run kept in `--runs-dir` (the records and files are `ui.runs`; the figures `plots.compare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from pgraft.graft.config import RunConfig
from pgraft.graft.setup import build_setup
from pgraft.plots.style import placeholder
from pgraft.registry import get_domain, get_model_spec, reward_spec
from pgraft.rewards import RewardError
from pgraft.ui.controls import reward_choices
from pgraft.ui.export import export_texts
from pgraft.ui.models import BaseModels
from pgraft.ui.runs import find_runs, reopen, summary_table
from pgraft.ui.sessions import Session, SessionStore


class RunListHandlers:
    """The run-list events of `RoundsHandlers` (which provides these attributes and `_outputs`)."""

    sessions: SessionStore
    models: BaseModels
    device: str
    models_dir: Path | None
    runs_dir: Path | None

    def model_values(self) -> list[str]:
        raise NotImplementedError

    def _outputs(self, session: Session, view: Any, status: str, exports: tuple[str, ...], running: bool) -> Any:
        raise NotImplementedError

    def run_list(self, request: gr.Request, picked: list[str] | None = None) -> tuple[Any, ...]:
        """The run list (table and tick boxes; a new run is ticked) and the earlier runs of `--runs-dir`."""
        session = self.sessions.get(request)
        names = [r.name for r in session.runs]
        shown = [n for n in (picked or []) if n in names]
        latest = session.runs[-1].name if session.runs else None
        if latest is not None and latest not in shown and session.runs[-1].view.latest is not None:
            shown.append(latest)
        return (
            summary_table(session.runs),
            gr.update(choices=names, value=shown),
            self._earlier_update(session),
        )

    def _earlier_update(self, session: Session) -> Any:
        if self.runs_dir is None:
            return gr.update(visible=False)
        listed = {r.name for r in session.runs}
        found = [n for n in find_runs(self.runs_dir) if n not in listed]
        return gr.update(choices=found, value=None, visible=True)

    def compare(self, request: gr.Request, picked: list[str] | None) -> tuple[Any, ...]:
        """The ticked runs overlaid: per-round curves, last-round reward histograms, samples from the same seeds."""
        from pgraft.plots.compare import compare_curves, compare_histograms, compare_samples

        session = self.sessions.get(request)
        runs = [r for r in session.runs if r.name in (picked or []) and r.view.latest is not None]
        domains = {r.view.domain for r in runs}
        if len(domains) > 1:
            figure = placeholder(f"Tick runs of one kind of model to compare them (ticked: {sorted(domains)}).")
            return figure, figure, figure
        summaries = [r.summary() for r in runs]
        realism = get_domain(runs[0].view.domain).realism if runs else None
        metric = realism.metric if realism is not None else None
        label = f"realism: {metric} ({realism.unit})" if realism is not None else ""
        samples = compare_samples(summaries)
        if len({(r.config.seed, r.config.preview) for r in runs}) > 1:
            samples.update_layout(title_text=samples.layout.title.text + " (note: the runs' seeds differ)")
        return compare_curves(summaries, metric, label), compare_histograms(summaries), samples

    def reopen(self, request: gr.Request, name: str | None) -> tuple[Any, ...]:
        """An earlier run of `--runs-dir`, picked from the server's list, into the run list and the figures;
        its files are read (safetensors and plain YAML), nothing is recomputed."""
        if self.runs_dir is None or not name:
            raise gr.Error("Pick one of the earlier runs listed first.", title="Nothing to reopen")
        session = self.sessions.get(request)
        try:
            record = reopen(self.runs_dir, name, self._setup_of_kept)
        except (ValueError, OSError, RewardError) as exc:
            raise gr.Error(str(exc), title="Cannot reopen") from None
        session.runs = [r for r in session.runs if r.name != name] + [record]
        session.current_run, session.view = record.folder, record.view
        exports = export_texts(record.config)
        status = f"**Reopened {name}** ({record.describe()}, {record.status}) from its files."
        record.view.reshaping_shown = False
        return self._outputs(session, record.view, status, exports, running=False)

    def _setup_of_kept(self, config: RunConfig) -> Any:
        """The setup of a kept run's config, under the same checks as a run from the page: a model and reward
        this app offers, reward files only from `--models-dir`."""
        if config.model not in self.model_values():
            raise ValueError(f"--model: {config.model!r} is not offered here")
        offered = [name for _, name in reward_choices(config.model)]
        if config.reward not in offered:
            raise ValueError(f"--reward: {config.reward!r} is not a reward this app offers; choose one of {offered}")
        spec = reward_spec_of(config)
        if spec is not None and spec.paths:
            root = self.models_dir.resolve() if self.models_dir is not None else None
            for key in spec.paths:
                path = Path(str(config.reward_args.get(key, ""))).resolve()
                if root is None or root not in path.parents:
                    raise ValueError(f"--reward-arg {key}: {str(path)!r} is not inside --models-dir")
        config = config.replace(device=self.device)
        return build_setup(config, base=self.models.get_for(config))


def reward_spec_of(config: RunConfig) -> Any:
    return reward_spec(config.reward, get_model_spec(config.model).domain)
