"""Digits rewards on hand-made images with a known ordering, the Fréchet distance against its closed form,
the digits evaluator, the sample grids and the round-folder files hook."""

import io

import numpy as np
import pytest
import torch

from pgraft.domains.digits.metrics import (
    DigitsEvaluator,
    frechet_distance,
    frechet_to_held_out,
    gaussian_stats,
    mean_pairwise_distance,
)
from pgraft.domains.digits.models import digits_split, to_model
from pgraft.domains.digits.rewards import jpeg_size, symmetry, thickness, total_variation
from pgraft.registry import make_reward, rewards_for
from pgraft.rewards import score

IMAGE_REWARDS = (
    "digit-prob",
    "ink",
    "jpeg-compressibility",
    "jpeg-incompressibility",
    "prompt-match",
    "symmetry",
    "thickness",
)


def unit_images(*arrays: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.stack(arrays), dtype=torch.float32).unsqueeze(1)


def bar(width: int, length: int = 6) -> np.ndarray:
    img = np.zeros((8, 8))
    img[1 : 1 + length, 2 : 2 + width] = 1.0
    return img


def reward(name: str, model=None, **args):
    return make_reward(name, "digits", args, {"model": model} if model else {})


def test_every_image_reward_is_registered_for_digits():
    assert set(IMAGE_REWARDS) <= set(rewards_for("digits"))
    assert "ink" not in rewards_for("toy2d")


def test_ink_orders_blank_half_and_filled_images():
    blank, half, full = np.zeros((8, 8)), np.zeros((8, 8)), np.ones((8, 8))
    half[:, :4] = 1
    x = to_model(unit_images(blank, half, full))  # the engine hands rewards the model scale [-1, 1]
    np.testing.assert_allclose(score(reward("ink"), x).numpy(), [0.0, 0.5, 1.0])


def test_thickness_is_area_over_half_perimeter_and_orders_strokes():
    thin, thick = unit_images(bar(1), bar(3))
    # w x L bar: area wL, total variation 2 (w + L) -> thickness wL / (w + L)
    assert float(total_variation(thin[None])) == pytest.approx(2 * (1 + 6))
    assert float(thickness(thin[None])) == pytest.approx(6 / 7)
    assert float(thickness(thick[None])) == pytest.approx(18 / 9)
    values = score(reward("thickness"), to_model(unit_images(bar(1), bar(2), bar(3), bar(4))))
    assert torch.all(values.diff() > 0), values
    assert float(thickness(torch.zeros(1, 1, 8, 8))) == 0.0  # blank: no stroke, no division by zero


def test_a_mirrored_image_scores_maximal_symmetry():
    gen = np.random.default_rng(0)
    left = gen.random((8, 4))
    mirrored = np.concatenate([left, left[:, ::-1]], axis=1)
    values = symmetry(unit_images(mirrored, gen.random((8, 8)), bar(1)))
    assert float(values[0]) == pytest.approx(1.0)
    assert float(values[1]) < 0.9 and float(values[2]) < 1.0


def test_noise_is_less_jpeg_compressible_than_a_flat_image():
    gen = np.random.default_rng(0)
    flat, noise = np.full((8, 8), 0.5), gen.random((8, 8))
    x = to_model(unit_images(flat, noise, bar(2)))
    sizes = jpeg_size(unit_images(flat, noise, bar(2)))
    assert sizes[0] < sizes[2] < sizes[1]
    comp, incomp = score(reward("jpeg-compressibility"), x), score(reward("jpeg-incompressibility"), x)
    torch.testing.assert_close(comp, -sizes.double())
    torch.testing.assert_close(incomp, sizes.double())


def test_classifier_rewards_recognise_real_held_out_digits():
    split = digits_split()
    threes, fours = split.held_x[split.held_y == 3], split.held_x[split.held_y == 4]
    x = to_model(torch.cat([threes, fours]))
    prompts = ["a 3"] * len(threes) + ["four"] * len(fours)

    class Prompted:
        conditional, name = True, "digits-prompted"

    match = score(reward("prompt-match", Prompted()), x, prompts)
    assert float(match.mean()) > 0.9
    wrong = score(reward("prompt-match", Prompted()), x, ["the digit 8"] * len(x))
    assert float(wrong.mean()) < 0.1
    p3 = score(reward("digit-prob", digit=3), x)
    assert float(p3[: len(threes)].mean()) > 0.9 > 0.1 > float(p3[len(threes) :].mean())


def test_reward_arguments_and_prompt_needs_are_checked():
    class Unprompted:
        conditional, name = False, "digits"

    with pytest.raises(ValueError, match="prompt-match"):
        reward("prompt-match", Unprompted())
    with pytest.raises(ValueError, match="digit"):
        reward("digit-prob", digit=12)
    with pytest.raises(ValueError, match="digits models"):
        make_reward("ink", "toy2d")


