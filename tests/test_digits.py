"""The digits base models: data split, prompts, the UNet wrapper, shipped weights, `pgraft pretrain`."""

import json

import pytest
import torch

from pgraft.core.sampling import sample, sample_seeds
from pgraft.domains.digits.metrics import classify
from pgraft.domains.digits.models import (
    build_digits_model,
    digits_split,
    encode_digit_prompts,
    load_digits_model,
    parse_digit,
    to_model,
    to_unit,
    unet_config,
)
from pgraft.families.small import read_safetensors_metadata
from pgraft.registry import MODELS, load_model


@pytest.fixture(scope="module")
def prompted():
    return load_model("digits-prompted")


def test_split_is_fixed_stratified_and_disjoint():
    split = digits_split()
    assert len(split.train_y) + len(split.held_y) == 1797
    assert 0.19 < len(split.held_y) / 1797 < 0.21
    counts = torch.bincount(split.held_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of each class
    assert split.train_x.min() >= 0 and split.train_x.max() <= 1
    train = {tuple(r.flatten().tolist()) for r in split.train_x}
    overlap = sum(tuple(r.flatten().tolist()) in train for r in split.held_x)
    assert overlap <= 5  # load_digits itself holds a few exact duplicates; the split is by index
    digits_split.cache_clear()
    again = digits_split()
    assert torch.equal(again.held_x, split.held_x)


def test_scales_round_trip_and_clamp():
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(to_unit(to_model(x)), x)
    assert to_unit(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    ("prompt", "digit"),
    [("7", 7), ("a 7", 7), ("seven", 7), ("the digit 7", 7), ("  A Seven ", 7), ("number 0", 0), ("an eight", 8)],
)
def test_digit_prompts_are_understood(prompt, digit):
    assert parse_digit(prompt) == digit


@pytest.mark.parametrize("prompt", ["", "12", "a cat", "digit", "7 8", "eleven"])
def test_other_prompts_are_refused_naming_the_flag(prompt):
    with pytest.raises(ValueError, match=r"--prompts: .* allowed: a digit 0-9"):
        parse_digit(prompt)


def test_encode_prompts_gives_class_labels():
    labels = encode_digit_prompts(["2", "five"])
    assert labels.dtype == torch.long and labels.tolist() == [2, 5]


def test_tiny_models_from_a_config_have_the_engine_signature():
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])
    uncond = build_digits_model("digits", unet_config("tiny"))
    assert uncond(x, t).shape == x.shape and uncond.domain == "digits" and not uncond.conditional
    cond = build_digits_model("digits-prompted", unet_config("tiny", conditional=True))
    a = cond(x, t, torch.tensor([1, 2, 3]))
    b = cond(x, t, torch.tensor([4, 2, 3]))
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])
    flow = build_digits_model("digits-flow", unet_config("tiny"))
    assert flow.process.kind == "flow" and flow(x, t.float()).shape == x.shape
    with pytest.raises(ValueError, match="--size"):
        unet_config("huge")


def test_registry_lists_the_digits_models():
    for name in ("digits", "digits-prompted", "digits-prompted-early", "digits-flow"):
        assert MODELS[name].domain == "digits"
    assert MODELS["digits-prompted"].conditional and not MODELS["digits"].conditional
    assert MODELS["digits-prompted-early"].conditional and MODELS["digits-prompted-early"].default_reward


def test_the_early_prompted_snapshot_is_a_weak_but_real_digits_model():
    """`digits-prompted-early` is the same run as `digits-prompted` stopped at 150 steps: its card says so
    and it follows its prompt clearly less often than the shipped model (room for a prompt reward), while still
    drawing every class."""
    from pgraft.domains.digits.models import weights_path

    meta = read_safetensors_metadata(weights_path("digits-prompted-early"))
    training, quality = json.loads(meta["training"]), json.loads(meta["quality"])
    assert training["train_steps"] == 150 and training["seed"] == 0
    assert 0.6 <= quality["eta=1"]["prompt_match"] <= 0.85 and quality["eta=1"]["classes_present"] == 10
    card = weights_path("digits-prompted-early").with_suffix(".md").read_text()
    assert "pgraft pretrain digits-prompted-early --steps 150 --seed 0" in card
    model = load_model("digits-prompted-early")
    labels = torch.arange(100) % 10
    probs = classify(to_unit(sample(model, sample_seeds(0, 9, 100), 25, eta=1.0, cond=labels).samples))
    assert 0.5 <= float((probs.argmax(-1) == labels).double().mean()) <= 0.9


