"""DDPO and best-of-n sampling beside GRAFT: the per-step likelihood, the PPO update's limits, a reward that
rises, the budget columns, and best-of-n sampling delivering GRAFT's exact best-of-n target."""

from __future__ import annotations

import pytest
import torch

from pgraft.core.ddpo import DDPOOptions, advantages, ddpo_iter, gaussian_log_prob, rollout_iter
from pgraft.core.events import drain
from pgraft.core.sampling import sample, sample_seeds
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundRunner, run_to_end
from pgraft.registry import load_model

SMALL = dict(model="toy2d", reward="x", samples=512, preview=16, num_inference_steps=20, batch_size=128)


@pytest.fixture(scope="module")
def toy():
    return load_model("toy2d", device="cpu")


def test_the_step_log_probability_is_the_gaussian_density_of_diffusers_ddim_step(toy):
    process = toy.process
    scheduler = process.make_scheduler(20)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=gen)
    noise = torch.randn(64, 2, generator=gen)
    t = scheduler.timesteps[5]
    with torch.no_grad():
        out = toy(x, t.expand(64), None)
        mean, std = process.transition(scheduler, out, t.expand(64), x, 1.0)
        stepped = scheduler.step(out, t, x, eta=1.0, variance_noise=noise).prev_sample
    prev_t = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    assert float(std.flatten()[0]) == pytest.approx(float(scheduler._get_variance(t, prev_t)) ** 0.5, rel=1e-6)
    x_next = mean + std * noise
    torch.testing.assert_close(x_next, stepped, rtol=1e-5, atol=1e-6)
    expected = torch.distributions.Normal(mean.double(), std.double().expand_as(mean)).log_prob(x_next.double())
    torch.testing.assert_close(gaussian_log_prob(x_next, mean, std), expected.mean(dim=1))


def test_a_rollout_draws_the_samples_the_sampler_draws_and_scores_its_steps(toy):
    seeds = sample_seeds(0, 1, 40)
    rollout = drain(rollout_iter(toy, seeds, 20, 1.0))
    torch.testing.assert_close(rollout.samples, sample(toy, seeds, 20, eta=1.0).samples, rtol=1e-5, atol=1e-6)
    assert rollout.states.shape == (40, 21, 2) and rollout.log_probs.shape == (40, 20)
    # the last DDIM step lands on x̂_0 (alpha 1): deterministic, no likelihood, not trained
    assert rollout.trainable[:-1].all() and not rollout.trainable[-1]
    assert torch.isfinite(rollout.log_probs).all()


def _update(toy, adv_value=None, clip=0.2):
    seeds = sample_seeds(0, 1, 64)
    rollout = drain(rollout_iter(toy, seeds, 10, 1.0))
    rewards = rollout.samples[:, 0]
    groups = torch.zeros(64, dtype=torch.long)
    adv = advantages(rewards, groups, 5.0) if adv_value is None else torch.full((64,), adv_value)
    model = toy.trainable_copy(seed=0)
    before = [p.detach().clone() for p in model.trainable_parameters()]
    drain(ddpo_iter(model, rollout, adv.double(), DDPOOptions(clip_range=clip, batch_size=16, lr=1e-3), seed=0))
    return max(float((p.detach() - b).abs().max()) for p, b in zip(model.trainable_parameters(), before, strict=True))


def test_zero_advantages_or_a_zero_clip_range_leave_the_model_unchanged(toy):
    assert _update(toy, adv_value=0.0) == 0.0
    assert _update(toy, clip=0.0) == 0.0
    assert _update(toy) > 1e-4  # and the same update with real advantages moves it


def test_advantages_are_standardised_per_prompt_and_clipped():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 10.0, 40.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    adv = advantages(rewards, groups, clip=1.0)
    assert adv[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)  # clipped at ±1 (raw ±1.22)
    assert float(adv[3:].mean()) == pytest.approx(-1 / 3 + 0.0, abs=0.5)
    assert float(adv.abs().max()) <= 1.0


def test_ddpo_raises_the_reward_on_the_toy_and_its_budget_columns_add_up():
    cfg = RunConfig(**SMALL, method="ddpo", rounds=2, ddpo_lr=1e-3, ddpo_clip_range=0.2)
    metrics = [r.metrics for r in run_to_end(RoundRunner(cfg))]
    rewards = [m["reward_mean"] for m in metrics]
    assert rewards[2] > rewards[0] + 1.0, rewards
    rows = 512 + 16
    for i, m in enumerate(metrics):
        assert m["samples_drawn"] == m["reward_calls"] == rows and m["nfe_sampling"] == rows * 20
        assert m["reward_calls_total"] == rows * (i + 1)
        assert m["nfe_train_forward"] == m["nfe_train_backward"] == (0 if i == 0 else 512 * 19)  # 19 random steps
    assert metrics[2]["nfe_total"] == 3 * rows * 20 + 2 * 2 * 512 * 19
    graft = RunConfig(**SMALL, rounds=1, finetune_steps=30)
    m = run_to_end(RoundRunner(graft))[-1].metrics
    assert m["nfe_train_forward"] == 30 * 128 and m["nfe_total"] == 2 * rows * 100 // 5 + 2 * 30 * 128


def test_ddpo_refuses_a_deterministic_sampler():
    with pytest.raises(ValueError, match=r"--eta: 0\.0 is invalid; --method ddpo needs a stochastic sampler"):
        RunConfig(**SMALL, method="ddpo", sampler="ddim", eta=0.0)
    with pytest.raises(ValueError, match="--ddpo-timestep-fraction"):
        RunConfig(**SMALL, method="ddpo", ddpo_timestep_fraction=0.0)
    with pytest.raises(ValueError, match="--method bon-sampling keeps the best of --n draws"):
        RunConfig(**SMALL, method="bon-sampling", rule="quantile", quantile=0.75)


def test_best_of_n_sampling_delivers_graft_s_exact_best_of_n_target():
    import numpy as np

    cfg = RunConfig(model="toy2d-exact", dataset="asymmetric", reward="x", method="bon-sampling", rule="best-of-n",
                    n=4, samples=8192, preview=0, rounds=1, num_inference_steps=100)  # fmt: skip
    runner = RoundRunner(cfg)
    results = run_to_end(runner)
    chain = runner.setup.evaluator.chain
    for r in results:  # every round: fresh base draws, the best of each 4 delivered
        assert r.metrics["delivered"] == 2048 and r.metrics["reward_calls_per_delivered"] == 4
        assert r.metrics["ks_to_target"] < 1.63 / np.sqrt(2048) + 0.01
        assert r.metrics["target_reward"] == pytest.approx(chain.expected_reward(1))
    assert results[1].metrics["nfe_train_forward"] == 0
    assert results[1].metrics["reward_mean"] == pytest.approx(results[0].metrics["reward_mean"], abs=0.1)


def test_no_seeds_call_no_network(toy, monkeypatch):
    """A round with no preview (`--preview 0`) samples nothing for it: the digits UNet refuses an empty batch,
    and DDPO's preview once crashed on it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was called for no samples")

    monkeypatch.setattr(type(toy), "__call__", refuse)
    empty = torch.zeros(0, dtype=torch.long)
    assert sample(toy, empty, 10, eta=1.0).samples.shape == (0, 2)
    assert drain(rollout_iter(toy, empty, 10, 1.0)).states.shape == (0, 11, 2)
