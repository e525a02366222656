"""Lower layers never import higher ones: data -> weak labels -> models -> methods -> pipeline -> tasks."""

from __future__ import annotations

import ast
from pathlib import Path

import cellseg

PACKAGE = Path(cellseg.__file__).parent
# Rank of each top-level part of the package; an import must point to a strictly lower rank (or stay inside).
RANKS = {
    "utils": 0,
    "metrics": 1, "postproc": 1, "data": 1, "weights": 1,
    "evaluation": 2, "data.weak": 2, "reporting": 2, "callbacks": 2,
    "models": 3, "inference": 3,
    "methods": 4,
    "pipeline": 5,
    "tasks": 6,
    "sweeps": 7,
}


def layer_of(parts: tuple[str, ...]) -> str:
    """`('data', 'weak', 'points')` -> 'data.weak'; `('methods', 'coin', 'ucis')` -> 'methods'."""
    return "data.weak" if parts[:2] == ("data", "weak") else parts[0]


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        layers.update(layer_of(tuple(n.split(".")[1:])) for n in names if n.startswith("cellseg."))
    return layers


def upward_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue
        layer = layer_of(parts)
        for target in imported_layers(path) - {layer}:
            if RANKS[target] >= RANKS[layer]:
                found.append(f"{path.relative_to(PACKAGE)} ({layer}) imports cellseg.{target}")
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {layer_of(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert parts <= set(RANKS), sorted(parts - set(RANKS))


def test_no_layer_imports_a_higher_one():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "upward.py"
    module.write_text("from cellseg.tasks.train import train\nimport cellseg.data.weak.points\n")
    assert imported_layers(module) == {"tasks", "data.weak"}
