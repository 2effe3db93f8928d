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

import plotly.graph_objects as go

from pgraft.inc.run import IncResult
from pgraft.inc.tables import diagnostics_table, quality_table, steps_table, x_axis  # noqa: F401
from pgraft.registry import get_domain


def figures(result: IncResult, k: int | None = None, m: int | None = None) -> dict[str, go.Figure]:
    """Every plot of a run: quality curves, and for one K (default the smallest corrected) its noise
    diagnostics and base-vs-corrected samples at m correction steps (default the largest)."""
    from pgraft.plots import inc as plots

    out: dict[str, go.Figure] = {}
    table = result.table()
    metrics = [c for c in result.labels or (result.primary,) if c in table.columns]
    for metric in metrics:
        out[f"quality_{metric}"] = plots.quality_vs_flops(table, metric, x_axis(result), result.labels.get(metric))
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
        support = get_domain(result.domain).inc
        draw = support.samples_figure if support is not None else plots.images_base_vs_corrected
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
