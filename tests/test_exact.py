"""Exact targets on the grid against the hand-worked 1-D example of docs/method.md §3, and the P-GRAFT blur."""

import math

import numpy as np
import pytest
import torch

from pgraft.core.acceptance import BestOfN, Quantile
from pgraft.domains.toy2d.exact import ExactChain
from pgraft.domains.toy2d.mixture import GaussianMixture
from pgraft.rewards import Reward


def one_d_example() -> GaussianMixture:
    """The 1-D mixture of method.md §3 in x, an independent N(0, 1) in y."""
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = torch.tensor([[-2.0, 0.0], [0.5, 0.0], [2.5, 0.0]], dtype=torch.float64)
    stds = torch.tensor([[0.5, 1.0], [0.4, 1.0], [0.3, 1.0]], dtype=torch.float64)
    return GaussianMixture(w, means, stds)


X_REWARD = Reward("x", "toy2d", lambda x: x[:, 0].double())


def test_hand_worked_example_graft_target():
    chain = ExactChain(one_d_example(), X_REWARD, BestOfN(4))
    base, target = chain.target(0), chain.target(1)
    r = chain.rewards
    assert (base * r).sum() == pytest.approx(-0.350, abs=2e-3)
    assert (base * r**2).sum() - (base * r).sum() ** 2 == pytest.approx(3.393, abs=5e-3)
    assert chain.expected_reward(1) == pytest.approx(1.642, abs=3e-3)
    kl = float(np.sum(np.where(target > 0, target * np.log(target / base), 0.0)))
    assert kl == pytest.approx(math.log(4) - 3 / 4, abs=3e-3)


def test_rounds_compound_like_best_of_n_powers():
    """Two rounds of best-of-2 under perfect learning: the law with CDF F^4, i.e. best-of-4."""
    two = ExactChain(one_d_example(), X_REWARD, BestOfN(2))
    four = ExactChain(one_d_example(), X_REWARD, BestOfN(4))
    assert two.expected_reward(2) == pytest.approx(four.expected_reward(1), abs=3e-3)


def test_pgraft_target_moves_from_graft_to_base_as_cutoff_rises():
    mix = one_d_example()
    graft = ExactChain(mix, X_REWARD, BestOfN(4)).expected_reward(1)
    values = [
        ExactChain(mix, X_REWARD, BestOfN(4), noise_to_signal=s).expected_reward(1) for s in (0.02, 0.3, 1.0, 3.0, 30.0)
    ]
    assert values[0] == pytest.approx(graft, abs=5e-3)  # tiny blur: GRAFT
    assert all(a > b for a, b in zip(values, values[1:]))  # smoothing only loses reward
    assert values[-1] == pytest.approx(-0.350, abs=0.05)  # pure noise: the base


def test_handoff_law_matches_monte_carlo():
    """Accepted handoff states y = x_c / a_c follow p̄_c h_c: check the mean of x against sampling."""
    mix, s = one_d_example(), 0.8
    rule = Quantile(0.75)
    chain = ExactChain(mix, X_REWARD, rule, noise_to_signal=s)
    a = rule.acceptance(
        __import__("pgraft.domains.toy2d.exact", fromlist=["quantiles_of"]).quantiles_of(chain.base, chain.rewards),
        chain.rewards,
    )
    field = chain.blur.forward(chain.base * a)
    ys = np.linspace(chain.grid.xs[0] - 5 * s, chain.grid.xs[-1] + 5 * s, field.shape[0])
    exact_mean = float((field.sum(1) * ys).sum() / field.sum())
    gen = torch.Generator().manual_seed(0)
    x0 = mix.sample(400000, gen)
    y = x0 + s * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    keep = x0[:, 0] >= torch.quantile(x0[:, 0], 0.75)
    assert float(y[keep, 0].mean()) == pytest.approx(exact_mean, abs=0.01)


def test_samples_from_target_are_close_to_it():
    chain = ExactChain(one_d_example(), X_REWARD, BestOfN(4))
    x = chain.sample(1, 20000, torch.Generator().manual_seed(0))
    rewards = x[:, 0]
    assert chain.reward_cdf_distance(1, rewards) < 0.015
    assert chain.total_variation(1, x) < 0.05
    assert chain.reward_cdf_distance(0, rewards) > 0.3  # and far from the base
