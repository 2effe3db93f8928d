"""Bias–variance across cutoffs (docs/method.md §3): the per-sample DDIM step, the nested sampler, the
estimators against known groups and against the toy's exact curves, and the refusal of deterministic
continuations.

Discretisation: the estimates are those of the model's own sampler, DDPM ancestral on the grid, whose
reverse steps drop the posterior-mean uncertainty term and so under-state `V` at small `t`. Measured on
`toy2d-exact` (ring8, reward x, continuations from exact states, linear schedule), `V̂ / V` was 0.68 at
t = 0.1 and 0.81 at t = 0.2 with 100 steps, but 0.92 at t = 0.1, 0.97 at t = 0.2 and within 2 % from
t = 0.3 with 1,000 steps. The agreement tests therefore use the full 1,000-step grid and cutoffs from
0.15 up, where the error is a few per cent against bands of ±15–25 %.
"""

import math

import numpy as np
import pytest
import torch

from pgraft.core.process import VPProcess, ddim_step_per_sample
from pgraft.core.sampling import sample, sample_seeds
from pgraft.graft.config import RunConfig
from pgraft.studies.bias_variance.continuations import (
    PREFIX_STREAM,
    LevelSamples,
    nested_samples_iter,
)
from pgraft.studies.bias_variance.curves import (
    CurveCancelled,
    CurvePoint,
    CurveSpec,
    acceptance_probabilities,
    curve_iter,
    estimate,
    grid_levels,
    mid_rank_quantiles,
    run_curves,
)
from pgraft.studies.bias_variance.study import attach_exact, exact_table, study_setup


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize(("steps", "eta"), [(100, 1.0), (40, 1.0), (1000, 1.0), (50, 0.5)])
def test_per_sample_step_equals_diffusers_step(prediction_type, steps, eta):
    """Every row of the vectorised step equals diffusers' `DDIMScheduler.step` at that row's timestep."""
    scheduler = VPProcess(prediction_type=prediction_type, beta_schedule="linear").make_scheduler(steps)
    gen = torch.Generator().manual_seed(steps)
    x, out, z = (torch.randn(96, 2, 3, generator=gen) for _ in range(3))
    t = scheduler.timesteps[torch.randint(0, len(scheduler.timesteps), (96,), generator=gen)]
    got = ddim_step_per_sample(scheduler, out, t, x, eta, z)
    for i in range(96):
        expected = scheduler.step(out[i : i + 1], t[i], x[i : i + 1], eta=eta, variance_noise=z[i : i + 1])
        torch.testing.assert_close(got[i : i + 1], expected.prev_sample, rtol=1e-6, atol=1e-6)


def test_prefix_states_are_the_samplers_handoff_states_and_levels_are_independent(exact_ring):
    """One prefix feeds every level: its states are `sample(...).x_cut` for the same seeds, and a level's
    continuations do not change when other levels are batched with it."""
    levels = grid_levels(exact_ring.process, 40, [0.3, 0.7])
    both = {ev.k: ev for ev in nested_samples_iter(exact_ring, levels, 16, 3, 40, 0) if isinstance(ev, LevelSamples)}
    alone = [ev for ev in nested_samples_iter(exact_ring, levels[:1], 16, 3, 40, 0) if isinstance(ev, LevelSamples)]
    for cutoff, k in zip([0.3, 0.7], levels):
        traj = sample(exact_ring, sample_seeds(0, PREFIX_STREAM, 16), 40, eta=1.0, cutoff=cutoff)
        torch.testing.assert_close(both[k].states, traj.x_cut)
    torch.testing.assert_close(alone[0].samples, both[levels[0]].samples, rtol=1e-5, atol=1e-5)
    assert both[levels[0]].samples.shape == (16, 3, 2)
    assert not torch.allclose(both[levels[0]].samples[:, 0], both[levels[0]].samples[:, 1])  # R draws differ


