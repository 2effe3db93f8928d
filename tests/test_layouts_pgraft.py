"""P-GRAFT for the x₀-predicting layouts model (pgraft/domains/layouts/targets.py): the intermediate anchoring's
target checked against the ε-form of docs/method.md on an exact 1-D toy, the base-prediction alternative
shown biased by the predicted amount, and a P-GRAFT round on the shipped model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgraft.core.finetune import training_example
from pgraft.core.process import VPProcess
from pgraft.domains.layouts.models import X0Process
from pgraft.domains.layouts.targets import exact_targets


def _coefficients(process: X0Process, timestep: float) -> tuple[float, float]:
    a, s = process.coefficients(torch.tensor([timestep]))
    return float(a), float(s)


@pytest.mark.parametrize("cutoff, timestep", [(200, 400), (400, 600), (600, 800)])
def test_the_base_prediction_target_is_off_by_the_tilt_and_the_eps_form_is_not(cutoff, timestep):
    process = X0Process()
    targets = exact_targets(*_coefficients(process, cutoff), *_coefficients(process, timestep), threshold=1.0)
    w = targets.density / targets.density.sum()
    assert float((w * (targets.eps_form - targets.tweedie).abs()).sum()) < 1e-10
    base_error = targets.tweedie - targets.base_prediction
    # The derived gap (σ_c²/a_c) E[∇log h | x_t] explains the whole difference ...
    assert float((w * (base_error - targets.gap).abs()).sum()) < 1e-4
    # ... and it is not small: 0.05, 0.29, 0.86 in data units (the modes sit at -2, 0.5 and 2.5).
    assert float((w * base_error.abs()).sum()) > 0.04
    flat = exact_targets(*_coefficients(process, cutoff), *_coefficients(process, timestep), threshold=None)
    wf = flat.density / flat.density.sum()
    assert float((wf * (flat.tweedie - flat.base_prediction).abs()).sum()) < 1e-8  # no tilt: they agree


def test_the_cores_training_target_for_the_x0_model_has_the_tweedie_mean():
    """Monte Carlo through `core.finetune.training_example`: tilted handoff states x_c, the kernel to x_t, the
    X0Process target; its mean in bins of x_t is the x₀ output the sampler needs, and it equals the ε-form
    target of an ε-model on the same schedule converted to x₀."""
    process = X0Process()
    cutoff, timestep = 400.0, 600.0
    exact = exact_targets(*_coefficients(process, cutoff), *_coefficients(process, timestep), threshold=1.0)
    gen = torch.Generator().manual_seed(0)
    # Tilted handoff states: draw x_c on a fine grid from p̃_c = p̄_c h (recomputed as in exact_targets).
    a_c, s_c = _coefficients(process, cutoff)
    x0 = torch.linspace(-6, 6, 1601, dtype=torch.float64)
    p0 = sum(
        w * torch.exp(-0.5 * ((x0 - m) / s) ** 2) / s
        for w, m, s in zip((0.5, 0.3, 0.2), (-2, 0.5, 2.5), (0.5, 0.4, 0.3))
    )
    chosen = torch.multinomial((p0 * (x0 >= 1.0)).float(), 200_000, replacement=True, generator=gen)
    x_c = (a_c * x0[chosen] + s_c * torch.randn(200_000, generator=gen, dtype=torch.float64))[:, None]
    t = torch.full((len(x_c),), timestep)
    noise = torch.randn(x_c.shape, generator=gen, dtype=torch.float64)
    x_t, target, weight = training_example(process, x_c, t, noise, anchor_timestep=cutoff)
    eps_t, eps_target, _ = training_example(VPProcess(beta_schedule="squaredcos_cap_v2"), x_c, t, noise, cutoff)
    a_t, s_t = _coefficients(process, timestep)
    assert torch.allclose(x_t, eps_t)
    assert torch.allclose(target, (x_t - s_t * eps_target) / a_t, atol=1e-8)
    assert float(weight.max()) <= 1.0
    bins = torch.linspace(-1.5, 2.5, 17, dtype=torch.float64)
    index = torch.bucketize(x_t.squeeze(1), bins)
    errors = []
    for b in range(1, len(bins)):
        rows = index == b
        if int(rows.sum()) < 2000:
            continue
        centre = float(x_t.squeeze(1)[rows].mean())
        want = float(np.interp(centre, exact.x_t.numpy(), exact.tweedie.numpy()))
        base = float(np.interp(centre, exact.x_t.numpy(), exact.base_prediction.numpy()))
        errors.append((abs(float(target[rows].mean()) - want), abs(base - want)))
    assert len(errors) >= 6
    assert max(e for e, _ in errors) < 0.05  # Monte Carlo and binning error only
    assert max(b for _, b in errors) > 0.2  # the base-prediction target is visibly elsewhere


@pytest.mark.slow
def test_a_pgraft_round_raises_title_at_top_with_the_element_count_held(tmp_path):
    from pgraft.graft.config import RunConfig
    from pgraft.graft.runner import RoundRunner, run_to_end

    config = RunConfig(
        model="layouts",
        reward="title-at-top",
        method="pgraft",
        cutoff=0.2,
        rule="threshold",
        threshold=1.0,
        samples=512,
        preview=8,
        rounds=1,
        num_inference_steps=25,
        finetune_steps=150,
        batch_size=64,
        lr=3e-4,
        seed=3,
    )
    rounds = run_to_end(RoundRunner(config, out=tmp_path / "run"))
    before, after = rounds[0].metrics, rounds[1].metrics
    assert after["reward_mean"] > before["reward_mean"] + 0.15
    assert abs(after["elements"] - before["elements"]) < 1.0
    assert (tmp_path / "run" / "round_001" / "preview.png").exists() or any((tmp_path / "run").rglob("preview.png"))
