"""The sandbox rules for builder and harness modules: top-level imports are the standard
library, ``mlbuild.errors``, ``mlbuild.builders`` and ``mlbuild.harness`` only; no ``print``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OWN = sorted(
    [
        REPO / "mlbuild" / "builders" / f"{m}.py"
        for m in ("coco128_to_coco", "letterbox", "openimages_to_coco", "retinanet_preprocess", "mlperf_run",
                  "preprocess")
    ]
    + list((REPO / "mlbuild" / "harness").glob("*.py"))
)
ALLOWED_MLBUILD = ("mlbuild.errors", "mlbuild.builders", "mlbuild.harness")


def _top_imports(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("path", OWN, ids=lambda p: p.name)
def test_top_level_imports_and_no_print(path):
    tree = ast.parse(path.read_text())
    for name in _top_imports(tree):
        root = name.split(".")[0]
        if root == "mlbuild":
            assert name == "mlbuild.builders" or name.startswith(ALLOWED_MLBUILD), f"{path.name} imports {name}"
        else:
            assert root in sys.stdlib_module_names or root == "__future__", f"{path.name} imports {name} at top level"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print", f"{path.name}:{node.lineno} prints"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                assert m.split(".")[0] not in ("httpx", "rich"), f"{path.name} imports {m}"


@pytest.mark.parametrize(
    "name", ["coco128-to-coco", "letterbox", "openimages-to-coco", "retinanet-preprocess", "mlperf-run", "preprocess"]
)
def test_builder_protocol(name):
    from mlbuild.builders import Param, load

    mod = load(name)
    assert name == mod.NAME and isinstance(mod.VERSION, int) and mod.NEEDS_ENV is True
    assert mod.NEEDS_NETWORK is False and callable(mod.build)
    for key, p in mod.PARAMS.items():
        assert isinstance(p, Param) and p.doc, key
        assert p.default is None or isinstance(p.default, p.type), key
        assert not p.choices or p.default in p.choices, key