def test_estimators_recover_known_variances_and_tilt():
    """Groups with known structure: r = μ_i + ε, μ ~ N(0, b), ε ~ N(0, v); a ~ Bernoulli(h_i), h_i ∈ {.2, .8}."""
    rng = np.random.default_rng(0)
    m, b, v = 4000, 2.0, 0.5
    rewards = rng.normal(0, math.sqrt(b), (m, 1)) + rng.normal(0, math.sqrt(v), (m, 2))
    est = estimate(rewards, np.ones((m, 2)), bootstrap=400)
    assert est["V_lo"] <= v <= est["V_hi"] and est["B_lo"] <= b <= est["B_hi"]
    assert not est["B_lo"] <= b + v / 2 <= est["B_hi"]  # what B̂ would estimate without the − V/R term
    assert est["R2"] == pytest.approx(b / (b + v), abs=0.03)
    r = 16  # the second-order correction needs R large enough that ĥ_i is rarely far from h_i
    h = np.where(rng.random(m) < 0.5, 0.2, 0.8)
    accept = (rng.random((m, r)) < h[:, None]).astype(float)
    est = estimate(rng.random((m, r)), accept, bootstrap=400)
    w = h / h.mean()
    d_true = float(np.mean(w * np.log(w)))  # ≈ 0.195
    assert est["D_lo"] <= d_true <= est["D_hi"]
    assert est["D_plugin"] > est["D_hi"]  # the plug-in is biased up ...
    flat = estimate(rng.random((m, r)), (rng.random((m, r)) < 0.5).astype(float), bootstrap=400)
    assert flat["D_plugin"] > 0.02 and abs(flat["D"]) < 0.004  # ... and positive where the true D is 0


def test_mid_rank_quantiles_and_acceptance_per_prompt():
    r = np.array([[1.0, 2.0], [2.0, 4.0]])
    np.testing.assert_allclose(mid_rank_quantiles(r), [[0.125, 0.5], [0.5, 0.875]])
    from pgraft.core.acceptance import BestOfN

    strata = np.array([0, 1])
    a = acceptance_probabilities(BestOfN(2), np.array([[1.0, 3.0], [10.0, 20.0]]), strata)
    np.testing.assert_allclose(a, [[0.25, 0.75], [0.25, 0.75]])  # each prompt ranks in its own law


def _agreement(cutoffs, states, continuations, steps=1000, seed=0, model="toy2d-exact"):
    cfg = RunConfig(model=model, reward="x", rule="best-of-n", n=4, num_inference_steps=steps, seed=seed)
    setup = study_setup(cfg)
    level = 1 - 0.05 / (3 * len(cutoffs))  # simultaneous 95 % over V, B and D at every cutoff (Bonferroni)
    table = run_curves(setup, CurveSpec(tuple(cutoffs), states, continuations, bootstrap=4000, level=level))
    exact = exact_table(setup, list(table["timestep"]))
    rows = [attach_exact(r, exact) for r in table.to_dict("records")]
    for row in rows:
        for q in ("V", "B", "D"):
            assert row[f"{q}_lo"] <= row[f"{q}_exact"] <= row[f"{q}_hi"], (row["cutoff"], q, row)
    for prev, nxt in zip(rows, rows[1:]):
        assert nxt["V"] >= prev["V_lo"], (prev, nxt)  # V non-decreasing up to noise
        assert nxt["R2"] <= prev["R2_hi"], (prev, nxt)  # R² non-increasing up to noise
    return rows


def test_estimates_agree_with_exact_curves_on_the_exact_toy():
    rows = _agreement([0.15, 0.25, 0.35, 0.45], states=256, continuations=4)
    assert rows[-1]["V"] > 10 * rows[0]["V"] and rows[-1]["D"] < rows[0]["D"]  # the curves really move


def test_estimates_agree_with_exact_curves_on_the_exact_toy_flow():
    """The flow's stochastic sampler (η = 1, `FlowProcess`) continues a state by the forward process's
    posterior, so V, B and D of its continuations are the exact ones of the flow interpolant."""
    rows = _agreement([0.15, 0.3, 0.45], states=256, continuations=4, model="toy2d-flow-exact")
    assert rows[-1]["V"] > 5 * rows[0]["V"]


@pytest.mark.slow
def test_estimates_agree_with_exact_curves_on_a_ten_point_grid():
    rows = _agreement([0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], states=512, continuations=8)
    assert rows[-1]["D_plugin"] > rows[-1]["D_hi"]  # where D is small the plug-in's bias shows


