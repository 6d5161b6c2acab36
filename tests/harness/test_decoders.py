"""Each output decoder on a small ONNX graph with its model family's interface, run through
``preprocess`` -> ``mlperf-run`` (real ONNX Runtime, official LoadGen); the accuracy log's
records are compared with an independent numpy decoding of the same graph's outputs.

The graphs compute ``outputs = base + mean(image) * delta`` (fixed random ``base``/``delta``),
so each image gets its own detections, overlapping boxes exercise NMS and many candidates fall
below the threshold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlbuild.errors import InputError
from mlbuild.harness import decoders, runparams

from .conftest import build

SIZE = 64  # model input side: stride-8/16/32 grids of 8x8 + 4x4 + 2x2 = 84 anchor points
ANCHORS = 84
CLASSES = 3
IMAGES = {"a.jpg": (96, 64), "b.jpg": (50, 80), "c.jpg": (64, 64), "d.jpg": (120, 90), "e.jpg": (33, 71)}
THRESHOLD = 0.3
NMS_IOU = 0.5


# --- the stand-in graphs -------------------------------------------------------------------------


def _save(path: Path, nodes: list, inits: list, outputs: list, batch: Any, size: int = SIZE) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, path.stem, [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        outputs, initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mlbuild-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _affine(name: str, base: np.ndarray, delta: np.ndarray, mean: str = "m3") -> tuple[list, list]:
    """Nodes computing ``name = base + mean * delta`` (``mean`` per sample, broadcast)."""
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("Mul", [mean, f"{name}_delta"], [f"{name}_d"]),
        helper.make_node("Add", [f"{name}_base", f"{name}_d"], [name]),
    ]
    inits = [numpy_helper.from_array(base.astype(np.float32), f"{name}_base"),
             numpy_helper.from_array(delta.astype(np.float32), f"{name}_delta")]
    return nodes, inits


def _mean_nodes(rank: int) -> tuple[list, list]:
    """``m3``: the per-sample mean of the input, shaped to broadcast over ``rank - 1`` dims."""
    from onnx import helper, numpy_helper

    shape = np.array([-1] + [1] * (rank - 1), dtype=np.int64)
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], axes=[1, 2, 3], keepdims=1),
             helper.make_node("Reshape", ["m", "m_shape"], ["m3"])]
    return nodes, [numpy_helper.from_array(shape, "m_shape")]


def ultralytics_graph(
    path: Path, rng: np.random.Generator, size: int = SIZE, classes: int = CLASSES
) -> tuple[Path, np.ndarray, np.ndarray]:
    """``[N, 4 + C, A]``: cx, cy, w, h in input pixels, then sigmoid class scores."""
    from onnx import TensorProto, helper

    anchors = decoders.grid_anchors(size)
    base = np.zeros((1, 4 + classes, anchors), np.float32)
    base[0, 0:2] = rng.uniform(size / 8, size * 7 / 8, (2, anchors))
    base[0, 2:4] = rng.uniform(size / 10, size / 2, (2, anchors))
    base[0, 4:] = rng.uniform(0.0, 0.6, (classes, anchors))
    delta = np.zeros_like(base)
    delta[0, 0:4] = rng.uniform(-size / 16, size / 16, (4, anchors))
    delta[0, 4:] = rng.uniform(-0.3, 0.3, (classes, anchors))
    mn, mi = _mean_nodes(3)
    an, ai = _affine("output0", base, delta)
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 4 + classes, anchors])
    return _save(path, mn + an, mi + ai, [out], "N", size), base, delta


def yolox_graph(path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray, np.ndarray]:
    """``[N, A, 5 + C]``: cell offsets, log sizes (in strides), objectness, class scores."""
    from onnx import TensorProto, helper

    base = np.zeros((1, ANCHORS, 5 + CLASSES), np.float32)
    base[0, :, 0:2] = rng.uniform(0, 1, (ANCHORS, 2))
    base[0, :, 2:4] = rng.uniform(0, 1.5, (ANCHORS, 2))
    base[0, :, 4] = rng.uniform(0.3, 1.0, ANCHORS)
    base[0, :, 5:] = rng.uniform(0.0, 0.8, (ANCHORS, CLASSES))
    delta = np.zeros_like(base)
    delta[0, :, :4] = rng.uniform(-0.5, 0.5, (ANCHORS, 4)) / 255  # the yolox preset feeds raw 0..255
    delta[0, :, 4:] = rng.uniform(-0.2, 0.2, (ANCHORS, 1 + CLASSES)) / 255
    mn, mi = _mean_nodes(3)
    an, ai = _affine("output", base, delta)
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", ANCHORS, 5 + CLASSES])
    return _save(path, mn + an, mi + ai, [out], "N"), base, delta


def bsl_graph(path: Path, rng: np.random.Generator, k: int = 12) -> Path:
    """RetinaNet/SSD-style: ``boxes [k, 4]`` xyxy input pixels, ``scores [k]``, ``labels [k]`` int64."""
    from onnx import TensorProto, helper, numpy_helper

    xy = rng.uniform(0, 40, (k, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 24, (k, 2))], axis=1)
    scores = np.sort(rng.uniform(0.05, 0.95, k))[::-1].copy()
    mn, mi = _mean_nodes(2)
    # the batch of 1 is squeezed away: post-processed outputs carry no batch dimension
    sq = [helper.make_node("Reshape", ["m3", "one"], ["m1"])]
    bn, bi = _affine("boxes", boxes, rng.uniform(-3, 3, (k, 4)), mean="m1")
    sn, si = _affine("scores", scores, rng.uniform(-0.1, 0.1, k), mean="m1")
    labels = [helper.make_node("Identity", ["labels_const"], ["labels"])]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(rng.integers(0, CLASSES, k).astype(np.int64), "labels_const")]
    outs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["k", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["k"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["k"])]
    return _save(path, mn + sq + bn + sn + labels, mi + bi + si + inits, outs, 1)


# --- the dataset ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("decoders")
    data = root / "images"
    data.mkdir()
    rng = np.random.default_rng(7)
    images, anns = [], []
    for k, (name, (w, h)) in enumerate(IMAGES.items()):
        pix = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pix).save(data / name, quality=90)
        images.append({"id": k + 1, "file_name": name, "width": w, "height": h})
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": k % CLASSES, "bbox": [2, 3, w / 2, h / 2],
                     "area": w * h / 4, "iscrowd": 0})
    cats = [{"id": i, "name": f"class {i}"} for i in range(CLASSES)]
    ann = root / "ann"
    ann.mkdir()
    (ann / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return data, ann


def _preprocess(tmp_path: Path, dataset: tuple[Path, Path], preset: str) -> Path:
    data, ann = dataset
    return build("preprocess", tmp_path / f"pre-{preset}", inputs={"dataset": data, "annotations": ann},
                 params={"preset": preset, "size": SIZE})


def _run(tmp_path: Path, name: str, model: Path, pre: Path, ann: Path, **params: Any) -> Path:
    return build(
        "mlperf-run", tmp_path / name,
        inputs={"env": tmp_path, "model": model, "preprocessed": pre, "annotations": ann},
        params={"mode": "accuracy", "score_threshold": THRESHOLD, "nms_iou": NMS_IOU, **params},
    )


def _logged(out: Path) -> dict[int, np.ndarray]:
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    return {e["qsl_idx"]: np.frombuffer(bytes.fromhex(e["data"]), np.float32).reshape(-1, 7) for e in entries}


def _session_outputs(model: Path, pre: Path) -> tuple[dict, list[list[np.ndarray]]]:
    import onnxruntime as ort

    meta = json.loads((pre / "meta.json").read_text())
    x = np.fromfile(pre / "tensors.bin", np.float32).reshape(meta["shape"])
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return meta, [sess.run(None, {"images": x[i : i + 1]}) for i in range(len(x))]


# --- the independent numpy decoding ---------------------------------------------------------------


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            if classes[j] != classes[i]:
                continue
            ix = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            iy = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = ix * iy
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            if inter / (area(boxes[i]) + area(boxes[j]) - inter) > iou:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def _to_records(idx: int, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, s: dict, clip: bool) -> np.ndarray:
    if "offset" in s or isinstance(s["scale"], float):
        left, top = s.get("offset", [0, 0])
        b = (boxes - np.array([left, top, left, top])) / s["scale"]
    else:
        b = boxes / np.array(s["scale"] * 2)
    if clip:
        b = np.clip(b, 0, [s["width"], s["height"], s["width"], s["height"]])
    rec = np.zeros((len(scores), 7))
    rec[:, 0] = idx
    rec[:, 1:5] = b[:, [1, 0, 3, 2]] / [s["height"], s["width"], s["height"], s["width"]]
    rec[:, 5] = scores
    rec[:, 6] = labels
    return rec


def numpy_ultralytics(idx: int, out: np.ndarray, s: dict) -> np.ndarray:
    o = out[0].astype(np.float64).T  # [A, 4 + C]
    cls = o[:, 4:].argmax(axis=1)
    score = o[np.arange(len(o)), 4 + cls]
    c = score >= THRESHOLD
    o, cls, score = o[c], cls[c], score[c]
    boxes = np.stack([o[:, 0] - o[:, 2] / 2, o[:, 1] - o[:, 3] / 2, o[:, 0] + o[:, 2] / 2, o[:, 1] + o[:, 3] / 2], 1)
    k = _greedy_nms(boxes, score, cls, NMS_IOU)
    return _to_records(idx, boxes[k], score[k], cls[k], s, clip=True)


def numpy_yolox(idx: int, out: np.ndarray, s: dict) -> np.ndarray:
    cells = [(stride, row, col) for stride in (8, 16, 32) for row in range(SIZE // stride)
             for col in range(SIZE // stride)]
    o = out[0].astype(np.float64)
    rows = []
    for a, (stride, row, col) in enumerate(cells):
        cls = int(o[a, 5:].argmax())
        score = o[a, 4] * o[a, 5 + cls]
        if score >= THRESHOLD:
            cx, cy = (o[a, 0] + col) * stride, (o[a, 1] + row) * stride
            w, h = np.exp(o[a, 2]) * stride, np.exp(o[a, 3]) * stride
            rows.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score, cls))
    t = np.array(rows).reshape(-1, 6)
    k = _greedy_nms(t[:, :4], t[:, 4], t[:, 5], NMS_IOU)
    return _to_records(idx, t[k, :4], t[k, 4], t[k, 5], s, clip=True)


def numpy_bsl(idx: int, outs: list[np.ndarray], s: dict) -> np.ndarray:
    boxes, scores, labels = (np.asarray(v, np.float64) for v in outs)
    c = scores >= THRESHOLD
    return _to_records(idx, boxes[c], scores[c], labels[c], s, clip=False)


def _compare(out: Path, model: Path, pre: Path, decode: Any) -> int:
    logged = _logged(out)
    meta, outs = _session_outputs(model, pre)
    assert sorted(logged) == list(range(len(IMAGES)))
    total = 0
    for i, o in enumerate(outs):
        want = decode(i, o[0] if len(o) == 1 else o, meta["samples"][i])
        got = logged[i]
        assert got.shape == want.shape, (i, got.shape, want.shape)
        # same detections, same order (by descending score)
        np.testing.assert_array_equal(got[:, 6], want[:, 6])
        np.testing.assert_allclose(got[:, 5], want[:, 5], rtol=1e-6)
        np.testing.assert_allclose(got[:, 1:5], want[:, 1:5], atol=2e-6)
        assert np.all((got[:, 1:5] >= 0) & (got[:, 1:5] <= 1)) or decode is numpy_bsl
        total += len(got)
    return total


# --- the tests ------------------------------------------------------------------------------------


def test_ultralytics_decoder_matches_numpy(tmp_path, dataset):
    model, _b, _d = ultralytics_graph(tmp_path / "yolo11n-standin.onnx", np.random.default_rng(1))
    pre = _preprocess(tmp_path, dataset, "ultralytics")
    meta = json.loads((pre / "meta.json").read_text())
    # a centred letterbox: b.jpg (50x80) -> 40x64 placed 12 pixels from the left
    assert meta["samples"][1]["offset"] == [12, 0] and meta["geometry"] == "letterbox"
    out = _run(tmp_path, "run", model, pre, dataset[1], decoder="ultralytics", batch_size=2)
    n = _compare(out, model, pre, numpy_ultralytics)
    assert n >= 2 * len(IMAGES)  # detections to compare, not an empty agreement
    r = json.loads((out / "result.json").read_text())
    assert r["params"]["decoder"] == "ultralytics" and r["params"]["batch_size_effective"] == 2
    assert r["metrics"]["mAP"] is not None


def test_yolox_decoder_matches_numpy(tmp_path, dataset):
    model, _b, _d = yolox_graph(tmp_path / "yolox-standin.onnx", np.random.default_rng(2))
    pre = _preprocess(tmp_path, dataset, "yolox")
    out = _run(tmp_path, "run", model, pre, dataset[1], decoder="yolox", batch_size=2)
    assert _compare(out, model, pre, numpy_yolox) >= 2 * len(IMAGES)


def test_boxes_scores_labels_decoder_matches_numpy(tmp_path, dataset):
    model = bsl_graph(tmp_path / "ssd-standin.onnx", np.random.default_rng(3))
    pre = _preprocess(tmp_path, dataset, "retinanet")
    out = _run(tmp_path, "run", model, pre, dataset[1], decoder="boxes-scores-labels")
    assert _compare(out, model, pre, numpy_bsl) >= len(IMAGES)
    # the old name: model_kind = "retinanet" (and decoder alias `retinanet`) decode the same
    old = _run(tmp_path, "old", model, pre, dataset[1], model_kind="retinanet")
    alias = _run(tmp_path, "alias", model, pre, dataset[1], decoder="retinanet")
    for o in (old, alias):
        assert (o / "mlperf_log_accuracy.json").read_bytes() == (out / "mlperf_log_accuracy.json").read_bytes()


def test_wrong_decoder_is_named_before_inference(tmp_path, dataset):
    yolo, _b, _d = ultralytics_graph(tmp_path / "yolo.onnx", np.random.default_rng(1))
    yolox, _b, _d = yolox_graph(tmp_path / "yolox.onnx", np.random.default_rng(2))
    pre = _preprocess(tmp_path, dataset, "ultralytics")
    with pytest.raises(InputError, match=r"yolo\.onnx: YOLOX output `output0` has 7 anchor points") as e:
        _run(tmp_path, "r1", yolo, pre, dataset[1], decoder="yolox")
    assert any('decoder = "ultralytics"' in h for h in e.value.hints)
    with pytest.raises(InputError, match=r"yolox\.onnx: Ultralytics output `output` has 8 anchor points") as e:
        _run(tmp_path, "r2", yolox, pre, dataset[1], decoder="ultralytics")
    assert any('decoder = "yolox"' in h for h in e.value.hints)
    with pytest.raises(InputError, match=r"decoder `boxes-scores-labels` expects outputs .* missing `boxes`"):
        _run(tmp_path, "r3", yolo, pre, dataset[1], decoder="boxes-scores-labels")
    with pytest.raises(InputError, match=r"`decoder = 'ultralytics'` and the older `model_kind = 'yolox'` disagree"):
        _run(tmp_path, "r4", yolo, pre, dataset[1], decoder="ultralytics", model_kind="yolox")
    with pytest.raises(InputError, match=r"param `decoder` must be one of"):
        _run(tmp_path, "r5", yolo, pre, dataset[1], decoder="yolov8")
    assert not (tmp_path / "r1" / "mlperf_log_accuracy.json").exists()


def test_run_param_choices_are_the_registered_decoders():
    names = set(runparams.PARAMS["decoder"].choices) - {""}
    assert names == set(decoders.DECODERS) | set(decoders.ALIASES)
    assert set(runparams.PARAMS["model_kind"].choices) == {"", "yolox", "retinanet"}
    for name, cls in decoders.DECODERS.items():
        assert cls.name == name and 0 <= cls.default_score_threshold <= 1
    assert decoders.resolve_name("", "") == "yolox"
    assert decoders.resolve_name("", "retinanet") == "boxes-scores-labels"


def test_yolox_decoder_keeps_the_default_jobs_records(letterboxed16):
    """The real YOLOX-nano on 16 letterboxed coco128 photos: the decoder protocol's records are
    bit-identical to the pre-protocol path (``YoloxDecoder.records``), so the default job's
    accuracy log and mAP do not move."""
    import onnxruntime as ort

    from mlbuild.harness.postprocess import YoloxDecoder

    from .conftest import YOLOX

    meta = json.loads((letterboxed16 / "meta.json").read_text())
    x = np.fromfile(letterboxed16 / "tensors.bin", np.float32).reshape(meta["shape"])
    sess = ort.InferenceSession(str(YOLOX), providers=["CPUExecutionProvider"])
    old = YoloxDecoder(416, score_threshold=0.001, nms_iou=0.65, max_detections=0)
    new = decoders.make("yolox", score_threshold=0.001, nms_iou=0.65, max_detections=0)
    geos = decoders.geometries(meta)
    total = 0
    for i, s in enumerate(meta["samples"]):
        (out,) = sess.run(None, {"images": x[i : i + 1]})
        want = old.records(out[0], i, s["scale"], s["width"], s["height"])
        got = decoders.records(new.decode([out[0]], geos[i]), i, geos[i])
        assert got.tobytes() == want.tobytes(), i
        total += len(got)
    assert total > 100


def test_boxes_scores_labels_keeps_retinanets_records():
    """Stretch geometry maps boxes back exactly as MLPerf's RetinaNet post-processing
    normalises them (box / input size), bit for bit."""
    from mlbuild.harness.postprocess import retinanet_records

    rng = np.random.default_rng(0)
    dec = decoders.make("retinanet", score_threshold=0.05, nms_iou=0.5, max_detections=0)
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(10, 5000, 2))
        size = int(rng.choice([300, 800, 1200]))
        boxes = rng.uniform(0, size, (40, 4)).astype(np.float32)
        scores = rng.uniform(0, 1, 40).astype(np.float32)
        labels = rng.integers(0, 264, 40)
        g = decoders.Geometry("stretch", size, size, w, h, (size / w, size / h))
        got = decoders.records(dec.decode([boxes, scores, labels], g), 3, g)
        assert got.tobytes() == retinanet_records(boxes, scores, labels, 3, size, 0.05, 0).tobytes()


def test_nothing_above_the_threshold_gives_empty_records():
    g = decoders.Geometry("letterbox", SIZE, SIZE, 100, 80, (0.64, 0.64), (0.0, 6.0))
    cases = {
        "ultralytics": [np.zeros((4 + CLASSES, ANCHORS), np.float32)],
        "yolox": [np.zeros((ANCHORS, 5 + CLASSES), np.float32)],
        "boxes-scores-labels": [np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)],
    }
    for name, outs in cases.items():
        dec = decoders.make(name, score_threshold=0.5, nms_iou=0.5, max_detections=0)
        rec = decoders.records(dec.decode(outs, g), 0, g)
        assert rec.shape == (0, 7) and rec.dtype == np.float32, name
