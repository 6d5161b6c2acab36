"""The RetinaNet path on stand-ins: an MLPerf-Open-Images-shaped dataset of generated JPEGs
and a tiny ONNX graph with the real model's interface (input ``images`` float32
``[1,3,800,800]``; outputs ``boxes`` float32 ``[N,4]`` xyxy in 800x800 pixels, ``scores``
float32 ``[N]``, ``labels`` int64 ``[N]``), run through openimages-to-coco ->
retinanet-preprocess -> mlperf-run with the real ONNX Runtime and official LoadGen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlbuild.errors import InputError

from .conftest import build

CAT = 5  # the stand-in model always answers category 5
SIZES = {"f00d": (640, 480), "0a1b": (300, 500), "c0de": (800, 600), "5eed": (1024, 768), "ffff": (200, 200)}


def _standin_model(
    path: Path, *, outputs=("boxes", "scores", "labels"), box=(200.0, 200.0, 600.0, 600.0), score=0.9
) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["score_base", "nothing"], ["scores"]),
        helper.make_node("Identity", ["box_const"], ["boxes"]),
        helper.make_node("Identity", ["label_const"], ["labels"]),
    ]
    inits = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("score_base", TensorProto.FLOAT, [1], [score]),
        helper.make_tensor("box_const", TensorProto.FLOAT, [1, 4], list(box)),
        helper.make_tensor("label_const", TensorProto.INT64, [1], [CAT]),
    ]
    all_outs = {
        "boxes": helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
        "scores": helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
        "labels": helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
    }
    graph = helper.make_graph(
        nodes,
        "retinanet_standin",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 800, 800])],
        [all_outs[o] for o in outputs],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mlbuild-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _openimages(root: Path) -> Path:
    """``annotations/openimages-mlperf.json`` + ``validation/data/*.jpg`` as MLPerf's tools lay them out."""
    data = root / "validation" / "data"
    data.mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    rng = np.random.default_rng(0)
    # listed out of order on purpose: the converter sorts by file name
    for k, (stem, (w, h)) in enumerate(sorted(SIZES.items(), key=lambda kv: kv[1])):
        pix = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        pix[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (220, 40, 40)
        Image.fromarray(pix).save(data / f"{stem}.jpg", quality=90)
        image_id = k + 1
        images.append(
            {"id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w, "license": None, "coco_url": None}
        )
        anns.append(
            {
                "id": len(anns) + 1, "image_id": image_id, "category_id": CAT,
                "bbox": [w / 4, h / 4, w / 2, h / 2], "area": w * h / 4, "iscrowd": 0,
                "IsOccluded": 0, "IsInside": 0, "IsDepiction": 0, "IsTruncated": 0, "IsGroupOf": 0,
            }
        )
    cats = [{"id": i, "name": f"class {i}", "supercategory": None} for i in range(8)]
    doc = {
        "info": {"dataset": "openimages_mlperf", "version": "v6"},
        "licenses": [],
        "categories": cats,
        "images": images,
        "annotations": anns,
    }
    (root / "annotations" / "openimages-mlperf.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def oi(tmp_path_factory) -> Path:
    return _openimages(tmp_path_factory.mktemp("oi") / "openimages")


@pytest.fixture(scope="module")
def oi_ann(tmp_path_factory, oi) -> Path:
    return build(
        "openimages-to-coco", tmp_path_factory.mktemp("oiann") / "ann", inputs={"dataset": oi}, params={"count": 4}
    )


@pytest.fixture(scope="module")
def oi_pre(tmp_path_factory, oi, oi_ann) -> Path:
    return build(
        "retinanet-preprocess",
        tmp_path_factory.mktemp("oipre") / "pre",
        inputs={"dataset": oi, "annotations": oi_ann},
        jobs=2,
    )


def test_openimages_to_coco(oi_ann):
    doc = json.loads((oi_ann / "annotations.json").read_text())
    names = [im["file_name"] for im in doc["images"]]
    assert names == [
        "validation/data/0a1b.jpg", "validation/data/5eed.jpg", "validation/data/c0de.jpg", "validation/data/f00d.jpg"
    ]
    assert len(doc["categories"]) == 8 and doc["categories"][0] == {"id": 0, "name": "class 0"}
    assert len(doc["annotations"]) == 4
    assert set(doc["annotations"][0]) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
    kept = {im["id"] for im in doc["images"]}
    assert {a["image_id"] for a in doc["annotations"]} == kept
    assert (oi_ann / "annotations.json").read_text().endswith("\n")


def test_openimages_bad_inputs(tmp_path, oi):
    with pytest.raises(InputError, match=r"annotations/openimages-mlperf\.json: annotations file missing"):
        build("openimages-to-coco", tmp_path / "a", inputs={"dataset": tmp_path})
    root = _openimages(tmp_path / "broken")
    (root / "validation" / "data" / "0a1b.jpg").unlink()
    with pytest.raises(InputError, match=r"1 of the 2 selected images are missing from the images input: validation/data/0a1b\.jpg \(id \d+\)"):
        build("openimages-to-coco", tmp_path / "b", inputs={"dataset": root}, params={"count": 2})
    src = root / "annotations" / "openimages-mlperf.json"
    doc = json.loads(src.read_text())
    doc["annotations"][0]["category_id"] = 300
    src.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"openimages-mlperf\.json: `annotations\[0\]` names unknown category id 300"):
        build("openimages-to-coco", tmp_path / "c", inputs={"dataset": root})
    with pytest.raises(InputError, match=r"param `images_dir` must be a relative path"):
        build("openimages-to-coco", tmp_path / "d", inputs={"dataset": oi}, params={"images_dir": "/abs"})


def test_retinanet_preprocess_meta(oi_pre):
    meta = json.loads((oi_pre / "meta.json").read_text())
    assert meta["shape"] == [4, 3, 800, 800] and meta["preprocess"] == "retinanet"
    assert meta["samples"][0]["file_name"] == "validation/data/0a1b.jpg"
    t = np.memmap(oi_pre / "tensors.bin", dtype=np.float32, mode="r", shape=(4, 3, 800, 800))
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    # the red square covers the centre of every image after the 800x800 stretch
    assert t[0, 0, 400, 400] > 0.8 and t[0, 1, 400, 400] < 0.25


def test_retinanet_end_to_end(tmp_path, oi_pre, oi_ann):
    model = _standin_model(tmp_path / "resnext50_32x4d_fpn.onnx")
    out = build(
        "mlperf-run",
        tmp_path / "run",
        inputs={"env": tmp_path, "model": model, "preprocessed": oi_pre, "annotations": oi_ann},
        params={"model_kind": "retinanet", "mode": "both", "min_duration_ms": 0, "min_query_count": 8},
    )
    r = json.loads((out / "result.json").read_text())
    assert r["metrics"]["mAP"] == 100.0  # the stand-in's constant box is every image's ground truth
    assert r["accuracy"]["detections"] == 4
    assert r["params"]["score_threshold_effective"] == 0.05
    assert r["model"]["outputs"]["labels"]["type"] == "tensor(int64)"
    assert r["metrics"]["samples_per_second"] > 0
    entries = json.loads((out / "accuracy" / "mlperf_log_accuracy.json").read_text())
    rec = np.frombuffer(bytes.fromhex(entries[0]["data"]), dtype=np.float32)
    assert rec.tolist() == pytest.approx([entries[0]["qsl_idx"], 0.25, 0.25, 0.75, 0.75, 0.9, CAT])
    assert (out / "accuracy.txt").read_text().strip().endswith("mAP=100.000%")


def test_retinanet_low_scores_dropped(tmp_path, oi_pre, oi_ann):
    model = _standin_model(tmp_path / "m.onnx", score=0.04)
    out = build(
        "mlperf-run",
        tmp_path / "run",
        inputs={"env": tmp_path, "model": model, "preprocessed": oi_pre, "annotations": oi_ann},
        params={"model_kind": "retinanet", "mode": "accuracy"},
    )
    r = json.loads((out / "result.json").read_text())
    assert r["accuracy"]["detections"] == 0 and r["metrics"]["mAP"] == 0.0


def test_retinanet_interface_checks(tmp_path, oi_pre, oi_ann, letterboxed16, coco_ann):
    bad = _standin_model(tmp_path / "bad.onnx", outputs=("boxes", "scores"))
    with pytest.raises(
        InputError, match=r"bad\.onnx: a RetinaNet model has outputs `boxes`, `scores`, `labels`; missing `labels`"
    ):
        build("mlperf-run", tmp_path / "r1",
              inputs={"env": tmp_path, "model": bad, "preprocessed": oi_pre, "annotations": oi_ann},
              params={"model_kind": "retinanet"})
    good = _standin_model(tmp_path / "good.onnx")
    # YOLOX's 416x416 letterboxed tensors cannot feed an 800x800 model
    want = r"good\.onnx: input `images` wants \[1, 3, 800, 800\] float32 but tensors\.bin holds \[16,3,416,416\]"
    with pytest.raises(InputError, match=want):
        build("mlperf-run", tmp_path / "r2",
              inputs={"env": tmp_path, "model": good, "preprocessed": letterboxed16, "annotations": coco_ann},
              params={"model_kind": "yolox"})
    # the annotations must list the preprocessed images first, in order
    with pytest.raises(InputError, match=r"meta\.json: sample 0 is image"):
        build("mlperf-run", tmp_path / "r3",
              inputs={"env": tmp_path, "model": good, "preprocessed": oi_pre, "annotations": coco_ann},
              params={"model_kind": "retinanet"})