@pytest.mark.parametrize(
    ("changes", "flag"),
    [({"sampler": "ddim", "eta": 0.0}, "--eta"), ({"sampler": "ddim", "eta": 0.5}, "--eta")],
)
@pytest.mark.parametrize("model", ["toy2d-exact", "toy2d-flow-exact"])
def test_deterministic_continuation_is_refused(changes, flag, model):
    cfg = RunConfig(model=model, reward="x", **changes)
    with pytest.raises(ValueError, match=flag) as info:
        study_setup(cfg)
    assert "V(t)" in str(info.value) and ("deterministic" in str(info.value) or "no stochastic" in str(info.value))
    setup = study_setup(RunConfig(model=model, reward="x"))
    bad = type(setup)(**{**setup.__dict__, "config": cfg})  # the estimator itself refuses too
    with pytest.raises(ValueError, match=flag):
        next(curve_iter(bad, CurveSpec((0.5,))))


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"cutoffs": ()}, "--cutoffs"),
        ({"cutoffs": (0.0,)}, "--cutoffs"),
        ({"cutoffs": (0.5, 1.0)}, "--cutoffs"),
        ({"cutoffs": (0.5,), "states": 1}, "--states"),
        ({"cutoffs": (0.5,), "continuations": 1}, "--continuations"),
        ({"cutoffs": (0.5,), "level": 1.0}, "--level"),
    ],
)
def test_curve_spec_validation_names_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        CurveSpec(**kwargs)


def test_cutoff_below_the_grid_is_refused(exact_ring):
    with pytest.raises(ValueError, match=r"--cutoffs: 0\.001 lies below every step"):
        grid_levels(exact_ring.process, 20, [0.001])


def test_curves_stream_nearest_the_data_first_and_stop(exact_ring):
    setup = study_setup(RunConfig(model="toy2d-exact", reward="x", num_inference_steps=20))
    events = list(curve_iter(setup, CurveSpec((0.8, 0.2, 0.5), 8, 2, bootstrap=20)))
    points = [ev.row["cutoff"] for ev in events if isinstance(ev, CurvePoint)]
    assert points == [0.2, 0.5, 0.8]  # fewest steps left first
    calls = iter(range(10**6))
    stopped = list(curve_iter(setup, CurveSpec((0.2, 0.8), 8, 2, bootstrap=20), lambda: next(calls) > 20))
    assert isinstance(stopped[-1], CurveCancelled) and list(stopped[-1].table["cutoff"]) == [0.2]


class CondRecorder(torch.nn.Module):
    """Wraps a network and records the inputs of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, t, cond=None):
        self.calls.append((x.clone(), t.clone(), None if cond is None else cond.clone()))
        return self.inner(x, t, None)


def test_continuations_carry_their_states_conditioning_and_timesteps(exact_ring):
    """Per-sample timesteps and conditioning in the batched continuations: every row is evaluated at its own
    level's grid timestep, with the conditioning of the state it continues."""
    from pgraft.families.small import DiffusionModel

    rec = CondRecorder(exact_ring.network)
    model = DiffusionModel(rec, exact_ring.process, (2,), "rec", "toy2d", conditional=True)
    grid = exact_ring.process.make_scheduler(20).timesteps
    levels = grid_levels(exact_ring.process, 20, [0.3, 0.7])
    cond = torch.tensor([5, 6, 7])
    out = {ev.k: ev for ev in nested_samples_iter(model, levels, 3, 2, 20, 0, cond) if isinstance(ev, LevelSamples)}
    first = next(i for i, (x, _, _) in enumerate(rec.calls) if len(x) == 3 * 2 * 2)  # all levels active
    x, t, c = rec.calls[first]
    for j, k in enumerate(sorted(levels, reverse=True)):  # fewest steps left first
        block = slice(6 * j, 6 * (j + 1))
        torch.testing.assert_close(x[block], out[k].states.repeat_interleave(2, 0))
        assert torch.equal(t[block], grid[k].expand(6)) and torch.equal(c[block], cond.repeat_interleave(2))
