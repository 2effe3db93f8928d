"""QM9 and NCI molecules as canonical SMILES and fixed-length SELFIES token rows (docs/domains.md §B.3).

QM9 is read from the CSV files inside the `qm9pack` wheel, located through the package metadata and never
imported (`import qm9pack` is broken in the environments we measured). Every molecule is canonicalised
with RDKit, kekulised and SELFIES-encoded once; the result is cached as an `.npz` under the user's cache
folder (`$PGRAFT_CACHE`, else `$XDG_CACHE_HOME/pgraft`, else `~/.cache/pgraft`), keyed by the files' sizes,
so a second load takes well under a second.

Tokens: the 28 SELFIES symbols QM9 uses plus `[nop]` (index 0), SELFIES' no-operation symbol, which pads a
row of `LENGTH = 21` anywhere. A row decodes by dropping `[nop]`, `selfies.decoder`, RDKit canonical SMILES;
an all-`[nop]` row decodes to `''`, counted invalid. NCI 5K (`rdkit/Data/NCI/first_5K.smi`) is the drug-like
reference set of the property histograms.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

VOCAB: tuple[str, ...] = (
    "[nop]",
    "[#Branch1]",
    "[#Branch2]",
    "[#C]",
    "[#N]",
    "[=Branch1]",
    "[=Branch2]",
    "[=C]",
    "[=N+1]",
    "[=NH1+1]",
    "[=NH2+1]",
    "[=N]",
    "[=O]",
    "[Branch1]",
    "[Branch2]",
    "[C-1]",
    "[CH1-1]",
    "[C]",
    "[F]",
    "[N+1]",
    "[N-1]",
    "[NH1+1]",
    "[NH2+1]",
    "[NH3+1]",
    "[N]",
    "[O-1]",
    "[O]",
    "[Ring1]",
    "[Ring2]",
)
NOP = 0
LENGTH = 21
HELD_OUT = 5000
"""QM9 molecules kept out of training (a fixed permutation of seed 0); the rest is the training split."""
INDEX = {s: i for i, s in enumerate(VOCAB)}
MISSING_EXTRA = "the molecules domain needs RDKit, selfies and qm9pack: pip install 'pgraft[mol]'"


class MissingExtra(ImportError):
    """The `mol` extra is not installed (the message says how to install it)."""


def require_rdkit() -> Any:
    try:
        from rdkit import Chem, RDLogger
    except ImportError as exc:
        raise MissingExtra(MISSING_EXTRA) from exc
    RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]
    return Chem


def require_selfies() -> Any:
    try:
        import selfies
    except ImportError as exc:
        raise MissingExtra(MISSING_EXTRA) from exc
    return selfies


# --- SMILES <-> SELFIES <-> token rows ---------------------------------------------------------------------
def canonical(smiles: str) -> str:
    """RDKit's canonical (isomeric) SMILES of the largest fragment, or `''` when it does not parse."""
    Chem = require_rdkit()
    if not smiles:
        return ""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return ""
    frags = Chem.GetMolFrags(mol, asMols=True)
    if len(frags) > 1:
        mol = max(frags, key=lambda m: m.GetNumHeavyAtoms())
    return str(Chem.MolToSmiles(mol))


def encode(smiles: str) -> str | None:
    """The SELFIES of a molecule, kekulised first (no aromatic tokens), or None when RDKit or SELFIES refuse it."""
    Chem = require_rdkit()
    sf = require_selfies()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    Chem.Kekulize(mol, clearAromaticFlags=True)
    try:
        return str(sf.encoder(Chem.MolToSmiles(mol, kekuleSmiles=True)))
    except Exception:  # selfies.EncoderError: a valence SELFIES does not allow
        return None


def to_tokens(selfies_string: str, length: int = LENGTH) -> np.ndarray | None:
    """A SELFIES string as a row of `length` token ids padded with `[nop]`; None if too long or off-vocabulary."""
    sf = require_selfies()
    symbols = list(sf.split_selfies(selfies_string))
    if len(symbols) > length or any(s not in INDEX for s in symbols):
        return None
    row = np.full(length, NOP, dtype=np.uint8)
    row[: len(symbols)] = [INDEX[s] for s in symbols]
    return row


def decode_tokens(rows: np.ndarray | Sequence[Sequence[int]]) -> list[str]:
    """Canonical SMILES of each token row (`''` for an empty or undecodable one). `[nop]` anywhere is skipped."""
    sf = require_selfies()
    out: list[str] = []
    for row in np.asarray(rows, dtype=np.int64).reshape(len(rows), -1):
        string = "".join(VOCAB[int(i)] for i in row if 0 < int(i) < len(VOCAB))
        try:
            smiles = sf.decoder(string) if string else ""
        except Exception:
            smiles = ""
        out.append(canonical(smiles) if smiles else "")
    return out


