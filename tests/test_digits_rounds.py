"""GRAFT and P-GRAFT rounds on prompted digits models, and `pgraft run` on digits end to end."""

import contextlib
import json

import pandas as pd
import pytest
import torch

from pgraft.cli import main
from pgraft.graft.config import RunConfig
from pgraft.graft.runner import RoundRunner, build_setup, run_to_end

PROMPTS = ["1", "a 5"]
# One round on the shipped prompted model, small enough for the default test run.
ROUND = dict(
    model="digits-prompted",
    prompts=PROMPTS,
    reward="prompt-match",
    rule="best-of-n",
    n=4,
    samples=128,
    preview=64,
    rounds=1,
    num_inference_steps=10,
    finetune_steps=60,
    batch_size=32,
    lr=3e-4,
    cutoff=0.3,
    device="cpu",
)
# The shipped model matches its prompt 99.5 % of the time (mean prompt-match 0.995 at 10 steps, higher at
# fewer: blurrier digits are more prototypical), so a rise on it is in the third decimal and within noise.
# The rise is tested on a model with headroom: the same recipe (`train_digits`) at the tiny size and 600 steps
# (~10 s), mean prompt-match about 0.55-0.7 on these prompts, where the weakest digits are; with WEAK_ROUND
# (512 candidates and 256 preview samples per prompt), over seeds 0-4, GRAFT raised the per-prompt mean by
# 0.09-0.20 and P-GRAFT by 0.06-0.16 (paired preview: 0.09-0.23 and 0.07-0.14), and the Fréchet distance to
# real digits fell in every run (101-110 -> 71-93). With 128 candidates per prompt the paired preview of one
# prompt fell in 1 of 3 seeds: too few samples for a reliable sign.
WEAK_STEPS = 600
WEAK_ROUND = {**ROUND, "samples": 512, "preview": 256, "finetune_steps": 100, "batch_size": 64}
# The shipped model's bound on the Fréchet distance to the prompted classes' real digits (classifier
# features), from measurements with ROUND over seeds 0-4: 10-13 at round 0, 11-21 after a P-GRAFT round,
# 27-54 after a GRAFT round (best-of-4 sharpens digits towards their most confident forms). References:
# real train digits of the two classes 10, only one of the two classes 301, two wrong classes 597, noise 443.
FID_BOUND = 100.0


