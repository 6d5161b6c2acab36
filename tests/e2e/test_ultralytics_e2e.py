"""A YOLOv8/YOLO11-style model declared as the README's "Other models" section shows: the
`preprocess` builder's `ultralytics` preset and run param `decoder = "ultralytics"`, locked and
realized with `mlbuild` as a process, next to the committed manifests. The model is a small
graph with the Ultralytics head's interface (`[N, 84, A]`), served from a loopback mirror; the
accuracy log must hold exactly what an independent numpy decoding of its outputs gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness.test_decoders import numpy_ultralytics, ultralytics_graph
from tests.httpserver import LoopbackServer, Serve

from .conftest import MIRROR, Project

MODEL_URL = "example.com/models/yolo-standin-320.onnx"
COUNT = 12
MANIFEST = f'''
# a user's model next to the shipped benchmarks
[fetch.yolo-standin-onnx]
url = "https://{MODEL_URL}"

[build.coco128-ultralytics]
builder = "preprocess"
inputs = {{ dataset = "coco128", annotations = "coco128-annotations", env = "env-data" }}
params = {{ preset = "ultralytics", size = 320, count = {COUNT} }}

[run.yolo-standin]
inputs = {{ model = "yolo-standin-onnx", preprocessed = "coco128-ultralytics", annotations = "coco128-annotations" }}
envs = {{ official = "env-run-official", pyo3 = "env-run-pyo3" }}
params = {{ decoder = "ultralytics", mode = "accuracy", loadgen = "official", score_threshold = 0.3, nms_iou = 0.5 }}
'''


@pytest.mark.slow
def test_ultralytics_model_from_a_manifest(project: Project, tmp_path: Path) -> None:
    model, _base, _delta = ultralytics_graph(tmp_path / "yolo.onnx", np.random.default_rng(11), size=320, classes=80)
    (project.root / "manifests" / "yolo-standin.toml").write_text(MANIFEST)
    # RetinaNet's real files cannot be reached here (test_retinanet_e2e serves stand-ins for them)
    (project.root / "manifests" / "retinanet.toml").unlink()
    with LoopbackServer() as srv:
        srv.route("/" + MODEL_URL, Serve(model.read_bytes()))
        mirrors = ["--mirror", str(MIRROR), "--mirror", f"url+{srv.base}"]
        project.run("lock", *mirrors)
        run = project.run("realize", "yolo-standin", *mirrors)
    out = Path(run.stdout.strip().splitlines()[-1])
    result = json.loads((out / "result.json").read_text())
    assert result["params"]["decoder"] == "ultralytics" and result["metrics"]["mAP"] is not None
    assert result["model"]["outputs"] == {"output0": {"shape": ["N", 84, 2100], "type": "tensor(float)"}}

    shown = json.loads(project.run("show", "coco128-ultralytics", "--json").stdout)
    pre = Path(shown["path"])
    meta = json.loads((pre / "meta.json").read_text())
    assert meta["geometry"] == "letterbox" and meta["placement"] == "center" and meta["shape"] == [COUNT, 3, 320, 320]

    import onnxruntime as ort

    from mlbuild.harness.coco import COCO80_IDS

    x = np.fromfile(pre / "tensors.bin", np.float32).reshape(meta["shape"])
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    logged = {e["qsl_idx"]: np.frombuffer(bytes.fromhex(e["data"]), np.float32).reshape(-1, 7) for e in entries}
    assert sorted(logged) == list(range(COUNT))
    total = 0
    for i, s in enumerate(meta["samples"]):
        (o,) = sess.run(None, {"images": x[i : i + 1]})
        want = numpy_ultralytics(i, o, s)
        want[:, 6] = np.asarray(COCO80_IDS)[want[:, 6].astype(int)]  # 80 classes: COCO category ids
        got = logged[i]
        assert got.shape == want.shape, i
        np.testing.assert_array_equal(got[:, 6], want[:, 6])
        np.testing.assert_allclose(got[:, 1:6], want[:, 1:6], atol=2e-6)
        total += len(got)
    assert total >= COUNT
