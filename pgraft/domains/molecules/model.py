"""Masked (absorbing-state) discrete diffusion over SELFIES token rows, inside the engine's adapter contract.

Why discrete: the continuous one-hot prototype of docs/domains.md §B.3 reached an in-QM9 rate of 0.30 after
6,000 steps; the shipping bar is 0.40. Masked diffusion (MDLM, Sahoo et al. 2024) is the note's fallback;
see the model card for what the shipped model measured.

The forward process masks each position independently: at noise level `t = timestep / 1000` a token is
`[MASK]` with probability `t` (keep probability `α_t = 1 − t`); at `t = 1` the row is all masks.

State tensor. The engine carries a float tensor per sample, so a row of `L` tokens is stored as `(L, V + 1)`:
one-hot over the `V = 29` tokens, or over column `V` (`[MASK]`). A position that is not exactly one-hot over
the first `V` columns counts as masked, so the engine's Gaussian initial state is the all-masked row, and the
state at a P-GRAFT cutoff is a partly masked row.

Reverse step `t → s` (`MaskedProcess.step`): each masked position unmasks with probability `(t − s)/t` (the
exact posterior of the absorbing chain) and takes a token drawn from the model's `p_θ(x_0 | x_t)`; unmasked
positions stay. The per-step Gaussian noise the engine draws from each sample's seed supplies the
randomness: `Φ(z)` of column `V` is the uniform of the unmask decision, Gumbel noise `−log(−log Φ(z))` of the
first `V` columns picks the token (Gumbel-max), so before/after rounds share their randomness exactly. With
`eta = 0` the step is deterministic: the most confident masked positions unmask, to their argmax.

Training (`MaskedDiffusionModel.training_loss`, called by `core.finetune`): the MDLM objective, the
cross-entropy of the masked positions weighted by `1/t`. Its minimiser is `p(x_0,ℓ | x_t)` per position.

P-GRAFT. Both anchorings train the same per-position `x_0` predictor that the stitched sampler uses above the
cutoff `t_c`. Accepting on the final sample's reward `a(x_0)` tilts the chain to `p̃ ∝ p(x_0) a(x_0) q(x_c|x_0)
q(x_t|x_c)`; its marginals at `t ≥ t_c` are those of the masked chain started from `p·a`, so the exact reverse
step above the cutoff is the ordinary one with `p̃(x_0,ℓ | x_t)`, the target of both anchorings:

- "final": the accepted clean rows, masked afresh at `t > t_c`, one-hot targets (the ordinary loss);
- "intermediate": the accepted handoff rows `x_c` (partly masked). From `x_c` the chain keeps an unmasked
  position with probability `α_t/α_c = (1 − t)/(1 − t_c)`. A position masked at `t` but unmasked in `x_c` is
  trained towards `x_c`'s token; a position already masked in `x_c` gets no loss. This is unbiased: masking
  is independent of the tokens (also under the tilt, which acts on `x_0` only), so given `x_t`, the event
  "`ℓ` was still unmasked at `t_c`" is independent of `x_0`, and `x_c,ℓ = x_0,ℓ` on it, hence
  `E[onehot(x_c,ℓ) | x_t, unmasked at t_c] = p̃(x_0,ℓ | x_t)`. (Filling the masked positions with the base's
  `p(x_0,ℓ | x_c)` instead would be biased: it ignores that acceptance also tilts `x_0` given `x_c`.)
  Every trained position is weighted by MDLM's `1/t` (a weight of `t` alone moves no minimiser); the ELBO's
  `(1 − t_c)/(t − t_c)` of the truncated chain would also be unbiased but is unbounded at `t → t_c`, and on
  the toy its variance kept the table 0.06 from the target where `1/t` gets within 0.03.

`tests/test_molecules_pgraft.py` checks both against the exact tilted posterior of an enumerable toy.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from pgraft.core.process import NoiseProcess
from pgraft.domains.base import asset_dir
from pgraft.families.small import DiffusionModel, read_safetensors_metadata

NUM_TRAIN_TIMESTEPS = 1000
DOMAIN = "molecules"
ASSETS = asset_dir("pgraft.domains.molecules")

NETWORK_SIZES: dict[str, dict[str, int]] = {
    "default": {"d_model": 128, "layers": 3, "heads": 4, "ff": 256},
    "tiny": {"d_model": 32, "layers": 1, "heads": 2, "ff": 64},
}


# --- the state tensor ------------------------------------------------------------------------------------
def tokens_of(x: torch.Tensor) -> torch.Tensor:
    """`(N, L)` token ids of a state `(N, L, V + 1)`; `V` (the mask id) where a row is not one-hot over `V`."""
    v = x.shape[-1] - 1
    head = x[..., :v]
    clean = (head.max(-1).values == 1) & ((head != 0).sum(-1) == 1) & (x[..., v] == 0)
    return torch.where(clean, head.argmax(-1), torch.full_like(clean, v, dtype=torch.long))


def state_of(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """The `(N, L, vocab + 1)` state of token ids (`vocab` = the mask id)."""
    return nn.functional.one_hot(tokens.long(), vocab + 1).float()


def _uniform(z: torch.Tensor) -> torch.Tensor:
    """Φ(z) in (0, 1): a uniform from a standard normal (the engine's seeded noise)."""
    return (0.5 * (1 + torch.erf(z.double() / math.sqrt(2)))).clamp(1e-12, 1 - 1e-12)


# --- the process -----------------------------------------------------------------------------------------
@dataclass
class MaskedGrid:
    """The sampling grid (what `make_scheduler` gives): timesteps from 1000 down, the next point of the last is 0."""

    timesteps: torch.Tensor

    def next_of(self, t: float) -> float:
        ts = self.timesteps.tolist()
        k = min(range(len(ts)), key=lambda i: abs(ts[i] - t))
        return float(ts[k + 1]) if k + 1 < len(ts) else 0.0


class MaskedProcess(NoiseProcess):
    """Absorbing-state masking with the linear schedule `α_t = 1 − t` (see the module docstring)."""

    kind = "masked"
    prediction_type = "epsilon"  # type: ignore[assignment]  # unused: the model predicts x_0 probabilities
    num_train_timesteps = NUM_TRAIN_TIMESTEPS

    def coefficients(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(α_t, 1 − α_t)`: the keep and mask probabilities (their ratio is `noise_to_signal`)."""
        t = torch.as_tensor(timesteps, dtype=torch.float64) / self.num_train_timesteps
        return 1 - t, t

    def make_scheduler(self, num_inference_steps: int) -> MaskedGrid:
        self.check_steps(num_inference_steps)
        n = int(num_inference_steps)
        ts = [round(self.num_train_timesteps * (n - k) / n) for k in range(n)]
        return MaskedGrid(torch.tensor(ts, dtype=torch.long))

    def check_steps(self, num_inference_steps: int) -> None:
        if int(num_inference_steps) < 1:
            raise ValueError(f"--num-inference-steps: {num_inference_steps} is invalid; allowed 1 or more")

    def step(
        self,
        scheduler: Any,
        model_output: torch.Tensor,
        timestep: torch.Tensor,
        x: torch.Tensor,
        eta: float,
        noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """Unmask each masked position with probability `(t − s)/t`, to a token drawn from `model_output`
        (probabilities `(N, L, V)`); deterministic (most confident first, argmax) when `noise` is None."""
        t = float(timestep)
        s = scheduler.next_of(t)
        tokens = tokens_of(x)
        v = x.shape[-1] - 1
        masked = tokens == v
        probs = model_output.double().clamp_min(1e-30)
        frac = (t - s) / t if t > 0 else 1.0
        if noise is not None:
            u = _uniform(noise[..., v])
            reveal = masked & (u < frac)
            gumbel = -torch.log(-torch.log(_uniform(noise[..., :v])))
            chosen = (probs.log() + gumbel).argmax(-1)
        else:
            confidence, chosen = probs.max(-1)
            count = torch.round(masked.sum(-1).double() * frac).long()
            order = torch.where(masked, confidence, torch.full_like(confidence, -1.0)).argsort(-1, descending=True)
            rank = torch.empty_like(order)
            rank.scatter_(-1, order, torch.arange(order.shape[-1]).expand_as(order).contiguous())
            reveal = masked & (rank < count[:, None])
        if s <= 0:
            reveal = masked
        tokens = torch.where(reveal, chosen, tokens)
        return state_of(tokens, v).to(x.dtype)

    def sample_training_timesteps(
        self, n: int, above: float | None, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """Uniform in `(above, 1000]` (continuous; `above` None: `(0, 1000]`)."""
        lo = float(above or 0.0)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return (lo + (self.num_train_timesteps - lo) * (1 - u)).float().to(device)

    def config(self) -> dict[str, Any]:
        return {"kind": "masked", "num_train_timesteps": self.num_train_timesteps, "schedule": "linear"}


# --- the network -----------------------------------------------------------------------------------------
class TokenDenoiser(nn.Module):
    """A small bidirectional transformer: `forward(x, timesteps, cond)` → logits `(N, L, V)` of `x_0`."""

    def __init__(self, vocab: int, length: int, d_model: int, layers: int, heads: int, ff: int) -> None:
        super().__init__()
        self.config = {"vocab": vocab, "length": length, "d_model": d_model, "layers": layers, "heads": heads, "ff": ff}
        self.vocab = vocab
        self.embed = nn.Embedding(vocab + 1, d_model)
        self.pos = nn.Parameter(torch.randn(length, d_model) * 0.02)
        self.time = nn.Sequential(nn.Linear(32, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, ff, dropout=0.0, batch_first=True, norm_first=True, activation="gelu"
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab)
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(1000.0), 16)), persistent=False)

    def logits(self, tokens: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        freqs: torch.Tensor = self.freqs  # type: ignore[assignment]
        frac = (timesteps.float() / NUM_TRAIN_TIMESTEPS).reshape(-1, 1) * freqs
        temb = self.time(torch.cat([frac.sin(), frac.cos()], -1))
        h = self.embed(tokens) + self.pos + temb[:, None]
        return self.out(self.norm(self.encoder(h)))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.logits(tokens_of(x), timesteps)


def build_network(size: str = "default", vocab: int | None = None, length: int | None = None) -> TokenDenoiser:
    from pgraft.domains.molecules.data import LENGTH, VOCAB

    if size not in NETWORK_SIZES:
        raise ValueError(f"--size: {size!r} is invalid for molecules; allowed {sorted(NETWORK_SIZES)}")
    return TokenDenoiser(vocab or len(VOCAB), length or LENGTH, **NETWORK_SIZES[size])


# --- the adapter -----------------------------------------------------------------------------------------
@dataclass
class MaskedDiffusionModel(DiffusionModel):
    """`families.small.DiffusionModel` over a `TokenDenoiser` and a `MaskedProcess`: `predict` gives the
    probabilities of `x_0`, and `training_loss` replaces the Gaussian regression of `core.finetune`.

    `temperature` divides the logits when sampling (1: the trained model). Below 1 the sampler concentrates
    on frequent molecules: the shipped `molecules` samples at 0.8 (in-QM9 0.33 at 1, 0.48 at 0.8, see the
    card), `molecules-narrow` (0.5) is the low-entropy model of the de-duplication preset. Fine-tuning always
    trains the untempered logits, so the exactness of P-GRAFT's targets (module docstring) holds at 1; at
    another temperature a fine-tuned model is sampled tempered like its base."""

    temperature: float = 1.0

    @property
    def denoiser(self) -> TokenDenoiser:
        return cast(TokenDenoiser, self.network)

    def predict(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return torch.softmax(self.network(x, timesteps, None).float() / self.temperature, -1)

    __call__ = predict

    def trainable_copy(self, seed: int = 0) -> MaskedDiffusionModel:
        copy = super().trainable_copy(seed)
        fields = {k: getattr(copy, k) for k in DiffusionModel.__dataclass_fields__}
        return MaskedDiffusionModel(**fields, temperature=self.temperature)

    def save(self, path: Path, extra: dict[str, Any] | None = None) -> None:
        """As `DiffusionModel.save`, with the network's configuration in the metadata (to rebuild it)."""
        super().save(path, {"network": self.network.config, **(extra or {})})

    def corrupt(
        self, anchor_tokens: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, anchor_timestep: float | None
    ) -> torch.Tensor:
        """`x_t` tokens from anchors at `anchor_timestep` (None: clean): an unmasked position stays with
        probability `(1 − t)/(1 − t_c)`, decided by `Φ` of the last noise column."""
        v = self.denoiser.vocab
        tc = float(anchor_timestep or 0.0) / NUM_TRAIN_TIMESTEPS
        frac = timesteps.double().reshape(-1, 1) / NUM_TRAIN_TIMESTEPS
        keep = (1 - frac) / (1 - tc)
        u = _uniform(noise[..., v])
        return torch.where(u < keep, anchor_tokens, torch.full_like(anchor_tokens, v))

    def training_loss(
        self, x: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor, cond: Any, anchor_timestep: float | None
    ) -> torch.Tensor:
        """The MDLM loss `E_t[(1/t) Σ CE] / L` over the positions masked at `t` and unmasked in the anchors
        `x` (clean rows, or handoff states at `anchor_timestep`)."""
        anchor = tokens_of(x)
        v = self.denoiser.vocab
        xt = self.corrupt(anchor, timesteps, noise, anchor_timestep)
        logp = torch.log_softmax(self.denoiser.logits(xt, timesteps).float(), -1)
        ce = -logp.gather(-1, anchor.clamp_max(v - 1)[..., None]).squeeze(-1)
        newly = ((xt == v) & (anchor != v)).float()
        weight = NUM_TRAIN_TIMESTEPS / timesteps.float().clamp_min(1.0)
        return ((ce * newly).sum(1) * weight).mean() / x.shape[1]


def build_model(
    network: TokenDenoiser, name: str = "molecules", info: dict[str, Any] | None = None
) -> MaskedDiffusionModel:
    c = network.config
    model = MaskedDiffusionModel(
        network=network,
        process=MaskedProcess(),
        sample_shape=(c["length"], c["vocab"] + 1),
        name=name,
        domain=DOMAIN,
        info=dict(info or {}),
        sample_batch_size=1024,
        cpu_sample_batch_size=512,
    )
    model.frozen()
    return model


def weights_path(name: str = "molecules") -> Path:
    return ASSETS / f"{name}.safetensors"


def load_model_file(path: Path, device: str = "cpu", name: str = "molecules") -> MaskedDiffusionModel:
    """A saved molecule model (its network config and training record are in the safetensors metadata)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no molecule model here; rebuild it with `pgraft pretrain molecules`")
    meta = read_safetensors_metadata(Path(path))
    config = json.loads(meta["network"])
    network = TokenDenoiser(**config)
    info = {k: json.loads(v) for k, v in meta.items() if k not in ("name", "domain", "process", "network")}
    model = build_model(network, name, info)
    model.load_weights(Path(path))
    model.to(device).frozen()
    return model


def load_molecules_model(
    device: str = "cpu", temperature: float | None = None, name: str = "molecules"
) -> MaskedDiffusionModel:
    """The shipped model (`assets/molecules.safetensors`), sampled at `temperature` (None: the shipped
    sampling temperature of its metadata, see the card)."""
    model = load_model_file(weights_path("molecules"), device, name)
    if temperature is None:
        temperature = float(model.info.get("sampling_temperature", 1.0))
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature: {temperature!r} is invalid; allowed a finite number > 0")
    model.temperature = float(temperature)
    model.info["temperature"] = float(temperature)
    return model
