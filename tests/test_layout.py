"""The package's shape: no import cycle (imports inside functions included), layers below models
below the task modules, evaluation and analysis apart from the training loop, modules of one job
and a Layout table (docs/architecture.md) that agrees with the tree."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sknet"
MAX_LINES = 500
ARCHITECTURE = ROOT / "docs" / "architecture.md"
"""The document whose "## Layout" table lists the package, top row importing the rows below."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _target(name: str) -> str | None:
    """The sknet module that importing ``name`` loads last (a module, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, source: str | None = None) -> set[str]:
    """Every sknet module that ``module`` (or ``source`` in its place) imports, anywhere in its
    body: functions included, and ``importlib.import_module("sknet...")`` with a literal name."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8") if source is None else source)
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{module}: a relative import; write sknet.... in full")
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package import submodule` loads the submodule; `import name` the module.
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [str(node.args[0].value)]
        elif isinstance(node, ast.Dict) and module == "sknet":
            # sknet.TASKS: the task modules that `sknet.NAME` loads on first use.
            names = [v.value for v in node.values if isinstance(v, ast.Constant)]
        for name in names:
            target = _target(name) if name.startswith("sknet") else None
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_graph_sees_imports_inside_functions():
    assert "sknet.training" in GRAPH["sknet"]  # through sknet.TASKS
    assert "sknet.models.factory" in GRAPH["sknet.models"]
    hidden = (
        "def f():\n    from sknet.training import loop\n"
        "def g():\n    import sknet.analysis.run\n"
        "def h():\n    importlib.import_module('sknet.export')\n"
    )
    assert imports("sknet.devices", hidden) == {
        "sknet.training.loop", "sknet.analysis.run", "sknet.export"
    }
    with pytest.raises(AssertionError, match="relative import"):
        imports("sknet.devices", "from .data import open_data\n")


def test_evaluation_and_inference_do_not_load_the_training_loop():
    """At run time too: importing the inference-side modules leaves sknet.training unloaded."""
    code = (
        "import sys; import sknet, sknet.evaluation, sknet.analysis, sknet.export, "
        "sknet.predict, sknet.trained, sknet.convert, sknet.profiling; "
        "print([m for m in sys.modules if m.startswith('sknet.training')])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_import_cycle():
    cycles = sorted(module for module in MODULES if module in reachable(module))
    assert not cycles, f"modules on an import cycle: {cycles}"


def _under(modules: set[str], package: str) -> set[str]:
    return {m for m in modules if m == package or m.startswith(package + ".")}


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("sknet.layers", ["sknet.models", "sknet.data", "sknet.training", "sknet.analysis"]),
        ("sknet.models", ["sknet.trained", "sknet.training", "sknet.evaluation",
                          "sknet.analysis", "sknet.data", "sknet.cli"]),
        ("sknet.data", ["sknet.models", "sknet.layers", "sknet.training", "sknet.trained"]),
        ("sknet.trained", ["sknet.training", "sknet.evaluation", "sknet.analysis"]),
        ("sknet.devices", ["sknet.models", "sknet.data", "sknet.training"]),
        ("sknet.evaluation", ["sknet.training"]),
        ("sknet.analysis", ["sknet.training", "sknet.evaluation"]),
        ("sknet.export", ["sknet.training"]),
        ("sknet.predict", ["sknet.training"]),
        ("sknet.convert", ["sknet.models"]),  # init_weights is a layer's job
    ],
)
def test_layers_below_models_below_tasks(importer, forbidden):
    for module in _under(set(MODULES), importer):
        for package in forbidden:
            bad = _under(reachable(module), package)
            assert not bad, f"{module} imports {sorted(bad)}"


def test_the_loading_boundary():
    """The registry is pure data, the weights format knows no model, the timm map builds none,
    the record and the preprocessing stand below everything but the error type."""
    assert GRAPH["sknet.models.registry"] <= {"sknet.preprocessing", "sknet.errors"}
    assert reachable("sknet.record") == {"sknet.preprocessing", "sknet.errors"}
    assert reachable("sknet.preprocessing") == {"sknet.errors"} and not GRAPH["sknet.errors"]
    assert not _under(reachable("sknet.models.weights_io"), "sknet.models")
    timm = reachable("sknet.models.timm_weights")
    assert "sknet.models.factory" not in timm  # (the registry, pure data, is read by the cards)
    for module, path in MODULES.items():
        if module.startswith("sknet.models") and module != "sknet.models.factory":
            assert "def create_model" not in path.read_text(), module


def test_modules_hold_one_job():
    for module, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by job"


def test_layout_table_matches_the_tree():
    table = ARCHITECTURE.read_text(encoding="utf-8").split("## Layout", 1)[1]
    listed = set(re.findall(r"^\| `([^`]+)`", table, flags=re.MULTILINE))
    for entry in listed:
        assert (ROOT / entry.rstrip("/")).exists(), f"Layout lists {entry}, not in the tree"
    for path in sorted(PACKAGE.iterdir()):
        if path.name.startswith(("_", ".")) or path.suffix not in (".py", ""):
            continue
        shown = f"sknet/{path.name}" + ("/" if path.is_dir() else "")
        assert shown in listed, f"Layout does not list {shown}"


def test_imports_flow_down_the_layout_table():
    table = ARCHITECTURE.read_text(encoding="utf-8").split("## Layout", 1)[1]
    rows = re.findall(r"^\| `sknet/([^`]+)`", table, flags=re.MULTILINE)
    rank = {"sknet." + row.rstrip("/").removesuffix(".py").replace("/", "."): i
            for i, row in enumerate(rows)}

    def row_of(module: str) -> int | None:
        while module and module not in rank:
            module = module.rpartition(".")[0]
        return rank.get(module)

    for module, targets in GRAPH.items():
        for target in targets:
            here, there = row_of(module), row_of(target)
            if here is not None and there is not None:
                assert there >= here, f"{module} (row {here}) imports {target} (row {there})"
