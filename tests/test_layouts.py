"""The layouts domain: rewards on hand-made pages with known values, the generator's measured properties, the
slot representation, user rewards and the registration (shared/docs/domains.md §A.3–A.4)."""

from __future__ import annotations

import math
import sys
import textwrap

import pytest
import torch

from pgraft.domains.layouts.generator import CLASSES, GeneratorOptions, Layouts, decode, encode, generate
from pgraft.domains.layouts.measures import alignment, inside_fraction, layout_features, overlap
from pgraft.domains.layouts.rewards import (
    aesthetic,
    count_is,
    inside_margins,
    relation,
    title_at_top,
    title_at_top_soft,
)
from pgraft.registry import get_domain, make_reward
from pgraft.rewards import RewardError, score

TEXT, TITLE, LIST, TABLE, FIGURE = range(5)


def pages(*layouts: list[tuple[int, tuple[float, float, float, float]]], xywh: bool = True) -> Layouts:
    """Pages from `(class, box)` lists; boxes given as `(x_c, y_c, w, h)` (the table of §A.3) or ltrb."""
    e = max(1, max(len(p) for p in layouts))
    boxes = torch.zeros(len(layouts), e, 4, dtype=torch.float64)
    labels = torch.full((len(layouts), e), -1, dtype=torch.long)
    for i, page in enumerate(layouts):
        for j, (c, b) in enumerate(page):
            if xywh:
                xc, yc, w, h = b
                b = (xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2)
            boxes[i, j] = torch.tensor(b, dtype=torch.float64)
            labels[i, j] = c
    return Layouts(boxes, labels)


HAND = pages(
    [(TEXT, (0.5, 0.25, 0.4, 0.2)), (TEXT, (0.5, 0.75, 0.4, 0.2))],  # stacked, same column
    [(TEXT, (0.3, 0.3, 0.2, 0.2)), (TEXT, (0.4, 0.4, 0.2, 0.2))],  # diagonal offset 0.1
    [(FIGURE, (0.5, 0.5, 0.8, 0.8)), (TEXT, (0.5, 0.5, 0.2, 0.2))],  # containment, same centre
    [(TEXT, (0.5, 0.5, 0.3, 0.3))],  # a single box
    [(TEXT, (0.5, 0.5, 0.3, 0.3)), (TEXT, (0.5, 0.5, 0.3, 0.3))],  # two identical boxes
    [(TEXT, (0.5, 0.2, 0.6, 0.1)), (TEXT, (0.5, 0.4, 0.6, 0.1)), (TEXT, (0.52, 0.6, 0.6, 0.1))],
    [],  # an empty page
)


def test_alignment_and_overlap_match_the_hand_computed_table():
    # Page 2: both elements have m = 0.1, so (1/2)(2 · −log 0.9) = −log 0.9; page 6: only the shifted box has
    # m = 0.02 (its partners are aligned among themselves), so −log 0.98 / 3.
    expected_align = [0, -math.log(0.9), 0, 0, 0, -math.log(0.98) / 3, 0]
    expected_overlap = [0, 0.25, (0.04 / 0.64 + 1) / 2, 0, 1.0, 0, 0]
    assert alignment(HAND).tolist() == pytest.approx(expected_align, abs=1e-6)
    assert overlap(HAND).tolist() == pytest.approx(expected_overlap, abs=1e-9)


