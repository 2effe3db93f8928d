"""How long a bias-variance study will take, before it starts and while it runs (no gradio here)."""

from __future__ import annotations

import time
from typing import Any

from pgraft.graft.config import RunConfig
from pgraft.registry import get_model_spec
from pgraft.studies.bias_variance.curves import CurvePoint, CurveSpec
from pgraft.studies.sweep import SweepSpec


class StudyClock:
    """The study's time: an estimate before it starts, from one short timed batch of the base model, and the
    time left as cutoffs finish, from the measured pace (the digits study with its defaults took 344 s, its
    first cutoff after 88 s: a user should know before pressing Run and while waiting).

    Work is counted in sample-steps: the `M` trunk chains run the whole grid once; at cutoff `t` the `M·R`
    continuations run the `≈ t·steps` steps below it. A sweep adds one run per cutoff (and GRAFT), each
    `rounds + 1` rounds of `samples` candidates plus fine-tuning, which is not estimated here."""

    def __init__(self, config: RunConfig, curve: CurveSpec, sweep: SweepSpec | None) -> None:
        self.config, self.curve, self.sweep = config, curve, sweep
        self.start = time.perf_counter()
        steps = config.num_inference_steps
        self.units = {c: curve.states * steps / len(curve.cutoffs) + curve.states * curve.continuations * steps * c
                      for c in curve.cutoffs}  # fmt: skip
        self.done = 0.0
        self.estimated = ""
        self.total: float | None = None

    def _probe(self) -> float | None:
        """Seconds of the whole curves, from one batch as wide as the continuations (up to 1024) run for 4
        steps and scored once (None if that fails): per sample, a wide batch costs much less than a narrow one."""
        from pgraft.core.sampling import sample, sample_seeds
        from pgraft.registry import load_model, make_reward, reward_context
        from pgraft.rewards import score

        try:
            spec = get_model_spec(self.config.model)
            options = {"dataset": self.config.dataset} if "dataset" in spec.options else {}
            base = load_model(self.config.model, device=self.config.device, **options)
            reward = make_reward(self.config.reward, base.domain, self.config.reward_args, reward_context(base))
            width = min(1024, self.curve.states * self.curve.continuations)
            labels = [self.config.prompts[0]] * width if base.conditional and self.config.prompts else None
            cond = base.encode(labels) if labels else None
            sample(base, sample_seeds(0, 7, width), 2, cond=cond)  # warm-up
            t0 = time.perf_counter()
            x = sample(base, sample_seeds(0, 7, width), 4, cond=cond).samples  # 2 and 4 divide every model's grid
            t1 = time.perf_counter()
            score(reward, base.decode(x), labels)
            t2 = time.perf_counter()
        except Exception:  # an estimate only: the study itself reports what went wrong
            return None
        per_step, per_score = (t1 - t0) / (width * 4), (t2 - t1) / width
        scores = len(self.curve.cutoffs) * self.curve.states * self.curve.continuations
        return per_step * sum(self.units.values()) + per_score * scores

    def estimate(self) -> str:
        seconds = self._probe()
        self.start = time.perf_counter()
        if seconds is None:
            return "Estimating the curves' time once the first cutoff is done…"
        self.total = seconds
        text = f"Estimated time for the curves: roughly {_duration(seconds)} (from one timed batch of this model)"
        if self.sweep is not None:
            runs = len(self.sweep.cutoffs) + int(self.sweep.include_graft)
            text += f", plus the sweep: {runs} runs of {self.config.rounds} rounds after the base"
        self.estimated = text + "."
        return self.estimated

    def with_time_left(self, status: str, ev: Any) -> str:
        if not isinstance(ev, CurvePoint):
            if self.done == 0:
                self.start = time.perf_counter()  # the pace counts from the estimation itself, not the exact curves
            return f"{status} {self.estimated}" if self.done == 0 and self.estimated else status
        self.done += self.units.get(float(ev.row["cutoff"]), 0.0)
        elapsed = time.perf_counter() - self.start
        left = sum(self.units.values()) - self.done
        if self.done <= 0 or left <= 0:
            return status + (" The sweep follows." if self.sweep is not None and left <= 0 else "")
        # The first cutoffs also pay for the shared trunk chains, so their pace overstates the rest: until half
        # the work is done the timed batch's estimate is the better guide (digits: 30 s estimated, 30.6 s taken).
        if self.total is not None and self.done < left:
            seconds = max(0.0, self.total - elapsed)
        else:
            seconds = elapsed / self.done * left
        return status + f" About {_duration(seconds)} left for the curves."


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
