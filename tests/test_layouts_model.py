"""The shipped `layouts` model against its card, its sampler's behaviour, and the round artifacts."""

from __future__ import annotations

import json

import pytest
import torch

from pgraft.core.sampling import sample, sample_seeds
from pgraft.domains.layouts.generator import decode
from pgraft.domains.layouts.models import weights_path
from pgraft.families.small import read_safetensors_metadata


def _card() -> dict:
    return json.loads(read_safetensors_metadata(weights_path())["quality"])


def test_the_card_is_written_from_the_files_metadata_and_beats_noise():
    quality = _card()
    card = weights_path().with_suffix(".md").read_text()
    row = quality["eta=1"]
    assert f"| eta=1 | {row['alignment_x100']} | {row['overlap_x100']} |" in card
    data = quality["data (other held-out pages)"]
    assert abs(row["elements"] - data["elements"]) < 1.0
    assert row["inside_page"] > 0.97
    assert row["frechet"] < 0.5 * 30  # random slot tensors score above 30 (tests/test_layouts.py measures noise)


@pytest.mark.slow
def test_the_shipped_model_matches_its_card():
    """400 fresh samples (other seeds than the card's) judged like the card against 400 held-out pages."""
    from pgraft.domains.layouts.training import held_out_pages, judge
    from pgraft.registry import load_model

    model = load_model("layouts")
    card = _card()["eta=1"]
    pages = decode(sample(model, sample_seeds(99, 0, 400), 50, eta=1.0).samples)
    got = judge(pages, held_out_pages(400))
    assert abs(got["elements"] - card["elements"]) < 0.6
    assert abs(got["overlap_x100"] - card["overlap_x100"]) < 0.35 * card["overlap_x100"] + 2
    assert abs(got["alignment_x100"] - card["alignment_x100"]) < 0.5 * card["alignment_x100"] + 0.1
    assert abs(got["title_on_top"] - card["title_on_top"]) < 0.08
    assert got["inside_page"] > card["inside_page"] - 0.02
    # Fewer samples on both sides raise the Fréchet distance's bias; the card's 1,000 set the scale.
    assert got["frechet"] < 2.0 * card["frechet"] + 0.5
    for mine, theirs in zip(got["class_freqs"], card["class_freqs"]):
        assert abs(mine - theirs) < 0.05


def test_sampling_is_seeded_per_sample_and_the_self_conditioning_cache_resets():
    from pgraft.registry import load_model

    model = load_model("layouts")
    seeds = sample_seeds(5, 0, 12)
    a = sample(model, seeds, 10, eta=1.0).samples
    b = sample(model, seeds[:6], 10, eta=1.0).samples  # other batch size: the same first six pages
    assert torch.allclose(a[:6], b, atol=1e-5)
    copy = model.trainable_copy(seed=1).frozen()
    c = sample(model, seeds, 10, eta=1.0, finetuned=copy, cutoff=0.5).samples  # the copy equals the base
    assert torch.allclose(a, c, atol=1e-5)
