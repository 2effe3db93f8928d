"""Readers of real layout data sets on a user's disk, into the domain's `Layouts` (shared/docs/domains.md §A.2).

Nothing is downloaded. Each reader applies the usual filters and counts what it dropped and why:

| format | file | filters |
|---|---|---|
| `publaynet` | COCO JSON (`train.json`, `val.json`) | landscape pages (H < W); boxes leaving the page or empty |
| `rico` | a folder (or zip) of semantic JSON screens | root not at the origin, landscape; boxes off the screen |
| `magazine` | a folder of XML pages (`<element label polygon_x polygon_y>`) | boxes outside the 225 × 300 canvas |
| `crello` | JSONL or parquet rows (`left, top, width, height, type` lists) | boxes clamped to [0, 1]; empty dropped |

Every format then drops pages left without elements or with more than `max_elements`. Labels map to the
five model classes through a class map (`CLASS_MAPS`; a label mapped to None is dropped and counted); a label
that the map does not know stops the reader with a message naming it, so nothing is silently relabelled.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pgraft.domains.layouts.generator import CLASSES, SLOTS, Layouts

FORMATS = ("publaynet", "rico", "magazine", "crello")
MAGAZINE_CANVAS = (225.0, 300.0)
CLASS_MAPS: dict[str, dict[str, str | None]] = {
    "publaynet": {c: c for c in CLASSES},
    "rico": {
        **{k: "text" for k in ("Text", "Text Button", "Input", "Radio Button", "Checkbox", "On/Off Switch")},
        **{
            k: "figure" for k in ("Image", "Icon", "Background Image", "Web View", "Video", "Map View", "Advertisement")
        },
        **{k: "list" for k in ("List Item", "Drawer", "Button Bar", "Bottom Navigation", "Multi-Tab")},
        **{k: "table" for k in ("Card", "Modal", "Date Picker", "Number Stepper", "Slider")},
        "Toolbar": "title",
        "Pager Indicator": None,
    },
    "magazine": {
        "text": "text",
        "headline": "title",
        "image": "figure",
        "text-over-image": "text",
        "headline-over-image": "title",
        "background": None,
    },
    "crello": {
        "textElement": "text",
        "imageElement": "figure",
        "svgElement": "figure",
        "maskElement": "figure",
        "coloredBackground": None,
    },
}


@dataclass
class ReadResult:
    """Pages read, and counts of dropped pages and elements by reason."""

    layouts: Layouts
    pages_read: int
    dropped_pages: Counter[str] = field(default_factory=Counter)
    dropped_elements: Counter[str] = field(default_factory=Counter)

    def report(self) -> dict[str, Any]:
        return {
            "pages_read": self.pages_read,
            "pages_kept": len(self.layouts),
            "dropped_pages": dict(self.dropped_pages),
            "dropped_elements": dict(self.dropped_elements),
        }


Page = tuple[float, float, list[tuple[str, tuple[float, float, float, float]]]]
"""(width, height, [(label, (x0, y0, x1, y1) in page units)])."""


def _publaynet(path: Path, drop: Counter[str]) -> Iterator[Page | str]:
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data.get("categories", [])}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    for image in data.get("images", []):
        w, h = float(image["width"]), float(image["height"])
        elements = []
        for a in by_image.get(image["id"], []):
            x, y, bw, bh = (float(v) for v in a["bbox"])
            elements.append((str(names.get(a["category_id"], a["category_id"])), (x, y, x + bw, y + bh)))
        yield (w, h, elements)


def _rico_nodes(node: dict[str, Any]) -> Iterator[tuple[str, tuple[float, float, float, float]]]:
    for child in node.get("children", []) or []:
        if "componentLabel" in child:
            yield str(child["componentLabel"]), tuple(float(v) for v in child["bounds"])  # type: ignore[misc]
        yield from _rico_nodes(child)


def _rico(path: Path, drop: Counter[str]) -> Iterator[Page | str]:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            texts = [z.read(n).decode() for n in sorted(z.namelist()) if n.endswith(".json")]
    else:
        texts = [p.read_text() for p in sorted(path.rglob("*.json"))]
    for text in texts:
        root = json.loads(text)
        x0, y0, x1, y1 = (float(v) for v in root["bounds"])
        if (x0, y0) != (0.0, 0.0):
            yield "root not at the origin"
            continue
        yield (x1, y1, list(_rico_nodes(root)))


def _magazine(path: Path, drop: Counter[str]) -> Iterator[Page | str]:
    import xml.etree.ElementTree as ET

    w, h = MAGAZINE_CANVAS
    for file in sorted(path.rglob("*.xml")):
        elements = []
        for e in ET.parse(file).getroot().iter("element"):
            xs = [float(v) for v in e.get("polygon_x", "").split()]
            ys = [float(v) for v in e.get("polygon_y", "").split()]
            if len(xs) < 3 or len(ys) < 3:
                drop["polygon with fewer than 3 corners"] += 1
                continue
            elements.append((str(e.get("label")), (xs[0], ys[0], xs[2], ys[2])))
        yield (w, h, elements)


def _crello(path: Path, drop: Counter[str]) -> Iterator[Page | str]:
    if path.suffix == ".parquet":
        import pandas as pd

        rows: list[dict[Any, Any]] = pd.read_parquet(path).to_dict("records")
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        elements = []
        for kind, left, top, width, height in zip(row["type"], row["left"], row["top"], row["width"], row["height"]):
            x0, y0 = max(0.0, float(left)), max(0.0, float(top))
            x1, y1 = min(1.0, float(left) + float(width)), min(1.0, float(top) + float(height))
            elements.append((str(kind), (x0, y0, x1, y1)))
        yield (1.0, 1.0, elements)


READERS = {"publaynet": _publaynet, "rico": _rico, "magazine": _magazine, "crello": _crello}


def read_layouts(
    path: Path, fmt: str, max_elements: int = SLOTS, class_map: Mapping[str, str | None] | None = None
) -> ReadResult:
    """Read `path` in format `fmt` (see the module docstring) into pages sorted by (top, left)."""
    if fmt not in READERS:
        raise ValueError(f"--format: {fmt!r} is not a layout data format; choose one of {list(FORMATS)}")
    if not 1 <= max_elements <= SLOTS:
        raise ValueError(f"max_elements: {max_elements!r} is invalid; allowed 1..{SLOTS}")
    path = Path(path)
    if not path.exists():
        raise ValueError(f"--data: {str(path)!r} does not exist")
    mapping = dict(class_map if class_map is not None else CLASS_MAPS[fmt])
    bad_targets = {v for v in mapping.values() if v is not None and v not in CLASSES}
    if bad_targets:
        raise ValueError(f"class map: {sorted(bad_targets)} are not model classes; allowed {list(CLASSES)} or None")
    unknown: Counter[str] = Counter()
    drop_pages: Counter[str] = Counter()
    drop_elements: Counter[str] = Counter()
    pages: list[list[tuple[int, tuple[float, float, float, float]]]] = []
    read = 0
    for page in READERS[fmt](path, drop_elements):
        read += 1
        if isinstance(page, str):
            drop_pages[page] += 1
            continue
        w, h, elements = page
        if h < w:
            drop_pages["landscape page"] += 1
            continue
        kept = []
        for label, (x0, y0, x1, y1) in elements:
            if label not in mapping:
                unknown[label] += 1
                continue
            target = mapping[label]
            if target is None:
                drop_elements[f"label {label!r} mapped to nothing"] += 1
                continue
            if not (x1 > x0 and y1 > y0):
                drop_elements["empty box (x1 <= x0 or y1 <= y0)"] += 1
                continue
            if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                drop_elements["box outside the page"] += 1
                continue
            kept.append((CLASSES.index(target), (x0 / w, y0 / h, x1 / w, y1 / h)))
        if not kept:
            drop_pages["no elements left"] += 1
        elif len(kept) > max_elements:
            drop_pages[f"more than {max_elements} elements"] += 1
        else:
            pages.append(sorted(kept, key=lambda e: (round(e[1][1], 6), round(e[1][0], 6))))
    if unknown:
        raise ValueError(
            f"--data: {fmt} labels {sorted(unknown)} are not in the class map; map each to one of "
            f"{list(CLASSES)} or to None (drop)"
        )
    boxes = torch.zeros(len(pages), SLOTS, 4)
    labels = torch.full((len(pages), SLOTS), -1, dtype=torch.long)
    for i, page_elements in enumerate(pages):
        for j, (c, b) in enumerate(page_elements):
            labels[i, j] = c
            boxes[i, j] = torch.tensor(b)
    return ReadResult(Layouts(boxes, labels), read, drop_pages, drop_elements)
