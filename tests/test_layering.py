"""The package's layering, read from the source with `ast` (nothing is imported): every `import` of a
whispertune module, function-level ones included, points to the importer's own layer or a lower one,
and no chain of imports leads from a module back to itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "whispertune"

# Lowest first. A module may import modules of its own layer and of the layers below it. An entry names
# a module or a subpackage (the subpackage's modules and its __init__).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("whispertune", "whispertune.errors", "whispertune.atomic_files", "whispertune.config",
                    "whispertune.config_train_checks",
                    "whispertune.config_triage",
                    "whispertune.config_augment",
                    "whispertune.config_lora",
                    "whispertune.config_values",
                    "whispertune.languages")),
    ("data", ("whispertune.data",)),
    ("pretrained", ("whispertune.pretrained",)),
    ("model", ("whispertune.model",)),
    ("inference", ("whispertune.inference",)),
    ("training", ("whispertune.training",)),
    ("interop", ("whispertune.interop",)),
    ("serve", ("whispertune.serve",)),
    ("entry points", ("whispertune.cli", "whispertune.commands", "whispertune.demo")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or (p != "whispertune" and module.startswith(p + ".")) for p in prefixes):
            return rank
    return None


def imported_modules(module: str) -> set[str]:
    """The whispertune modules `module` imports anywhere in its body (`from pkg import name` counts as the
    module `pkg.name` when that is a module, else as `pkg`)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "whispertune"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "whispertune":
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
    unknown = found - set(MODULES)
    assert not unknown, f"{module} imports modules that do not exist: {sorted(unknown)}"
    return found - {module}


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert unplaced == [], f"add these modules to LAYERS: {unplaced}"


def test_imports_point_down_the_layers():
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in GRAPH.items() for t in sorted(targets) if layer_of(t) > layer_of(m)
    ]
    assert upward == [], "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle_and_upward_import_is_detected():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer_of("whispertune.config") < layer_of("whispertune.data.features") < layer_of("whispertune.model.loading")
    assert layer_of("whispertune.training.trainer") < layer_of("whispertune.interop.merge") < layer_of("whispertune.cli")


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "tests").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_tests_share_code_only_through_helpers_and_conftest(path):
    """A test module imports no other test module: shared fixtures live in conftest.py, shared code in tests/helpers.py."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] \
            if isinstance(node, ast.ImportFrom) else []
        for name in names:
            last = name.split(".")[-1]
            assert not last.startswith("test_") and last != "conftest", f"{path.name} imports {name}"
