"""`retinanet-offline` from the committed manifests, end to end, on loopback stand-ins.

The real files (the MLPerf RetinaNet ONNX, MLPerf's Open Images annotations archive and the
images) can't be fetched here, so the committed lock lists them as unpinned.  Here a loopback
server plays the organisation's mirror (laid out by upstream URL) and serves small files of the
same formats: a tiny ONNX graph with the real model's interface that finds the generated boxes,
an annotations archive of the real layout, and generated JPEGs of varied sizes, two boxes of their
own place and class each.  The manifests are the committed ones except for the upstream md5s of
the model and the annotations archive (the stand-ins have their own bytes)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

from tests.harness.test_retinanet_standin import SIZES, _openimages, _standin_model
from tests.httpserver import LoopbackServer, Serve

from .conftest import REPO, Project

MODEL_URL = "zenodo.org/record/6617879/files/resnext50_32x4d_fpn.onnx"
ANN_URL = "github.com/mlcommons/inference/releases/download/v2.1/openimages-mlperf_annotations_2.1.json.zip"
IMG_BASE = "s3.amazonaws.com/open-images-dataset/validation/"


def test_committed_lock_lists_the_real_files_as_unpinned() -> None:
    text = (REPO / "lock" / "mlbuild.lock").read_text()
    for name in ("retinanet-model", "openimages-mlperf-annotations", "openimages-mlperf-images-first500"):
        block = text.split(f'name = "{name}"', 1)[1].split("\n\n", 1)[0]
        assert "reason = " in block, f"`{name}` should be listed as unpinned"
    assert "needs network" in text


def test_retinanet_locks_and_runs_on_standins(project: Project, tmp_path: Path) -> None:
    model = _standin_model(tmp_path / "model.onnx").read_bytes()
    oi = _openimages(tmp_path / "oi")
    ann = io.BytesIO()
    with zipfile.ZipFile(ann, "w") as z:
        z.write(oi / "annotations" / "openimages-mlperf.json", "openimages-mlperf.json")
    with LoopbackServer() as srv:
        srv.route("/" + MODEL_URL, Serve(model))
        srv.route("/" + ANN_URL, Serve(ann.getvalue()))
        for img in sorted((oi / "validation" / "data").iterdir()):
            srv.route("/" + IMG_BASE + img.name, Serve(img.read_bytes()))
        manifest = project.root / "manifests" / "retinanet.toml"
        text = manifest.read_text()
        assert 'md5 = "4544f4e56e0a4684215831cc937ea45c"' in text
        assert 'md5 = "817fd8da3aeeb0575f1e2d2926b15e68"' in text, "the annotations archive's upstream md5 is pinned"
        text = text.replace("4544f4e56e0a4684215831cc937ea45c", hashlib.md5(model).hexdigest())
        manifest.write_text(text.replace("817fd8da3aeeb0575f1e2d2926b15e68", hashlib.md5(ann.getvalue()).hexdigest()))
        mirror = f"url+{srv.base}"

        locked = project.run("lock", "--mirror", mirror)
        assert "unpinned" not in locked.stderr, locked.stderr
        lock = (project.root / "lock" / "mlbuild.lock").read_text()
        assert "127.0.0.1" not in lock, "the lock names upstream URLs, never the mirror"
        assert f"https://{IMG_BASE}0a1b.jpg" in lock and f"https://{MODEL_URL}" in lock
        project.run("lock", "--check")

        run = project.run("realize", "retinanet-offline", "--mirror", mirror,
                          "--set", "min_duration_ms=0", "--set", "min_query_count=8")
        fetched = srv.count("/" + IMG_BASE + "0a1b.jpg")
    out = Path(run.stdout.strip().splitlines()[-1])
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["mAP"] == 100.0, "the stand-in finds every generated box, of its class"
    assert result["accuracy"]["detections"] == 2 * len(SIZES)
    assert "nms_iou" not in result["params"]
    assert result["categories"]["label_map"] == "id" and result["categories"]["scored"] == list(range(8))
    assert result["accuracy"]["dropped"] == {"detections": 0, "labels": {}} and "warnings" not in result
    assert re.search(r"mAP=100\.000%", (out / "accuracy.txt").read_text())
    assert fetched == 1, "locking put the bytes in the store; realize fetched nothing again"
    shown = json.loads(project.run("show", "openimages-first500-retinanet", "--json").stdout)
    assert shown["valid"] and shown["params"]["size"] == 800
    ann = json.loads(project.run("show", "openimages-first500-annotations", "--json").stdout)
    doc = json.loads((Path(ann["path"]) / "annotations.json").read_text())
    assert all("coco_url" in im for im in doc["images"]), "MLPerf's accuracy-openimages.py --verbose reads coco_url"
    # nms_iou is a YOLOX setting: not in RetinaNet's identity, and refused when set for it
    run = json.loads(project.run("show", "retinanet-offline", "--json").stdout)
    assert "nms_iou" not in run["params"] and run["params"]["label_map"] == "id"
    refused = project.run("realize", "retinanet-offline", "--set", "nms_iou=0.5", check=False)
    assert refused.returncode != 0
    assert "parameter `nms_iou` applies to decoder yolox, ultralytics, not `boxes-scores-labels`" in refused.stderr
