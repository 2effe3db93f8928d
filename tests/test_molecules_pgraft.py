"""P-GRAFT for masked discrete diffusion on an enumerable toy with an exact base (model.py's derivation).

Two positions, three tokens: every state can be enumerated, so the exact target of the x_0 predictor above
the cutoff, `(p·a)(x_0,ℓ | x_t)`, is a finite sum. A lookup-table network is trained through the engine's
`finetune_iter` on what a P-GRAFT round would hand it when the base is exact (accepted handoff states `x_c`
for the intermediate anchoring, accepted clean rows for the final one), and must land on that target; the
untilted posterior is far from it, so a wrong target or a wrong masking kernel fails the test.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from pgraft.core.events import drain
from pgraft.core.finetune import FinetuneData, finetune_iter
from pgraft.domains.molecules.model import build_model, state_of, tokens_of

V, L, CUT = 3, 2, 400
M = V  # the mask id


class TokenTable(nn.Module):
    """Logits of `x_0` per position for every one of the `(V + 1)^L` token states (time-independent: the
    absorbing posterior does not depend on t)."""

    def __init__(self) -> None:
        super().__init__()
        self.vocab = V
        self.config = {"vocab": V, "length": L}
        self.table = nn.Parameter(torch.zeros((V + 1) ** L, L, V))

    def logits(self, tokens: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        index = (tokens * (V + 1) ** torch.arange(L)).sum(-1)
        return self.table[index]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: object = None) -> torch.Tensor:
        return self.logits(tokens_of(x), timesteps)


def toy() -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, ...]]]:
    gen = torch.Generator().manual_seed(3)
    p = torch.rand(V**L, generator=gen) + 0.2
    p = p / p.sum()
    a = torch.rand(V**L, generator=gen) ** 2  # acceptance probability of each clean string
    return p.double(), a.double(), list(itertools.product(range(V), repeat=L))


def posterior(weights: torch.Tensor, strings: list[tuple[int, ...]], xt: tuple[int, ...]) -> torch.Tensor:
    """`(L, V)`: the law of each clean token given the partly masked `xt` under clean-string weights."""
    out = torch.zeros(L, V, dtype=torch.float64)
    for w, s in zip(weights.tolist(), strings, strict=True):
        if all(t in (M, c) for t, c in zip(xt, s, strict=True)):
            for pos, c in enumerate(s):
                out[pos, c] += w
    return out / out.sum(1, keepdim=True)


def accepted_rows(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean rows of accepted samples and their handoff states (each position masked with probability t_c):
    what an exact base's P-GRAFT round accepts."""
    p, a, strings = toy()
    gen = torch.Generator().manual_seed(0)
    idx = torch.multinomial(p, 4 * n, replacement=True, generator=gen)
    keep = torch.rand(4 * n, generator=gen, dtype=torch.float64) < a[idx]
    x0 = torch.tensor(strings)[idx[keep][:n]]
    masked = torch.rand(x0.shape, generator=gen) < CUT / 1000
    return x0, torch.where(masked, torch.full_like(x0, M), x0)


@pytest.mark.parametrize("anchoring", ["intermediate", pytest.param("final", marks=pytest.mark.slow)])
def test_both_anchorings_learn_the_exact_tilted_posterior(anchoring):
    p, a, strings = toy()
    x0, xc = accepted_rows(80_000)
    model = build_model(TokenTable()).trainable_copy(0)  # type: ignore[arg-type]
    if anchoring == "intermediate":
        data = FinetuneData(state_of(xc, V), None, float(CUT), float(CUT))
    else:
        data = FinetuneData(state_of(x0, V), None, None, float(CUT))
    with torch.random.fork_rng():
        drain(finetune_iter(model, data, steps=600, batch_size=4096, lr=0.01, seed=0, grad_clip=0.0))
    states = [s for s in itertools.product(range(V + 1), repeat=L) if M in s]
    learned = model.predict(state_of(torch.tensor(states), V), torch.full((len(states),), 700.0)).double()
    worst_tilted = worst_untilted = 0.0
    for i, s in enumerate(states):
        masked = [pos for pos in range(L) if s[pos] == M]
        exact = posterior(p * a, strings, s)[masked]
        untilted = posterior(p, strings, s)[masked]
        worst_tilted = max(worst_tilted, float((learned[i, masked] - exact).abs().max()))
        worst_untilted = max(worst_untilted, float((untilted - exact).abs().max()))
    assert worst_untilted > 0.15  # the tilt matters: the test can tell the targets apart
    assert worst_tilted < 0.03, (anchoring, worst_tilted)


def test_intermediate_loss_ignores_positions_already_masked_at_the_cutoff():
    """A handoff state with every position masked carries no information about x_0: its loss is zero."""
    model = build_model(TokenTable()).trainable_copy(0)  # type: ignore[arg-type]
    x = state_of(torch.full((64, L), M), V)
    t = torch.full((64,), 800.0)
    loss = model.training_loss(x, t, torch.randn(64, L, V + 1), None, float(CUT))
    assert float(loss) == 0.0
    clean = state_of(torch.zeros(64, L, dtype=torch.long), V)
    assert float(model.training_loss(clean, t, torch.randn(64, L, V + 1), None, float(CUT))) > 0
