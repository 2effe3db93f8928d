"""Tables and files of an inverse-noise-correction run: what `pgraft inc --out DIR` writes.

- `correction-K{K}.safetensors`: the correction flow trained on the noises inverted through the K-step
  sampler (its architecture, the base model, the run config and the training record in the metadata);
- `quality_vs_flops.csv`: one row per sampler: method, K, m, FLOPs per image, quality metrics, and the
  equal-compute comparison of every corrected row;
- `diagnostics.csv` / `diagnostics.json`: the inverted noises against `N(0, I)` per K; the JSON adds the run
  config, FLOPs, notices, training records and every inversion step (also in `inversion_steps.csv`);
- `report.html`: the plots on one standalone page (plotly.js embedded: works offline).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from pgraft.inc.run import IncResult


def quality_table(rows: list[dict[str, Any]], primary: str, higher_is_better: bool) -> pd.DataFrame:
    """The rows as a table, plus for every corrected row the cheapest base sampler with at least its FLOPs
    (`base_steps_at_equal_flops`, its `primary` metric, and `gain_at_equal_flops` > 0 when the corrected row
    is better: the paper's claim is better quality at no more compute)."""
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    base = table[table["method"] == "base"].sort_values("flops_per_image")
    steps, values = [], []
    for _, row in table.iterrows():
        richer = base[base["flops_per_image"] >= row["flops_per_image"]] if row["method"] == "corrected" else base[:0]
        steps.append(int(richer["num_inference_steps"].iloc[0]) if len(richer) else None)
        values.append(float(richer[primary].iloc[0]) if len(richer) else np.nan)
    table["base_steps_at_equal_flops"] = pd.array(steps, dtype="Int64")
    table[f"base_{primary}_at_equal_flops"] = values
    sign = 1.0 if higher_is_better else -1.0
    table["gain_at_equal_flops"] = sign * (table[primary] - table[f"base_{primary}_at_equal_flops"])
    return table


def x_axis(result: IncResult) -> str:
    """FLOPs per image, or network evaluations when the base model has no counted FLOPs (the exact velocity
    of a mixture is closed-form arithmetic, not a network)."""
    return "flops_per_image" if result.flops["base"] > 0 else "nfe"


def diagnostics_table(result: IncResult) -> pd.DataFrame:
    rows = []
    for k, diag in result.diagnostics.items():
        inv = result.inversions[k]
        rows.append(
            {
                "num_inference_steps": k,
                "inverted": int((~inv.failed).sum()),
                "failed": int(inv.failed.sum()),
                "max_residual": inv.max_residual,
                "evaluations_per_sample": inv.evaluations_per_sample,
                **diag.to_dict(),
                "passes_0.01": diag.passes(0.01),
            }
        )
    return pd.DataFrame(rows)


def steps_table(result: IncResult) -> pd.DataFrame:
    rows = [{"num_inference_steps": k, **vars(s)} for k, inv in result.inversions.items() for s in inv.steps]
    return pd.DataFrame(rows)


def figures(result: IncResult, k: int | None = None, m: int | None = None) -> dict[str, go.Figure]:
    """Every plot of a run: quality curves, and for one K (default the smallest corrected) its noise
    diagnostics and base-vs-corrected samples at m correction steps (default the largest)."""
    from pgraft.plots import inc as plots

    out: dict[str, go.Figure] = {}
    table = result.table()
    metrics = [c for c in ("loglik", "mmd", "fd") if c in table.columns]
    for metric in metrics:
        out[f"quality_{metric}"] = plots.quality_vs_flops(table, metric, x_axis(result))
    if not result.inversions:
        return out
    k = k if k in result.inversions else min(result.inversions)
    z = result.inversions[k].kept.numpy()
    out["noise_norms"] = plots.noise_norm_histogram(z, f"K={k}: norms of the inverted noises vs the chi law")
    if z.reshape(len(z), -1).shape[1] == 2:
        out["noise_scatter"] = plots.noise_scatter(z, title=f"K={k}: inverted noises vs N(0, I)")
    corrected_ms = sorted(mm for kk, mm in result.previews if kk == k and mm > 0)
    if corrected_ms:
        m = m if m in corrected_ms else corrected_ms[-1]
        base, corr = result.previews[(k, 0)].numpy(), result.previews[(k, m)].numpy()
        title = f"same seeds: base flow K={k} vs base + correction (m={m})"
        draw = plots.toy_base_vs_corrected if result.domain == "toy2d" else plots.digits_base_vs_corrected
        out["samples"] = draw(base, corr, title)
    return out


def write_html(figs: dict[str, go.Figure], path: Path, title: str) -> None:
    """One standalone page: plotly.js embedded once (offline), the figures below each other."""
    parts = [f"<html><head><meta charset='utf-8'><title>{title}</title></head><body><h2>{title}</h2>"]
    for i, fig in enumerate(figs.values()):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_outputs(result: IncResult, out: Path) -> list[Path]:
    """Write every file of the module docstring into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for k, flow in result.corrections.items():
        path = out / f"correction-K{k}.safetensors"
        extra = {"base_model": result.model_name, "num_inference_steps": k, "config": result.config.to_dict()}
        flow.save(path, {**extra, "training": result.training[k], "flops": result.flops})
        written.append(path)
    tables = {
        "quality_vs_flops.csv": result.table(),
        "diagnostics.csv": diagnostics_table(result),
        "inversion_steps.csv": steps_table(result),
    }
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
        written.append(out / name)
    summary = {
        "config": result.config.to_dict(),
        "model": result.model_name,
        "flops_per_forward": result.flops,
        "primary_metric": result.primary,
        "cancelled": result.cancelled,
        "notices": result.notices,
        "diagnostics": {str(k): d.to_dict() for k, d in result.diagnostics.items()},
        "inversion_steps": {str(k): [vars(s) for s in inv.steps] for k, inv in result.inversions.items()},
        "training": {str(k): r for k, r in result.training.items()},
    }
    (out / "diagnostics.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    write_html(figures(result), out / "report.html", f"Inverse noise correction: {result.model_name}")
    written += [out / "diagnostics.json", out / "report.html"]
    return written
