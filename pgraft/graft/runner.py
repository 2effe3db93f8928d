"""The round runner shared by the command line, the app and the tests (docs/method.md §1–2).

`RoundRunner(config).run()` is a generator of events. Round 0 samples the base model; each later round

1. fine-tunes a copy of the current model on the previous round's accepted samples (GRAFT: clean
   samples, every noise level; P-GRAFT: the accepted handoff states, only above the cutoff),
2. draws `samples` candidates (per prompt) with the (stitched) sampler, plus the fixed preview seeds,
3. scores them (a failing reward stops the run, naming the reward) and applies the acceptance rule,
4. computes the round's metrics, writes the round atomically when a run folder is given, and yields it.

Every random draw of round `r` is seeded from `(seed, r)` alone, so resuming after round `r` repeats
exactly what an uninterrupted run would have done. Cancellation: `should_stop()` is checked after every
sampling and fine-tuning step; a stopped run yields `Cancelled` and keeps its completed rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pgraft.core.acceptance import apply_rule
from pgraft.core.ddpo import DDPOOptions, Rollout, advantages, ddpo_iter, rollout_iter
from pgraft.core.devices import peak_memory_gb, reset_peak_memory, resolve_device
from pgraft.core.distributed import ProcessError, Processes
from pgraft.core.events import Cancelled, Finished, Notice, Progress, Stopped, relay
from pgraft.core.finetune import FinetuneData, finetune_iter
from pgraft.core.sampling import Trajectory, inference_timesteps, sample_iter, sample_seeds
from pgraft.families.base import DiffusionAdapter, cat_rows
from pgraft.graft.budget import check_disk
from pgraft.graft.config import RunConfig, ignored_options
from pgraft.graft.setup import RunSetup, build_setup
from pgraft.graft.storage import RunFolderError, RunStore, weights_name
from pgraft.rewards import RewardError, score

PREVIEW_STREAM = 0


@dataclass(frozen=True)
class RoundResult:
    """One completed round. Candidates come first; `preview_*` are drawn from the same seeds every round."""

    round: int
    metrics: dict[str, Any]
    samples: torch.Tensor
    rewards: torch.Tensor
    accepted: torch.Tensor
    groups: torch.Tensor
    preview_samples: torch.Tensor
    preview_rewards: torch.Tensor
    preview_groups: torch.Tensor
    x_cut: torch.Tensor | None = None
    path: Path | None = None


@dataclass(frozen=True)
class RunCancelled(Cancelled):
    """The run stopped at `should_stop()`; rounds `0 .. completed_rounds - 1` are complete (and on disk)."""

    completed_rounds: int


@dataclass(frozen=True)
class RunFinished(Finished):
    completed_rounds: int
    out: Path | None


Event = Progress | RoundResult | Notice | RunCancelled | RunFinished


class RoundRunner:
    def __init__(
        self,
        config: RunConfig,
        out: Path | None = None,
        mode: str = "new",
        should_stop: Callable[[], bool] | None = None,
        allow_import: bool = False,
        setup: RunSetup | None = None,
        processes: Processes | None = None,
    ) -> None:
        self.config = config
        self.processes = processes if processes is not None else Processes.detect(config.device)
        self.device = self.processes.device(resolve_device(config.device))
        if config.method == "ddpo" and self.processes.distributed:
            raise ValueError("--method ddpo runs on one process; launch it without accelerate")
        self.setup = setup or build_setup(config, allow_import=allow_import, device=self.device)
        self._rollout: Rollout | None = None  # DDPO: the last round's trajectories and advantages
        self._advantages: torch.Tensor | None = None
        self._train_forward = 0
        if out is not None and self.processes.is_main:
            check_disk(config, self.setup.base, out)
        self.store = RunStore(out, mode) if out is not None else None
        self.should_stop = should_stop or (lambda: False)

    # -- the pieces of a round ------------------------------------------------------------------------
    def _seeds(self, stream: int, n: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Seeds, group (prompt) index and conditioning of `n` samples per prompt of one stream."""
        prompts = max(1, len(self.setup.prompts))
        seeds = torch.cat([sample_seeds(self.config.seed, stream * 1000 + p, n) for p in range(prompts)])
        groups = torch.arange(prompts).repeat_interleave(n)
        cond = self.setup.cond[groups] if self.setup.cond is not None else None
        return seeds, groups, cond

    def _prompts_of(self, groups: torch.Tensor) -> list[str] | None:
        return [self.setup.prompts[g] for g in groups.tolist()] if self.setup.prompts else None

    def _draw(
        self, r: int, finetuned: DiffusionAdapter | None, timings: dict[str, float]
    ) -> Generator[Event, None, tuple[Trajectory, torch.Tensor, torch.Tensor, int]]:
        """Sample, decode and score the round's candidates and preview; on several processes each rank does
        its shard of the global sample ids and every rank ends with all of them, in global order."""
        cfg, processes = self.config, self.processes
        seeds, groups, cond = self._seeds(r + 1, cfg.samples)
        p_seeds, p_groups, p_cond = self._seeds(PREVIEW_STREAM, cfg.preview)
        all_seeds, all_groups = torch.cat([seeds, p_seeds]), torch.cat([groups, p_groups])
        all_cond = cat_rows([cond, p_cond])
        mine = processes.shard(len(all_seeds))
        t0 = time.perf_counter()
        if cfg.method == "ddpo":  # one process: the candidates with their trajectories, then the preview
            model = finetuned or self.setup.base
            rollout = yield from relay(
                rollout_iter(model, seeds, cfg.num_inference_steps, cfg.effective_eta, cond), self.should_stop, round=r
            )
            self._rollout = rollout
            preview = yield from relay(
                sample_iter(self.setup.base, p_seeds, cfg.num_inference_steps, eta=cfg.effective_eta,
                            finetuned=finetuned, cond=p_cond),
                self.should_stop, round=r,
            )  # fmt: skip
            mine = slice(0, len(all_seeds))
            trajectory = replace(preview, samples=torch.cat([rollout.samples, preview.samples]), seeds=all_seeds)
        gen = sample_iter(
            self.setup.base,
            all_seeds[mine],
            cfg.num_inference_steps,
            eta=cfg.effective_eta,
            finetuned=finetuned,
            cutoff=cfg.cutoff if cfg.method == "pgraft" else None,
            cond=all_cond[mine] if all_cond is not None else None,
        )
        if cfg.method != "ddpo":
            trajectory = yield from relay(gen, self.should_stop, round=r)
        timings["time_sampling"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        # Rewards and metrics see what the family decodes (pixels of a latent pipeline; the samples themselves
        # for the small models); the run stores the samples.
        error = None
        try:
            decoded = self.setup.base.decode(trajectory.samples)
            rewards = score(self.setup.reward, decoded, self._prompts_of(all_groups[mine]))
        except RewardError as exc:
            if not processes.distributed:
                raise
            error, decoded, rewards = f"rank {processes.rank}: {exc}", torch.empty(0), torch.empty(0)
        try:
            processes.agree(error)
        except ProcessError as exc:
            raise RewardError(str(exc)) from None
        timings["time_scoring"] = time.perf_counter() - t0
        if processes.distributed:
            t0 = time.perf_counter()
            x_cut = processes.gather(trajectory.x_cut) if trajectory.x_cut is not None else None
            trajectory = replace(trajectory, samples=processes.gather(trajectory.samples), x_cut=x_cut, seeds=all_seeds)
            decoded, rewards = processes.gather(decoded), processes.gather(rewards)
            timings["time_gather"] = time.perf_counter() - t0
        return trajectory, decoded, rewards, len(seeds)

    def _finetune(
        self, r: int, current: DiffusionAdapter | None, data: FinetuneData
    ) -> Generator[Event, None, tuple[DiffusionAdapter, float]]:
        """Fine-tune a copy of the current model; returns it and its mean loss over the last tenth of the steps."""
        cfg = self.config
        model = (current or self.setup.base).trainable_copy(seed=cfg.seed * 7919 + r)
        gen = finetune_iter(
            model, data, cfg.finetune_steps, cfg.batch_size, cfg.lr, seed=cfg.seed * 7919 + r, processes=self.processes
        )
        tail = yield from relay(gen, self.should_stop, round=r)  # the last tenth of the steps' losses
        self._train_forward = cfg.finetune_steps * cfg.batch_size
        return model.frozen(), sum(tail) / len(tail)

    def _ddpo(
        self, r: int, current: DiffusionAdapter | None, previous: RoundResult
    ) -> Generator[Event, None, tuple[DiffusionAdapter, float, dict[str, float]]]:
        """DDPO's update on the previous round's trajectories (re-drawn after a resume: the same seeds and
        model give the same trajectories)."""
        cfg = self.config
        sampler = current or self.setup.base
        if self._rollout is None:
            seeds, _groups, cond = self._seeds(r, cfg.samples)
            again = rollout_iter(sampler, seeds, cfg.num_inference_steps, cfg.effective_eta, cond)
            self._rollout = yield from relay(again, self.should_stop, round=r)
        if self._advantages is None:
            self._advantages = advantages(previous.rewards, previous.groups, cfg.ddpo_adv_clip)
        model = sampler.trainable_copy(seed=cfg.seed * 7919 + r)
        options = DDPOOptions(
            clip_range=cfg.ddpo_clip_range, adv_clip=cfg.ddpo_adv_clip, timestep_fraction=cfg.ddpo_timestep_fraction,
            inner_epochs=cfg.ddpo_inner_epochs, batch_size=cfg.ddpo_batch_size or cfg.batch_size,
            accumulation=cfg.ddpo_accumulation, lr=cfg.ddpo_lr,
        )  # fmt: skip
        gen = ddpo_iter(model, self._rollout, self._advantages, options, seed=cfg.seed * 7919 + r)
        stats = yield from relay(gen, self.should_stop, round=r)
        self._rollout, self._advantages = None, None
        self._train_forward = stats.forward
        loss = sum(stats.losses) / len(stats.losses) if stats.losses else float("nan")
        return model.frozen(), loss, {"ddpo_clip_fraction": stats.clip_fraction, "ddpo_approx_kl": stats.approx_kl}

    def _training_data(self, result: RoundResult) -> FinetuneData:
        cfg = self.config
        keep = result.accepted
        cond = self.setup.cond[result.groups[keep]] if self.setup.cond is not None else None
        if cfg.method == "graft":
            return FinetuneData(result.samples[keep], cond)
        if cfg.anchoring == "final":
            return FinetuneData(result.samples[keep], cond, None, self.setup.cutoff_timestep)
        assert result.x_cut is not None
        return FinetuneData(result.x_cut[keep], cond, self.setup.cutoff_timestep, self.setup.cutoff_timestep)

    def _prepare(self) -> int:
        """Create or reopen the run folder on the main process; every rank learns how many rounds are done."""
        assert self.store is not None
        processes = self.processes
        if not processes.distributed:
            return self.store.prepare(self.config)
        start, error = 0, None
        if processes.is_main:
            try:
                start = self.store.prepare(self.config)
            except ValueError as exc:
                error = str(exc)
        start, error = processes.broadcast((start, error))
        if error is not None:
            raise RunFolderError(error)
        return int(start)

    # -- the run --------------------------------------------------------------------------------------
    def run(self) -> Generator[Event, None, None]:
        cfg = self.config
        start, current, previous = 0, None, None
        processes = self.processes
        if self.store is not None:
            start = self._prepare()
            if start:
                previous = self._load_round(start - 1)
                weights = self.store.round_dir(start - 1) / weights_name(self.setup.base)
                if weights.exists():  # absent while no round has accepted anything: the base is current
                    current = self.setup.base.trainable_copy(seed=cfg.seed * 7919 + start - 1)
                    current.load_weights(weights)
                    current.frozen()
        for note in ignored_options(cfg):
            yield Notice(note)
        before = int(previous.metrics.get("processes", 1)) if previous is not None else processes.world
        if before != processes.world:
            yield Notice(
                f"resuming on {processes.world} process(es) a run whose rounds so far ran on {before}: the "
                "candidates are the same (seeds are per global sample id), but fine-tuning sums its gradients in "
                "another order, so results may differ in the last digits from an uninterrupted run"
            )
        if cfg.method == "pgraft" and cfg.effective_eta < 1:
            how = "deterministically, so x_0 is a function of x_c" if cfg.effective_eta == 0 else "partly at random"
            yield Notice(
                f"P-GRAFT with eta {cfg.effective_eta:g}: below the cutoff the base continues {how}; the shaped "
                "target then differs from the stochastic one of docs/method.md §2 (--sampler ddpm)"
            )
        device = self.device
        if device == "cpu" and getattr(self.setup.base, "gpu_sized", False):
            yield Notice(
                f"{self.setup.base.name} runs on the CPU: a full-size pipeline takes minutes per image there "
                "(40 network evaluations for 20 guided steps); give --device cuda on a machine with a GPU"
            )
        try:
            for r in range(start, cfg.rounds + 1):
                reset_peak_memory(device)
                timings: dict[str, float] = {}
                loss = float("nan")
                extra: dict[str, float] = {}
                self._train_forward = 0
                if r > 0 and cfg.method == "bon-sampling":
                    pass  # nothing is trained: every round is fresh draws of the base
                elif r > 0 and cfg.method == "ddpo":
                    assert previous is not None
                    t0 = time.perf_counter()
                    current, loss, extra = yield from self._ddpo(r, current, previous)
                    timings["time_finetune"] = time.perf_counter() - t0
                elif r > 0:
                    assert previous is not None
                    if previous.accepted.any() and cfg.finetune_steps > 0:
                        t0 = time.perf_counter()
                        data = self._training_data(previous)
                        current, loss = yield from self._finetune(r, current, data)
                        timings["time_finetune"] = time.perf_counter() - t0
                    elif cfg.finetune_steps == 0:
                        if r == 1:
                            yield Notice("fine-tuning is off (--finetune-steps 0): every round samples the base", r)
                    else:
                        yield Notice(
                            f"round {r}: no sample was accepted in round {r - 1}; the model is left unchanged", r
                        )
                traj, decoded, rewards_all, n = yield from self._draw(r, current, timings)
                result = self._score_and_accept(r, traj, decoded, rewards_all, n, timings, loss, previous)
                result.metrics.update(extra)
                peak = peak_memory_gb(device)
                if peak is not None:
                    result.metrics["peak_gpu_memory_gb"] = round(peak, 3)
                if len(result.rewards) > 1 and bool((result.rewards == result.rewards[0]).all()):
                    yield Notice(
                        f"round {r}: every candidate got the same reward ({float(result.rewards[0]):.6g}); the rule "
                        "cannot tell them apart, so what it accepts is arbitrary",
                        r,
                    )
                if not result.accepted.any():
                    yield Notice(f"round {r}: no sample was accepted ({self.setup.rule.describe()})", r)
                if self.store is not None:
                    path = self.store.round_dir(r)
                    if processes.is_main:  # one writer; the others wait for the round to be on disk
                        # Evaluators may render files of their own (the digits sample grids) into the round folder.
                        render = getattr(self.setup.evaluator, "round_artifacts", None)
                        files = render(result) if callable(render) else {}
                        model = current if r > 0 else None
                        path = self.store.write_round(r, self._tensors(result), result.metrics, model, files=files)
                    processes.barrier()
                    result = RoundResult(**{**result.__dict__, "path": path})
                previous = result
                yield result
        except Stopped:
            yield RunCancelled(previous.round + 1 if previous is not None else 0)
            return
        yield RunFinished(cfg.rounds + 1, self.store.out if self.store else None)

    def _score_and_accept(
        self,
        r: int,
        traj: Trajectory,
        decoded: torch.Tensor,
        rewards_all: torch.Tensor,
        n: int,
        timings: dict[str, float],
        loss: float,
        previous: RoundResult | None = None,
    ) -> RoundResult:
        cfg = self.config
        _, groups, _ = self._seeds(r + 1, cfg.samples)
        _, p_groups, _ = self._seeds(PREVIEW_STREAM, cfg.preview)
        samples, rewards = traj.samples[:n], rewards_all[:n]
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 104729 + r)
        if cfg.method == "ddpo":  # every candidate trains, weighted by its advantage
            accepted = torch.ones(len(rewards), dtype=torch.bool)
            self._advantages = advantages(rewards, groups, cfg.ddpo_adv_clip)
        else:
            accepted = apply_rule(self.setup.rule, rewards, groups, gen, samples)
        timings["time_acceptance"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics: dict[str, Any] = {
            "round": r,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "reward_max": float(rewards.max()),
            "accept_rate": float(accepted.double().mean()),
            "n_accepted": int(accepted.sum()),
            "accepted_reward_mean": float(rewards[accepted].mean()) if accepted.any() else float("nan"),
            "finetune_loss": loss,
        }
        if self.setup.prompts:
            for p, prompt in enumerate(self.setup.prompts):
                metrics[f"reward_mean[{prompt}]"] = float(rewards[groups == p].mean())
        if cfg.method == "bon-sampling":  # what it delivers: the best of each n, against one tilt's exact target
            metrics["delivered"] = int(accepted.sum())
            metrics["reward_calls_per_delivered"] = len(rewards) / max(1, int(accepted.sum()))
            if self.processes.is_main and accepted.any():
                metrics.update(self.setup.evaluator.round_metrics(1, decoded[:n][accepted], rewards[accepted]))
        elif self.processes.is_main:  # the evaluator's state (reference features, exact targets) lives on one rank
            metrics.update(self.setup.evaluator.round_metrics(r, decoded[:n], rewards))
        if "target_reward" in metrics and cfg.method in ("graft", "pgraft"):
            metrics.update(learning_gap(metrics, len(rewards), previous))
        metrics.update(self._budget(len(traj.samples), previous))
        timings["time_metrics"] = time.perf_counter() - t0
        if traj.cutoff_fraction is not None and cfg.method == "pgraft":
            metrics["cutoff_effective"] = traj.cutoff_fraction
        metrics.update({k: round(v, 4) for k, v in timings.items()})
        metrics["processes"] = self.processes.world
        x_cut = traj.x_cut[:n] if traj.x_cut is not None else None
        return RoundResult(
            r, metrics, samples, rewards, accepted, groups, traj.samples[n:], rewards_all[n:], p_groups, x_cut
        )

    def _budget(self, rows: int, previous: RoundResult | None) -> dict[str, int]:
        """What the round spent, and the totals so far (for runs compared at equal reward calls or compute):
        samples drawn and scored (candidates and preview), network evaluations while sampling (rows × steps,
        twice with classifier-free guidance) and while training (forward and backward, rows × steps)."""
        cfg = self.config
        per_eval = 2 if getattr(self.setup.base, "guided", False) else 1
        steps = len(inference_timesteps_of(self.setup.base, cfg.num_inference_steps))
        round_budget = {
            "samples_drawn": rows,
            "reward_calls": rows,
            "nfe_sampling": rows * steps * per_eval,
            "nfe_train_forward": self._train_forward * per_eval,
            "nfe_train_backward": self._train_forward * per_eval,
        }
        before = previous.metrics if previous is not None else {}
        totals = {
            "reward_calls_total": int(before.get("reward_calls_total", 0)) + rows,
            "nfe_total": int(before.get("nfe_total", 0)) + sum(v for k, v in round_budget.items() if "nfe" in k),
        }
        return {**round_budget, **totals}

    @staticmethod
    def _tensors(result: RoundResult) -> dict[str, torch.Tensor]:
        out = {
            "samples": result.samples,
            "rewards": result.rewards,
            "accepted": result.accepted.to(torch.uint8),
            "groups": result.groups,
            "preview_samples": result.preview_samples,
            "preview_rewards": result.preview_rewards,
            "preview_groups": result.preview_groups,
        }
        if result.x_cut is not None:
            out["x_cut"] = result.x_cut
        return out

    def _load_round(self, r: int) -> RoundResult:
        assert self.store is not None
        t, metrics = self.store.load_round(r)
        return RoundResult(
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
        )


def learning_gap(metrics: dict[str, Any], n: int, previous: RoundResult | None) -> dict[str, float]:
    """How far the round's mean reward is from its exact target's, and the standard error of that gap under
    perfect learning: this round's sampling noise and, after round 0, the noise of the finite accepted set
    the model was fine-tuned on (a perfect learner reproduces that set, not the target)."""
    var = metrics["reward_std"] ** 2 / n
    if previous is not None and bool(previous.accepted.sum() > 1):
        kept = previous.rewards[previous.accepted]
        var += float(kept.var()) / len(kept)
    return {
        "learning_gap": metrics["reward_mean"] - metrics["target_reward"],
        "learning_gap_se": var**0.5,
    }


def run_to_end(runner: RoundRunner) -> list[RoundResult]:
    """Run every round and return the results (for scripts and tests)."""
    return [ev for ev in runner.run() if isinstance(ev, RoundResult)]


def inference_timesteps_of(base: DiffusionAdapter, num_inference_steps: int) -> torch.Tensor:
    return inference_timesteps(base.process, num_inference_steps)