@contextlib.contextmanager
def one_thread():
    """A tiny UNet's ops are too small to split between threads: on one, training it and its rounds ran 2x
    faster here (23 s -> 11 s for the training)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weak_prompted():
    from pgraft.domains.digits.training import train_digits

    with one_thread():
        model, _ = train_digits("digits-prompted", size="tiny", steps=WEAK_STEPS, seed=0)
    return model


def preview_means(result, prompts):
    return [float(result.preview_rewards[result.preview_groups == p].mean()) for p in range(len(prompts))]


def run_rounds(config, base=None):
    return run_to_end(RoundRunner(config, setup=build_setup(config, base=base)))


def check_rises_on_every_prompt(results, prompts, margin):
    first, last = results[0], results[-1]
    before, after = preview_means(first, prompts), preview_means(last, prompts)
    for p, prompt in enumerate(prompts):
        # the preview uses the same seeds every round: a paired comparison per prompt
        assert after[p] > before[p] + margin, (prompt, before, after)
        assert last.metrics[f"reward_mean[{prompt}]"] > first.metrics[f"reward_mean[{prompt}]"] + margin
    assert last.metrics["fid_real"] <= 1.1 * first.metrics["fid_real"], (
        first.metrics["fid_real"],
        last.metrics["fid_real"],
    )


@pytest.mark.parametrize("method", ["graft", "pgraft"])
def test_prompt_match_rises_on_every_prompt_and_digits_stay_real(weak_prompted, method):
    with one_thread():
        results = run_rounds(RunConfig(**WEAK_ROUND, method=method), base=weak_prompted)
    check_rises_on_every_prompt(results, PROMPTS, margin=0.03)
    assert results[-1].metrics["n_accepted"] == 2 * 512 // 4


@pytest.mark.parametrize("method", ["graft", "pgraft"])
def test_the_shipped_model_keeps_its_prompts_and_stays_real(method):
    results = run_rounds(RunConfig(**ROUND, method=method))
    first, last = results[0].metrics, results[-1].metrics
    for prompt in PROMPTS:
        assert last[f"reward_mean[{prompt}]"] >= 0.98, (prompt, last)
    assert last["prompt_class_match"] >= 0.98
    assert first["fid_real"] < 20 and last["fid_real"] < FID_BOUND, (first["fid_real"], last["fid_real"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["graft", "pgraft"])
def test_prompt_match_rises_over_rounds_at_full_size(weak_prompted, method):
    config = RunConfig(**{**WEAK_ROUND, "rounds": 3, "num_inference_steps": 25}, method=method)
    with one_thread():
        results = run_rounds(config, base=weak_prompted)
    # Measured: GRAFT 0.76 / 0.61 -> 0.998 / 0.995 in three rounds; P-GRAFT (cutoff 0.3) -> 0.91 / 0.78, where
    # prompt "1" levels off in round 3 (0.919 -> 0.911). So: a clear rise overall, and no round loses much.
    check_rises_on_every_prompt(results, PROMPTS, margin=0.1)
    for earlier, later in zip(results, results[1:]):
        for prompt in PROMPTS:
            key = f"reward_mean[{prompt}]"
            assert later.metrics[key] > earlier.metrics[key] - 0.02, (prompt, later.round)


@pytest.mark.slow
def test_the_weak_base_preset_gives_the_reward_room_and_graft_uses_it():
    """The app's "Prompted digits with room to move" preset: the shipped early snapshot starts well below the
    shipped model (0.76 against 0.99) and one GRAFT round with the app's digits defaults raises prompt-match on
    both prompts (measured 0.76 -> 0.92 over the candidates, in 23 s on one thread)."""
    from pgraft.domains.digits import PRESETS

    preset = next(p for p in PRESETS if p.values["model"] == "digits-prompted-early")
    values = {k: v for k, v in preset.values.items() if k != "reward_args"}
    with one_thread():
        results = run_rounds(RunConfig(**{**values, "rounds": 1, "preview": 64, "device": "cpu"}))
    first, last = results[0].metrics, results[-1].metrics
    assert first["reward_mean"] < 0.85, first  # room to move
    for prompt in preset.values["prompts"]:
        key = f"reward_mean[{prompt}]"
        assert last[key] > first[key] + 0.05, (prompt, first[key], last[key])
    assert last["fid_real"] < first["fid_real"] * 1.1  # realism does not pay for it in the first round


def test_bad_prompts_and_wrong_domain_rewards_are_refused():
    with pytest.raises(ValueError, match=r"--prompts: 'a cat'"):
        build_setup(RunConfig(**{**ROUND, "prompts": ["2", "a cat"]}))
    with pytest.raises(ValueError, match="digits models"):
        build_setup(RunConfig(**{**ROUND, "model": "toy2d", "prompts": [], "reward": "ink"}))
    with pytest.raises(ValueError, match="toy2d models"):
        build_setup(RunConfig(**{**ROUND, "model": "digits", "prompts": [], "reward": "x"}))


def test_cli_run_on_digits_writes_image_metrics_and_grids(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--model", "digits", "--reward", "ink", "--samples", "64", "--preview", "16"]
    argv += ["--num-inference-steps", "8", "--finetune-steps", "5", "--batch-size", "16", "--rounds", "1"]
    assert main([*argv, "--lr", "1e-4", "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "metrics.csv")
    for col in ("fid_real", "fid_base", "confident", "class_entropy", "diversity", "class_0", "class_9"):
        assert col in table
    assert table["fid_base"][0] == pytest.approx(0.0, abs=1e-6) and table["fid_base"][1] > 0
    for r in (0, 1):
        folder = out / "rounds" / f"round_{r:03d}"
        assert (folder / "preview.png").read_bytes()[:4] == b"\x89PNG"
        assert (folder / "candidates.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "rounds" / "round_001" / "metrics.json").read_text())
    assert torch.isfinite(torch.tensor(metrics["fid_real"]))
