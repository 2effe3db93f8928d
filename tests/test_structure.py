"""The layout rules of docs/architecture.md, checked on the code itself: no import cycles (function-level
imports count), nothing generic imports a domain or compares a domain's name, and a new domain is one
description registered from outside pgraft, which the command line and the app then run."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

import pgraft
from pgraft.core.process import VPProcess
from pgraft.domains import BUILTIN
from pgraft.domains.base import Domain, ModelSpec, RunDefaults
from pgraft.families.small import DiffusionModel
from pgraft.nets.mlp import MLPDenoiser
from pgraft.registry import DOMAINS, MODELS, REWARDS, register_domain
from pgraft.rewards import RewardSpec

PACKAGE = Path(pgraft.__file__).parent
ALLOWED_FROM_GENERIC = ("pgraft.domains", "pgraft.domains.base")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """Every pgraft module an AST imports, at any depth (functions too), outside `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pgraft"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pgraft"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the pgraft modules it imports by name, plus the built-in domains that `pgraft.domains` loads
    (inside a function) by name. A package a submodule lives in is not an edge unless it is imported by
    name: Python runs the package before its submodules, so that order can never deadlock."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = _imports(ast.parse(path.read_text()), modules)
        graph[name] = {e for e in edges if e in modules and e != name}
    graph["pgraft.domains"] |= {f"pgraft.domains.{d}" for d in BUILTIN}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycles_counting_function_level_imports():
    assert _cycles(import_graph()) == []


def test_the_checker_finds_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from pgraft.registry import MODELS\n")
    assert _imports(tree, {"pgraft.registry"}) == {"pgraft.registry"}


def test_nothing_generic_imports_a_domain():
    offenders = {
        (module, target)
        for module, targets in import_graph().items()
        if module != "pgraft.domains" and not module.startswith("pgraft.domains.")  # the domains' own package
        for target in targets
        if target.startswith("pgraft.domains.") and target not in ALLOWED_FROM_GENERIC
    }
    assert offenders == set()


def test_nothing_outside_the_domains_compares_a_domain_name():
    names = set(DOMAINS)
    found = []
    for path in PACKAGE.rglob("*.py"):
        if "domains" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in names]
                found += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for _ in constants]
    assert found == []


# --- a throwaway domain, registered from here: the 1-D mixture of docs/method.md §3 ---------------------------
WEIGHTS, MEANS, STDS = (0.5, 0.3, 0.2), (-2.0, 0.5, 2.5), (0.5, 0.4, 0.3)
BASE_MEAN, GRAFT_MEAN = -0.350, 1.642  # E r under the base and under the best-of-4 GRAFT target (hand-worked)


class Exact1D(nn.Module):
    """The posterior-mean ε of the 1-D mixture, plus a zero-initialised trainable residual."""

    def __init__(self, process: VPProcess) -> None:
        super().__init__()
        self.process = process
        self.residual = MLPDenoiser(dim=1, hidden=64, zero_output=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: object = None) -> torch.Tensor:
        t = t.expand(len(x)) if t.dim() == 0 else t
        a, s = (c.reshape(-1, 1) for c in self.process.coefficients(t.detach().cpu()))
        w, m, sd = (torch.tensor(v, dtype=torch.float64) for v in (WEIGHTS, MEANS, STDS))
        x64 = x.detach().cpu().double()
        var = (a * sd) ** 2 + s**2
        log_resp = torch.log(w) - 0.5 * torch.log(var) - 0.5 * (x64 - a * m) ** 2 / var
        resp = torch.softmax(log_resp, dim=1)
        x0 = (resp * (m + a * sd**2 / var * (x64 - a * m))).sum(1, keepdim=True)
        eps = ((x64 - a * x0) / s).to(x.dtype)
        return eps + self.residual(x, t)


def _load_line(device: str = "cpu") -> DiffusionModel:
    process = VPProcess()
    return DiffusionModel(Exact1D(process), process, (1,), "line1d", "line1d").to(device).frozen()


LINE = Domain(
    name="line1d",
    description="a 1-D Gaussian mixture with a hand-worked answer",
    models={"line1d": ModelSpec(_load_line, "line1d", "exact 1-D mixture")},
    rewards={"position": RewardSpec(lambda context: lambda x: x[:, 0].double(), "line1d", "the coordinate")},
    default_reward="position",
    defaults=RunDefaults(samples=4096, num_inference_steps=50, finetune_steps=300, batch_size=256, lr=2e-3, rounds=1),
)


@pytest.fixture(scope="module")
def line_domain():
    register_domain(LINE)
    yield LINE
    DOMAINS.pop("line1d", None)
    MODELS.pop("line1d", None)
    REWARDS.pop("position", None)


def test_a_domain_registered_from_outside_runs_through_the_cli(line_domain, tmp_path, capsys):
    from pgraft.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", "line1d", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "defaults of the line1d domain" in printed and "--samples 4096" in printed
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["reward"] == "position" and config["num_inference_steps"] == 50  # the domain's defaults
    table = pd.read_csv(out / "metrics.csv")
    assert list(table["round"]) == [0, 1]
    # The exact base samples the mixture, and best-of-4 accepts its exact GRAFT target (method.md §3):
    # 4096 samples give standard errors of 0.03 (base) and 0.04 (accepted).
    assert table["reward_mean"][0] == pytest.approx(BASE_MEAN, abs=0.12)
    assert table["accepted_reward_mean"][0] == pytest.approx(GRAFT_MEAN, abs=0.12)
    assert table["reward_mean"][1] > table["reward_mean"][0] + 0.5


def test_a_domain_registered_from_outside_runs_through_the_app_handlers(line_domain, tmp_path):
    from pgraft.ui.controls import Controls, domain_defaults
    from pgraft.ui.models import BaseModels
    from pgraft.ui.rounds_handlers import RoundsHandlers
    from pgraft.ui.sessions import SessionStore

    handlers = RoundsHandlers(SessionStore(tmp_path), BaseModels("cpu"), "cpu")
    values = {**domain_defaults("line1d"), "samples": 1024, "preview": 64}
    controls = Controls(
        model="line1d", dataset="ring8", reward="position", reward_args="", prompts=[], method="pgraft",
        cutoff=0.4, rule="best-of-n", threshold=None, quantile=None, n=4, k=None, beta=None, seed=0,
        anchoring="intermediate", **values,
    )  # fmt: skip
    request = SimpleNamespace(session_hash="line", cookies={})
    outputs = list(handlers.run(controls, request, lambda *a, **k: None))
    status, table = outputs[-1][0], outputs[-1][5]
    assert "Finished: 1 round after the base" in status
    assert list(table["round"]) == [0, 1] and not math.isnan(table["reward_mean"][1])
    assert table["reward_mean"][1] > table["reward_mean"][0]
    assert (handlers.sessions.get(request).run_dir / "rounds" / "round_001").is_dir()


def test_every_command_runs_on_its_domains_defaults(tmp_path, capsys):
    from pgraft.cli import main

    out = tmp_path / "bv"
    code = main(["bias-variance", "--model", "toy2d-exact", "--reward", "x", "--states", "16", "--continuations", "2",
                 "--bootstrap", "20", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "cutoffs 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9" in capsys.readouterr().out
    assert list(pd.read_csv(out / "curves.csv")["cutoff"]) == pytest.approx([0.1 * i for i in range(1, 10)])
    from pgraft.graft.config import RunConfig

    digits = RunConfig(model="digits-prompted", prompts=["2", "5"], method="pgraft", cutoff=0.5)
    assert (digits.samples, digits.num_inference_steps, digits.finetune_steps, digits.batch_size) == (256, 25, 40, 64)
    assert digits.reward == "prompt-match" and RunConfig(model="digits").reward == "digit-prob"
    assert "--samples" not in digits.command_line()  # defaults are left out of the command
