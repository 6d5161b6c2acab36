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

CLASSES = 8  # the stand-in's categories, ids 0..7 (MLPerf's Open Images ids are 0-based too)
# varied sizes, listed out of ImageID order on purpose (the converter sorts by file name)
SIZES = {
    "f00d": (640, 480), "0a1b": (300, 500), "c0de": (800, 600), "5eed": (1024, 768), "ffff": (200, 200),
    "beef": (1200, 400), "7ace": (333, 777),
}
COUNT = 6  # the subset the harness tests convert (the e2e run takes all of them)


def _boxes(w: int, h: int, rng: np.random.Generator) -> list[tuple[int, int, int, int, int]]:
    """Two boxes ``(x, y, w, h, class)``: one in the left half (drawn red), one in the right (blue)."""
    out = []
    for half in (0, 1):
        bw = int(rng.integers(w // 6, w // 3))
        bh = int(rng.integers(h // 4, h // 2))
        x = int(rng.integers(half * w // 2 + 2, (half + 1) * w // 2 - bw - 2))
        y = int(rng.integers(2, h - bh - 2))
        out.append((x, y, bw, bh, int(rng.integers(0, CLASSES))))
    return out


def _standin_model(path: Path, *, outputs=("boxes", "scores", "labels"), score=0.9) -> Path:
    """A graph with the real model's interface that finds the generated images' two boxes.

    Box A is where the red channel exceeds 0.5, box B where the blue one does (first and last
    rows/columns of the mask, in 800x800 input pixels); each box's label is its mean green value
    x 8.5, rounded (the generator paints class k with green 30k). Scores: ``score`` for A,
    ``score - 0.1`` for B (descending, as RetinaNet's)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Slice", ["images", "c1", "c2", "ax1"], ["g4"]),
        helper.make_node("Reshape", ["g4", "hw"], ["green"]),
    ]
    boxes, labels = [], []
    for p, c in (("a", "c0"), ("b", "c2")):
        end = "c1" if c == "c0" else "c3"
        nodes += [
            helper.make_node("Slice", ["images", c, end, "ax1"], [f"{p}4"]),
            helper.make_node("Reshape", [f"{p}4", "hw"], [f"{p}_ch"]),
            helper.make_node("Greater", [f"{p}_ch", "half"], [f"{p}_gt"]),
            helper.make_node("Cast", [f"{p}_gt"], [f"{p}_mask"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMax", [f"{p}_mask"], [f"{p}_rows"], axes=[1], keepdims=0),
            helper.make_node("ReduceMax", [f"{p}_mask"], [f"{p}_cols"], axes=[0], keepdims=0),
            helper.make_node("ArgMax", [f"{p}_cols"], [f"{p}_x0"], axis=0, keepdims=1),
            helper.make_node("ArgMax", [f"{p}_rows"], [f"{p}_y0"], axis=0, keepdims=1),
            helper.make_node("ArgMax", [f"{p}_cols"], [f"{p}_x1"], axis=0, keepdims=1, select_last_index=1),
            helper.make_node("ArgMax", [f"{p}_rows"], [f"{p}_y1"], axis=0, keepdims=1, select_last_index=1),
            helper.make_node("Concat", [f"{p}_x0", f"{p}_y0", f"{p}_x1", f"{p}_y1"], [f"{p}_i"], axis=0),
            helper.make_node("Cast", [f"{p}_i"], [f"{p}_f"], to=TensorProto.FLOAT),
            helper.make_node("Add", [f"{p}_f", "edge"], [f"{p}_e"]),
            helper.make_node("Reshape", [f"{p}_e", "row4"], [f"{p}_box"]),
            helper.make_node("Mul", ["green", f"{p}_mask"], [f"{p}_gm"]),
            helper.make_node("ReduceSum", [f"{p}_gm"], [f"{p}_gs"], keepdims=0),
            helper.make_node("ReduceSum", [f"{p}_mask"], [f"{p}_ms"], keepdims=0),
            helper.make_node("Div", [f"{p}_gs", f"{p}_ms"], [f"{p}_g"]),
            helper.make_node("Mul", [f"{p}_g", "per_class"], [f"{p}_v"]),
            helper.make_node("Round", [f"{p}_v"], [f"{p}_r"]),
            helper.make_node("Cast", [f"{p}_r"], [f"{p}_l"], to=TensorProto.INT64),
            helper.make_node("Reshape", [f"{p}_l", "one"], [f"{p}_label"]),
        ]
        boxes.append(f"{p}_box")
        labels.append(f"{p}_label")
    nodes += [
        helper.make_node("Concat", boxes, ["boxes"], axis=0),
        helper.make_node("Concat", labels, ["labels"], axis=0),
        helper.make_node("Identity", ["score_const"], ["scores"]),
    ]
    i64 = TensorProto.INT64
    inits = [
        helper.make_tensor("c0", i64, [1], [0]),
        helper.make_tensor("c1", i64, [1], [1]),
        helper.make_tensor("c2", i64, [1], [2]),
        helper.make_tensor("c3", i64, [1], [3]),
        helper.make_tensor("ax1", i64, [1], [1]),
        helper.make_tensor("hw", i64, [2], [800, 800]),
        helper.make_tensor("row4", i64, [2], [1, 4]),
        helper.make_tensor("one", i64, [1], [1]),
        helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor("edge", TensorProto.FLOAT, [4], [0.0, 0.0, 1.0, 1.0]),
        helper.make_tensor("per_class", TensorProto.FLOAT, [], [255.0 / 30.0]),
        helper.make_tensor("score_const", TensorProto.FLOAT, [2], [score, score - 0.1]),
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
    """``annotations/openimages-mlperf.json`` + ``validation/data/*.jpg`` as MLPerf's tools lay them out:
    images of varied sizes, each with two boxes of its own place, size and class."""
    data = root / "validation" / "data"
    data.mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    rng = np.random.default_rng(0)
    for k, (stem, (w, h)) in enumerate(sorted(SIZES.items(), key=lambda kv: kv[1])):
        pix = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
        image_id = k + 1
        for (x, y, bw, bh, cls), (r, b) in zip(_boxes(w, h, rng), ((230, 20), (20, 230)), strict=True):
            pix[y : y + bh, x : x + bw] = (r, 30 * cls, b)
            anns.append(
                {
                    "id": len(anns) + 1, "image_id": image_id, "category_id": cls,
                    "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0,
                    "IsOccluded": 0, "IsInside": 0, "IsDepiction": 0, "IsTruncated": 0, "IsGroupOf": 0,
                }
            )
        Image.fromarray(pix).save(data / f"{stem}.jpg", quality=95, subsampling=0)
        images.append(
            {"id": image_id, "file_name": f"{stem}.jpg", "height": h, "width": w, "license": None,
             "coco_url": f"https://example.invalid/{stem}.jpg"}
        )
    cats = [{"id": i, "name": f"class {i}", "supercategory": None} for i in range(CLASSES)]
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
        "openimages-to-coco", tmp_path_factory.mktemp("oiann") / "ann", inputs={"dataset": oi}, params={"count": COUNT}
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
    assert names == [f"validation/data/{s}.jpg" for s in ("0a1b", "5eed", "7ace", "beef", "c0de", "f00d")]
    assert len(doc["categories"]) == CLASSES and doc["categories"][0] == {"id": 0, "name": "class 0"}
    assert len(doc["annotations"]) == 2 * COUNT
    assert set(doc["annotations"][0]) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}
    # MLPerf's accuracy-openimages.py --verbose reads every image's coco_url
    assert set(doc["images"][0]) == {"coco_url", "file_name", "height", "id", "width"}
    assert doc["images"][0]["coco_url"] == "https://example.invalid/0a1b.jpg"
    kept = {im["id"] for im in doc["images"]}
    assert {a["image_id"] for a in doc["annotations"]} == kept
    assert (oi_ann / "annotations.json").read_text().endswith("\n")


def test_openimages_bad_inputs(tmp_path, oi):
    with pytest.raises(InputError, match=r"annotations/openimages-mlperf\.json: annotations file missing"):
        build("openimages-to-coco", tmp_path / "a", inputs={"dataset": tmp_path})
    root = _openimages(tmp_path / "broken")
    (root / "validation" / "data" / "0a1b.jpg").unlink()
    missing = r"1 of the 2 selected images are missing from the images input: validation/data/0a1b\.jpg \(id \d+\)"
    with pytest.raises(InputError, match=missing):
        build("openimages-to-coco", tmp_path / "b", inputs={"dataset": root}, params={"count": 2})
    src = root / "annotations" / "openimages-mlperf.json"
    doc = json.loads(src.read_text())
    doc["annotations"][0]["category_id"] = 300
    src.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"openimages-mlperf\.json: `annotations\[0\]` names unknown category id 300"):
        build("openimages-to-coco", tmp_path / "c", inputs={"dataset": root})
    with pytest.raises(InputError, match=r"param `images_dir` must be a relative path"):
        build("openimages-to-coco", tmp_path / "d", inputs={"dataset": oi}, params={"images_dir": "/abs"})


def test_retinanet_preprocess_meta(oi_pre, oi_ann):
    meta = json.loads((oi_pre / "meta.json").read_text())
    assert meta["shape"] == [COUNT, 3, 800, 800] and meta["preprocess"] == "retinanet"
    assert meta["samples"][0]["file_name"] == "validation/data/0a1b.jpg"
    t = np.memmap(oi_pre / "tensors.bin", dtype=np.float32, mode="r", shape=(COUNT, 3, 800, 800))
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    # each sample's red and blue boxes land where the 800x800 stretch of its own size puts them
    doc = json.loads((oi_ann / "annotations.json").read_text())
    for i, im in enumerate(doc["images"]):
        red, blue = sorted((a for a in doc["annotations"] if a["image_id"] == im["id"]), key=lambda a: a["id"])
        for ann, channel in ((red, 0), (blue, 2)):
            x, y, w, h = ann["bbox"]
            cx, cy = int((x + w / 2) * 800 / im["width"]), int((y + h / 2) * 800 / im["height"])
            assert t[i, channel, cy, cx] > 0.8 and t[i, 2 - channel, cy, cx] < 0.25, (i, channel)


@pytest.fixture(scope="module")
def oi_run(tmp_path_factory, oi_pre, oi_ann) -> Path:
    tmp = tmp_path_factory.mktemp("oirun")
    model = _standin_model(tmp / "resnext50_32x4d_fpn.onnx")
    return build(
        "mlperf-run",
        tmp / "run",
        inputs={"env": tmp, "model": model, "preprocessed": oi_pre, "annotations": oi_ann},
        params={"model_kind": "retinanet", "mode": "both", "min_duration_ms": 0, "min_query_count": 8},
    )


def test_retinanet_end_to_end(oi_run, oi_ann):
    out = oi_run
    r = json.loads((out / "result.json").read_text())
    assert r["metrics"]["mAP"] == 100.0  # the stand-in finds every generated box, of its class
    assert r["accuracy"]["detections"] == 2 * COUNT and r["accuracy"]["dropped"]["detections"] == 0
    assert r["params"]["score_threshold_effective"] == 0.05
    assert "nms_iou" not in r["params"], "a YOLOX setting is not a RetinaNet run's parameter"
    assert r["model"]["outputs"]["labels"]["type"] == "tensor(int64)"
    assert r["metrics"]["samples_per_second"] > 0
    doc = json.loads((oi_ann / "annotations.json").read_text())
    for e in json.loads((out / "accuracy" / "mlperf_log_accuracy.json").read_text()):
        im = doc["images"][e["qsl_idx"]]
        recs = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.float32).reshape(-1, 7)
        gts = sorted((a for a in doc["annotations"] if a["image_id"] == im["id"]), key=lambda a: a["id"])
        assert recs[:, 0].tolist() == [e["qsl_idx"]] * 2 and recs[:, 5].tolist() == pytest.approx([0.9, 0.8])
        for rec, gt in zip(recs, gts, strict=True):
            x, y = rec[2] * im["width"], rec[1] * im["height"]
            w, h = (rec[4] - rec[2]) * im["width"], (rec[3] - rec[1]) * im["height"]
            assert [x, y, w, h] == pytest.approx(gt["bbox"], abs=1.5) and rec[6] == gt["category_id"]
    assert (out / "accuracy.txt").read_text().strip().endswith("mAP=100.000%")


def test_a_sample_order_or_size_mapping_bug_changes_the_map(oi_run, oi_ann):
    """The stand-in is rich enough that scoring sample i against another image, or with another
    image's size, is caught (with one constant box per image both gave the right mAP)."""
    from mlbuild.harness import accuracy

    log = oi_run / "accuracy" / "mlperf_log_accuracy.json"
    doc = json.loads((oi_ann / "annotations.json").read_text())
    right = accuracy.evaluate(log, doc, COUNT)["mAP"]
    assert right == 100.0
    rolled = dict(doc, images=doc["images"][1:] + doc["images"][:1])  # sample order off by one
    assert accuracy.evaluate(log, rolled, COUNT)["mAP"] < 5.0
    sizes = [(im["width"], im["height"]) for im in doc["images"]]
    sizes = sizes[1:] + sizes[:1]  # each image scored with its neighbour's size
    resized = dict(doc, images=[dict(im, width=w, height=h) for im, (w, h) in zip(doc["images"], sizes, strict=True)])
    assert accuracy.evaluate(log, resized, COUNT)["mAP"] < 5.0
    swapped = dict(doc, images=[dict(im, width=im["height"], height=im["width"]) for im in doc["images"]])
    assert accuracy.evaluate(log, swapped, COUNT)["mAP"] < 5.0


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
        InputError,
        match=r"bad\.onnx: decoder `boxes-scores-labels` expects outputs `boxes`, `scores`, `labels`; missing `labels`",
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


def test_nms_iou_is_a_yolox_param_only():
    from mlbuild.errors import UsageError
    from mlbuild.harness import runparams

    base = {k: p.default for k, p in runparams.PARAMS.items()}
    retina = runparams.for_kind(dict(base, model_kind="retinanet"))
    assert "nms_iou" not in retina and retina["score_threshold"] == base["score_threshold"]
    assert runparams.for_kind(dict(base, model_kind="yolox", nms_iou=0.5))["nms_iou"] == 0.5

    def err(msg: str, key: str) -> UsageError:
        return UsageError(f"{key}: {msg}")

    with pytest.raises(UsageError, match=r"nms_iou: parameter `nms_iou` applies to decoder yolox, ultralytics, "
                                         r"not `boxes-scores-labels`"):
        runparams.for_kind(dict(base, model_kind="retinanet", nms_iou=0.5), err)
    # the `decoder` param names the kind the same way
    assert "nms_iou" not in runparams.for_kind(dict(base, decoder="boxes-scores-labels"))
    assert runparams.for_kind(dict(base, decoder="ultralytics", nms_iou=0.5))["nms_iou"] == 0.5
