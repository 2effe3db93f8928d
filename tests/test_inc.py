"""Inverse noise correction (docs/method.md §4): inversion, noise diagnostics, correction flow, FLOPs, pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pgraft.core.process import FlowProcess
from pgraft.core.sampling import sample, sample_seeds, seeded_noise
from pgraft.domains.toy2d.quality import ToyQuality
from pgraft.families.small import DiffusionModel
from pgraft.inc.correction import CorrectionConfig, CorrectionFlow, corrected_sample, interpolant, train_correction
from pgraft.inc.diagnostics import diagnose, gaussian_kernel, median_bandwidth, mmd2_unbiased, mmd_test
from pgraft.inc.flops import forward_flops
from pgraft.inc.inversion import Inversion, InversionError, euler_sample, flow_grid, invert

TOL = 1e-5
# The settings of the correction in the quality tests: 600 steps at lr 1e-2 reach most of the gain of
# 1,500 (measured: -5.97 vs -5.91 log-likelihood at K=8, m=2 on the under-trained flow) in a third of the time.
FAST_CORRECTION = CorrectionConfig(train_steps=600, lr=1e-2, seed=0)


class LinearVelocity(nn.Module):
    """`v(x, t) = c x`: the step map is linear, so the inverse of every Euler step is known in closed form."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the module a device

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.c * x


