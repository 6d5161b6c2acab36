"""The SUT's sessions: several ONNX Runtime sessions fed from one LoadGen queue give the same
accuracy output as one (decoding per sample, completions released in issue order), and the
new knobs are validated run parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlbuild.errors import InputError
from tests.harness.conftest import YOLOX, build

FAST = {"min_duration_ms": 0, "min_query_count": 16}


def _run(tmp_path: Path, name: str, pre: Path, ann: Path, **params: object) -> Path:
    return build("mlperf-run", tmp_path / name,
                 inputs={"env": tmp_path, "model": YOLOX, "preprocessed": pre, "annotations": ann}, params=params)


@pytest.mark.slow
def test_sessions_give_identical_accuracy_logs(tmp_path: Path, letterboxed16: Path, coco_ann: Path) -> None:
    one = _run(tmp_path, "one", letterboxed16, coco_ann, mode="both", intra_op_threads=1, **FAST)
    three = _run(tmp_path, "three", letterboxed16, coco_ann, mode="both", intra_op_threads=1, sessions=3, **FAST)
    log1 = (one / "accuracy" / "mlperf_log_accuracy.json").read_bytes()
    log3 = (three / "accuracy" / "mlperf_log_accuracy.json").read_bytes()
    assert log1 == log3, "the accuracy log must not depend on the number of sessions"
    assert len(json.loads(log1)) == 16
    r3 = json.loads((three / "result.json").read_text())
    assert r3["params"]["sessions"] == 3
    assert r3["metrics"]["samples_per_second"] > 0
    # the performance run completed every sample it issued, from three workers
    assert r3["metrics"]["validity"] in ("VALID", "INVALID") and r3["loadgen_errors"]["performance"] == []
    # Server queries arrive one at a time and two sessions share them: the same detections per sample
    srv = _run(tmp_path, "server", letterboxed16, coco_ann, mode="accuracy", scenario="Server", sessions=2,
               intra_op_threads=1)
    def by_sample(path: Path) -> dict[int, str]:
        return {e["qsl_idx"]: e["data"] for e in json.loads(path.read_text())}

    assert by_sample(srv / "mlperf_log_accuracy.json") == by_sample(one / "accuracy" / "mlperf_log_accuracy.json")


def test_sessions_must_be_positive(tmp_path: Path, letterboxed16: Path, coco_ann: Path) -> None:
    with pytest.raises(InputError, match="`sessions` must be > 0"):
        _run(tmp_path, "zero", letterboxed16, coco_ann, mode="accuracy", sessions=0)
