"""Acceptance rules of GRAFT (docs/method.md §1): which candidates to keep, seeing only their rewards.

Each rule does two things:

- `select(rewards, generator)` keeps candidates from one group (one prompt's N samples);
- `acceptance(u, r)` is `a(x)`, the probability that a candidate with reward quantile `u = F(r)` (and
  reward `r`) is accepted, marginal over the other draws. Accepted samples follow `p̄ a / E[a]`: the
  solution of `max_p E_p[r̂] − α KL(p ‖ p̄)` with the reshaped reward `r̂ = α log a + const`.

`kl_exact()` gives the closed-form `KL(accepted ‖ p̄)` where one exists for continuous rewards;
`implied_kl(rule, u, r)` integrates it numerically from `a` for any rule.

Every rule declares its one parameter here, once (`RuleParam`: the `RunConfig` field and flag of the same
name, its type, CLI default, help, app label and range), and a label for menus; the command line, the config
and the app read them from `RULES`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class RuleParam:
    """The one parameter of a rule: a `RunConfig` field and the flag `--<name>`."""

    name: str
    kind: type
    """`int` or `float`."""
    help: str
    label: str
    """Short label of the app's control."""
    app_default: float
    """The value the app's control starts at."""
    default: float | None = None
    """The CLI's default (None: the flag must be given with its rule)."""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    widget: str = "number"
    """The app's control: "slider" (with the range above) or "number"."""


THRESHOLD = RuleParam(
    "threshold",
    float,
    "threshold rule: accept rewards >= this",
    "Threshold τ (range: base rewards)",
    0.0,
    minimum=-1.0,
    maximum=1.0,
    widget="slider",  # the app spans it over the base model's rewards
)
QUANTILE = RuleParam(
    "quantile",
    float,
    "quantile rule: accept rewards >= the batch q-quantile, q in (0, 1)",
    "Quantile q (keeps the top 1 − q)",
    0.75,
    minimum=0.5,
    maximum=0.99,
    step=0.01,
    widget="slider",
)
N = RuleParam(
    "n", int, "best-of-n rule: group size n >= 2", "n (best of n)", 4, default=4, minimum=2, maximum=16, step=1
)
K = RuleParam("k", int, "top-k rules: keep the k best of each prompt's samples", "k (kept per prompt)", 64)
BETA = RuleParam("beta", float, "soft rule: temperature beta > 0", "Temperature β", 1.0)
RULE_PARAMS: dict[str, RuleParam] = {p.name: p for p in (THRESHOLD, QUANTILE, N, K, BETA)}


