"""Samplers: exact models reproduce the data, DDIM eta=1 is DDPM ancestral, seeds are per sample, and the
stitched sampler hands over at the cutoff."""

import pytest
import torch
from torch import nn

from pgraft.core.process import VPProcess
from pgraft.core.sampling import sample, sample_seeds, snap_cutoff
from pgraft.domains.toy2d.mixture import asymmetric
from pgraft.families.small import DiffusionModel
from pgraft.registry import load_model


def _mode_fractions(mix, x):
    return torch.bincount(mix.mode_index(x.double()), minlength=mix.num_modes).double() / len(x)


@pytest.mark.parametrize("name", ["toy2d-exact"])
def test_exact_vp_model_reproduces_the_mixture(name):
    model = load_model(name, dataset="asymmetric")
    mix = asymmetric()
    x = sample(model, sample_seeds(0, 1, 4000), 250, eta=1.0).samples
    frac = _mode_fractions(mix, x)
    se = torch.sqrt(mix.weights * (1 - mix.weights) / len(x))
    assert torch.all((frac - mix.weights).abs() < 4 * se), (frac, mix.weights)
    data = mix.sample(20000, torch.Generator().manual_seed(1))
    # measured: -2.709 (250 steps), -2.728 (1000 steps) against -2.747 for data; the Monte Carlo s.e. is 0.02
    assert float(mix.log_prob(x.double()).mean()) == pytest.approx(float(mix.log_prob(data).mean()), abs=0.08)


def test_ddim_grid_must_divide_the_training_timesteps():
    """diffusers' DDIM steps to t - T // n; 400 steps on T = 1000 would skip (it lost a quarter of the
    smallest mode on the exact toy), so it is refused naming the flag."""
    with pytest.raises(ValueError, match="--num-inference-steps: 400 does not divide"):
        VPProcess().make_scheduler(400)


def test_exact_flow_model_reproduces_the_mixture():
    from pgraft.domains.toy2d.models import load_toy2d_exact

    model = load_toy2d_exact("asymmetric", kind="flow")
    mix = asymmetric()
    x = sample(model, sample_seeds(0, 2, 6000), 100).samples
    frac = _mode_fractions(mix, x)
    se = torch.sqrt(mix.weights * (1 - mix.weights) / len(x))
    assert torch.all((frac - mix.weights).abs() < 4 * se), (frac, mix.weights)
    data = mix.sample(6000, torch.Generator().manual_seed(1))
    assert float(mix.log_prob(x.double()).mean()) == pytest.approx(float(mix.log_prob(data).mean()), abs=0.08)


def test_ddim_eta_one_is_ddpm_ancestral_step():
    """One DDIM(eta=1) step between grid points equals diffusers' DDPMScheduler step on the same grid."""
    from diffusers import DDPMScheduler

    process = VPProcess()
    ddim = process.make_scheduler(10)
    ddpm = DDPMScheduler.from_config(process.train_scheduler.config)
    ddpm.set_timesteps(timesteps=ddim.timesteps.tolist())
    x, out = torch.randn(64, 2), torch.randn(64, 2)
    for t in ddim.timesteps[:-1]:
        gen = torch.Generator().manual_seed(5)
        expected = ddpm.step(out, t, x, generator=gen).prev_sample
        z = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
        got = ddim.step(out, t, x, eta=1.0, variance_noise=z).prev_sample
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_samples_depend_on_their_seed_not_on_the_batch(learned_ring):
    seeds = sample_seeds(3, 1, 64)
    full = sample(learned_ring, seeds, 20, eta=1.0, batch_size=64).samples
    part = sample(learned_ring, seeds[40:50], 20, eta=1.0, batch_size=3).samples
    torch.testing.assert_close(part, full[40:50], atol=1e-3, rtol=1e-3)  # matmul blocking differs by batch
    other = sample(learned_ring, sample_seeds(4, 1, 64), 20, eta=1.0).samples
    assert not torch.allclose(other, full)


class Recorder(nn.Module):
    """Wraps a network and records the noise fractions it is called at."""

    def __init__(self, inner: nn.Module, num_train_timesteps: int):
        super().__init__()
        self.inner, self.T, self.calls = inner, num_train_timesteps, []

    def forward(self, x, t, cond=None):
        self.calls.extend((t.double() / self.T).unique().tolist())
        return self.inner(x, t, cond)


def _wrapped(model: DiffusionModel) -> tuple[DiffusionModel, Recorder]:
    rec = Recorder(model.network, model.process.num_train_timesteps)
    return DiffusionModel(rec, model.process, model.sample_shape, model.name, model.domain), rec


@pytest.mark.parametrize("cutoff", [0.05, 0.3, 0.5, 0.77])
def test_stitched_sampler_never_calls_finetuned_below_cutoff(learned_ring, cutoff):
    base, base_rec = _wrapped(learned_ring)
    tuned, tuned_rec = _wrapped(learned_ring.trainable_copy().frozen())
    traj = sample(base, sample_seeds(0, 1, 32), 50, eta=1.0, finetuned=tuned, cutoff=cutoff)
    assert tuned_rec.calls and base_rec.calls
    assert min(tuned_rec.calls) > cutoff
    assert max(base_rec.calls) <= cutoff
    assert traj.cutoff_fraction == pytest.approx(max(base_rec.calls))  # the handoff state sits at the first base step
    assert len(tuned_rec.calls) + len(base_rec.calls) == 50


