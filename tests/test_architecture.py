"""The layers of docs/ARCHITECTURE.md, checked on the import statements of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medseg"
LAYER = {
    "core": 0, "config": 0, "errors": 0, "redact": 0, "runtime": 0, "memory": 0,
    "data": 1, "transforms": 1, "nets": 1, "tracking": 1, "viz": 1, "io": 1, "synth": 1,
    "training": 2, "inference": 2, "evaluation": 2,
    "pipelines": 3,
    "workflows": 4,
    "cli": 5, "__main__": 5,
}  # fmt: skip
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_point_downwards(path):
    own = _part(path)
    for name in _imports(path):
        if name == "medseg" or not name.startswith("medseg."):
            continue
        target = name.split(".")[1]
        if target == "__version__":
            continue
        assert LAYER[target] <= LAYER[own], f"{own} (layer {LAYER[own]}) imports {name} (layer {LAYER[target]})"
        if own == "nets":
            assert target in {"nets", "errors"}, f"nets is a leaf, but imports {name}"


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_mlflow_is_imported_in_tracking_only(path):
    if _part(path) != "tracking":
        assert not any(n == "mlflow" or n.startswith("mlflow.") for n in _imports(path))