def linear_flow(c: float) -> DiffusionModel:
    return DiffusionModel(LinearVelocity(c), FlowProcess(), (2,), f"linear-{c}", "toy2d").frozen()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # type: ignore[no-untyped-def]
    """These tensors are tiny (2-D points, small MLPs): a second thread only adds synchronisation, which on a
    busy 2-core machine made one inversion 20x slower (29 s instead of 1.4 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def learned_flow() -> DiffusionModel:
    from pgraft.registry import load_model

    return load_model("toy2d-flow", dataset="ring8")


@pytest.fixture(scope="module")
def undertrained() -> DiffusionModel:
    from pgraft.registry import load_model

    return load_model("toy2d-flow", dataset="ring8", train_steps=300)


@pytest.fixture(scope="module")
def undertrained_correction(undertrained: DiffusionModel) -> tuple[ToyQuality, Inversion, CorrectionFlow]:
    quality = ToyQuality(undertrained, seed=0)
    inversion = invert(undertrained, quality.real_data(1000), 8)
    return quality, inversion, train_correction(inversion.kept, FAST_CORRECTION)


# --- FLOPs ---------------------------------------------------------------------------------------------
def test_flop_count_equals_hand_count_for_a_plain_mlp() -> None:
    mlp = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4))
    # A linear layer of a batch of one is a (1 × in) @ (in × out) product: 2 · in · out multiply-adds.
    assert forward_flops(mlp, torch.zeros(5, 3)) == 2 * (3 * 16 + 16 * 4)


def test_flop_count_of_the_correction_network_and_the_base_toy_mlp(learned_flow: DiffusionModel) -> None:
    d, h, time_features = 2, 64, 32
    flow = CorrectionFlow((d,), hidden=h)
    # Sinusoidal time features are not counted (no matmul); four linear layers are.
    hand = 2 * ((d + time_features) * h + 2 * h * h + h * d)
    assert forward_flops(flow, torch.zeros(7, d), torch.rand(7)) == hand
    base = forward_flops(learned_flow.network, torch.zeros(3, 2), torch.full((3,), 500.0))
    assert base == 2 * ((2 + 32) * 128 + 2 * 128 * 128 + 128 * 2)


# --- inversion ------------------------------------------------------------------------------------------
def test_euler_sampler_is_the_engine_sampler(learned_flow: DiffusionModel) -> None:
    seeds = sample_seeds(0, 5, 64)
    ours = corrected_sample(learned_flow, seeds, 12)
    engine = sample(learned_flow, seeds, 12, eta=0.0).samples  # the deterministic (Euler) engine sampler
    assert torch.equal(ours, engine)


def test_inverting_a_linear_velocity_matches_the_closed_form() -> None:
    model = linear_flow(2.0)
    x = torch.randn(50, 2)
    inv = invert(model, x, 6, tol=1e-7)
    _, sigmas = flow_grid(model, 6)
    # y_{k+1} = (1 + (σ_{k+1} − σ_k) c) y_k, so z = x / Π_k (1 + (σ_{k+1} − σ_k) c).
    factor = torch.prod(1 + (sigmas[1:] - sigmas[:-1]).double() * 2.0)
    torch.testing.assert_close(inv.noises.double(), x.double() / factor, atol=1e-5, rtol=1e-5)
    assert all(s.residual <= 1e-7 for s in inv.steps)
    # Fixed-point iteration contracts by η c per iteration: more iterations for the larger steps.
    big = max(inv.steps, key=lambda s: s.step_size)
    assert big.iterations > min(s.iterations for s in inv.steps)


def test_inversion_reproduces_real_data_to_the_tolerance(learned_flow: DiffusionModel) -> None:
    k = 16
    x = ToyQuality(learned_flow, seed=3).real_data(400)
    inv = invert(learned_flow, x, k, tol=TOL)
    assert not inv.failed.any()
    assert inv.max_residual <= TOL
    assert all(s.iterations >= 1 for s in inv.steps) and len(inv.steps) == k
    # Each step's residual is at most TOL; they add up over K steps (measured: max error 1.9 K TOL with
    # 2,000 points); an error in the grid (e.g. evaluating v at t_{k+1}) is of order 1e-2.
    err = (euler_sample(learned_flow, inv.noises, k) - x).abs().max()
    assert err <= 5 * k * TOL


@pytest.mark.parametrize("steps", [4, 8, 16])
def test_the_respaced_grids_are_the_closed_forms_between_the_same_end_points(steps: int) -> None:
    """`karras` is `(a + i/(n-1) (b - a))^7` with `a, b` the 7th roots of the linear grid's end points, and
    `exponential` is geometric between them; both end with a far shorter relative step than `linear`."""
    from pgraft.core.process import FLOW_GRIDS

    process = FlowProcess()
    model = DiffusionModel(LinearVelocity(0.0), process, (2,), "linear-0", "toy2d")
    linear = flow_grid(model, steps)[1].double()
    hi, lo = float(linear[0]), float(linear[-2])
    i = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    rho = 7.0
    closed = {
        "karras": (hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho,
        "exponential": torch.exp(math.log(hi) + i * (math.log(lo) - math.log(hi))),
    }
    assert set(FLOW_GRIDS) == {"linear", *closed}
    for grid, expected in closed.items():
        timesteps, sigmas = flow_grid(model, steps, grid)
        torch.testing.assert_close(sigmas[:-1].double(), expected, rtol=1e-5, atol=1e-6)
        assert float(sigmas[-1]) == 0.0 and len(timesteps) == steps
        torch.testing.assert_close(timesteps.double(), 1000 * sigmas[:-1].double(), rtol=1e-5, atol=1e-3)
        # the step onto the last point keeps a sizeable fraction of the state (linear K=8: 0.007)
        assert float(sigmas[-2] / sigmas[-3]) > 10 * float(linear[-2] / linear[-3])
    with pytest.raises(ValueError, match="--grid: 'cosine' is invalid; allowed: linear, karras, exponential"):
        process.make_scheduler(8, grid="cosine")


def test_every_real_digit_inverts_on_the_karras_grid_where_the_linear_grid_drops_most() -> None:
    """The shipped digits flow at K = 8, tol 1e-4: on the linear grid the step σ 0.144 -> 0.001 has no
    preimage for most real digits (measured 723 of 1,000 dropped), so no solver can invert them; on the
    karras grid every one inverts, and sampling again from the noises gives the digits back."""
    from pgraft.domains.digits.quality import DigitsQuality
    from pgraft.registry import load_model

    model = load_model("digits-flow")
    data = DigitsQuality(model, 0).real_data(24)
    linear = invert(model, data, 8, tol=1e-4, max_iter=400, on_failure="drop")
    assert int(linear.failed.sum()) > 12
    karras = invert(model, data, 8, tol=1e-4, max_iter=400, on_failure="drop", grid="karras")
    assert int(karras.failed.sum()) == 0 and karras.max_residual <= 1e-4
    back = euler_sample(model, karras.noises, 8, grid="karras")
    assert float((back - data).abs().max()) <= 8 * 1e-4  # the K per-step residuals, propagated
    # and the round trip needs the same grid: the linear sampler takes these noises elsewhere
    assert float((euler_sample(model, karras.noises, 8) - data).abs().max()) > 0.05


def test_a_step_too_large_for_the_velocity_fails_with_a_clear_message() -> None:
    # v = 10 x, K = 4: step sizes about 1/3, so η L ≈ 3.3 > 1 and fixed-point iteration diverges.
    with pytest.raises(InversionError) as err:
        invert(linear_flow(10.0), torch.randn(20, 2), 4, solver="fixed-point")
    message = str(err.value)
    # The grid is σ = 1, .667, .334, .001, 0; inversion runs last step first and the tiny step 3 contracts.
    assert "sampler step 2" in message and "step size 0.333" in message and "residual" in message
    assert "20 of 20 samples" in message


def test_a_stiff_learned_flow_with_too_few_steps_fails_or_drops(learned_flow: DiffusionModel) -> None:
    x = ToyQuality(learned_flow, seed=0).real_data(500)
    with pytest.raises(InversionError, match="does not contract at sampler step"):
        invert(learned_flow, x, 4, solver="fixed-point")
    inv = invert(learned_flow, x, 4, on_failure="drop", solver="fixed-point")
    assert 0 < int(inv.failed.sum()) < len(x)  # measured: 186 of these 500 fail at K = 4 (43 at K = 8)
    assert sum(s.failed for s in inv.steps) == int(inv.failed.sum())
    back = euler_sample(learned_flow, inv.kept, 4)
    assert (back - x[~inv.failed]).abs().max() <= 5 * 4 * TOL


# --- diagnostics ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["anderson", "auto"])
def test_anderson_inverts_where_fixed_point_iteration_diverges(solver: str) -> None:
    """v = 10 x at K = 4 (η L ≈ 3.3): fixed-point iteration diverges (the test above); Anderson acceleration,
    a secant method on the same map, solves every step to the tolerance, and G(z) = x follows."""
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    model = linear_flow(10.0)
    inv = invert(model, x, 4, tol=TOL, solver=solver)
    assert not inv.failed.any() and inv.max_residual <= TOL
    # the exact inverse of each Euler step y' = (1 + c dt) y is y = y' / (1 + c dt)
    _, sigmas = flow_grid(model, 4)
    expected = x.double()
    for k in reversed(range(4)):
        expected = expected / (1 + 10.0 * float(sigmas[k + 1] - sigmas[k]))
    torch.testing.assert_close(inv.noises.double(), expected, rtol=1e-4, atol=1e-4)
    assert (euler_sample(model, inv.noises, 4) - x).abs().max() <= 5 * 4 * TOL


def test_anderson_inverts_the_stiff_learned_flow_that_fixed_point_iteration_drops(learned_flow: DiffusionModel) -> None:
    x = ToyQuality(learned_flow, seed=0).real_data(500)
    old = invert(learned_flow, x, 4, on_failure="drop", solver="fixed-point")
    new = invert(learned_flow, x, 4, on_failure="drop")  # auto
    assert int(new.failed.sum()) < int(old.failed.sum()) // 4, (int(new.failed.sum()), int(old.failed.sum()))
    back = euler_sample(learned_flow, new.kept, 4)
    assert (back - x[~new.failed]).abs().max() <= 5 * 4 * TOL
    with pytest.raises(ValueError, match="--solver: 'newton' is invalid"):
        invert(learned_flow, x[:4], 4, solver="newton")


def test_vectorised_permutation_mmd_matches_the_direct_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 3, generator=gen), torch.randn(45, 3, generator=gen) + 0.3
    result = mmd_test(x, y, num_permutations=10, generator=gen)
    assert result.bandwidth == pytest.approx(median_bandwidth(torch.cat([x, y]).double()))
    assert result.mmd2 == pytest.approx(mmd2_unbiased(x, y, result.bandwidth), rel=1e-9)
    k = gaussian_kernel(x.double(), x.double(), result.bandwidth)
    assert float(k.diagonal().min()) == 1.0


def test_diagnostics_accept_normal_noise_and_reject_wrong_scale_and_shift() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(1000, 2, generator=gen)
    assert diagnose(z).passes(0.01)
    wide = diagnose(1.15 * z)
    assert wide.cov_pvalue < 1e-3 and wide.ks_pvalue < 1e-3 and not wide.passes(0.01)
    shifted = diagnose(z + 0.2)
    assert shifted.mean_pvalue < 1e-3 and not shifted.passes(0.01)
    assert diagnose(z).mean_error_null == pytest.approx(math.sqrt(2 / 1000))


# --- the correction flow --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["trig", "linear"])
def test_interpolant_velocity_is_the_time_derivative(path: str) -> None:
    z, eps, s = torch.randn(8, 3).double(), torch.randn(8, 3).double(), torch.rand(8, 1).double()
    h = 1e-6
    (x_plus, _), (x_minus, _) = interpolant(path, z, eps, s + h), interpolant(path, z, eps, s - h)
    x0, _ = interpolant(path, z, eps, torch.zeros_like(s))
    x1, _ = interpolant(path, z, eps, torch.ones_like(s))
    torch.testing.assert_close(interpolant(path, z, eps, s)[1], (x_plus - x_minus) / (2 * h), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x0, z)
    torch.testing.assert_close(x1, eps, atol=1e-12, rtol=1e-12)


def test_correction_save_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    flow = train_correction(torch.randn(200, 1, 2, 2) * 1.3, CorrectionConfig(train_steps=20, hidden=16))
    flow.save(tmp_path / "c.safetensors", {"note": "test"})
    back = CorrectionFlow.load(tmp_path / "c.safetensors")
    eps = torch.randn(5, 1, 2, 2)
    assert back.shape == (1, 2, 2) and back.path == "trig"
    assert torch.equal(back.sample(eps, 3), flow.sample(eps, 3))


def test_correction_beats_the_undertrained_flow_at_equal_flops(
    undertrained: DiffusionModel, undertrained_correction: tuple[ToyQuality, Inversion, CorrectionFlow]
) -> None:
    """Corrected K=8, m=2 against the base flow at K=10, which costs more FLOPs per image.

    Measured over seeds 0..4 (flow trained 300 steps; 1,000 real samples inverted; FAST_CORRECTION; 2,000
    samples scored): gain in exact log-likelihood 0.52, 0.53, 0.43, 0.67, 0.49 nats (base at K=10: -6.59
    for seed 0; at K=32, four times the FLOPs, still -6.14). The test asserts 0.2 on seed 0.
    """
    quality, _, flow = undertrained_correction
    base_flops = forward_flops(undertrained.network, torch.zeros(2, 2), torch.full((2,), 500.0))
    corr_flops = forward_flops(flow, torch.zeros(2, 2), torch.rand(2))
    assert 8 * base_flops + 2 * corr_flops <= 10 * base_flops
    seeds = sample_seeds(0, 11, 2000)
    base = quality.score(corrected_sample(undertrained, seeds, 10))["loglik"]
    corrected = quality.score(corrected_sample(undertrained, seeds, 8, flow, 2))["loglik"]
    assert corrected > base + 0.2


def test_exact_flow_gives_normal_noise_and_an_almost_identity_correction(
    undertrained_correction: tuple[ToyQuality, Inversion, CorrectionFlow],
) -> None:
    """With the exact velocity and K=64 (small Euler error) the inverted noises pass every normality check
    (measured over seeds 0..2 at n=1,000: smallest p-value 0.16) and the correction trained on them moves
    ε by 0.035-0.079 on average, against 0.22 for the under-trained flow."""
    from pgraft.registry import load_model

    exact = load_model("toy2d-flow-exact", dataset="ring8")
    inv = invert(exact, ToyQuality(exact, seed=0).real_data(1000), 64)
    assert not inv.failed.any()
    diag = diagnose(inv.kept, seed=0)
    assert diag.passes(0.01), diag
    flow = train_correction(inv.kept, FAST_CORRECTION)
    eps = seeded_noise(sample_seeds(0, 12, 500), (2,), 1)[:, 0]
    moved = float((flow.sample(eps, 2) - eps).norm(dim=1).mean())
    _, under_inversion, under_flow = undertrained_correction
    moved_undertrained = float((under_flow.sample(eps, 2) - eps).norm(dim=1).mean())
    assert moved < 0.1
    assert moved < 0.5 * moved_undertrained
    # The under-trained flow's noises fail the same checks: the checks can tell the two apart.
    assert not diagnose(under_inversion.kept, seed=0).passes(0.01)


# --- the pipeline, its files and the command line --------------------------------------------------------
def test_pipeline_rows_flops_and_files(tmp_path, learned_flow: DiffusionModel) -> None:  # type: ignore[no-untyped-def]
    import json

    from pgraft.inc.config import IncConfig
    from pgraft.inc.report import write_outputs
    from pgraft.inc.run import run_inc

    config = IncConfig(
        steps=(16,), correction_steps=(1, 2), invert=300, samples=300, preview=32, correction_train_steps=50
    )
    result = run_inc(config, model=learned_flow)
    base_flops, corr_flops = 74752.0, 20992.0  # the hand counts of the FLOP test above
    assert result.flops == {"base": base_flops, "correction": corr_flops}
    table = result.table()
    assert list(table["method"]) == ["base", "corrected", "corrected"]
    expected = [16 * base_flops + m * corr_flops for m in (0, 1, 2)]
    assert list(table["flops_per_image"]) == expected
    assert table["base_steps_at_equal_flops"].isna().all()  # no base sampler costs more than the corrected ones
    written = {p.name for p in write_outputs(result, tmp_path)}
    assert {"correction-K16.safetensors", "quality_vs_flops.csv", "diagnostics.json", "report.html"} <= written
    csv = pd.read_csv(tmp_path / "quality_vs_flops.csv")
    assert list(csv["loglik"]) == pytest.approx(list(table["loglik"]))
    summary = json.loads((tmp_path / "diagnostics.json").read_text())
    assert summary["diagnostics"]["16"]["n"] == 300 and len(summary["inversion_steps"]["16"]) == 16
    html = (tmp_path / "report.html").read_text()
    assert "plotly" in html and len(html) > 1_000_000 and 'src="https://' not in html  # plotly.js embedded
    flow = CorrectionFlow.load(tmp_path / "correction-K16.safetensors")
    seeds = sample_seeds(0, 12, 32)
    assert torch.equal(corrected_sample(learned_flow, seeds, 16, flow, 2), result.previews[(16, 2)])


def test_pipeline_stops_when_asked(learned_flow: DiffusionModel) -> None:
    from pgraft.inc.config import IncConfig
    from pgraft.inc.run import run_inc

    config = IncConfig(steps=(16, 32), invert=100, samples=100, preview=8, correction_train_steps=20)
    result = run_inc(config, model=learned_flow, should_stop=lambda: True)
    assert result.cancelled and len(result.rows) == 1 and not result.corrections


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"steps": (0, 8)}, "--steps"),
        ({"steps": (8, 8)}, "--steps"),
        ({"correction_steps": ()}, "--correction-steps"),
        ({"invert": 5}, "--invert"),
        ({"tol": 0.0}, "--tol"),
        ({"on_failure": "ignore"}, "--on-failure"),
        ({"correction_path": "cubic"}, "--correction-path"),
        ({"correction_lr": -1.0}, "--correction-lr"),
        ({"model": "toy2d-flow-exact", "train_steps": 100}, "--train-steps"),
        ({"model": "nope"}, "--model"),
        ({"search_hidden": (2, 64)}, "--search-hidden"),
        ({"search_train_steps": (0,)}, "--search-train-steps"),
        ({"grid": "cosine"}, "--grid"),
        ({"grid": "linear", "reference_grids": ("linear",)}, "--reference-grids"),
        ({"grid": "karras", "reference_grids": ("linear", "linear")}, "--reference-grids"),
    ],
)
def test_config_errors_name_the_flag_and_the_allowed_values(kwargs: dict, flag: str) -> None:  # type: ignore[type-arg]
    from pgraft.inc.config import IncConfig

    with pytest.raises(ValueError, match=flag) as err:
        IncConfig(**kwargs)
    assert "allowed" in str(err.value)


def test_inversion_settings_default_by_domain_unless_given() -> None:
    from pgraft.inc.config import IncConfig

    def settings(config, domain):
        r = config.resolved(domain)
        return r.tol, r.max_iter, r.grid, r.reference_grids

    assert settings(IncConfig(), "toy2d") == (1e-5, 100, "linear", ())
    assert settings(IncConfig(), "digits") == (1e-4, 400, "karras", ("linear",))
    assert settings(IncConfig(tol=1e-3, max_iter=7, grid="linear"), "digits") == (1e-3, 7, "linear", ())
    assert settings(IncConfig(grid="linear"), "digits") == (1e-2, 400, "linear", ())  # that grid's own default
    # a reference that turns out to be the domain's grid is its base rows: dropped, not an error after loading
    assert settings(IncConfig(reference_grids=("karras", "linear")), "digits")[2:] == ("karras", ("linear",))
    assert settings(IncConfig(reference_grids=("none",)), "digits")[3] == ()
    assert settings(IncConfig(grid="exponential", reference_grids=("karras",)), "toy2d")[2:] == (
        "exponential",
        ("karras",),
    )


def test_command_line_writes_the_outputs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pgraft.cli import main

    args = ["inc", "--steps", "16", "--correction-steps", "1", "--invert", "100", "--samples", "100"]
    args += ["--preview", "8", "--correction-train-steps", "20", "--quiet", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert (tmp_path / "run" / "quality_vs_flops.csv").exists()
    assert "gain_at_equal_flops" in capsys.readouterr().out
    assert main(["inc", "--model", "toy2d", "--out", str(tmp_path / "bad")]) == 2
    assert "not a rectified flow" in capsys.readouterr().err


def test_digits_path_with_a_tiny_random_flow() -> None:
    """The digits code path (64-dim noise, image previews, Fréchet distance) on a tiny untrained UNet flow."""
    from pgraft.domains.digits.models import build_digits_model, unet_config
    from pgraft.inc.config import IncConfig
    from pgraft.inc.run import run_inc

    model = build_digits_model("digits-flow", unet_config("tiny")).frozen()
    config = IncConfig(
        model="digits-flow", steps=(4,), correction_steps=(1,), invert=64, samples=64, preview=4,
        correction_train_steps=10,
    )  # fmt: skip
    result = run_inc(config, model=model)
    assert result.primary == "fd" and not result.higher_is_better
    assert result.inversions[4].noises.shape == (64, 1, 8, 8)
    assert result.diagnostics[4].dim == 64
    assert result.previews[(4, 1)].shape == (4, 1, 8, 8)
    assert all(row["fd"] > 0 for row in result.rows)


def test_a_step_count_that_inverts_nothing_gets_a_notice_not_a_crash() -> None:
    from pgraft.core.events import Notice as IncNotice
    from pgraft.inc.config import IncConfig
    from pgraft.inc.run import run_inc_iter

    config = IncConfig(steps=(4, 6), correction_steps=(1,), invert=20, samples=50, preview=4, correction_train_steps=5,
                       solver="fixed-point")  # fmt: skip
    gen, notices = run_inc_iter(config, model=linear_flow(10.0)), []
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        notices += [ev.message] if isinstance(ev, IncNotice) else []
    assert not result.corrections and len(result.rows) == 2  # the base line only
    assert all("no correction" in n and "does not contract at sampler step" in n for n in notices) and len(notices) == 2


def test_the_correction_search_keeps_the_candidate_with_the_least_held_out_loss(learned_flow: DiffusionModel) -> None:
    """Width and training steps chosen by validation loss on held-out noises: a one-step candidate (barely
    trained) loses to trained ones, the returned flow is the winner of its own table, and that table's losses
    are what `validation_loss` says for each candidate trained the same way."""
    from pgraft.core.events import drain
    from pgraft.inc.correction import search_correction_iter, validation_loss

    z = invert(learned_flow, ToyQuality(learned_flow, 0).real_data(400), 8, tol=TOL).kept
    config = CorrectionConfig(train_steps=300, lr=1e-2, seed=0)
    flow, record = drain(search_correction_iter(z, config, (16, 64), (1, 300)))
    table = record["search"]
    assert [(r["hidden"], r["train_steps"]) for r in table] == [(16, 1), (16, 300), (64, 1), (64, 300)]
    best = min(table, key=lambda r: r["validation_loss"])
    assert (flow.hidden, record["train_steps"]) == (best["hidden"], best["train_steps"])
    assert best["train_steps"] == 300
    assert min(r["validation_loss"] for r in table if r["train_steps"] == 1) > best["validation_loss"] + 0.05
    assert record["validation_noises"] == 80 and record["n_noises"] == 320  # a held-out fifth
    # the validation loss is deterministic: the same (eps, s) draws for every candidate
    order = torch.randperm(len(z), generator=torch.Generator().manual_seed(config.seed + 7))
    assert validation_loss(flow, z[order[:80]], config.seed + 11) == pytest.approx(best["validation_loss"])


def test_gains_beyond_noise_need_more_than_the_combined_standard_error() -> None:
    from pgraft.inc.tables import quality_table

    def row(method, k, m, flops, fd, se):
        keys = ("method", "num_inference_steps", "correction_steps", "flops_per_image", "fd", "fd_se")
        return dict(zip(keys, (method, k, m, flops, fd, se), strict=True))

    rows = [row("base", 8, 0, 8.0, 10.0, 1.0), row("base", 16, 0, 16.0, 9.2, 0.3)]
    rows += [row("corrected", 8, 1, 9.0, 8.4, 0.4), row("corrected", 8, 2, 10.0, 6.0, 0.4)]
    table = quality_table(rows, "fd", higher_is_better=False).set_index("correction_steps")
    assert table.loc[1, "gain_at_equal_flops"] == pytest.approx(0.8)  # against K = 16, the cheapest base >= 9
    assert table.loc[1, "gain_se"] == pytest.approx(0.5)  # hypot(0.4, 0.3)
    assert not table.loc[1, "gain_beyond_noise"]  # 0.8 < 1.96 * 0.5
    assert table.loc[2, "gain_beyond_noise"]  # 3.2 > 1.96 * 0.5
    assert table.loc[0, "gain_beyond_noise"].isna().all()  # base rows: no comparison
    assert table.loc[1, "gain_vs_same_k"] == pytest.approx(1.6)  # against K = 8: 10.0 - 8.4
    assert table.loc[1, "gain_vs_same_k_se"] == pytest.approx(float(np.hypot(0.4, 1.0)))
    assert not table.loc[1, "gain_vs_same_k_beyond_noise"] and table.loc[2, "gain_vs_same_k_beyond_noise"]


def test_a_reference_grid_base_that_is_better_at_equal_cost_is_the_one_to_beat() -> None:
    """A corrected karras sampler that beats its own grid's base but not the linear grid's base at the same K
    shows a gain against its own K and a loss at equal FLOPs, naming the linear grid."""
    from pgraft.inc.tables import quality_table

    def row(method, grid, k, m, flops, fd):
        keys = ("method", "grid", "num_inference_steps", "correction_steps", "flops_per_image", "fd", "fd_se")
        return dict(zip(keys, (method, grid, k, m, flops, fd, 0.1), strict=True))

    rows = [row("base", "karras", 8, 0, 8.0, 38.0), row("base", "karras", 16, 0, 16.0, 12.0)]
    rows += [row("reference", "linear", 8, 0, 8.0, 8.5), row("reference", "linear", 16, 0, 16.0, 5.0)]
    rows += [row("corrected", "karras", 8, 1, 8.0, 20.0)]
    table = quality_table(rows, "fd", higher_is_better=False)
    corrected = table[table["method"] == "corrected"].iloc[0]
    assert corrected["gain_vs_own_grid"] == pytest.approx(18.0) and corrected["gain_vs_own_grid_beyond_noise"]
    assert corrected["gain_vs_same_k"] == pytest.approx(-11.5) and not corrected["gain_vs_same_k_beyond_noise"]
    assert corrected["base_grid_at_equal_flops"] == "linear" and corrected["base_steps_at_equal_flops"] == 8
    assert corrected["gain_at_equal_flops"] == pytest.approx(-11.5) and not corrected["gain_beyond_noise"]
    # rows of runs before grids existed read as the linear grid
    old = quality_table([{k: v for k, v in r.items() if k != "grid"} for r in rows[:1]], "fd", False)
    assert list(old["grid"]) == ["linear"]


def test_reference_grids_add_base_rows_and_the_run_samples_on_its_grid(learned_flow: DiffusionModel) -> None:
    from pgraft.inc.config import IncConfig
    from pgraft.inc.run import EVAL_STREAM, run_inc

    config = IncConfig(
        steps=(8,), correction_steps=(1,), invert=100, samples=100, preview=4, correction_train_steps=20,
        grid="karras", reference_grids=("linear",),
    )  # fmt: skip
    result = run_inc(config, model=learned_flow)
    table = result.table().set_index(["method", "grid"])
    assert sorted(table.index) == [("base", "karras"), ("corrected", "karras"), ("reference", "linear")]
    seeds = sample_seeds(0, EVAL_STREAM, 100)
    quality = ToyQuality(learned_flow, 0)
    for grid, method in (("karras", "base"), ("linear", "reference")):
        expected = quality.score(corrected_sample(learned_flow, seeds, 8, grid=grid))["loglik"]
        assert table.loc[(method, grid), "loglik"] == pytest.approx(expected)
    assert result.inversions[8].steps[-1].sigma_next == pytest.approx(0.0)
    assert result.inversions[8].steps[-2].sigma == pytest.approx(float(flow_grid(learned_flow, 8, "karras")[1][-3]))


def test_the_digits_frechet_distance_comes_with_a_bootstrap_error_that_shrinks_with_samples() -> None:
    from pgraft.domains.digits.models import digits_split, to_model
    from pgraft.domains.digits.quality import DigitsQuality

    quality = DigitsQuality(None, 0)
    real = to_model(digits_split().train_x)
    small, large = quality.score(real[:200]), quality.score(real[:1200])
    for s in (small, large):
        assert s["fd_lo"] < s["fd"] < s["fd_hi"] and s["fd_hi"] - s["fd_lo"] == pytest.approx(2 * 1.96 * s["fd_se"])
    assert large["fd_se"] < 0.75 * small["fd_se"]  # about 1/sqrt(6) of it in theory
    assert large["fd"] < small["fd"]  # the distance's upward bias at small samples
    assert quality.score(real[:200]) == small  # seeded


def test_an_under_trained_digits_flow_is_the_shipped_run_stopped_early(tmp_path, monkeypatch) -> None:
    from pgraft.domains.digits.models import weights_path
    from pgraft.families.small import read_safetensors_metadata
    from pgraft.registry import load_model

    monkeypatch.setenv("PGRAFT_CACHE", str(tmp_path))
    model = load_model("digits-flow", train_steps=20)
    assert model.info["training"]["train_steps"] == 20 and model.process.kind == "flow"
    cached = tmp_path / "digits-flow-20steps.safetensors"
    assert json.loads(read_safetensors_metadata(cached)["training"])["train_steps"] == 20
    again = load_model("digits-flow", train_steps=20)  # from the cache, not retrained
    for a, b in zip(model.network.parameters(), again.network.parameters(), strict=True):
        assert torch.equal(a, b)
    shipped = load_model("digits-flow", train_steps=4000)
    assert (
        shipped.info["training"]["train_steps"] == 4000
        and not (tmp_path / "digits-flow-4000steps.safetensors").exists()
    )
    assert weights_path("digits-flow").exists()
    with pytest.raises(ValueError, match="--train-steps"):
        load_model("digits-flow", train_steps=0)


def test_the_quality_plot_labels_its_axes_and_draws_a_dotted_line_per_reference_grid() -> None:
    from pgraft.plots.inc import quality_vs_flops

    rows = [
        {"method": "base", "grid": "karras", "num_inference_steps": k, "correction_steps": 0, "flops_per_image": k,
         "fd": 40.0 / k} for k in (4, 8)
    ] + [
        {"method": "reference", "grid": "linear", "num_inference_steps": k, "correction_steps": 0,
         "flops_per_image": k, "fd": 20.0 / k} for k in (4, 8)
    ] + [{"method": "corrected", "grid": "karras", "num_inference_steps": 8, "correction_steps": 2,
          "flops_per_image": 8.1, "fd": 3.0}]  # fmt: skip
    fig = quality_vs_flops(pd.DataFrame(rows), "fd", label="Fréchet distance")
    assert fig.layout.yaxis.title.text == "Fréchet distance"  # was: the x axis's label on both axes
    assert fig.layout.xaxis.title.text == "FLOPs per image (counted)"
    names = [t.name for t in fig.data]
    assert names == ["base flow", "base flow, linear grid", "base + correction, m=2"]
    assert fig.data[1].line.dash == "dot" and list(fig.data[1].y) == [5.0, 2.5]


def test_the_toy_log_likelihood_comes_with_the_standard_error_of_its_mean(learned_flow: DiffusionModel) -> None:
    """`loglik_se` is std/sqrt(n) of the per-sample log-density, so the toy's gains get bands as digits' do."""
    quality = ToyQuality(learned_flow, 0)
    x = quality.real_data(4000)
    logp = quality.mixture.log_prob(x.double())
    scored = quality.score(x)
    assert scored["loglik_se"] == pytest.approx(float(logp.std()) / math.sqrt(4000))
    halves = [quality.score(x[:1000])["loglik"], quality.score(x[1000:2000])["loglik"]]
    assert abs(halves[0] - halves[1]) < 4 * math.sqrt(2) * quality.score(x[:1000])["loglik_se"]
