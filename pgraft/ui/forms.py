"""Form controls built from the config dataclasses' field metadata, and handlers named after them.

A field of `RunConfig` (or another config dataclass) declares its control once, in its metadata
(`{"ui": {"widget": "slider", "label": ..., "minimum": ..., ...}}`, see `graft/config.py`); `control()`
turns that into the Gradio component, so labels, ranges and help are never re-declared in the UI.
`named_handler()` gives an event handler one parameter per control, so Gradio names the API's parameters
after the config's fields (`/run` takes `samples=...`, `rule=...`).
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABCMeta
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr
from gradio.component_meta import ComponentMeta

from pgraft.graft.config import RunConfig


def _unbounded_preprocess(self: gr.Slider, payload: float) -> float:
    return payload if payload is None else float(payload)  # None: the page sent no value


# A slider whose range the server does not enforce on what the page sends. Gradio's own slider refuses a value
# outside its current range before the handler runs ("Value 100 is greater than maximum value 4.69", or a
# stale hidden value against a range that just moved): the user sees an error badge while the page silently
# clamps. With this one the handler receives the value and decides, and says, what to do with it
# (`RoundsHandlers.threshold_typed`). It is a template of the slider (the frontend draws Gradio's own), and it
# is made with `ABCMeta.__new__` because Gradio's `ComponentMeta.__new__` writes a `.pyi` file beside the
# module of every component class it creates; the base class already carries the events and `__init__`.
FreeSlider: type[gr.Slider] = ABCMeta.__new__(  # type: ignore[assignment]
    ComponentMeta,
    "FreeSlider",
    (gr.Slider,),
    {"__module__": __name__, "is_template": True, "preprocess": _unbounded_preprocess},
)


def field_ui(name: str, cls: type = RunConfig) -> dict[str, Any]:
    """The `ui` metadata of a field (`ValueError` when it has no control)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            ui = dict(f.metadata.get("ui") or {})
            if not ui:
                raise ValueError(f"{cls.__name__}.{name} declares no control")
            ui.setdefault("help", f.metadata.get("help", ""))
            if "value" not in ui and f.default is not dataclasses.MISSING:
                ui["value"] = f.default
            return ui
    raise ValueError(f"{cls.__name__} has no field {name!r}")


def control(name: str, cls: type = RunConfig, **overrides: Any) -> Any:
    """The component of a field, from its metadata; `overrides` (value, choices, visible, ...) win."""
    ui = {**field_ui(name, cls), **overrides}
    widget = ui.pop("widget")
    ui.pop("help", None)
    common = {k: ui.pop(k) for k in ("label", "value", "info", "visible", "elem_id") if k in ui}
    if widget == "slider":
        kind = FreeSlider if ui.get("free") else gr.Slider
        return kind(float(ui.get("minimum", 0)), float(ui.get("maximum", 100)), step=ui.get("step"), **common)
    if widget == "number":
        return gr.Number(precision=ui.get("precision"), minimum=ui.get("minimum"), **common)
    if widget == "dropdown":
        return gr.Dropdown(ui.get("choices"), allow_custom_value=ui.get("allow_custom_value", False), **common)
    if widget == "radio":
        return gr.Radio(ui.get("choices"), **common)
    if widget == "tags":  # several values, picked from the choices or typed
        return gr.Dropdown(ui.get("choices"), multiselect=True, allow_custom_value=True, **common)
    if widget == "checkboxes":
        return gr.CheckboxGroup(ui.get("choices"), **common)
    if widget == "textbox":
        return gr.Textbox(placeholder=ui.get("placeholder"), **common)
    raise ValueError(f"{cls.__name__}.{name}: unknown widget {widget!r}")


def named_handler(
    names: Sequence[str], body: Callable[..., Any], doc: str, *, stream: bool = False, progress: bool = True
) -> Callable[..., Any]:
    """A function with one parameter per name, then `request: gr.Request` (and a progress tracker), that
    calls `body(values, request, progress)` with the values by name. `stream`: `body` is a generator and the
    handler streams what it yields."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD))
    if progress:
        params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress()))
    signature = inspect.Signature(params)

    def values_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any, Any]:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        return {n: values[n] for n in names}, values["request"], values.get("progress")

    if stream:

        def handler(*args: Any, **kwargs: Any) -> Any:
            values, request, tracker = values_of(args, kwargs)
            yield from body(values, request, tracker)

    else:

        def handler(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            values, request, tracker = values_of(args, kwargs)
            return body(values, request, tracker)

    handler.__signature__ = signature  # type: ignore[attr-defined]
    handler.__annotations__ = {"request": gr.Request}
    handler.__doc__ = doc
    return handler
