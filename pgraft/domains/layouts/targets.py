"""P-GRAFT's targets for an x₀-predicting model (the layouts denoiser), derived and checked on an exact 1-D toy.

Anchorings (docs/method.md §2), with `x_t = ρ x_c + β ε'`, `ρ = a_t/a_c`, `β² = σ_t² − ρ² σ_c²`:

- *final*: the ordinary x₀ loss towards the accepted `x_0`, at `t > t_c`;
- *intermediate*: the sampler above the cutoff must reverse the tilted marginals `p̃_t = p̃_c ∗ k(·|x_c)`,
  `p̃_c ∝ p̄_c h`, `h(x_c) = E[a(X_0) | x_c]`. A DDIM step reads an x₀ output through Tweedie's formula, so
  the output it needs is `x̂_0(x_t) = (x_t + σ_t² ∇log p̃_t(x_t)) / a_t`. Denoising score matching gives
  `∇log p̃_t(x_t) = −E[ε' | x_t]/β`, so a regression target with that conditional mean is the ε-form of
  method.md converted to x₀:

      x₀* = x_c/a_c − (a_t σ_c² / (a_c² β)) ε'      (`NoiseProcess.output_from(ε*, x₀*)` for `X0Process`)

  (check: `E[x₀* | x_t] = E[x_c|x_t]/a_c − (a_t σ_c²/(a_c² β)) (x_t − ρ E[x_c|x_t])/β`, and Tweedie on the
  kernel, `E[x_c|x_t] = (x_t + β² ∇log p̃_t)/ρ`, turns it into `(x_t + σ_t² ∇log p̃_t)/a_t`.) The core's
  weight `β²/σ_t²` keeps `w (x̂_0 − x₀*)²` bounded: its variance is `a_t² σ_c⁴ / (a_c⁴ σ_t²)`.

*The base model's own prediction at the handoff state is not that target.* The research note suggests
regressing on `D̄(x_c) = E_base[x_0 | x_c]` (soft cross-entropy on its class probabilities, MSE on its boxes):
the stitched sampler's final `x_0` has posterior mean `E[D̄(X_c) | x_t]` given `x_t`. But in the tilted
chain `x_c | x_0` is no longer the forward kernel, so that posterior mean is not the Tweedie output the
sampler needs. With Tweedie at level c, `D̄ = (x_c + σ_c² ∇log p̄_c)/a_c`, and `ρ ∇log p̃_t(x_t) =
E[∇log p̃_c(X_c) | x_t]` (the score of a scaled Gaussian convolution):

    E[D̄(X_c) | x_t] = x̂_0(x_t) − (σ_c²/a_c) E[∇log h(X_c) | x_t],

equal only where the tilt is flat (`h` constant, or `σ_c → 0`). `exact_targets` computes the three curves
by quadrature on a Gaussian mixture with an exact base and a threshold acceptance; the tests check the
identity and the size of the gap. So the layouts model trains on the ε-form target (the core's
`training_example`), with MSE on `2·softmax − 1` for the class block (its minimiser is the conditional mean,
as the ε-form requires; a cross-entropy needs a probability target, which `x₀*` is not).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

WEIGHTS = (0.5, 0.3, 0.2)
MEANS = (-2.0, 0.5, 2.5)
STDS = (0.5, 0.4, 0.3)
"""The 1-D example of docs/method.md §3."""


@dataclass(frozen=True)
class ExactTargets:
    """On a grid of `x_t`: the tilted density, the x₀ output the sampler needs (`tweedie`), the conditional
    mean of the ε-form target `x₀*` (`eps_form`), of the base prediction `D̄(x_c)` (`base_prediction`), and
    the predicted gap `(σ_c²/a_c) E[∇log h(X_c) | x_t]`."""

    x_t: torch.Tensor
    density: torch.Tensor
    tweedie: torch.Tensor
    eps_form: torch.Tensor
    base_prediction: torch.Tensor
    gap: torch.Tensor


def _normal(x: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * (2 * torch.pi) ** 0.5)


def exact_targets(
    a_c: float, s_c: float, a_t: float, s_t: float, threshold: float | None = 1.0, points: int = 1601
) -> ExactTargets:
    """The curves of `ExactTargets` for acceptance `1{x_0 ≥ threshold}` (None: accept all, no tilt)."""
    x0 = torch.linspace(-6, 6, points, dtype=torch.float64)
    xc = torch.linspace(-7, 7, points, dtype=torch.float64)
    xt = torch.linspace(-6, 6, 401, dtype=torch.float64)
    dx0, dxc = float(x0[1] - x0[0]), float(xc[1] - xc[0])
    p0 = torch.stack([w * _normal(x0, m, s) for w, m, s in zip(WEIGHTS, MEANS, STDS)]).sum(0)
    accept = torch.ones_like(x0) if threshold is None else (x0 >= threshold).double()
    joint = p0[None] * _normal(xc[:, None], a_c * x0[None], s_c)  # (x_c, x_0)
    pc = joint.sum(1) * dx0
    h = (joint * accept[None]).sum(1) * dx0 / pc
    base = (joint * x0[None]).sum(1) * dx0 / pc  # D̄(x_c)
    log_h = h.clamp_min(1e-300).log()
    grad_log_h = torch.gradient(log_h, spacing=dxc)[0]
    tilted = pc * h
    tilted = tilted / (tilted.sum() * dxc)
    rho = a_t / a_c
    beta = (s_t**2 - rho**2 * s_c**2) ** 0.5
    k = _normal(xt[:, None], rho * xc[None], beta) * tilted[None]  # (x_t, x_c)
    pt = k.sum(1) * dxc
    post = k / pt[:, None]  # density of x_c given x_t
    mean_c = (post * xc[None]).sum(1) * dxc
    score = -(xt - rho * mean_c) / beta**2
    tweedie = (xt + s_t**2 * score) / a_t
    eps_mean = (xt - rho * mean_c) / beta
    eps_form = mean_c / a_c - (a_t * s_c**2 / (a_c**2 * beta)) * eps_mean
    base_prediction = (post * base[None]).sum(1) * dxc
    gap = (s_c**2 / a_c) * (post * grad_log_h[None]).sum(1) * dxc
    return ExactTargets(xt, pt, tweedie, eps_form, base_prediction, gap)
