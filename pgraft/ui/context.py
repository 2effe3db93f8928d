"""The contract between the app shell and its tabs.

The shell (`pgraft/ui/app.py`) builds the "Rounds" tab, then, inside `with gr.Tab(...)`, calls each
optional tab module's `build_tab(ctx: TabContext) -> None`, which creates that tab's components and wires
its events. Every event that runs a model must pass `concurrency_id=ctx.heavy_concurrency_id` (and
`concurrency_limit=ctx.heavy_concurrency_limit`), so all heavy work of every tab shares one bounded queue,
while light events (dropdown changes, exports) use `concurrency_limit=None` and never wait behind it. A tab
keeps its running job (stop flag, output folder) in the session (`ctx.sessions.start(request, tab)`), so its
outputs are deleted with the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TabContext:
    device: str
    """Torch device for heavy work, already resolved ("cpu", "cuda", ...)."""
    heavy_concurrency_id: str
    """Pass as `concurrency_id=` to every event that samples or trains."""
    heavy_concurrency_limit: int
    """Pass as `concurrency_limit=` together with the id."""
    rounds_model: Any
    """The Rounds tab's base-model `gr.Dropdown` (read it as an input to follow the user's choice)."""
    rounds_reward: Any
    """The Rounds tab's reward `gr.Dropdown`."""
    rounds_cutoff: Any
    """The Rounds tab's cutoff `gr.Slider`: a tab may output a recommended cutoff into it."""
    rounds_method: Any
    """The Rounds tab's method `gr.Radio` ("graft" / "pgraft"): set it together with a recommended cutoff."""
    tabs: Any
    """The app's `gr.Tabs`: output `gr.Tabs(selected=ctx.rounds_tab_id)` to switch to the Rounds tab."""
    rounds_tab_id: str
    sessions: Any = None
    """The app's `ui.sessions.SessionStore`: each tab keeps its job (stop flag, folder) in the session (None:
    the tab makes its own, for a tab built on its own)."""
    limits: Any = None
    """The app's `ui.limits.Limits` (None: the defaults): every heavy handler checks its request against them."""
    rounds_dataset: Any = None
    """The Rounds tab's data set control (toy models): a tab studies the same data set."""
    rounds_prompts: Any = None
    """The Rounds tab's prompts control (prompted models)."""
    rounds_reward_args: Any = None
    """The Rounds tab's reward-arguments textbox (`key=value, ...`)."""
    rounds_controls: Any = None
    """The Rounds tab's controls by `Controls` name (a dict), for a tab that sets several of them at once."""
    rounds_config: Any = None
    """The Rounds tab's validation, `config(controls: Controls, limited: bool) -> RunConfig` (`gr.Error` naming the
    setting): a tab whose runs are Rounds-tab runs validates them as its Run does."""
    rounds_base: Any = None
    """The app's base-model cache, `BaseModels.get_for(config)`: a tab that runs many short runs loads the model
    once (None: each run loads its own)."""

    def wire_heavy(
        self, run: Any, stop: Any, fn: Any, inputs: list[Any], outputs: list[Any], api_name: str, progress: Any
    ) -> Any:
        """`run.click`: disable Run and enable Stop (a light event), then `fn` on the shared heavy queue with its
        progress bar on `progress`, then Run enabled and Stop disabled again. Returns the heavy event."""
        import gradio as gr

        light: dict[str, Any] = dict(concurrency_limit=None, api_visibility="undocumented")

        def buttons(running: bool) -> tuple[Any, Any]:  # fresh updates every time (Gradio consumes them)
            return gr.update(interactive=not running), gr.update(interactive=running)

        lock = run.click(lambda: buttons(True), None, [run, stop], **light)
        heavy = lock.then(
            fn,
            inputs,
            outputs,
            api_name=api_name,
            concurrency_id=self.heavy_concurrency_id,
            concurrency_limit=self.heavy_concurrency_limit,
            show_progress_on=progress,
        )
        heavy.then(lambda: buttons(False), None, [run, stop], **light)
        return heavy
