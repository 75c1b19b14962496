"""The import layering, held like the torch-free CLI is (test_packaging.py): read from
the source, every import counted, those inside functions too.

    core (began/*.py: torch-free files, bundle contract, runtime)
      <- models/ <- train/ <- export/ <- the CLI (began/app.py, api.py, commands/)

A module imports only from its own layer or those below. export/ reads a training run
only through train's public run interface (runs.py, config.py), never the loop, data
loading or quality tracking. Hooks call EMA and quality tracking, not the reverse, and
train/ has no import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"began_cli": "began", "models": "began.models", "train": "began.train",
           "export": "began.export"}
RANK = {"core": 0, "models": 1, "train": 2, "export": 3, "cli": 4}
CLI = ("began.app", "began.api", "began.__main__", "began.commands")
EXPORT_MAY_READ = {"began.train.runs", "began.train.config"}  # the run-folder interface


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


MODULES = _modules()


def layer(module: str) -> str:
    for name in ("models", "train", "export"):
        if module == f"began.{name}" or module.startswith(f"began.{name}."):
            return name
    if module.startswith(CLI) or module == "began":
        return "cli"
    return "core"


def imports(module: str) -> set[str]:
    """The began modules `module` imports anywhere in its source, resolved to module
    names (`from began import card` is began.card; `from began import __version__` is
    the package itself)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level \
                else node.module
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES and m != module}


def test_the_layout_is_what_this_test_reads():
    assert {"began.bundle", "began.model", "began.models.began", "began.train.loop",
            "began.train.runs", "began.export.bundle", "began.commands.sample"} <= set(MODULES)
    assert layer("began.bundle.spec") == "core" and layer("began.commands.eval") == "cli"
    assert "began.train.runs" in imports("began.export.bundle")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "began"))
def test_imports_go_one_way(module):
    """`began` itself (the package's __init__: the version, and the Python API loaded on
    first use) is the one exception: anyone may read its version."""
    mine = RANK[layer(module)]
    upward = sorted(m for m in imports(module) - {"began"} if RANK[layer(m)] > mine)
    assert not upward, f"{module} ({layer(module)}) imports from a layer above: {upward}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) == "export"))
def test_export_reads_runs_only_through_the_run_interface(module):
    inner = sorted(m for m in imports(module) if layer(m) == "train")
    assert set(inner) <= EXPORT_MAY_READ, f"{module} reaches into training: {inner}"


def test_hooks_call_ema_and_quality_not_the_reverse():
    assert {"began.train.ema", "began.train.quality"} <= imports("began.train.hooks")
    for module in ("began.train.ema", "began.train.quality", "began.train.coverage"):
        assert "began.train.hooks" not in imports(module)


def test_train_has_no_import_cycle():
    graph = {m: {d for d in imports(m) if layer(d) == "train"} for m in MODULES
             if layer(m) == "train"}
    done: set[str] = set()

    def visit(m: str, stack: list[str]) -> None:
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in done:
            return
        for d in sorted(graph[m]):
            visit(d, stack + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_no_module_is_long():
    """Small files with clear names: a module past ~360 lines holds two concerns."""
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 370}
    assert not long, long
