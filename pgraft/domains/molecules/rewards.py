"""Rewards of the molecules domain (docs/domains.md §B.2–B.3): RDKit properties of the decoded molecules.

The engine calls a reward with the model's samples `(N, L, V + 1)` (token states, see `model.py`). Each
reward decodes them once to canonical SMILES (`smiles_of`) and scores each molecule. An invalid or empty
molecule gets the reward's named sentinel `invalid_reward` (a `--reward-arg`, default the reward's minimum
on valid molecules or below it), never NaN. A user reward `module:function` receives the list of SMILES,
`''` for an invalid sample, and returns `(N,)`.

| reward | value on a valid molecule | `invalid_reward` |
|---|---|---|
| `qed` | `QED.qed`, in (0, 1), higher is more drug-like | 0 |
| `sa` | `(10 − SA) / 9` in [0, 1], SA the Ertl–Schuffenhauer score (1 easy .. 10 hard) | 0 |
| `logp` | Crippen logP; with `target=T`: `−|logP − T|` | −10 |
| `penalized-logp` | `logP − SA − max(0, largest ring − 6)` | −20 |
| `rings` | ring count; with `target=k`: `−|rings − k|` | −10 |
| `aromatic-rings` | aromatic ring count | 0 |
| `substructure` | 1 if the SMARTS `smarts` matches, else 0 | 0 |
| `similarity` | Tanimoto of Morgan fingerprints (radius 2, 2048 bits) to `target` SMILES | 0 |
| `heavy-atoms` | `−|heavy atoms − target|` | −10 |
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from pgraft.rewards import RewardFn, RewardSpec, SampleView

DOMAIN = "molecules"
CARBONYL = "[#6X3]=[OX1]"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"


# --- decoding ------------------------------------------------------------------------------------------
@lru_cache(maxsize=200_000)
def _decode_row(row: bytes) -> str:
    from pgraft.domains.molecules.data import decode_tokens

    return decode_tokens(np.frombuffer(row, dtype=np.uint8)[None])[0]


def smiles_of(x: torch.Tensor | list[str]) -> list[str]:
    """Canonical SMILES of each sample (`''` for invalid); a list of SMILES passes through."""
    if isinstance(x, list):
        return x
    from pgraft.domains.molecules.model import tokens_of

    tokens = tokens_of(x.detach().cpu()).numpy().astype(np.uint8)
    return [_decode_row(row.tobytes()) for row in tokens]


@lru_cache(maxsize=200_000)
def mol_of(smiles: str) -> Any:
    from pgraft.domains.molecules.data import require_rdkit

    Chem = require_rdkit()
    return Chem.MolFromSmiles(smiles) if smiles else None


# --- properties of one molecule (RDKit imported lazily) ---------------------------------------------------
def qed(mol: Any) -> float:
    from rdkit.Chem import QED

    return float(QED.qed(mol))


@lru_cache(maxsize=1)
def _sascorer() -> Any:
    from rdkit import RDConfig

    path = os.path.join(RDConfig.RDContribDir, "SA_Score")
    if path not in sys.path:
        sys.path.append(path)
    import sascorer  # type: ignore[import-not-found]

    return sascorer


def sa_score(mol: Any) -> float:
    """The synthetic-accessibility score, 1 (easy) .. 10 (hard)."""
    return float(_sascorer().calculateScore(mol))


def logp(mol: Any) -> float:
    from rdkit.Chem import Crippen

    return float(Crippen.MolLogP(mol))  # type: ignore[attr-defined]


def largest_ring(mol: Any) -> int:
    rings = mol.GetRingInfo().AtomRings()
    return max((len(r) for r in rings), default=0)


def penalized_logp(mol: Any) -> float:
    return logp(mol) - sa_score(mol) - max(0, largest_ring(mol) - 6)


def rings(mol: Any) -> int:
    from rdkit.Chem import rdMolDescriptors

    return int(rdMolDescriptors.CalcNumRings(mol))


def aromatic_rings(mol: Any) -> int:
    from rdkit.Chem import rdMolDescriptors

    return int(rdMolDescriptors.CalcNumAromaticRings(mol))


def heavy_atoms(mol: Any) -> int:
    return int(mol.GetNumHeavyAtoms())


def fingerprint(mol: Any) -> Any:

    return _morgan().GetFingerprint(mol) if mol is not None else None


@lru_cache(maxsize=1)
def _morgan() -> Any:
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


def tanimoto(a: Any, b: Any) -> float:
    from rdkit import DataStructs

    return float(DataStructs.TanimotoSimilarity(a, b))


# --- reward factories ------------------------------------------------------------------------------------
def per_molecule(fn: Callable[[Any], float], invalid: float) -> RewardFn:
    """A reward over samples from a function of one RDKit molecule; `invalid` where there is none."""
    if not math.isfinite(invalid):
        raise ValueError(f"--reward-arg invalid_reward: {invalid!r} is invalid; give a finite number")

    def reward(x: torch.Tensor) -> torch.Tensor:
        values = [invalid if (m := mol_of(s)) is None else fn(m) for s in smiles_of(x)]
        return torch.tensor(values, dtype=torch.float64)

    return reward


def _optional_target(name: str, value: Any) -> float | None:
    """`target`: 'none' (or empty) for the plain value, else a finite number."""
    if value is None or str(value).strip().lower() in ("", "none"):
        return None
    try:
        target = float(value)
    except ValueError:
        raise ValueError(
            f"--reward-arg target: {value!r} is invalid for reward {name!r}; give a number, or none"
        ) from None
    if not math.isfinite(target):
        raise ValueError(f"--reward-arg target: {value!r} is invalid for reward {name!r}; give a finite number")
    return target


def _simple(fn: Callable[[Any], float]) -> Callable[..., RewardFn]:
    def factory(context: dict[str, Any], invalid_reward: float) -> RewardFn:
        return per_molecule(fn, invalid_reward)

    return factory


def _targeted(name: str, fn: Callable[[Any], float]) -> Callable[..., RewardFn]:
    def factory(context: dict[str, Any], target: str, invalid_reward: float) -> RewardFn:
        t = _optional_target(name, target)
        return per_molecule(fn if t is None else (lambda m: -abs(fn(m) - t)), invalid_reward)

    return factory


def _substructure(context: dict[str, Any], smarts: str, invalid_reward: float) -> RewardFn:
    from pgraft.domains.molecules.data import require_rdkit

    Chem = require_rdkit()
    pattern = Chem.MolFromSmarts(smarts) if smarts else None
    if pattern is None:
        raise ValueError(
            f"--reward-arg smarts: {smarts!r} is not a SMARTS pattern RDKit can parse (e.g. {CARBONYL} for a carbonyl)"
        )
    return per_molecule(lambda m: float(m.HasSubstructMatch(pattern)), invalid_reward)


def _similarity(context: dict[str, Any], target: str, invalid_reward: float) -> RewardFn:
    ref = mol_of(target)
    if ref is None:
        raise ValueError(f"--reward-arg target: {target!r} is not a SMILES RDKit can parse (e.g. {ASPIRIN})")
    ref_fp = fingerprint(ref)
    return per_molecule(lambda m: tanimoto(fingerprint(m), ref_fp), invalid_reward)


def _heavy_atoms(context: dict[str, Any], target: int, invalid_reward: float) -> RewardFn:
    if target < 0:
        raise ValueError(f"--reward-arg target: {target} is invalid for reward 'heavy-atoms'; allowed 0 or more")
    return per_molecule(lambda m: -abs(heavy_atoms(m) - target), invalid_reward)


def _spec(
    factory: Callable[..., RewardFn], description: str, invalid: float, notations: tuple[str, ...] = (), **params: Any
) -> RewardSpec:
    """`notations`: the parameters that take a SMILES or SMARTS."""
    return RewardSpec(factory, DOMAIN, description, {**params, "invalid_reward": invalid}, notations=notations)


REWARDS: dict[str, RewardSpec] = {
    "qed": _spec(_simple(qed), "QED drug-likeness (RDKit), in (0, 1)", 0.0),
    "sa": _spec(_simple(lambda m: (10 - sa_score(m)) / 9), "synthetic accessibility (10 - SA) / 9, 1 = easy", 0.0),
    "logp": _spec(_targeted("logp", logp), "Crippen logP, or -|logP - target|", -10.0, target="none"),
    "penalized-logp": _spec(_simple(penalized_logp), "logP - SA - max(0, largest ring - 6)", -20.0),
    "rings": _spec(_targeted("rings", rings), "number of rings, or -|rings - target|", -10.0, target="none"),
    "aromatic-rings": _spec(_simple(aromatic_rings), "number of aromatic rings", 0.0),
    "substructure": _spec(_substructure, "1 if the SMARTS pattern matches", 0.0, ("smarts",), smarts=CARBONYL),
    "similarity": _spec(
        _similarity, "Morgan (r 2, 2048 bits) Tanimoto to a target SMILES", 0.0, ("target",), target=ASPIRIN
    ),
    "heavy-atoms": _spec(_heavy_atoms, "-|heavy atoms - target|", -10.0, target=9),
}
SAMPLE_VIEW = SampleView(
    "a list of N canonical SMILES strings ('' for an invalid sample); return N floats",
    smiles_of,  # type: ignore[arg-type]
)