def test_rewards_are_defined_on_an_empty_page_and_reject_nan_boxes():
    empty = pages([])
    assert title_at_top(empty).tolist() == [0.0]
    assert title_at_top_soft(empty).tolist() == [-1.0]
    assert inside_margins(empty, 0.05).tolist() == [0.0]
    assert count_is(empty, FIGURE, 0).tolist() == [1.0] and count_is(empty, FIGURE, 1).tolist() == [0.0]
    assert relation(empty, FIGURE, "below", TITLE).tolist() == [1.0]
    assert aesthetic(empty, 100, 1, 0.1, 9.6).tolist() == pytest.approx([-0.96])
    x = encode(pages([]))
    for name in (
        "alignment",
        "overlap",
        "aesthetic",
        "title-at-top",
        "title-at-top-soft",
        "inside-margins",
        "count",
        "relation",
    ):
        values = score(make_reward(name, "layouts"), x)
        assert torch.isfinite(values).all(), name
    bad = pages([(TEXT, (0.5, 0.5, 0.2, 0.2))])
    bad.boxes[0, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        overlap(bad)


def test_title_relation_margin_and_count_rewards_on_hand_made_pages():
    title_top = [(TITLE, (0.1, 0.05, 0.9, 0.1)), (TEXT, (0.1, 0.12, 0.9, 0.4)), (FIGURE, (0.1, 0.45, 0.9, 0.8))]
    text_top = [(TEXT, (0.1, 0.05, 0.9, 0.2)), (TITLE, (0.1, 0.3, 0.9, 0.35)), (FIGURE, (0.1, 0.1, 0.5, 0.25))]
    no_title = [(TEXT, (0.1, 0.1, 0.9, 0.5))]
    p = pages(title_top, text_top, no_title, xywh=False)
    assert title_at_top(p).tolist() == [1.0, 0.0, 0.0]
    assert title_at_top_soft(p).tolist() == pytest.approx([0.0, -0.25, -1.0])
    # figure below title: page 0 yes (0.45 >= 0.1), page 1 no (its figure starts at 0.1 < 0.35), page 2 no pair.
    assert relation(p, FIGURE, "below", TITLE).tolist() == [1.0, 0.0, 1.0]
    assert relation(p, TITLE, "above", FIGURE).tolist() == [1.0, 0.0, 1.0]
    assert count_is(p, FIGURE, 1).tolist() == [1.0, 1.0, 0.0]
    # margins 0.1: page 0's title sticks out above y = 0.1 by 0.05 over a width 0.8 -> area 0.04.
    assert inside_margins(p, 0.1).tolist() == pytest.approx([-0.04, -0.04, 0.0])


def test_aesthetic_does_not_pay_for_dropping_elements_while_overlap_does():
    """The reward hacking of domains.md §A.4: removing an overlapping element raises `overlap`, not `aesthetic`."""
    # Ten stacked blocks of height 0.08, 0.01 apart (a data-sized page); the figure slides 0.02 up, so it
    # overlaps the block above by 0.01 of their height 0.08, both ways.
    full = [(TEXT, (0.1, 0.05 + 0.09 * i, 0.9, 0.13 + 0.09 * i)) for i in range(10)]
    full[5] = (FIGURE, (0.1, 0.05 + 0.09 * 5 - 0.02, 0.9, 0.13 + 0.09 * 5 - 0.02))
    p = pages(full, full[:5] + full[6:], xywh=False)
    assert overlap(p).tolist() == pytest.approx([2 * 0.125 / 10, 0.0])
    minus_overlap = -overlap(p)
    assert minus_overlap[1] > minus_overlap[0]
    values = aesthetic(p, 100, 1, 0.1, 10.0)
    assert values.tolist() == pytest.approx([-0.025, -0.1])
    assert values[0] > values[1]


def test_the_generator_is_aligned_without_overlap_inside_the_page_and_seeded():
    layouts = generate(1000, seed=5)
    assert float(alignment(layouts).max()) < 1e-6
    assert float(overlap(layouts).max()) == 0.0
    assert inside_fraction(layouts) == 1.0
    counts = layouts.counts.double()
    assert 8.5 < float(counts.mean()) < 10.5 and int(counts.min()) >= 1 and int(counts.max()) <= 20
    assert 0.4 < float(title_at_top(layouts).mean()) < 0.6  # room for "title at top" to move
    again = generate(1000, seed=5)
    assert torch.equal(layouts.boxes, again.boxes) and torch.equal(layouts.labels, again.labels)
    # reading order: tops never decrease along the slots
    tops = torch.where(layouts.valid, layouts.boxes[..., 1], torch.ones_like(layouts.boxes[..., 1]))
    assert bool((tops.diff(dim=1) >= -1e-6).all())
    jittered = generate(300, seed=5, options=GeneratorOptions(jitter=0.01))
    assert float(alignment(jittered).mean()) > 1e-3 and float(overlap(jittered).mean()) > 0
    only_text = generate(200, seed=5, options=GeneratorOptions(block_probs=(1, 0, 0, 0, 0), title_prob=0.0))
    assert set(only_text.labels[only_text.valid].tolist()) == {TEXT}


def test_generator_options_are_validated_naming_the_field():
    with pytest.raises(ValueError, match="jitter: -1"):
        GeneratorOptions(jitter=-1)
    with pytest.raises(ValueError, match="block_probs"):
        GeneratorOptions(block_probs=(1, 2))
    with pytest.raises(ValueError, match="max_elements: 30"):
        GeneratorOptions(max_elements=30)


def test_encode_decode_round_trips_and_features_separate_data_from_noise():
    layouts = generate(400, seed=1)
    x = encode(layouts)
    assert x.shape == (400, 20, 10) and float(x.abs().max()) <= 1.0
    back = decode(x)
    assert torch.equal(back.labels, layouts.labels)
    assert torch.allclose(back.boxes, layouts.boxes, atol=1e-6)
    from pgraft.domains.layouts.metrics import frechet_layouts

    other = generate(400, seed=2)
    noise = decode(torch.randn(400, 20, 10))
    assert layout_features(layouts).shape == (400, 128)
    assert frechet_layouts(other, layouts) < 0.2 * frechet_layouts(noise, layouts)


def test_a_user_reward_receives_boxes_and_labels(tmp_path, monkeypatch):
    (tmp_path / "my_layout_reward.py").write_text(
        textwrap.dedent(
            """
            import torch

            def figures_low(boxes, labels):
                assert boxes.shape[-1] == 4 and labels.dtype == torch.long and boxes.shape[:2] == labels.shape
                assert int(labels.min()) >= -1
                return ((labels == 4) * boxes[..., 1]).sum(1)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_layout_reward", None)
    reward = make_reward("my_layout_reward:figures_low", "layouts", allow_import=True)
    p = pages([(FIGURE, (0.1, 0.6, 0.9, 0.9))], [(TEXT, (0.1, 0.1, 0.9, 0.2))], [], xywh=False)
    assert score(reward, encode(p)).tolist() == pytest.approx([0.6, 0.0, 0.0], abs=1e-6)


def test_registered_domain_with_rewards_presets_and_failing_rewards_named():
    domain = get_domain("layouts")
    assert {
        "alignment",
        "overlap",
        "aesthetic",
        "title-at-top",
        "title-at-top-soft",
        "inside-margins",
        "count",
        "relation",
    } <= set(domain.rewards)
    assert [p.name for p in domain.presets] == ["Reward hacking: overlap drops elements", "Title at the top"]
    with pytest.raises(ValueError, match="--reward-arg cls: 'chart'"):
        make_reward("count", "layouts", {"cls": "chart"})
    with pytest.raises(ValueError, match="--reward-arg rel"):
        make_reward("relation", "layouts", {"rel": "under"})
    x = encode(pages([(TEXT, (0.5, 0.5, 0.2, 0.2))]))
    x[0, 0, 7] = float("nan")
    with pytest.raises(RewardError, match="reward 'overlap'"):
        score(make_reward("overlap", "layouts"), x)
    assert CLASSES == ("text", "title", "list", "table", "figure")