@pytest.mark.parametrize("name", ["digits", "digits-flow"])
def test_shipped_unconditional_weights_sample_digits(name):
    model = load_model(name)
    assert model.info["training"]["train_steps"] >= 1000
    traj = sample(model, sample_seeds(0, 9, 100), 25, eta=1.0)
    probs = classify(to_unit(traj.samples))
    confident = float((probs.max(-1).values > 0.9).double().mean())
    assert confident >= 0.8, confident  # 1,000 samples reach >= 90 % (model card); 100 leave room for chance
    assert len(torch.unique(probs.argmax(-1))) >= 8


def test_shipped_prompted_weights_draw_the_prompted_digit(prompted):
    labels = torch.arange(100) % 10
    traj = sample(prompted, sample_seeds(0, 9, 100), 25, eta=1.0, cond=labels)
    probs = classify(to_unit(traj.samples))
    assert float((probs.argmax(-1) == labels).double().mean()) >= 0.9
    assert float((probs.max(-1).values > 0.9).double().mean()) >= 0.8


@pytest.mark.parametrize("name", ["digits", "digits-prompted", "digits-flow"])
def test_shipped_weights_carry_their_config_and_card(name):
    from pgraft.domains.digits.models import weights_path

    meta = read_safetensors_metadata(weights_path(name))
    assert json.loads(meta["unet_config"])["block_out_channels"] == [32, 64]
    quality = json.loads(meta["quality"])
    samplers = {k: v for k, v in quality.items() if isinstance(v, dict) and "fid_real" in v and k != "real_held_out"}
    assert samplers  # the real held-out digits are a reference, not a sampler of the model
    best = max(samplers.values(), key=lambda v: v["confident_fraction"])
    assert best["confident_fraction"] >= 0.9 and best["classes_present"] == 10  # the quality goal, 1,000 samples
    card = weights_path(name).with_suffix(".md").read_text()
    assert f"pgraft pretrain {name}" in card and "confident" in card


def test_pretrain_end_to_end_on_a_tiny_model(tmp_path):
    from pgraft.cli import main

    out = tmp_path / "tiny.safetensors"
    argv = ["pretrain", "digits-prompted", "--size", "tiny", "--steps", "30", "--eval-samples", "20"]
    assert main([*argv, "--out", str(out)]) == 0
    meta = read_safetensors_metadata(out)
    assert json.loads(meta["training"])["train_steps"] == 30
    assert json.loads(meta["unet_config"])["block_out_channels"] == [8, 16]
    assert "pgraft pretrain digits-prompted --steps 30 --seed 0 --size tiny" in out.with_suffix(".md").read_text()
    model = load_digits_model("digits-prompted", path=out)
    assert model.conditional and model.encode_prompts is not None
    # reproducible from the seed: a second run writes the same weights
    out2 = tmp_path / "again.safetensors"
    assert main([*argv, "--out", str(out2)]) == 0
    from safetensors.torch import load_file

    a, b = load_file(str(out)), load_file(str(out2))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_after_n_steps_of_a_longer_run_equal_a_run_of_n_steps():
    # The shipped cards rely on it: the schedule never looks at the total number of steps.
    from pgraft.domains.digits.training import train_digits

    snapshot = {}

    def keep(step, loss, ema):
        if step == 6:
            snapshot.update({k: v.clone() for k, v in ema.state_dict().items()})

    train_digits("digits", size="tiny", steps=10, batch_size=8, progress=keep)
    short, _ = train_digits("digits", size="tiny", steps=6, batch_size=8)
    assert all(torch.equal(v, snapshot[k]) for k, v in short.network.state_dict().items())
