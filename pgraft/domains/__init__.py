"""The domains shipped with pgraft, one package each; `pgraft.registry` registers them.

A new domain is one folder here (or in another installed package, declared under the entry-point group
`pgraft.domains`) whose `__init__.py` defines `DOMAIN`, a `pgraft.domains.base.Domain`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

BUILTIN = ("toy2d", "digits", "layouts", "t2i", "molecules")


def builtin_domains() -> list[Any]:
    """The `DOMAIN` of every built-in domain package, in menu order."""
    return [import_module(f"{__name__}.{name}").DOMAIN for name in BUILTIN]