# --- QM9 -------------------------------------------------------------------------------------------------
def qm9_files() -> list[Path]:
    """The `qm9_part*.csv` files of the installed `qm9pack` wheel (found without importing it)."""
    import importlib.util
    from importlib import metadata

    try:
        files = [Path(str(f.locate())) for f in metadata.files("qm9pack") or [] if "qm9_part" in str(f)]
    except metadata.PackageNotFoundError:
        files = []
    if not files:
        spec = importlib.util.find_spec("qm9pack")
        if spec is None or not spec.submodule_search_locations:
            raise MissingExtra(MISSING_EXTRA)
        files = sorted(Path(next(iter(spec.submodule_search_locations)), "data").glob("qm9_part*.csv"))
    files = sorted(f for f in files if f.suffix == ".csv" and f.exists())
    if not files:
        raise MissingExtra(f"qm9pack is installed but has no data/qm9_part*.csv files; {MISSING_EXTRA}")
    return files


def read_smiles_csv(paths: Iterable[Path], column: str = "SMILES") -> list[str]:
    """The `column` of CSV files with a header row (QM9's layout), in file order."""
    out: list[str] = []
    csv.field_size_limit(1 << 30)
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise ValueError(f"{path}: no {column!r} column (columns: {reader.fieldnames})")
            out.extend(row[column] for row in reader)
    return out


def cache_dir() -> Path:
    root = os.environ.get("PGRAFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pgraft"
    )
    return Path(root)


@dataclass(frozen=True)
class MoleculeSet:
    """Molecules as canonical SMILES and token rows (`tokens[i]` encodes `smiles[i]`), and the split."""

    smiles: tuple[str, ...]
    tokens: np.ndarray
    train: np.ndarray
    """Indices of the training split."""

    @property
    def train_smiles(self) -> frozenset[str]:
        return frozenset(self.smiles[i] for i in self.train.tolist())

    @property
    def all_smiles(self) -> frozenset[str]:
        return frozenset(self.smiles)


def encode_all(raw: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Canonical SMILES and token rows of the molecules that encode into the vocabulary (others dropped)."""
    smiles, rows = [], []
    for s in raw:
        c = canonical(s)
        if not c:
            continue
        enc = encode(c)
        row = to_tokens(enc) if enc is not None else None
        if row is not None:
            smiles.append(c)
            rows.append(row)
    return smiles, np.stack(rows) if rows else np.zeros((0, LENGTH), dtype=np.uint8)


def build_set(raw: Sequence[str], held_out: int = HELD_OUT, seed: int = 0) -> MoleculeSet:
    smiles, tokens = encode_all(raw)
    order = np.random.default_rng(seed).permutation(len(smiles))
    held = min(held_out, len(smiles) // 10)
    return MoleculeSet(tuple(smiles), tokens, np.sort(order[held:]))


@lru_cache(maxsize=2)
def qm9(paths: tuple[Path, ...] | None = None) -> MoleculeSet:
    """QM9 (130,831 rows of `qm9pack`), canonicalised and encoded; cached on disk after the first call (~30 s)."""
    files = list(paths) if paths is not None else qm9_files()
    stamp = hashlib.sha256(repr([(f.name, f.stat().st_size) for f in files]).encode()).hexdigest()[:12]
    cached = cache_dir() / f"qm9_selfies_{LENGTH}_{stamp}.npz"
    if cached.exists():
        z = np.load(cached, allow_pickle=False)
        return MoleculeSet(tuple(str(s) for s in z["smiles"]), z["tokens"], z["train"])
    data = build_set(read_smiles_csv(files))
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, smiles=np.array(data.smiles), tokens=data.tokens, train=data.train)
    os.replace(tmp, cached)
    return data


@lru_cache(maxsize=1)
def nci_smiles() -> tuple[str, ...]:
    """NCI 5K from RDKit's data folder, canonical, organic single-fragment molecules only (the drug-like
    reference of the property histograms)."""
    Chem = require_rdkit()
    from rdkit import RDConfig

    path = Path(RDConfig.RDDataDir, "NCI", "first_5K.smi")
    out: list[str] = []
    organic = {"C", "N", "O", "S", "P", "F", "Cl", "Br", "I", "H"}
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts or "." in parts[0]:
            continue
        mol = Chem.MolFromSmiles(parts[0])
        if mol is None or any(a.GetSymbol() not in organic for a in mol.GetAtoms()):
            continue
        out.append(str(Chem.MolToSmiles(mol)))
    return tuple(dict.fromkeys(out))
