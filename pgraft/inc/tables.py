"""The tables of an inverse-noise-correction run: quality against FLOPs (with the equal-compute comparison),
the inverted noises against N(0, I) per K, and every inversion step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


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
