"""Per-round metrics, files and pictures of the molecules domain (docs/domains.md §B.3).

Metrics (`metrics.csv` columns): `validity` (`''` counts invalid), `uniqueness`, `novelty` against the
training split, `in_qm9` (valid samples that are QM9 molecules at all: with SELFIES validity is 100 % by
construction, so this carries realism), heavy atoms (mean, share with 9), `distinct_keys`, `duplicates`,
`distinct_accepted_frac` (distinct accepted molecules / K, for the top-K rules), `internal_diversity`
(1 − mean pairwise Morgan Tanimoto over up to 300 unique molecules), `fd_descriptors` (Fréchet distance of
standardised RDKit descriptor vectors against 2,000 held-out QM9 molecules; FCD needs a ChemNet download),
and the means of QED, SA, logP and rings.

Files of each round folder: `candidates.csv` (`smiles`, `reward`, `accepted`, `dedup_key`) and
`preview.png`, the RDKit grid of the preview molecules (the same seeds every round), the reward in each
legend, a repeated molecule marked `(dup)`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Hashable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

import pgraft.domains.molecules.rewards as R

GRID_MOLECULES = 12
GRID_PER_ROW = 6
DESCRIPTORS = (
    "MolWt",
    "MolLogP",
    "TPSA",
    "NumHDonors",
    "NumHAcceptors",
    "NumRotatableBonds",
    "RingCount",
    "NumAromaticRings",
    "HeavyAtomCount",
    "FractionCSP3",
    "NumValenceElectrons",
)


def descriptor_matrix(smiles: Sequence[str]) -> np.ndarray:
    """RDKit descriptors (`DESCRIPTORS`) of each valid molecule, `(n_valid, d)`."""
    from rdkit.Chem import Descriptors

    fns = [getattr(Descriptors, name) for name in DESCRIPTORS]
    rows = [[float(f(m)) for f in fns] for s in smiles if (m := R.mol_of(s)) is not None]
    return np.asarray(rows, dtype=float).reshape(-1, len(DESCRIPTORS))


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of `a` and `b`."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    mu = a.mean(0) - b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb)
    root = np.real(root)
    return float(mu @ mu + np.trace(ca + cb - 2 * root))


def internal_diversity(smiles: Sequence[str], limit: int = 300, seed: int = 0) -> float:
    """`1 − mean pairwise Tanimoto` of Morgan fingerprints over up to `limit` unique valid molecules."""
    from rdkit import DataStructs

    unique = sorted({s for s in smiles if s})
    if len(unique) < 2:
        return 0.0
    if len(unique) > limit:
        pick = np.random.default_rng(seed).choice(len(unique), limit, replace=False)
        unique = [unique[i] for i in sorted(pick)]
    fps = [R.fingerprint(R.mol_of(s)) for s in unique]
    total, count = 0.0, 0
    for i in range(1, len(fps)):
        sims = DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i])
        total += float(sum(sims))
        count += len(sims)
    return 1.0 - total / count


@lru_cache(maxsize=1)
def reference() -> tuple[frozenset[str], frozenset[str], np.ndarray, np.ndarray, np.ndarray]:
    """QM9's training SMILES, all its SMILES, and the held-out reference: descriptor mean, std, standardised rows."""
    from pgraft.domains.molecules.data import qm9

    data = qm9()
    held = np.setdiff1d(np.arange(len(data.smiles)), data.train)
    pick = np.random.default_rng(0).choice(held, min(2000, len(held)), replace=False)
    desc = descriptor_matrix([data.smiles[i] for i in pick])
    mean, std = desc.mean(0), desc.std(0) + 1e-6
    return data.train_smiles, data.all_smiles, mean, std, (desc - mean) / std


def property_table(smiles: Sequence[str]) -> dict[str, np.ndarray]:
    """QED, SA, logP, rings and heavy atoms of each valid molecule (for the histograms)."""
    mols = [m for s in smiles if (m := R.mol_of(s)) is not None]
    return {
        "heavy atoms": np.array([R.heavy_atoms(m) for m in mols], dtype=float),
        "QED": np.array([R.qed(m) for m in mols]),
        "logP": np.array([R.logp(m) for m in mols]),
        "SA": np.array([R.sa_score(m) for m in mols]),
        "rings": np.array([R.rings(m) for m in mols], dtype=float),
    }


def molecule_metrics(smiles: Sequence[str]) -> dict[str, float]:
    from pgraft.domains.molecules.training import generation_stats

    train, known, mean, std, ref = reference()
    stats = generation_stats(list(smiles), train, known)
    valid = [s for s in smiles if s]
    props = property_table(valid)
    desc = (descriptor_matrix(valid) - mean) / std
    stats.update(
        distinct_keys=float(len(set(valid))),
        duplicates=float(len(valid) - len(set(valid))),
        internal_diversity=internal_diversity(valid),
        fd_descriptors=frechet(desc, ref),
        qed_mean=float(props["QED"].mean()) if len(valid) else float("nan"),
        sa_mean=float(props["SA"].mean()) if len(valid) else float("nan"),
        logp_mean=float(props["logP"].mean()) if len(valid) else float("nan"),
        rings_mean=float(props["rings"].mean()) if len(valid) else float("nan"),
    )
    return stats