def test_handoff_state_is_the_trajectory_state_at_the_cutoff(learned_ring):
    """With the fine-tuned model equal to the base, the stitched run is the base run, and x_cut is its state."""
    seeds = sample_seeds(0, 1, 16)
    k, ts = snap_cutoff(learned_ring.process, 20, 0.5)
    full = sample(learned_ring, seeds, 20, eta=0.0, finetuned=learned_ring, cutoff=0.5)
    assert full.handoff_index == k and full.cutoff_timestep == ts
    # the handoff state is what the first k steps of the same sampler produce
    base = sample(learned_ring, seeds, 20, eta=0.0, cutoff=0.5)
    torch.testing.assert_close(full.x_cut, base.x_cut)
    torch.testing.assert_close(full.samples, base.samples)
    # and it differs from the initial noise and the final sample: it really is intermediate
    assert not torch.allclose(full.x_cut, full.samples)


def test_graft_uses_finetuned_everywhere(learned_ring):
    base, base_rec = _wrapped(learned_ring)
    tuned, tuned_rec = _wrapped(learned_ring)
    sample(base, sample_seeds(0, 1, 8), 10, finetuned=tuned)
    assert len(tuned_rec.calls) == 10 and not base_rec.calls


def _mixture_moments(mix):
    """Mean and covariance of a diagonal Gaussian mixture."""
    w = mix.weights.double()
    mean = (w[:, None] * mix.means.double()).sum(0)
    centred = mix.means.double() - mean
    cov = w[:, None, None] * (torch.diag_embed(mix.stds.double() ** 2) + centred[:, :, None] * centred[:, None, :])
    return mean, cov.sum(0)


@pytest.mark.parametrize("dataset", ["ring8", "asymmetric"])
def test_the_flows_stochastic_sampler_keeps_the_marginals_at_every_grid_point(dataset):
    """On the exact toy flow, η = 1 (`FlowProcess`'s stochastic step) and η = 0 (Euler) both follow the
    interpolant's law `(1 − σ) x_0 + σ ε` at every grid point: mean, covariance and mean log-density against
    the exact noised mixture. Measured with 200 steps and 4,000 samples: mean log-density within 0.08 of an
    exact sample's for both (its standard error is about 0.03), covariance within a few per cent."""
    from pgraft.core.sampling import seeded_noise
    from pgraft.domains.toy2d.mixture import get_dataset
    from pgraft.domains.toy2d.models import load_toy2d_exact

    model, mix = load_toy2d_exact(dataset, kind="flow"), get_dataset(dataset)
    process, n, steps = model.process, 4000, 200
    noise = seeded_noise(sample_seeds(0, 3, n), (2,), 1 + steps)
    finals = {}
    for eta in (0.0, 1.0):
        scheduler = process.make_scheduler(steps)
        x = noise[:, 0].clone()
        for k, t in enumerate(scheduler.timesteps):
            with torch.no_grad():
                x = process.step(scheduler, model(x, t.expand(n)), t, x, eta, noise[:, 1 + k])
            sigma = float(scheduler.sigmas[k + 1])
            law = mix.noised(1 - sigma, sigma)
            mean, cov = _mixture_moments(law)
            xd = x.double()
            se = torch.sqrt(torch.diagonal(cov) / n)
            assert torch.all((xd.mean(0) - mean).abs() < 5 * se + 0.02), (eta, sigma, xd.mean(0), mean)
            d = torch.diagonal(cov)
            assert torch.all((torch.cov(xd.T) - cov).abs() < 5 * torch.sqrt(d[:, None] * d[None, :] / n) * 1.5), (
                eta, sigma, torch.cov(xd.T), cov,
            )  # fmt: skip
            if k % 20 == 19 or k == steps - 1:
                ref = law.sample(n, torch.Generator().manual_seed(k))
                gap = float(law.log_prob(xd).mean() - law.log_prob(ref).mean())
                assert abs(gap) < 0.12, (eta, sigma, gap)
        finals[eta] = x
    assert not torch.allclose(finals[0.0], finals[1.0])  # the two samplers draw different paths ...
    frac = {eta: _mode_fractions(mix, x) for eta, x in finals.items()}
    se = torch.sqrt(mix.weights * (1 - mix.weights) / n)
    assert torch.all((frac[1.0] - mix.weights).abs() < 4 * se), frac  # ... to the same law


def test_the_flows_stochastic_step_at_eta_0_is_eulers_and_its_rows_are_independent():
    """η = 0 through the per-sample path is diffusers' Euler step; a batch of rows at different grid points
    steps each row as the scalar step at its own timestep would."""
    from pgraft.core.process import FlowProcess

    process = FlowProcess(scheduler_config={"shift": 3.0, "num_train_timesteps": 1000})
    scheduler = process.make_scheduler(10)
    assert float(scheduler.sigmas[-2]) == pytest.approx(3 * 0.1 / (1 + 2 * 0.1))  # shifted once, not twice
    gen = torch.Generator().manual_seed(0)
    x, v, z = (torch.randn(10, 4, generator=gen) for _ in range(3))
    t = scheduler.timesteps
    for eta in (0.0, 0.7, 1.0):
        rows = process.step_per_sample(scheduler, v, t, x, eta, z)
        for i in range(10):
            one = process.step(process.make_scheduler(10), v[i : i + 1], t[i], x[i : i + 1], eta, z[i : i + 1])
            torch.testing.assert_close(rows[i : i + 1], one, rtol=1e-6, atol=1e-6)
    euler = process.make_scheduler(10)
    torch.testing.assert_close(process.step(euler, v, t[3], x, 0.0, None), x + (euler.sigmas[4] - euler.sigmas[3]) * v)
