"""Readers of real layout data sets, on tiny fixture files written here in each format, including the pages
and elements they must drop (and the counts of why)."""

from __future__ import annotations

import json

import pytest
import torch

from pgraft.domains.layouts.generator import CLASSES
from pgraft.domains.layouts.io import read_layouts

TEXT, TITLE, LIST, TABLE, FIGURE = range(5)


def test_publaynet_coco_json(tmp_path):
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 600, "height": 800},
            {"id": 2, "file_name": "landscape.jpg", "width": 800, "height": 600},
            {"id": 3, "file_name": "only-bad.jpg", "width": 600, "height": 800},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [60, 40, 480, 40]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 100, 480, 300]},
            {"id": 3, "image_id": 1, "category_id": 5, "bbox": [500, 500, 200, 100]},  # leaves the page
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [10, 10, 100, 100]},
            {"id": 5, "image_id": 3, "category_id": 4, "bbox": [10, 10, 0, 50]},  # empty box
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
    }
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    read = read_layouts(path, "publaynet")
    assert read.report() == {
        "pages_read": 3,
        "pages_kept": 1,
        "dropped_pages": {"landscape page": 1, "no elements left": 1},
        "dropped_elements": {"box outside the page": 1, "empty box (x1 <= x0 or y1 <= y0)": 1},
    }
    page = read.layouts
    assert page.labels[0, :3].tolist() == [TITLE, TEXT, -1]
    assert page.boxes[0, 0].tolist() == pytest.approx([0.1, 0.05, 0.9, 0.1])
    assert page.boxes[0, 1].tolist() == pytest.approx([0.1, 0.125, 0.9, 0.5])


def test_rico_semantic_json_folder_with_nested_children(tmp_path):
    screen = {
        "bounds": [0, 0, 1440, 2560],
        "children": [
            {
                "componentLabel": "Toolbar",
                "bounds": [0, 0, 1440, 256],
                "children": [
                    {"componentLabel": "Icon", "bounds": [20, 20, 200, 200]},
                ],
            },
            {"componentLabel": "List Item", "bounds": [0, 300, 1440, 600]},
            {"componentLabel": "Pager Indicator", "bounds": [600, 2400, 840, 2500]},  # mapped to nothing
            {"componentLabel": "Text", "bounds": [0, 2500, 1500, 2600]},  # outside the screen
        ],
    }
    (tmp_path / "1.json").write_text(json.dumps(screen))
    (tmp_path / "2.json").write_text(json.dumps({**screen, "bounds": [10, 0, 1450, 2560]}))  # not at origin
    (tmp_path / "3.json").write_text(json.dumps({"bounds": [0, 0, 2560, 1440], "children": []}))  # landscape
    read = read_layouts(tmp_path, "rico")
    assert read.report()["dropped_pages"] == {"root not at the origin": 1, "landscape page": 1}
    assert read.report()["dropped_elements"] == {
        "label 'Pager Indicator' mapped to nothing": 1,
        "box outside the page": 1,
    }
    assert read.layouts.labels[0, :4].tolist() == [TITLE, FIGURE, LIST, -1]
    assert read.layouts.boxes[0, 2].tolist() == pytest.approx([0, 300 / 2560, 1, 600 / 2560])
    with pytest.raises(ValueError, match=r"labels \['Icon', 'List Item'\] are not in the class map"):
        read_layouts(tmp_path, "rico", class_map={"Toolbar": "title", "Text": "text", "Pager Indicator": None})


def test_magazine_xml_and_crello_jsonl(tmp_path):
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "fashion_0001.xml").write_text(
        '<layout><element label="headline" polygon_x="20 200 200 20" polygon_y="10 10 40 40"/>'
        '<element label="image" polygon_x="20 200 200 20" polygon_y="50 50 200 200"/>'
        '<element label="background" polygon_x="0 225 225 0" polygon_y="0 0 300 300"/>'
        '<element label="text" polygon_x="20 250 250 20" polygon_y="210 210 280 280"/></layout>'
    )
    read = read_layouts(tmp_path, "magazine")
    assert read.report()["dropped_elements"] == {"label 'background' mapped to nothing": 1, "box outside the page": 1}
    assert read.layouts.labels[0, :3].tolist() == [TITLE, FIGURE, -1]
    assert read.layouts.boxes[0, 0].tolist() == pytest.approx([20 / 225, 10 / 300, 200 / 225, 40 / 300])

    rows = [
        {
            "type": ["coloredBackground", "textElement", "imageElement"],
            "left": [0, 0.1, 0.5],
            "top": [0, 0.1, 0.8],
            "width": [1, 0.8, 0.7],
            "height": [1, 0.1, 0.4],
        },
        {"type": ["textElement"], "left": [0.2], "top": [0.2], "width": [0.0], "height": [0.1]},  # empty box
    ]
    path = tmp_path / "crello.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    read = read_layouts(path, "crello")
    assert read.report()["pages_kept"] == 1 and read.report()["dropped_pages"] == {"no elements left": 1}
    assert read.layouts.labels[0, :3].tolist() == [TEXT, FIGURE, -1]
    assert read.layouts.boxes[0, 1].tolist() == pytest.approx([0.5, 0.8, 1.0, 1.0])  # clamped to the page
    with pytest.raises(ValueError, match="--format: 'pdf'"):
        read_layouts(path, "pdf")


def test_a_too_full_page_is_dropped(tmp_path):
    rows = [
        {
            "type": ["textElement"] * 5,
            "left": [0.1] * 5,
            "top": [0.1 * i for i in range(5)],
            "width": [0.5] * 5,
            "height": [0.05] * 5,
        }
    ]
    path = tmp_path / "crello.jsonl"
    path.write_text(json.dumps(rows[0]))
    read = read_layouts(path, "crello", max_elements=4)
    assert read.report()["dropped_pages"] == {"more than 4 elements": 1}
    assert len(read.layouts) == 0 and read.layouts.boxes.shape == torch.Size([0, 20, 4])


@pytest.mark.slow  # about 20 s on a shared 2-core CPU (imports, three training steps, 2 x 8 samples judged)
def test_pretrain_layouts_on_a_publaynet_file_from_the_command_line(tmp_path, capsys):
    from pgraft.cli import main
    from pgraft.domains.layouts.models import load_layout_model

    images = [{"id": i, "file_name": f"{i}.jpg", "width": 600, "height": 800} for i in range(4)]
    annotations = [
        {"id": 10 * i + j, "image_id": i, "category_id": 1 + (j % 5), "bbox": [60, 40 + 150 * j, 480, 120]}
        for i in range(4)
        for j in range(i + 1)
    ]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    data = tmp_path / "train.json"
    data.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    out = tmp_path / "mine.safetensors"
    args = ["pretrain", "layouts", "--data", str(data), "--format", "publaynet", "--steps", "3", "--size", "tiny"]
    assert main([*args, "--eval-samples", "8", "--out", str(out)]) == 0
    model = load_layout_model(path=out)
    assert model.info["training"]["data"] == "4 pages read from disk"
    assert model.info["data"]["pages_kept"] == 4
    card = out.with_suffix(".md").read_text()
    assert "--data" in card and "Fréchet to held-out" in card
