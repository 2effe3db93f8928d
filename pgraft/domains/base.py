"""What a domain provides to the rest of pgraft, and where its shipped files live."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def asset_dir(package: str) -> Path:
    """The `assets/` folder shipped inside a domain's package (found with `importlib.resources`, so it works
    from a checkout, an editable install and an installed wheel alike)."""
    return Path(str(resources.files(package) / "assets"))