class AcceptanceRule(ABC):
    name: str
    label: str = ""
    """What the rule does, in a few words (menus)."""
    param: RuleParam
    needs_rewards_scale: bool = False  # True when `a` depends on the reward values, not only their ranks
    rewards_decide: bool = True
    """Whether `acceptance(u, r)` is all there is to the rule (False when it also looks at the samples)."""

    @abstractmethod
    def select(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Boolean mask of the accepted candidates of one group."""

    @abstractmethod
    def acceptance(self, u: np.ndarray, r: np.ndarray) -> np.ndarray:
        """`a` at reward quantiles `u` with rewards `r` (the same points, `r` non-decreasing in `u`)."""

    def select_groups(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`select` on each row of `(G, n)` rewards (equal-size groups); rules override it with one batched op."""
        return torch.stack([self.select(row, generator) for row in rewards])

    def level_acceptance(
        self, u_lo: np.ndarray, u_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, points: int = 64
    ) -> np.ndarray:
        """Mean `a` over levels of a discretised reward law: level `j` holds the quantiles `[u_lo, u_hi]` and
        the rewards `[r_lo, r_hi]`, spread evenly (a grid cell whose reward varies within it). Exact
        references use it so that the level a rule's boundary falls in is accepted in part, not wholly or
        not at all. This default averages `acceptance` at `points` midpoints; rules override it in closed form.
        """
        return self._level_mean(u_lo, u_hi, r_lo, r_hi, points, lambda a: a)

    def level_a_log_a(
        self, u_lo: np.ndarray, u_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, points: int = 64
    ) -> np.ndarray:
        """Mean of `a log a` over each level (as `level_acceptance`): what `KL(accepted ‖ p̄)` needs. A rule
        whose `a` is 0 or 1 has 0 here, whatever part of a level it accepts."""
        return self._level_mean(u_lo, u_hi, r_lo, r_hi, points, _a_log_a)

    def _level_mean(
        self,
        u_lo: np.ndarray,
        u_hi: np.ndarray,
        r_lo: np.ndarray,
        r_hi: np.ndarray,
        points: int,
        fn: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray:
        s = (np.arange(points) + 0.5) / points
        u = np.asarray(u_lo)[:, None] + np.subtract(u_hi, u_lo)[:, None] * s[None]
        r = np.asarray(r_lo)[:, None] + np.subtract(r_hi, r_lo)[:, None] * s[None]
        a = np.asarray(self.acceptance(u.ravel(), r.ravel()), dtype=float).reshape(u.shape)
        return np.asarray(fn(a)).mean(1)

    def kl_exact(self) -> float | None:
        """Closed-form `KL(accepted ‖ p̄)` for a continuous reward, where it does not depend on the reward law."""
        return None

    def expected_accept_fraction(self) -> float | None:
        return None

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class Threshold(AcceptanceRule):
    """Keep `r ≥ τ`."""

    threshold: float
    name: str = field(default="threshold", init=False)
    label = "keep rewards above a value"
    param = THRESHOLD
    needs_rewards_scale = True

    def select(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return rewards >= self.threshold

    def select_groups(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return rewards >= self.threshold

    def acceptance(self, u: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (r >= self.threshold).astype(float)

    def level_acceptance(
        self, u_lo: np.ndarray, u_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, points: int = 64
    ) -> np.ndarray:
        """The part of each level's reward interval at or above τ."""
        r_lo, r_hi = np.asarray(r_lo, dtype=float), np.asarray(r_hi, dtype=float)
        width = r_hi - r_lo
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.clip((r_hi - self.threshold) / width, 0.0, 1.0)
        return np.where(width > 0, part, (r_lo >= self.threshold).astype(float))

    def level_a_log_a(
        self, u_lo: np.ndarray, u_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, points: int = 64
    ) -> np.ndarray:
        return np.zeros(np.shape(u_lo))

    def describe(self) -> str:
        return f"threshold r ≥ {self.threshold:g}"


@dataclass(frozen=True)
class Quantile(AcceptanceRule):
    """Keep the top fraction `1 − q`: rewards at or above the batch q-quantile."""

    quantile: float
    name: str = field(default="quantile", init=False)
    label = "keep the top fraction of the batch"
    param = QUANTILE

    def select(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.select_groups(rewards[None], generator)[0]

    def select_groups(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        cut = torch.quantile(rewards.double(), self.quantile, dim=1, keepdim=True)
        return rewards.double() >= cut

    def acceptance(self, u: np.ndarray, r: np.ndarray) -> np.ndarray:
        return (u >= self.quantile).astype(float)

    def level_acceptance(
        self, u_lo: np.ndarray, u_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, points: int = 64
    ) -> np.ndarray:
        """The part of each level's quantile interval at or above q (ties at the boundary are cut there)."""
        u_lo, u_hi = np.asarray(u_lo, dtype=float), np.asarray(u_hi, dtype=float)
        width = u_hi - u_lo
        with np.errstate(divide="ignore", invalid="ignore"):
            part = np.clip((u_hi - self.quantile) / width, 0.0, 1.0)
        return np.where(width > 0, part, (u_lo >= self.quantile).astype(float))

    def level_a_log_a(
        self, u_lo: np.ndarray, u_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, points: int = 64
    ) -> np.ndarray:
        return np.zeros(np.shape(u_lo))

    def kl_exact(self) -> float:
        return -math.log(1 - self.quantile)

    def expected_accept_fraction(self) -> float:
        return 1 - self.quantile

    def describe(self) -> str:
        return f"top {100 * (1 - self.quantile):.3g} % (quantile {self.quantile:g})"


@dataclass(frozen=True)
class BestOfN(AcceptanceRule):
    """Split into groups of `n` in draw order and keep each group's best: accepted density `n F^(n−1) p̄`."""

    n: int
    name: str = field(default="best-of-n", init=False)
    label = "keep the best of each group of n"
    param = N

    def select(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.select_groups(rewards[None], generator)[0]

    def select_groups(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g, size = rewards.shape
        m = size // self.n
        mask = torch.zeros(g, size, dtype=torch.bool)
        if m:
            best = rewards[:, : m * self.n].reshape(g, m, self.n).argmax(dim=2)  # (g, m)
            mask[torch.arange(g)[:, None], torch.arange(m)[None] * self.n + best] = True
        return mask

    def acceptance(self, u: np.ndarray, r: np.ndarray) -> np.ndarray:
        return u ** (self.n - 1)

    def level_acceptance(
        self, u_lo: np.ndarray, u_hi: np.ndarray, r_lo: np.ndarray, r_hi: np.ndarray, points: int = 64
    ) -> np.ndarray:
        """`∫ u^(n−1) du / (u_hi − u_lo) = (u_hi^n − u_lo^n) / (n (u_hi − u_lo))` over each level."""
        u_lo, u_hi = np.asarray(u_lo, dtype=float), np.asarray(u_hi, dtype=float)
        width = u_hi - u_lo
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (u_hi**self.n - u_lo**self.n) / (self.n * width)
        return np.where(width > 0, mean, u_lo ** (self.n - 1))

    def kl_exact(self) -> float:
        return math.log(self.n) - (self.n - 1) / self.n

    def expected_accept_fraction(self) -> float:
        return 1 / self.n

    def describe(self) -> str:
        return f"best of {self.n}"


@dataclass(frozen=True)
class TopK(AcceptanceRule):
    """Keep the `k` best of each group of `N`: `a(u) = P[Bin(N − 1, 1 − u) ≤ k − 1]`."""

    k: int
    group_size: int
    name: str = field(default="top-k", init=False)
    label = "keep the k best of the batch"
    param = K

    def select(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.select_groups(rewards[None], generator)[0]

    def select_groups(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mask = torch.zeros(rewards.shape, dtype=torch.bool)
        top = torch.topk(rewards, min(self.k, rewards.shape[1]), dim=1).indices
        mask[torch.arange(len(rewards))[:, None], top] = True
        return mask

    def acceptance(self, u: np.ndarray, r: np.ndarray) -> np.ndarray:
        from scipy.stats import binom

        return np.asarray(binom.cdf(self.k - 1, self.group_size - 1, 1 - np.asarray(u)), dtype=float)

    def expected_accept_fraction(self) -> float:
        return self.k / self.group_size

    def describe(self) -> str:
        return f"top {self.k} of {self.group_size}"


@dataclass(frozen=True)
class DedupTopK(AcceptanceRule):
    """Top-`k` after removing duplicates: of candidates sharing a key, only the best counts (molecules).

    For a continuous reward with no duplicates its `a(u)` is that of top-K of N.
    """

    k: int
    group_size: int
    key: Callable[[torch.Tensor], Sequence[Hashable]] | None = None
    samples: torch.Tensor | None = None
    name: str = field(default="dedup-top-k", init=False)
    label = "top-k counting near-duplicates once"
    param = K
    rewards_decide = False

    def with_samples(self, samples: torch.Tensor) -> DedupTopK:
        """The rule bound to the candidates of a group, whose keys decide what counts as a duplicate."""
        return DedupTopK(self.k, self.group_size, self.key, samples)

    def select(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.samples is None or self.key is None:
            raise ValueError("dedup-top-k needs the candidates and a key function: call with_samples() first")
        keys = self.key(self.samples)
        mask = torch.zeros(len(rewards), dtype=torch.bool)
        seen: set[Hashable] = set()
        for i in torch.argsort(rewards, descending=True, stable=True).tolist():
            if keys[i] in seen:
                continue
            seen.add(keys[i])
            mask[i] = True
            if len(seen) == self.k:
                break
        return mask

    def acceptance(self, u: np.ndarray, r: np.ndarray) -> np.ndarray:
        return TopK(self.k, self.group_size).acceptance(u, r)

    def describe(self) -> str:
        return f"top {self.k} of {self.group_size}, de-duplicated"


@dataclass(frozen=True)
class Soft(AcceptanceRule):
    """Boltzmann: accept with probability `exp((r − r_max) / β)`; the exact KL-regularised optimum `∝ p̄ e^(r/β)`."""

    beta: float
    name: str = field(default="soft", init=False)
    label = "accept with probability exp((r − r_max)/β)"
    param = BETA
    needs_rewards_scale = True

    def select(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.select_groups(rewards[None], generator)[0]

    def select_groups(self, rewards: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r = rewards.double()
        p = torch.exp((r - r.max(dim=1, keepdim=True).values) / self.beta)
        return torch.rand(r.shape, generator=generator, dtype=torch.float64) < p

    def acceptance(self, u: np.ndarray, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, dtype=float)
        return np.exp((r - r.max()) / self.beta)

    def describe(self) -> str:
        return f"soft, β = {self.beta:g}"


def _a_log_a(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)


def implied_kl(rule: AcceptanceRule, u: np.ndarray, r: np.ndarray) -> float:
    """`KL(p̄ a / E a ‖ p̄) = ∫ (a/ā) log(a/ā) du`, `u` uniform under `p̄` for a continuous reward.

    `u` is an equally spaced grid of quantiles (midpoints) and `r` the reward quantile function on it.
    """
    a = rule.acceptance(u, r)
    mean = float(a.mean())
    if mean <= 0:
        return float("nan")
    w = a / mean
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(w > 0, w * np.log(w), 0.0)
    return float(terms.mean())


def reshaped_reward(rule: AcceptanceRule, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    """`log a(u)`: the reward GRAFT maximises (with α = 1), up to a constant; `-inf` where `a = 0`."""
    with np.errstate(divide="ignore"):
        return np.log(rule.acceptance(u, r))


def apply_rule(
    rule: AcceptanceRule,
    rewards: torch.Tensor,
    groups: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    samples: torch.Tensor | None = None,
) -> torch.Tensor:
    """Accepted mask over all candidates, the rule applied within each group (prompt) separately."""
    if groups is None:
        groups = torch.zeros(len(rewards), dtype=torch.long)
    ids, counts = torch.unique_consecutive(groups, return_counts=True)
    contiguous = len(torch.unique(ids)) == len(ids)
    if contiguous and not isinstance(rule, DedupTopK) and bool((counts == counts[0]).all()):
        # Equal-size contiguous groups (every prompt has N candidates): one batched selection.
        return rule.select_groups(rewards.reshape(len(ids), -1), generator).reshape(-1)
    mask = torch.zeros(len(rewards), dtype=torch.bool)
    for g in torch.unique(groups).tolist():
        idx = torch.nonzero(groups == g).flatten()
        group_rule = rule.with_samples(samples[idx]) if isinstance(rule, DedupTopK) and samples is not None else rule
        mask[idx] = group_rule.select(rewards[idx], generator)
    return mask


RULES: dict[str, type[AcceptanceRule]] = {
    "threshold": Threshold,
    "quantile": Quantile,
    "best-of-n": BestOfN,
    "top-k": TopK,
    "soft": Soft,
    "dedup-top-k": DedupTopK,
}
"""Every rule by name, in menu order."""


def rule_param(name: str) -> RuleParam:
    """The parameter of the rule `name` (`ValueError` naming `--rule` for an unknown rule)."""
    if name not in RULES:
        raise ValueError(f"--rule: unknown {name!r}; choose one of {list(RULES)}")
    return RULES[name].param


def make_rule(
    name: str,
    *,
    threshold: float | None = None,
    quantile: float | None = None,
    n: int | None = None,
    k: int | None = None,
    beta: float | None = None,
    group_size: int | None = None,
    key: Callable[[torch.Tensor], Sequence[Hashable]] | None = None,
) -> AcceptanceRule:
    """Build a rule from its name and parameter; a missing parameter raises naming the flag."""
    param = rule_param(name)
    value = {"threshold": threshold, "quantile": quantile, "n": n, "k": k, "beta": beta}[param.name]
    if value is None:
        raise ValueError(f"--{param.name}: the rule {name!r} needs it")
    typed = param.kind(value)
    if name in ("top-k", "dedup-top-k"):
        if group_size is None:
            raise ValueError(f"--samples: the rule {name!r} needs the group size")
        return TopK(typed, int(group_size)) if name == "top-k" else DedupTopK(typed, int(group_size), key)
    return RULES[name](typed)  # type: ignore[call-arg]
