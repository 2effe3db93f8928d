"""The tables of an inverse-noise-correction run: quality against FLOPs (with the equal-compute comparison),
the inverted noises against N(0, I) per K, and every inversion step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def quality_table(rows: list[dict[str, Any]], primary: str, higher_is_better: bool) -> pd.DataFrame:
    """The rows as a table, plus for every corrected row the cheapest base sampler with at least its FLOPs
    (`base_steps_at_equal_flops`, `base_grid_at_equal_flops`, its `primary` metric, and `gain_at_equal_flops`
    > 0 when the corrected row is better: the paper's claim is better quality at no more compute). Reference
    rows (`method == "reference"`, base samplers on other grids) compete too: at equal cost the best base of
    any grid is the comparison. When the quality gives a standard
    error `<primary>_se` (digits: a bootstrap), `gain_se` is that of the gain (the two rows' errors combined,
    their samples being scored independently) and `gain_beyond_noise` says whether the gain exceeds
    1.96 `gain_se`. `gain_vs_same_k` (with `_se` and `_beyond_noise`) compares with the best base sampler of the
    same K on any grid, cheaper by the correction's FLOPs only; `gain_vs_own_grid` with the base of the same K on
    the corrected sampler's own grid (what the correction itself did)."""
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    if "grid" not in table.columns:
        table.insert(1, "grid", "linear")
    sign = 1.0 if higher_is_better else -1.0
    # Every base sampler, of the run's grid and of the reference grids: at one cost the best of them is the
    # one a corrected sampler has to beat.
    uncorrected = table[table["method"].isin(("base", "reference"))]
    uncorrected = uncorrected.assign(_key=-sign * uncorrected[primary]).sort_values(["flops_per_image", "_key"])
    base = table[table["method"] == "base"]
    se = f"{primary}_se"
    steps, grids, values, errors = [], [], [], []
    for _, row in table.iterrows():
        is_corrected = row["method"] == "corrected"
        richer = uncorrected[uncorrected["flops_per_image"] >= row["flops_per_image"]] if is_corrected else base[:0]
        steps.append(int(richer["num_inference_steps"].iloc[0]) if len(richer) else None)
        grids.append(str(richer["grid"].iloc[0]) if len(richer) else None)
        values.append(float(richer[primary].iloc[0]) if len(richer) else np.nan)
        if se in table.columns:
            errors.append(float(np.hypot(row[se], richer[se].iloc[0])) if len(richer) else np.nan)
    table["base_steps_at_equal_flops"] = pd.array(steps, dtype="Int64")
    table["base_grid_at_equal_flops"] = grids
    table[f"base_{primary}_at_equal_flops"] = values
    table["gain_at_equal_flops"] = sign * (table[primary] - table[f"base_{primary}_at_equal_flops"])
    # Against the base at the same K, which costs only the correction's m × FLOPs(c) less (a few parts in ten
    # thousand on digits): with a coarse grid of K the strict comparison above jumps to the next K, twice the cost.
    # `same_k`: the best base of any grid at that K; `own_grid`: the base the correction was trained for.
    corrected = table["method"] == "corrected"
    best_at_k = uncorrected.drop_duplicates("num_inference_steps").set_index("num_inference_steps")
    own = base.set_index("num_inference_steps")
    comparisons = [("gain_at_equal_flops", "gain_se", "gain_beyond_noise")]
    for name, ref in (("gain_vs_same_k", best_at_k), ("gain_vs_own_grid", own)):
        table[name] = sign * (table[primary] - table["num_inference_steps"].map(ref[primary]).where(corrected))
        if se in table.columns:
            ref_se = table["num_inference_steps"].map(ref[se])
            table[f"{name}_se"] = ((table[se] ** 2 + ref_se**2) ** 0.5).where(corrected)
            comparisons.append((name, f"{name}_se", f"{name}_beyond_noise"))
    if se in table.columns:
        table["gain_se"] = errors
        for gain_col, err_col, out_col in comparisons:
            pairs = zip(table[gain_col], table[err_col], strict=True)
            table[out_col] = pd.array([None if np.isnan(g) else bool(g > 1.96 * e) for g, e in pairs], dtype="boolean")
    return table


def verdict(table: pd.DataFrame, primary: str) -> str:
    """The best corrected sampler of a `quality_table` in one sentence: against the best base of any grid at
    the same K (equal compute but for the correction's own FLOPs), against its own grid's base, and against the
    cheapest base with at least its FLOPs where the table has one; errors are 1.96 standard errors. Empty when
    nothing was corrected."""
    corrected = table[table["method"] == "corrected"].dropna(subset=["gain_vs_same_k"]) if len(table) else table
    if not len(corrected):
        return ""
    row = corrected.iloc[int(np.argmax(corrected["gain_vs_same_k"].to_numpy(float)))]

    def gain(name: str, err_name: str | None = None) -> str:
        err = row.get(err_name or f"{name}_se")
        noise = f" ± {1.96 * float(err):.2g}" if err is not None and not np.isnan(err) else ""
        return f"{primary} {float(row[name]):+.3g}{noise}"

    better = "better" if float(row["gain_vs_same_k"]) > 0 else "not better"
    text = (
        f"Best corrected sampler (K={row['num_inference_steps']}, m={row['correction_steps']}, {row['grid']} grid) "
        f"against the best base sampler at the same K: {better} ({gain('gain_vs_same_k')})"
    )
    own = row.get("gain_vs_own_grid")
    text += f"; against its own grid's base: {gain('gain_vs_own_grid')}." if pd.notna(own) else "."
    if not np.isnan(row["gain_at_equal_flops"]):  # a richer base exists
        text += (
            f" Against the cheapest base with at least its FLOPs (K={row['base_steps_at_equal_flops']}, "
            f"{row['base_grid_at_equal_flops']} grid): {gain('gain_at_equal_flops', 'gain_se')}."
        )
    return text + (" (± 1.96 standard errors: a gain is beyond noise when larger.)" if " ± " in text else "")


def x_axis(result: Any) -> str:
    """FLOPs per image, or network evaluations when the base model has no counted FLOPs (the exact velocity
    of a mixture is closed-form arithmetic, not a network)."""
    return "flops_per_image" if result.flops["base"] > 0 else "nfe"


def diagnostics_table(result: Any) -> pd.DataFrame:
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


def steps_table(result: Any) -> pd.DataFrame:
    rows = [{"num_inference_steps": k, **vars(s)} for k, inv in result.inversions.items() for s in inv.steps]
    return pd.DataFrame(rows)