def test_a_user_image_reward_sees_pixels_in_unit_range_and_the_prompts(tmp_path, monkeypatch):
    (tmp_path / "user_image_reward.py").write_text(
        "def ink(x):\n    return x.flatten(1).mean(1)\n\n"
        "def wants_seven(x, prompts):\n    return x.new_tensor([float(p == 'a 7') for p in prompts])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model_scale = to_model(unit_images(np.zeros((8, 8)), np.ones((8, 8)), np.full((8, 8), 0.25)))
    user = make_reward("user_image_reward:ink", "digits", allow_import=True)
    # the same pixels the built-in rewards see: blank 0, filled 1 (not the model's -1 and 1)
    torch.testing.assert_close(score(user, model_scale), torch.tensor([0.0, 1.0, 0.25], dtype=torch.float64))
    torch.testing.assert_close(score(user, model_scale), score(reward("ink"), model_scale))
    prompted = make_reward("user_image_reward:wants_seven", "digits", allow_import=True)
    assert prompted.takes_prompts
    assert score(prompted, model_scale, ["a 7", "3", "a 7"]).tolist() == [1.0, 0.0, 1.0]
    toy = make_reward("user_image_reward:ink", "toy2d", allow_import=True)  # the toy's points arrive as they are
    assert score(toy, torch.tensor([[-1.0, -3.0]])).tolist() == [-2.0]


def test_frechet_distance_matches_the_closed_form_of_two_gaussians():
    # commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 2.0])
    a, b = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.25])
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-10)
    # non-commuting covariances: scipy's matrix square root of C1 C2
    from scipy.linalg import sqrtm

    gen = torch.Generator().manual_seed(0)
    m1, m2 = (
        torch.randn(5, 5, generator=gen, dtype=torch.float64),
        torch.randn(5, 5, generator=gen, dtype=torch.float64),
    )
    c1, c2 = m1 @ m1.T + 0.1 * torch.eye(5), m2 @ m2.T
    cross = np.real(sqrtm(c1.numpy() @ c2.numpy())).trace()
    expected = float(torch.trace(c1) + torch.trace(c2)) - 2 * cross
    assert frechet_distance(torch.zeros(5), c1, torch.zeros(5), c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, torch.diag(a), mu1, torch.diag(a)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_samples_estimates_the_gaussian_one():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20000, 4, generator=gen)
    y = torch.randn(20000, 4, generator=gen) * 2 + torch.tensor([1.0, 0.0, 0.0, 0.0])
    # exact: |m|^2 + 4 (1 - 2)^2 = 1 + 4
    assert frechet_distance(*gaussian_stats(x), *gaussian_stats(y)) == pytest.approx(5.0, abs=0.15)


def test_held_out_digits_are_close_to_themselves_and_far_from_noise():
    split = digits_split()
    real = frechet_to_held_out(split.train_x)
    noise = frechet_to_held_out(torch.rand(500, 1, 8, 8))
    assert real < 0.05 * noise
    per_class = frechet_to_held_out(split.train_x[split.train_y == 7], classes=(7,))
    assert per_class < frechet_to_held_out(split.train_x[split.train_y == 7])


def test_digits_evaluator_round_metrics_and_dedup_key():
    split = digits_split()
    evaluator = DigitsEvaluator(None, None, None, None, True, prompts=["2", "five"])
    x = to_model(torch.cat([split.held_x[split.held_y == 2][:30], split.held_x[split.held_y == 5][:30]]))
    m0 = evaluator.round_metrics(0, x, torch.zeros(60))
    assert m0["fid_base"] == pytest.approx(0.0, abs=1e-6)
    assert m0["prompt_class_match"] > 0.95 and m0["confident"] > 0.9
    assert sum(m0[f"class_{c}"] for c in range(10)) == pytest.approx(1.0)
    assert m0["class_2"] == pytest.approx(0.5, abs=0.05) and m0["class_entropy"] == pytest.approx(np.log(2), abs=0.1)
    collapsed = x[:1].repeat(60, 1, 1, 1)
    m1 = evaluator.round_metrics(1, collapsed, torch.zeros(60))
    assert m1["fid_base"] > 1.0 and m1["diversity"] == pytest.approx(0.0, abs=1e-5)
    assert m0["diversity"] > 1.0
    assert m1["fid_real"] > m0["fid_real"]
    key = evaluator.dedup_key(0.25)
    keys = key(torch.stack([x[0], x[0] + 0.01, x[1]]))
    assert keys[0] == keys[1] != keys[2]


def test_mean_pairwise_distance():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(f) == pytest.approx(5.0)


def test_sample_grids_frame_accepted_candidates_in_green():
    from PIL import Image

    from pgraft.images import ACCEPTED, REJECTED, candidates_png, preview_png

    samples = to_model(digits_split().held_x[:40])
    groups = torch.arange(2).repeat_interleave(20)
    accepted = torch.zeros(40, dtype=torch.bool)
    accepted[0] = True
    img = np.array(Image.open(io.BytesIO(candidates_png(samples, groups, accepted, per_group=16, columns=8))))
    cell = 8 * 4 + 2 * 2
    assert img.shape == (4 * cell, 8 * cell, 3)  # 16 per group, 8 columns: 2 rows per group
    assert tuple(img[0, 0]) == ACCEPTED and tuple(img[0, cell]) == REJECTED
    preview = np.array(Image.open(io.BytesIO(preview_png(samples, groups, per_group=8, columns=8))))
    assert preview.shape == (2 * cell, 8 * cell, 3)


def test_round_folder_takes_extra_files_and_refuses_paths(tmp_path):
    from pgraft.graft.config import RunConfig
    from pgraft.graft.storage import RunStore

    store = RunStore(tmp_path / "run")
    store.prepare(RunConfig())
    path = store.write_round(0, {"samples": torch.zeros(2, 2)}, {"round": 0}, files={"grid.png": b"png"})
    assert (path / "grid.png").read_bytes() == b"png"
    with pytest.raises(ValueError, match="plain file name"):
        store.write_round(1, {"samples": torch.zeros(2, 2)}, {"round": 1}, files={"../x.png": b""})
    assert store.completed_rounds() == [0]