def grid_png(smiles: Sequence[str], rewards: Sequence[float], per_row: int = GRID_PER_ROW, size: int = 200) -> bytes:
    """RDKit's grid of the molecules, `reward` in each legend, repeats marked `(dup)`, `invalid` tiles empty."""
    from rdkit.Chem import Draw

    seen: set[str] = set()
    legends = []
    for s, r in zip(smiles, rewards, strict=True):
        tag = "invalid" if not s else ("(dup) " if s in seen else "")
        seen.add(s)
        legends.append(f"{tag}{float(r):.3f}" if s else f"invalid {float(r):.3f}")
    mols = [R.mol_of(s) for s in smiles]
    image = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(size, size), legends=legends)
    if isinstance(image, bytes):
        return image
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class MoleculesEvaluator:
    """Realism and diversity of each round's molecules, the round's files, and the dedup key (canonical SMILES)."""

    def __init__(
        self,
        model: Any,
        reward: Any,
        rule: Any,
        cutoff_timestep: float | None,
        stochastic_continuation: bool,
        prompts: list[str] | None = None,
    ) -> None:
        self.model = model
        self.reward = reward
        self.rule = rule

    def round_metrics(self, round_index: int, samples: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        smiles = R.smiles_of(samples)
        stats = molecule_metrics(smiles)
        k = getattr(self.rule, "k", None)
        if k and getattr(self.rule, "name", "") in ("top-k", "dedup-top-k"):  # deterministic rules: re-apply
            rule = self.rule.with_samples(samples) if hasattr(self.rule, "with_samples") else self.rule
            if getattr(rule, "key", 1) is None:
                rule = type(rule)(rule.k, rule.group_size, self.dedup_key(0.0), samples)
            accepted = rule.select(rewards)
            stats["distinct_accepted_frac"] = len({smiles[i] for i in accepted.nonzero().flatten().tolist()}) / k
        return stats

    def dedup_key(self, resolution: float) -> Callable[[torch.Tensor], Sequence[Hashable]]:
        """Canonical SMILES (`''` for every invalid sample: they count as one molecule)."""
        return lambda x: R.smiles_of(x)

    def round_artifacts(self, result: Any) -> dict[str, bytes]:
        import csv

        smiles = R.smiles_of(result.samples)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["smiles", "reward", "accepted", "dedup_key"])
        for s, r, a in zip(smiles, result.rewards.tolist(), result.accepted.tolist(), strict=True):
            writer.writerow([s, f"{r:.6g}", int(a), s])
        preview = R.smiles_of(result.preview_samples[:GRID_MOLECULES])
        return {
            "candidates.csv": buf.getvalue().encode(),
            "preview.png": grid_png(preview, result.preview_rewards[:GRID_MOLECULES].tolist()),
        }


def samples_figure(first: Any, latest: Any, evaluator: Any) -> Any:
    """The app's picture: the preview molecules of round 0 and of the latest round (same seeds), and the
    histograms of heavy atoms, QED, logP and the reward against QM9, with the acceptance cut on the reward."""
    import plotly.graph_objects as go
    from PIL import Image
    from plotly.subplots import make_subplots

    from pgraft.domains.molecules.data import qm9

    fig = make_subplots(
        rows=2,
        cols=4,
        specs=[[{"colspan": 2}, None, {"colspan": 2}, None], [{}, {}, {}, {}]],
        subplot_titles=(
            "round 0 (preview seeds)",
            f"round {latest.round} (same seeds)",
            "heavy atoms",
            "QED",
            "logP",
            "reward (cut: lowest accepted)",
        ),
        vertical_spacing=0.08,
    )
    for col, result in ((1, first), (3, latest)):
        smiles = R.smiles_of(result.preview_samples[:GRID_MOLECULES])
        png = grid_png(smiles, result.preview_rewards[:GRID_MOLECULES].tolist(), per_row=4, size=150)
        fig.add_trace(go.Image(z=np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))), row=1, col=col)
    data = qm9()
    ref = list(data.smiles[:: max(1, len(data.smiles) // 2000)])
    tables = {"QM9": property_table(ref), "round 0": property_table(R.smiles_of(first.samples))}
    tables[f"round {latest.round}"] = property_table(R.smiles_of(latest.samples))
    colours = {"QM9": "#888888", "round 0": "#1f77b4", f"round {latest.round}": "#ff7f0e"}
    for col, prop in ((1, "heavy atoms"), (2, "QED"), (3, "logP")):
        for name, table in tables.items():
            fig.add_trace(
                go.Histogram(
                    x=table[prop],
                    histnorm="probability",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker_color=colours[name],
                    opacity=0.55,
                ),
                row=2,
                col=col,
            )
    for name, result in (("round 0", first), (f"round {latest.round}", latest)):
        fig.add_trace(
            go.Histogram(
                x=result.rewards.numpy(),
                histnorm="probability",
                name=name,
                legendgroup=name,
                showlegend=False,
                marker_color=colours[name],
                opacity=0.55,
            ),
            row=2,
            col=4,
        )
    if latest.accepted.any():
        cut = float(latest.rewards[latest.accepted].min())
        fig.add_vline(x=cut, line_dash="dash", line_color="black", row=2, col=4)  # type: ignore[arg-type]
    fig.update_layout(barmode="overlay", height=720, margin=dict(t=40, l=10, r=10, b=10))
    fig.update_xaxes(showticklabels=False, row=1)
    fig.update_yaxes(showticklabels=False, row=1)
    return fig
