"""Acceptance laws against docs/method.md §1, on many simulated draws."""

import math

import numpy as np
import pytest
import torch

from pgraft.core.acceptance import (
    BestOfN,
    DedupTopK,
    Quantile,
    Soft,
    Threshold,
    TopK,
    apply_rule,
    implied_kl,
    make_rule,
)


def _accepted_quantiles(rule, group_size, groups, seed=0):
    """Draw uniform rewards (so a reward equals its own quantile u) in many groups and keep the accepted."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(groups * group_size, generator=gen, dtype=torch.float64)
    g = torch.arange(groups).repeat_interleave(group_size)
    mask = apply_rule(rule, u, g, gen)
    return u, mask


def _ks_uniform_transform(values, cdf):
    """KS statistic of values against a known CDF."""
    x = np.sort(cdf(np.asarray(values)))
    n = len(x)
    return max(np.max(np.arange(1, n + 1) / n - x), np.max(x - np.arange(n) / n))


def test_best_of_n_density_is_n_u_pow_n_minus_1():
    n = 4
    u, mask = _accepted_quantiles(BestOfN(n), n, 20000)
    _u2, mask2 = _accepted_quantiles(BestOfN(n), n * 20000, 1)
    assert torch.equal(mask, mask2)  # grouping by n in draw order = one big group
    acc = u[mask].numpy()
    assert mask.sum() == 20000
    # density n u^(n-1)  <=>  CDF u^n
    assert _ks_uniform_transform(acc, lambda x: x**n) < 1.63 / math.sqrt(len(acc))  # KS 1 % level
    # and a wrong law is rejected by the same check
    assert _ks_uniform_transform(acc, lambda x: x ** (n - 1)) > 5 / math.sqrt(len(acc))


def test_best_of_n_kl_closed_form_and_numeric():
    rule = BestOfN(4)
    assert rule.kl_exact() == pytest.approx(math.log(4) - 3 / 4)
    assert rule.kl_exact() == pytest.approx(0.636, abs=5e-4)
    u = (np.arange(200000) + 0.5) / 200000
    assert implied_kl(rule, u, u) == pytest.approx(rule.kl_exact(), abs=1e-4)
    # Monte Carlo: KL = E_accepted[log(n u^(n-1))]
    uu, mask = _accepted_quantiles(rule, 4, 50000, seed=1)
    mc = float(np.mean(np.log(4 * uu[mask].numpy() ** 3)))
    assert mc == pytest.approx(rule.kl_exact(), abs=0.02)


def test_top_k_of_n_matches_binomial_acceptance():
    k, n = 3, 10
    rule = TopK(k, n)
    u, mask = _accepted_quantiles(rule, n, 20000, seed=2)
    assert int(mask.sum()) == 3 * 20000
    # acceptance probability per quantile bin against P[Bin(N-1, 1-u) <= K-1]
    bins = np.linspace(0, 1, 21)
    idx = np.digitize(u.numpy(), bins) - 1
    centers = (bins[:-1] + bins[1:]) / 2
    measured = np.array([mask.numpy()[idx == b].mean() for b in range(20)])
    expected = np.array([rule.acceptance(np.linspace(lo, hi, 101), None).mean() for lo, hi in zip(bins[:-1], bins[1:])])
    assert np.max(np.abs(measured - expected)) < 0.02, (centers, measured, expected)
    # the acceptance integrates to K/N
    uu = (np.arange(100000) + 0.5) / 100000
    assert rule.acceptance(uu, uu).mean() == pytest.approx(k / n, abs=1e-4)


def test_soft_rule_accepts_proportionally_to_exp_r_over_beta():
    beta = 2.0
    gen = torch.Generator().manual_seed(3)
    r = torch.randn(400000, generator=gen, dtype=torch.float64)
    mask = Soft(beta).select(r, gen)
    acc = r[mask].numpy()
    # p̄ = N(0, 1) tilted by exp(r / beta) is N(1 / beta, 1)
    assert acc.mean() == pytest.approx(1 / beta, abs=0.03)
    assert acc.std() == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize(
    "rule", [BestOfN(4), TopK(5, 64), Quantile(0.8), DedupTopK(5, 64, key=lambda x: list(range(len(x))))]
)
def test_rank_rules_are_invariant_under_monotone_transforms(rule):
    gen = torch.Generator().manual_seed(4)
    r = torch.randn(64 * 50, generator=gen, dtype=torch.float64)
    groups = torch.arange(50).repeat_interleave(64)
    samples = torch.arange(len(r)).double()[:, None]
    a = apply_rule(rule, r, groups, torch.Generator().manual_seed(0), samples)
    b = apply_rule(rule, torch.exp(3 * r) + 7, groups, torch.Generator().manual_seed(0), samples)
    assert torch.equal(a, b)
    assert a.any()


def test_threshold_and_quantile_select_what_they_say():
    r = torch.arange(100, dtype=torch.float64)
    assert Threshold(90.0).select(r).sum() == 10
    assert Quantile(0.9).select(r).sum() == 10
    assert Quantile(0.75).kl_exact() == pytest.approx(math.log(4))


def test_dedup_top_k_skips_duplicates_by_key():
    samples = torch.tensor([[0.0], [0.0], [1.0], [2.0], [2.0]])
    rewards = torch.tensor([5.0, 4.9, 1.0, 3.0, 2.9], dtype=torch.float64)
    rule = DedupTopK(3, 5, key=lambda x: [float(v) for v in x[:, 0]])
    mask = apply_rule(rule, rewards, samples=samples)
    assert mask.tolist() == [True, False, True, True, False]


def test_make_rule_names_missing_parameter():
    with pytest.raises(ValueError, match="--beta"):
        make_rule("soft")
    with pytest.raises(ValueError, match="unknown 'nope'"):
        make_rule("nope")
