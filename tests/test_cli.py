"""The command line: a full run writes what it promises; every bad input is refused naming the flag."""

import sys
import textwrap

import pandas as pd
import pytest
import yaml

from pgraft.cli import main

FAST = [
    "--samples",
    "512",
    "--preview",
    "32",
    "--num-inference-steps",
    "20",
    "--finetune-steps",
    "30",
    "--batch-size",
    "128",
]


def test_run_writes_config_metrics_rounds_and_weights(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--rounds",
                "2",
                "--method",
                "pgraft",
                "--cutoff",
                "0.4",
                "--out",
                str(out),
                "--quiet",
                *FAST,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "reward_mean" in printed and "done" in printed
    assert "tv_to_target" in printed  # the domain's own columns (its curve panels) are printed too
    table = pd.read_csv(out / "metrics.csv")
    assert list(table["round"]) == [0, 1, 2]
    for col in ("reward_mean", "reward_std", "accept_rate", "n_accepted", "loglik", "target_reward"):
        assert col in table
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["method"] == "pgraft" and cfg["cutoff"] == 0.4
    for r in (1, 2):
        assert (out / "rounds" / f"round_{r:03d}" / "model.safetensors").exists()
    from safetensors.torch import load_file

    tensors = load_file(str(out / "rounds" / "round_001" / "samples.safetensors"))
    assert tensors["samples"].shape == (512, 2) and tensors["x_cut"].shape == (512, 2)


def test_yaml_config_accepts_the_same_names_and_flags_override(tmp_path):
    conf = tmp_path / "run.yaml"
    conf.write_text(
        textwrap.dedent("""
        model: toy2d
        reward: distance
        reward_args: {px: 0.0, py: 4.0}
        rule: quantile
        quantile: 0.9
        rounds: 1
    """)
    )
    out = tmp_path / "run"
    assert main(["run", "--config", str(conf), "--rounds", "1", "--out", str(out), "--quiet", *FAST]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["rule"] == "quantile" and cfg["reward_args"] == {"px": 0.0, "py": 4.0}
    assert pd.read_csv(out / "metrics.csv")["n_accepted"].iloc[0] == pytest.approx(52, abs=2)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "pgraft", "--cutoff", "1.5"], "--cutoff: 1.5"),
        (["--method", "pgraft", "--cutoff", "0"], "--cutoff: 0"),
        (["--rule", "quantile", "--quantile", "1.2"], "--quantile: 1.2"),
        (["--rule", "top-k", "--k", "600"], "--k: 600"),
        (["--rule", "soft", "--beta", "-1"], "--beta: -1"),
        (["--rule", "threshold"], "--threshold"),
        (["--rule", "best-of-n", "--n", "3"], "--n: 3"),
        (["--model", "nope"], "model: unknown 'nope'"),
        (["--rule", "nope"], "--rule: 'nope'"),
        (["--reward", "nope"], "reward: unknown 'nope'"),
        (["--reward", "no_such_module:f"], "cannot import module 'no_such_module'"),
        (["--reward", "distance", "--reward-arg", "pz=1"], "--reward-arg: ['pz']"),
        (["--dataset", "nope"], "dataset: unknown 'nope'"),
        (["--device", "tpu"], "--device: 'tpu'"),
        (["--samples", "1"], "--samples: 1"),
        (["--lr", "0"], "--lr: 0"),
        (["--method", "pgraft", "--cutoff", "0.9995", "--num-inference-steps", "10"], "--cutoff: 0.9995"),
        (["--num-inference-steps", "30"], "--num-inference-steps: 30 does not divide"),
    ],
)
def test_bad_input_exits_nonzero_before_any_work(tmp_path, capsys, args, needle):
    out = tmp_path / "run"
    base = ["--samples", "512", "--preview", "32"] if "--samples" not in args else []
    code = main(["run", "--out", str(out), "--quiet", *base, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err, err
    assert not (out / "rounds").exists()


def test_the_preview_follows_a_small_sample_count_unless_given():
    from pgraft.graft.config import RunConfig

    assert RunConfig().preview == 512 and RunConfig(samples=256).preview == 256
    assert "preview: 256" in RunConfig(samples=256).to_yaml()  # the config file holds the number
    with pytest.raises(ValueError, match=r"--preview: 300 is invalid; it must be <= --samples \(256\)"):
        RunConfig(samples=256, preview=300)


def test_bad_number_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--cutoff", "half"])
    assert exc.value.code == 2
    assert "--cutoff" in capsys.readouterr().err


def test_existing_folder_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--rounds", "1", "--out", str(out), "--quiet", *FAST]) == 0
    assert main(["run", "--rounds", "1", "--out", str(out), "--quiet", *FAST]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", "--rounds", "2", "--out", str(out), "--quiet", "--resume", *FAST]) == 0
    assert list(pd.read_csv(out / "metrics.csv")["round"]) == [0, 1, 2]
    assert main(["run", "--rounds", "1", "--out", str(out), "--quiet", "--overwrite", *FAST]) == 0
    assert list(pd.read_csv(out / "metrics.csv")["round"]) == [0, 1]
    # resuming with other settings is refused, naming them
    assert main(["run", "--rounds", "2", "--out", str(out), "--quiet", "--resume", "--seed", "3", *FAST]) == 2
    assert "['seed']" in capsys.readouterr().err


def test_user_reward_module_function_and_a_nan_reward(tmp_path, monkeypatch, capsys):
    (tmp_path / "myreward.py").write_text(
        textwrap.dedent("""
        import torch
        def right(x):
            return x[:, 0]
        def broken(x):
            return torch.full((len(x),), float('nan'))
    """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert main(["run", "--reward", "myreward:right", "--rounds", "1", "--out", "ok", "--quiet", *FAST]) == 0
    code = main(["run", "--reward", "myreward:broken", "--rounds", "1", "--out", "bad", "--quiet", *FAST])
    err = capsys.readouterr().err
    assert code == 1 and "myreward:broken" in err and "NaN" in err


def test_rewards_of_a_module_given_with_rewards_are_used_by_name(tmp_path, monkeypatch, capsys):
    """`pgraft run --rewards MODULE`: the module's rewards by name, as the app's `--rewards`; a module that
    registers nothing is refused naming the flag."""
    from pgraft.cli import main
    from pgraft.registry import REWARDS

    (tmp_path / "lab_rewards.py").write_text(
        "from pgraft.rewards import RewardSpec\n"
        "REWARDS = {'lab-y': RewardSpec(lambda ctx: (lambda x: x[:, 1]), 'toy2d', 'the y coordinate')}\n"
    )
    (tmp_path / "empty_rewards.py").write_text("X = 1\n")
    monkeypatch.chdir(tmp_path)
    try:
        args = ["run", "--model", "toy2d", "--rewards", "lab_rewards", "--reward", "lab-y", "--rounds", "1"]
        args += ["--samples", "64", "--preview", "0", "--num-inference-steps", "5", "--finetune-steps", "2"]
        assert main([*args, "--out", str(tmp_path / "r")]) == 0
        assert "reward lab-y" in capsys.readouterr().out
        assert main(["run", "--model", "toy2d", "--rewards", "empty_rewards", "--out", str(tmp_path / "s")]) == 2
        assert "--rewards: module 'empty_rewards' registered no reward" in capsys.readouterr().err
    finally:
        REWARDS.pop("lab-y", None)


def test_the_printed_rows_carry_each_domains_realism_and_hacking_columns():
    from pgraft.cli.run import domain_columns

    assert domain_columns("layouts")[:3] == ("frechet", "elements", "overlap_x100")  # overlap hacking shows
    assert not any(c.startswith("data_") for c in domain_columns("layouts"))  # constants of the data are not
    assert domain_columns("digits")[0] == "fid_real" and "class_entropy" in domain_columns("digits")
    assert domain_columns("molecules")[0] == "in_qm9" and domain_columns("nope") == ()
