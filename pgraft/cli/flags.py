"""The one dataclass-to-flags builder every command uses: a field `foo_bar` is the flag `--foo-bar`, with
the field's help, its type from the annotation and `nargs="+"` for lists and tuples.

Flags that are not given stay unset (`argparse.SUPPRESS`), so a `--config` file's values and the model's
domain defaults are not overridden by the dataclass's defaults; `values_of` collects what was given.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _reward_arg(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--reward-arg: {text!r} must be key=value")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def _argument_type(annotation: Any) -> tuple[Any, bool]:
    """`(element type, takes several values)` of a field annotation (`int | None` → int, `tuple[int, ...]`
    and `list[str]` → several)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (args[0] if args else str), True
    return origin or annotation, False


def add_dataclass_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    skip: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """One flag per field of the dataclass `cls` (except `skip`); `defaults` replaces a default shown in the
    help (e.g. "the model's domain default"). Returns the field names that got a flag."""
    hints = typing.get_type_hints(cls)
    skipped = set(skip)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skipped:
            continue
        shown = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        if shown is not None and "(default" not in help_text:
            help_text += f" (default: {shown})"
        element, several = _argument_type(hints[f.name])
        if element is dict:  # reward_args: repeated KEY=VALUE
            parser.add_argument(
                "--reward-arg",
                dest=f.name,
                action="append",
                type=_reward_arg,
                default=argparse.SUPPRESS,
                help=help_text,
                metavar="KEY=VALUE",
            )
        elif several:
            parser.add_argument(flag_name(f.name), type=element, nargs="+", default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag_name(f.name), type=element, default=argparse.SUPPRESS, help=help_text)
        added.append(f.name)
    return added


def values_of(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` given on the command line (tuple fields as tuples, `reward_args` as a dict)."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key not in names:
            continue
        if isinstance(value, list):
            element, _ = _argument_type(hints[key])
            if element is dict or hints[key] is dict or typing.get_origin(hints[key]) is dict:
                value = dict(value)
            elif typing.get_origin(_strip_none(hints[key])) is tuple:
                value = tuple(value)
        out[key] = value
    return out


def _strip_none(annotation: Any) -> Any:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation
