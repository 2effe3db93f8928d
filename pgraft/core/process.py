"""Noise processes: the forward law `x_t = a_t x_0 + σ_t ε` and the diffusers scheduler that reverses it.

Two families cover every base model pgraft knows:

- `VPProcess`, a DDPM variance-preserving chain, `a_t = sqrt(ᾱ_t)`, `σ_t = sqrt(1 − ᾱ_t)`, with integer
  training timesteps `0..T−1` (diffusers' `DDPMScheduler`), sampled by diffusers' `DDIMScheduler` with
  `eta` (`eta = 1` is DDPM ancestral sampling with the posterior variance β̃, see `sampling.py`);
- `FlowProcess`, a rectified flow, `x_t = (1 − σ) x_0 + σ ε`, with timesteps `1000 σ`, sampled by diffusers'
  `FlowMatchEulerDiscreteScheduler` (Euler steps, velocity `v = ε − x_0`).

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

    def sample_training_timesteps(
        self, n: int, above: float | None, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        low = 0 if above is None else int(above) + 1
        return torch.randint(low, self.num_train_timesteps, (n,), generator=generator).to(device)


class FlowProcess(NoiseProcess):
    kind = "flow"
    prediction_type: PredictionType = "flow"

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0) -> None:
        self.num_train_timesteps = num_train_timesteps
        self.shift = shift

    def config(self) -> dict[str, Any]:
        return {"kind": "flow", "num_train_timesteps": self.num_train_timesteps, "shift": self.shift}

    @property
    def stochastic_samplers(self) -> bool:
        return False

    def coefficients(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = timesteps.to(torch.float64) / self.num_train_timesteps
        return 1 - sigma, sigma

    def make_scheduler(self, num_inference_steps: int) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler: Any = FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.num_train_timesteps, shift=self.shift)
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
        return scheduler.step(model_output, timestep, x).prev_sample

    def sample_training_timesteps(
        self, n: int, above: float | None, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        low = 0.0 if above is None else float(above)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        # Stay a hair away from σ = 0 and from the cutoff itself, where the truncated kernel is degenerate.
        low = max(low, 1e-3 * self.num_train_timesteps)
        return (low + (self.num_train_timesteps - low) * u.clamp(1e-4, 1.0)).float().to(device)


def process_from_config(config: dict[str, Any]) -> NoiseProcess:
    if config.get("kind") == "flow":
        return FlowProcess(int(config.get("num_train_timesteps", 1000)), float(config.get("shift", 1.0)))
    return VPProcess.from_scheduler_config(config)
