"""Plain YAML for config files: safe types only, no aliases (which can expand without bound), no repeated keys,
a bounded size; every problem is one `ValueError` naming the flag the file came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_CONFIG_BYTES = 1_000_000


class _PlainLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases and with unique keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                "while reading the file", None, "aliases (*name) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        for key in keys:
            if keys.count(key) > 1:
                raise yaml.MarkedYAMLError("while reading a mapping", node.start_mark, f"{key!r} is given twice", None)
        return super().construct_mapping(node, deep=deep)


def read_plain_yaml(path: Path, flag: str) -> Any:
    """The data of a small, plain YAML file; every problem is a `ValueError` naming `flag`."""
    shown = repr(str(path))
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {shown}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise ValueError(f"{flag}: {shown} is a folder; give a YAML file")
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"{flag}: {shown} is {size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=_PlainLoader)
    except UnicodeDecodeError:
        raise ValueError(f"{flag}: {shown} is not a UTF-8 text file") from None
    except OSError as exc:
        raise ValueError(f"{flag}: cannot read {shown}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{flag}: {shown} is not plain YAML{line}: {problem}") from None
