"""`pgraft compare`: budgets turned into rounds, every method of a budget spending the same reward calls, the
summary over seeds, and the files."""

from __future__ import annotations

import pandas as pd
import pytest

from pgraft.graft.config import RunConfig
from pgraft.studies.compare import CompareFinished, CompareSpec, compare_iter, rounds_for, summarise

TINY = dict(model="toy2d", reward="x", samples=64, preview=0, num_inference_steps=5, finetune_steps=5, batch_size=32)


def test_a_budget_pays_for_whole_rounds_and_too_small_a_budget_is_refused():
    config = RunConfig(**TINY)
    assert rounds_for(config, 256) == 3 and rounds_for(config, 300) == 3
    with pytest.raises(ValueError, match="--budget-reward-calls: 100 pays for 1 round"):
        rounds_for(config, 100)
    with pytest.raises(ValueError, match="--methods"):
        CompareSpec(("graft", "ppo"), (256,))


def test_every_method_of_a_budget_spends_the_same_reward_calls(tmp_path):
    spec = CompareSpec(("graft", "pgraft", "ddpo", "bon-sampling"), (192,), (0, 1))
    end = [ev for ev in compare_iter(RunConfig(**TINY), spec) if isinstance(ev, CompareFinished)][-1]
    last = end.table[end.table["round"] == 2]
    assert len(last) == 8 and set(last["reward_calls_total"]) == {192}
    nfe = last.groupby("method")["nfe_total"].first()
    assert nfe["bon-sampling"] == 3 * 64 * 5  # sampling only
    assert nfe["graft"] == 3 * 64 * 5 + 2 * 2 * 5 * 32  # plus forward and backward of 5 steps of 32 in 2 rounds
    assert nfe["ddpo"] == 3 * 64 * 5 + 2 * 2 * 64 * 4  # 4 stochastic steps of each sample trained
    summary = end.summary
    assert list(summary["method"]) == ["graft", "pgraft", "ddpo", "bon-sampling"] and set(summary["seeds"]) == {2}
    graft = last[last["method"] == "graft"]["reward"]
    row = summary[summary["method"] == "graft"].iloc[0]
    assert row["reward"] == pytest.approx(graft.mean()) and row["reward_se"] == pytest.approx(graft.sem())


def test_summarise_takes_each_runs_final_round():
    table = pd.DataFrame(
        [
            dict(
                method="graft",
                budget=10,
                seed=s,
                round=r,
                reward=float(r + s),
                realism=0.0,
                tv_to_target=0.0,
                reward_calls_total=5 * (r + 1),
                nfe_total=1,
                seconds=1.0,
            )
            for s in (0, 1)
            for r in (0, 1)
        ]
    )
    summary = summarise(table)
    assert summary.iloc[0]["reward"] == pytest.approx(1.5) and summary.iloc[0]["rounds"] == 1


def test_the_cli_writes_the_table_the_summary_and_the_plot(tmp_path, capsys):
    from pgraft.cli import main

    args = ["compare", *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()], "--methods", "graft", "ddpo"]
    assert main([*args, "--budget-reward-calls", "128", "--seeds", "0", "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert "budget 128 reward calls = 1 rounds after the base" in printed and "| 128 | ddpo | 1 |" in printed
    for name in ("compare.csv", "summary.csv", "compare.html"):
        assert (tmp_path / "c" / name).is_file()
