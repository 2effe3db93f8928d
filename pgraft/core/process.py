"""Noise processes: the forward law `x_t = a_t x_0 + σ_t ε` and the diffusers scheduler that reverses it.

Two families cover every base model pgraft knows:

- `VPProcess`, a DDPM variance-preserving chain, `a_t = sqrt(ᾱ_t)`, `σ_t = sqrt(1 − ᾱ_t)`, with integer
  training timesteps `0..T−1` (diffusers' `DDPMScheduler`), sampled by diffusers' `DDIMScheduler` with
  `eta` (`eta = 1` is DDPM ancestral sampling with the posterior variance β̃, see `sampling.py`);
- `FlowProcess`, a rectified flow, `x_t = (1 − σ) x_0 + σ ε`, with timesteps `1000 σ`, on diffusers'
  `FlowMatchEulerDiscreteScheduler` grid: Euler steps at `eta = 0` (velocity `v = ε − x_0`), and for
  `eta > 0` the stochastic member of DDIM's family for this interpolant, with the same marginals.

`t` in docs/method.md is the fraction `timestep / num_train_timesteps`, 1 at pure noise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch

PredictionType = Literal["epsilon", "v_prediction", "flow"]


class NoiseProcess(ABC):
    """A forward noising law and how to sample its reverse with a diffusers scheduler."""

    kind: str
    prediction_type: PredictionType
    num_train_timesteps: int

    @abstractmethod
    def coefficients(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(a_t, σ_t)` at the given timesteps (the model's own units), float64, same shape."""

    @abstractmethod
    def make_scheduler(self, num_inference_steps: int) -> Any:
        """A fresh diffusers scheduler with its timesteps set, ready for a sampling loop."""

    @abstractmethod
    def step(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timestep: torch.Tensor,
        x: torch.Tensor,
        eta: float,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """One reverse step from `timestep` to the next grid point."""

    @abstractmethod
    def sample_training_timesteps(
        self, n: int, above: float | None, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """Timesteps for training: uniform over the whole range, or strictly above `above`."""

    @property
    def stochastic_samplers(self) -> bool:
        """Whether `eta > 0` gives a stochastic reverse step."""
        return True

    def step_per_sample(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timesteps: torch.Tensor,
        x: torch.Tensor,
        eta: float,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """`step` with one grid timestep per row (a batch of continuations at different depths): the
        `transition`'s `mean + std · noise` (the mean alone at η = 0), in the sample's dtype."""
        mean, std = self.transition(scheduler, model_output, timesteps, x, eta)
        if eta > 0:
            if noise is None:
                raise ValueError(f"{type(self).__name__}.step_per_sample: eta > 0 needs noise")
            mean = mean + std * noise.to(mean.dtype)
        return mean.to(x.dtype)

    def transition(
        self, scheduler: Any, model_output: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian reverse step `x' ~ N(mean, std²)` of the η-sampler, one grid timestep per row (std 0
        where the step is deterministic): `step_per_sample` is `mean + std · noise`, and DDPO's per-step
        log-probabilities are this density."""
        raise NotImplementedError(f"{type(self).__name__} has no Gaussian reverse transition")

    def check_steps(self, num_inference_steps: int) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Raise `ValueError` naming the flag when the sampler cannot use this many steps."""

    def fraction(self, timestep: float) -> float:
        """The noise level `t ∈ [0, 1]` of a timestep."""
        return float(timestep) / self.num_train_timesteps

    def noise_to_signal(self, timestep: float) -> float:
        """`σ_t / a_t`: the noise level σ a user can picture (data standard deviation units)."""
        a, s = self.coefficients(torch.tensor([float(timestep)]))
        return float(s / a.clamp_min(1e-12))

    # --- converting between a prediction and the clean sample / noise it implies -----------------------
    def predicted_noise(self, output: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """`E[ε | x_t]` implied by a model output."""
        a, s = (c.to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1))) for c in self.coefficients(timesteps))
        if self.prediction_type == "epsilon":
            return output
        if self.prediction_type == "v_prediction":  # v = a ε − σ x_0, with a² + σ² = 1
            return s * x_t + a * output
        # flow: v = ε − x_0 and x_t = a x_0 + σ ε  ⇒  ε = (a v + x_t) / (a + σ)
        return (a * output + x_t) / (a + s)

    def output_from(self, eps: torch.Tensor, x0: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The model output of this parameterisation for noise `eps` and clean sample `x0` (no division,
        so it stays finite at pure noise where `a_t = 0`)."""
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "flow":
            return eps - x0
        a, s = (c.to(eps.dtype).reshape(-1, *([1] * (eps.dim() - 1))) for c in self.coefficients(timesteps))
        return a * eps - s * x0

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a, s = (c.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1))) for c in self.coefficients(timesteps))
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The ordinary regression target of the model's parameterisation."""
        return self.output_from(noise, x0, timesteps)


class VPProcess(NoiseProcess):
    """DDPM variance-preserving chain.

    The default betas are linear: with "squaredcos_cap_v2", `a_T ≈ 5e-5` while `a` one sampling step later is
    ~300x larger, so the first "trailing" step multiplies any ε error of a fine-tuned model by ~300 and the
    fine-tuned sampler drifts (measured on the toy: reward 3.7 against a target of 2.3).

    The sampling grid is diffusers' DDIM grid with `timestep_spacing` "trailing" (the default: the first step
    at pure noise) or "leading" with a `steps_offset` (Stable Diffusion folders: 901, 801, ..., 1 for ten
    steps). Both step from `t` to `t − T // n`, which is the grid's own previous point; "linspace" is not
    (diffusers issue 12633), so a folder that asks for it samples on the "trailing" grid instead.
    """

    kind = "vp"

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        prediction_type: PredictionType = "epsilon",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        timestep_spacing: str = "trailing",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
    ) -> None:
        from diffusers import DDPMScheduler

        if timestep_spacing not in ("trailing", "leading"):
            timestep_spacing, steps_offset = "trailing", 0  # "linspace" steps to the wrong previous point
        self.timestep_spacing, self.steps_offset, self.set_alpha_to_one = (
            timestep_spacing,
            steps_offset,
            set_alpha_to_one,
        )

        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"prediction_type: {prediction_type!r} is not a VP parameterisation (epsilon, v_prediction)"
            )
        self.prediction_type = prediction_type
        self.num_train_timesteps = num_train_timesteps
        # clip_sample=False: clipping x̂_0 to [-1, 1] silently ruins data at another scale.
        scheduler: Any = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            prediction_type=prediction_type,
            clip_sample=False,
        )
        self.train_scheduler = scheduler
        self.alphas_cumprod: torch.Tensor = scheduler.alphas_cumprod.to(torch.float64)

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any]) -> VPProcess:
        return cls(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
            beta_schedule=str(config.get("beta_schedule", "linear")),
            prediction_type=config.get("prediction_type", "epsilon"),
            beta_start=float(config.get("beta_start", 0.0001)),
            beta_end=float(config.get("beta_end", 0.02)),
            timestep_spacing=str(config.get("timestep_spacing", "trailing")),
            steps_offset=int(config.get("steps_offset", 0)),
            set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
        )

    def config(self) -> dict[str, Any]:
        c = self.train_scheduler.config
        out = {
            "kind": "vp",
            "num_train_timesteps": c.num_train_timesteps,
            "beta_schedule": c.beta_schedule,
            "prediction_type": c.prediction_type,
            "beta_start": c.beta_start,
            "beta_end": c.beta_end,
        }
        if (self.timestep_spacing, self.steps_offset, self.set_alpha_to_one) != ("trailing", 0, True):
            out.update(
                timestep_spacing=self.timestep_spacing,
                steps_offset=self.steps_offset,
                set_alpha_to_one=self.set_alpha_to_one,
            )
        return out

    def coefficients(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alphas_cumprod[timesteps.detach().to("cpu").round().long()].to(timesteps.device)
        return ab.sqrt(), (1 - ab).sqrt()

    def check_steps(self, num_inference_steps: int) -> None:
        """diffusers' DDIM steps from `t` to `t − T // n`: a grid whose spacing is not exactly `T // n` would
        step to states the next model call does not expect (measured on the exact toy: 400 steps lose a
        quarter of the smallest mode). So on the "trailing" grid `n` must divide `T`; the "leading" grid steps
        by `T // n` whatever `n`."""
        if num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f"--num-inference-steps: {num_inference_steps} is more than the model's "
                f"{self.num_train_timesteps} training timesteps"
            )
        if self.timestep_spacing == "trailing" and self.num_train_timesteps % num_inference_steps:
            divisors = [d for d in range(2, self.num_train_timesteps + 1) if self.num_train_timesteps % d == 0]
            raise ValueError(
                f"--num-inference-steps: {num_inference_steps} does not divide the {self.num_train_timesteps} "
                f"training timesteps of this DDPM model; use one of {divisors}"
            )

    def make_scheduler(self, num_inference_steps: int) -> Any:
        from diffusers import DDIMScheduler

        self.check_steps(num_inference_steps)

        # "trailing" spacing puts the first step at pure noise and avoids the wrong previous step of
        # "linspace" (diffusers issue 12633); set_alpha_to_one makes the last step land on x̂_0.
        scheduler = DDIMScheduler.from_config(
            self.train_scheduler.config,
            timestep_spacing=self.timestep_spacing,
            clip_sample=False,
            set_alpha_to_one=self.set_alpha_to_one,
            steps_offset=self.steps_offset,
        )
        scheduler.set_timesteps(num_inference_steps)
        return scheduler

    def step(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timestep: torch.Tensor,
        x: torch.Tensor,
        eta: float,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        return scheduler.step(model_output, timestep, x, eta=eta, variance_noise=noise).prev_sample

    def transition(
        self, scheduler: Any, model_output: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return ddim_mean_std(scheduler, model_output, timesteps, x, eta)

    def sample_training_timesteps(
        self, n: int, above: float | None, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        low = 0 if above is None else int(above) + 1
        return torch.randint(low, self.num_train_timesteps, (n,), generator=generator).to(device)


class FlowProcess(NoiseProcess):
    """A rectified flow `x_σ = (1 − σ) x_0 + σ ε`, timesteps `T σ`, velocity `v = ε − x_0`.

    The grid. The toy and digits flows use `FlowMatchEulerDiscreteScheduler(shift).set_timesteps(n)`. A
    pipeline folder's scheduler (`scheduler_config`, with `shift` or dynamic shifting at `mu`) gets explicit
    sigmas `linspace(1, 1/n, n)` as FluxPipeline passes them: without them a shifted scheduler shifts its
    endpoints twice (measured: shift 3 with `set_timesteps(10)` ends at σ = 0.009), and the grid, the cutoff
    and the last step would not be the ones the folder means.

    The samplers. `eta = 0` is diffusers' Euler step `x + (σ' − σ) v` (the stock pipelines' sampler). For
    `eta > 0` a step is DDIM's family written for this interpolant *(derived)*: with `x̂_0 = x − σ v` and
    `ε̂ = x + (1 − σ) v` the model's implied clean sample and noise, and `a = 1 − σ`,

        x' = a' x̂_0 + sqrt(σ'² − c²) ε̂ + c z,   c² = η² σ'² (σ² − ρ² σ'²) / σ²,   ρ = a / a'.

    For every η the step keeps the interpolant's law given `x_0` (`x' | x_0 ~ N(a' x_0, σ'²)`, DDIM's Theorem 1
    applies to any Gaussian interpolant whose `σ/a` grows), so with the exact velocity all η share the
    marginals; at η = 0 it is the Euler step above, and at η = 1 it samples the posterior of the Markov chain
    `x_σ | x_σ' ~ N(ρ x_σ', σ² − ρ² σ'²)`, so the continuation from a state draws `x_0` from the forward
    process's posterior — the stochastic continuation P-GRAFT and the bias-variance study need (η = 1 is their
    default, `--eta` its noise level). Flow-GRPO's SDE belongs to the same marginal-preserving family with
    another noise schedule.
    """

    kind = "flow"
    prediction_type: PredictionType = "flow"

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 1.0,
        scheduler_config: dict[str, Any] | None = None,
        mu: float | None = None,
    ) -> None:
        self.num_train_timesteps = num_train_timesteps
        self.shift = shift
        self.scheduler_config = dict(scheduler_config) if scheduler_config is not None else None
        self.mu = mu
        if self.scheduler_config is not None:
            unsupported = [k for k in FLOW_UNSUPPORTED if self.scheduler_config.get(k)]
            if unsupported:
                raise ValueError(
                    f"--model: the folder's FlowMatchEulerDiscreteScheduler sets {unsupported}, which pgraft's "
                    "flow sampler does not follow; supported: shift and dynamic shifting"
                )
            if self.scheduler_config.get("use_dynamic_shifting") and mu is None:
                raise ValueError("FlowProcess: a dynamically shifted scheduler needs mu (from the image size)")

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any], mu: float | None = None) -> FlowProcess:
        known = {k: v for k, v in config.items() if not k.startswith("_")}
        return cls(int(known.get("num_train_timesteps", 1000)), float(known.get("shift", 1.0)), known, mu)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "flow", "num_train_timesteps": self.num_train_timesteps, "shift": self.shift}
        if self.scheduler_config is not None:
            out.update(scheduler_config=self.scheduler_config, mu=self.mu)
        return out

    def coefficients(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = timesteps.to(torch.float64) / self.num_train_timesteps
        return 1 - sigma, sigma

    def make_scheduler(self, num_inference_steps: int, grid: str = "linear") -> Any:
        """`grid`: `linear` is the grid of the class docstring; `karras` and `exponential` respace its sigmas
        between the same end points with diffusers' own conversions (`use_karras_sigmas`, ρ = 7, and
        `use_exponential_sigmas`), which make the last steps short (see `FLOW_GRIDS`)."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        if grid not in FLOW_GRIDS:
            raise ValueError(f"--grid: {grid!r} is invalid; allowed: {', '.join(FLOW_GRIDS)}")
        option = FLOW_GRIDS[grid]
        respace: dict[str, bool] = {option: True} if option is not None else {}
        if self.scheduler_config is None:
            scheduler: Any = FlowMatchEulerDiscreteScheduler(
                num_train_timesteps=self.num_train_timesteps, shift=self.shift, **respace
            )
            scheduler.set_timesteps(num_inference_steps)
            return scheduler
        import numpy as np

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            self.scheduler_config, stochastic_sampling=False, **respace
        )
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        extra = {"mu": self.mu} if self.scheduler_config.get("use_dynamic_shifting") else {}
        scheduler.set_timesteps(sigmas=sigmas, **extra)
        return scheduler

    def step(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timestep: torch.Tensor,
        x: torch.Tensor,
        eta: float,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        if eta <= 0 or noise is None:
            return scheduler.step(model_output, timestep, x).prev_sample
        return self.step_per_sample(scheduler, model_output, torch.as_tensor(timestep).expand(len(x)), x, eta, noise)

    def transition(
        self, scheduler: Any, model_output: torch.Tensor, timesteps: torch.Tensor, x: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the class docstring's step, in float64 (std 0 onto σ' = 0)."""
        grid = scheduler.timesteps.to(torch.float64).cpu()
        index = (grid[None, :] - timesteps.detach().to(torch.float64).cpu()[:, None]).abs().argmin(dim=1)
        sigmas = scheduler.sigmas.to(torch.float64).cpu()
        shape = (-1, *([1] * (x.dim() - 1)))
        s = sigmas[index].reshape(shape).to(x.device)
        s_next = sigmas[index + 1].reshape(shape).to(x.device)
        v, xd = model_output.to(torch.float64), x.to(torch.float64)
        x0, eps = xd - s * v, xd + (1 - s) * v
        if eta <= 0:
            return xd + (s_next - s) * v, torch.zeros_like(s_next).expand_as(xd)
        rho = (1 - s) / (1 - s_next)
        c2 = eta**2 * s_next**2 * (s**2 - rho**2 * s_next**2).clamp_min(0) / s**2
        mean = (1 - s_next) * x0 + (s_next**2 - c2).clamp_min(0).sqrt() * eps
        last = s_next <= 0
        return torch.where(last, x0, mean), torch.where(last, 0.0, c2.sqrt()).expand_as(xd)

    def sample_training_timesteps(
        self, n: int, above: float | None, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        low = 0.0 if above is None else float(above)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        # Stay a hair away from σ = 0 and from the cutoff itself, where the truncated kernel is degenerate.
        low = max(low, 1e-3 * self.num_train_timesteps)
        return (low + (self.num_train_timesteps - low) * u.clamp(1e-4, 1.0)).float().to(device)


FLOW_GRIDS: dict[str, str | None] = {
    "linear": None,
    "karras": "use_karras_sigmas",
    "exponential": "use_exponential_sigmas",
}
"""The flow sampler's grids, with the diffusers scheduler option that makes each. On the linear grid the step
onto the last point is long (digits, K = 8: σ 0.144 → 0.001, which maps a state to about 0.007 of itself plus
the model's clean estimate), so real data that is not in that map's image has no preimage; the other two end
with steps of ratio 0.22 and 0.37 there and almost every real digit inverts at 1e-4 (measured: README,
"Inverse noise correction")."""

FLOW_UNSUPPORTED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas", "shift_terminal")
"""FlowMatch scheduler options that change the grid in ways the explicit-sigma grid does not reproduce."""


def ddim_step_per_sample(
    scheduler: Any,
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    sample: torch.Tensor,
    eta: float,
    variance_noise: torch.Tensor | None,
) -> torch.Tensor:
    """diffusers' `DDIMScheduler.step` (formulas 12 and 16 of the DDIM paper) with one timestep per sample.

    Same arithmetic in the same order as diffusers 0.42, including its choice of the previous timestep
    (`t − T // num_inference_steps`, `final_alpha_cumprod` below 0) and no clipping of `x̂_0`, so each
    row equals a scalar `step` at that row's timestep.
    """
    prev_sample, std = ddim_mean_std(scheduler, model_output, timesteps, sample, eta)
    if eta > 0:
        if variance_noise is None:
            raise ValueError("ddim_step_per_sample: eta > 0 needs variance_noise")
        prev_sample = prev_sample + std * variance_noise
    return prev_sample


def ddim_mean_std(
    scheduler: Any, model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation of `ddim_step_per_sample`'s Gaussian step (std `η σ_t` of DDIM's
    formula 16, broadcastable to the sample)."""
    config = scheduler.config
    if config.clip_sample or config.thresholding:
        raise ValueError("ddim_step_per_sample: the scheduler clips x_0; build it with clip_sample=False")
    alphas = scheduler.alphas_cumprod.to(sample.device)
    final = scheduler.final_alpha_cumprod.to(sample.device)
    t = timesteps.to(sample.device).long()
    prev = t - config.num_train_timesteps // scheduler.num_inference_steps
    shape = (-1, *([1] * (sample.dim() - 1)))
    alpha_t = alphas[t].reshape(shape)
    alpha_prev = torch.where(prev >= 0, alphas[prev.clamp_min(0)], final).reshape(shape)
    beta_t = 1 - alpha_t
    if config.prediction_type == "epsilon":
        x0 = (sample - beta_t ** (0.5) * model_output) / alpha_t ** (0.5)
        eps = model_output
    elif config.prediction_type == "v_prediction":
        x0 = (alpha_t**0.5) * sample - (beta_t**0.5) * model_output
        eps = (alpha_t**0.5) * model_output + (beta_t**0.5) * sample
    else:
        raise ValueError(f"ddim_step_per_sample: prediction_type {config.prediction_type!r} is not supported")
    variance = ((1 - alpha_prev) / beta_t) * (1 - alpha_t / alpha_prev)
    std = eta * variance ** (0.5)
    mean = alpha_prev ** (0.5) * x0 + (1 - alpha_prev - std**2) ** (0.5) * eps
    return mean, std


def process_from_config(config: dict[str, Any]) -> NoiseProcess:
    if config.get("kind") == "flow":
        return FlowProcess(
            int(config.get("num_train_timesteps", 1000)),
            float(config.get("shift", 1.0)),
            config.get("scheduler_config"),
            config.get("mu"),
        )
    return VPProcess.from_scheduler_config(config)
