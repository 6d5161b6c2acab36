"""Fixtures for the harness tests: the real YOLOX-nano model and coco128 from the shared
mirror (read in place, never copied), and builders called in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlbuild.builders import BuildContext, load

REPO = Path(__file__).resolve().parents[2]
_MIRRORS = [REPO.parent / "shared" / "mirror", Path("/work/shared/mirror")]
MIRROR = next((m for m in _MIRRORS if m.is_dir()), _MIRRORS[0])
GH = MIRROR / "raw.githubusercontent.com"
COCO128 = GH / "mujianyu/yolov8/27366dec6832ac0fb6c2738d9d800d5e1f7a3a87/datasets/coco128"
YOLOX = GH / "Bigisland1729/object-detection-models/7f3f2fa34b351e3d2af150893458106ad3f3a84f/yolox_nano.onnx"
SAMPLES = REPO.parent / "shared" / "specs" / "loadgen-samples"

# ../shared is part of every checkout's surroundings (CI included): its absence is a failure, not a skip.
assert COCO128.is_dir() and YOLOX.is_file(), f"the shared mirror is expected at {MIRROR}"


def build(
    name: str,
    out: Path,
    *,
    inputs: dict[str, Path],
    params: dict[str, Any] | None = None,
    jobs: int = 1,
    logs: list[str] | None = None,
) -> Path:
    """Run builder ``name`` in-process into ``out`` (created empty)."""
    out.mkdir(parents=True, exist_ok=False)
    tmp = out.parent / (out.name + ".tmp")
    tmp.mkdir(exist_ok=True)
    sink: Callable[[str], None] = logs.append if logs is not None else (lambda _m: None)
    load(name).build(BuildContext(inputs=inputs, params=params or {}, out=out, tmp=tmp, jobs=jobs, log=sink))
    return out


@pytest.fixture(scope="session")
def coco_ann(tmp_path_factory) -> Path:
    return build("coco128-to-coco", tmp_path_factory.mktemp("coco") / "ann", inputs={"dataset": COCO128})


@pytest.fixture(scope="session")
def letterboxed16(tmp_path_factory, coco_ann) -> Path:
    """The first 16 coco128 images letterboxed (jobs=2)."""
    return build(
        "letterbox", tmp_path_factory.mktemp("lb") / "pre", inputs={"dataset": COCO128, "annotations": coco_ann},
        params={"count": 16}, jobs=2,
    )
