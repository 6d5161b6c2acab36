"""YOLOX decode + NMS and the RetinaNet record conversion, on synthetic tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlbuild.harness import postprocess
from mlbuild.harness.postprocess import YoloxDecoder, nms, retinanet_records


def _empty_output(size: int = 416) -> np.ndarray:
    anchors = sum((size // s) ** 2 for s in (8, 16, 32))
    return np.zeros((anchors, 85), dtype=np.float32)


def _anchor(size: int, stride: int, col: int, row: int) -> int:
    offset = 0
    for s in (8, 16, 32):
        if s == stride:
            return offset + row * (size // s) + col
        offset += (size // s) ** 2
    raise AssertionError(stride)


def _set(out, idx, dx, dy, w, h, stride, obj, cls, cls_score):
    out[idx, 0:2] = (dx, dy)
    out[idx, 2:4] = (math.log(w / stride), math.log(h / stride))
    out[idx, 4] = obj
    out[idx, 5 + cls] = cls_score


def test_grid_layout():
    d = YoloxDecoder(416, score_threshold=0.1, nms_iou=0.65, max_detections=0)
    assert d.anchors == 52 * 52 + 26 * 26 + 13 * 13 == 3549
    # stride-16 grid starts after the 52x52 stride-8 one; cells are (column, row)
    i = _anchor(416, 16, 3, 2)
    assert d.grid[i].tolist() == [3.0, 2.0] and d.stride[i, 0] == 16.0


def test_decode_one_box():
    out = _empty_output()
    i = _anchor(416, 16, 10, 5)
    _set(out, i, 0.5, 0.25, 64.0, 32.0, 16, obj=0.9, cls=2, cls_score=0.8)
    d = YoloxDecoder(416, score_threshold=0.1, nms_iou=0.65, max_detections=0)
    boxes, scores, cls = d.decode(out)
    assert len(scores) == 1
    cx, cy = (0.5 + 10) * 16, (0.25 + 5) * 16
    assert boxes[0].tolist() == pytest.approx([cx - 32, cy - 16, cx + 32, cy + 16], abs=1e-3)
    assert scores[0] == pytest.approx(0.72) and cls[0] == 2


def test_records_scale_clip_and_category_ids():
    out = _empty_output()
    # a box centred near the top-left corner, partly outside the image
    _set(out, _anchor(416, 8, 0, 0), 0.5, 0.5, 40.0, 40.0, 8, obj=0.9, cls=0, cls_score=1.0)
    _set(out, _anchor(416, 32, 6, 4), 0.0, 0.0, 64.0, 64.0, 32, obj=0.5, cls=79, cls_score=1.0)
    d = YoloxDecoder(416, score_threshold=0.1, nms_iou=0.65, max_detections=0)
    rec = d.records(out, sample_index=7, scale=0.5, width=800, height=600)
    assert rec.dtype == np.float32 and rec.shape == (2, 7)
    r0, r1 = rec
    assert r0[0] == 7.0 and r0[6] == 1.0  # person
    assert r1[6] == 90.0  # toothbrush
    # first box: centre (4,4), size 40 in the input -> [-16, -16, 24, 24] / 0.5 -> clipped [0, 0, 48, 48]
    assert r0[1:5].tolist() == pytest.approx([0.0, 0.0, 48 / 600, 48 / 800])
    # second: centre (192, 128), size 64 -> [160, 96, 224, 160] / 0.5 = [320, 192, 448, 320]
    assert r1[1:5].tolist() == pytest.approx([192 / 600, 320 / 800, 320 / 600, 448 / 800])
    assert r0[5] == pytest.approx(0.9) and r1[5] == pytest.approx(0.5)


def test_score_threshold_is_objectness_times_class():
    out = _empty_output()
    _set(out, 0, 0.5, 0.5, 16.0, 16.0, 8, obj=0.5, cls=3, cls_score=0.5)  # 0.25
    d = YoloxDecoder(416, score_threshold=0.3, nms_iou=0.65, max_detections=0)
    assert len(d.decode(out)[1]) == 0
    d = YoloxDecoder(416, score_threshold=0.2, nms_iou=0.65, max_detections=0)
    assert len(d.decode(out)[1]) == 1
    assert d.records(_empty_output(), 0, 1.0, 416, 416).shape == (0, 7)


def test_nms_per_class():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # a, class 0, best
            [1, 1, 11, 11],  # b, class 0, IoU with a = 81/119 = 0.68 -> suppressed at 0.65
            [1, 1, 11, 11],  # c, class 1 -> kept (other class)
            [0, 0, 10, 12],  # d, class 0, IoU with a = 100/120 = 0.83 -> suppressed
            [20, 20, 30, 30],  # e, class 0, disjoint -> kept
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.85, 0.1], dtype=np.float32)
    classes = np.array([0, 0, 1, 0, 0])
    assert nms(boxes, scores, classes, 0.65, 0).tolist() == [0, 2, 4]
    assert nms(boxes, scores, classes, 0.7, 0).tolist() == [0, 1, 2, 4]
    assert nms(boxes, scores, classes, 0.65, 2).tolist() == [0, 2]
    assert nms(boxes[:0], scores[:0], classes[:0], 0.65, 0).tolist() == []


def test_nms_greedy_chain():
    # b is suppressed by a; c overlaps b but not a, so c survives (greedy, not transitive)
    boxes = np.array([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    keep = nms(boxes, scores, np.zeros(3, int), 0.5, 0)
    assert keep.tolist() == [0, 2]


def test_nms_ties_are_stable():
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], dtype=np.float32)
    scores = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    assert nms(boxes, scores, np.array([2, 1, 0]), 0.5, 0).tolist() == [0, 1, 2]


def test_retinanet_records():
    boxes = np.array([[80, 160, 400, 800], [0, 0, 8, 8]], dtype=np.float32)  # xmin, ymin, xmax, ymax
    scores = np.array([0.9, 0.04], dtype=np.float32)
    labels = np.array([17, 3], dtype=np.int64)
    rec = retinanet_records(boxes, scores, labels, sample_index=3, size=800, score_threshold=0.05, max_detections=0)
    assert rec.shape == (1, 7) and rec.dtype == np.float32
    assert rec[0].tolist() == pytest.approx([3, 0.2, 0.1, 1.0, 0.5, 0.9, 17])
    assert retinanet_records(boxes[:0], scores[:0], labels[:0], 0, 800, 0.05, 0).shape == (0, 7)
    capped = retinanet_records(boxes, scores, labels, 0, 800, 0.0, 1)
    assert capped.shape == (1, 7) and capped[0, 6] == 17


def test_module_imports_no_heavy_library_at_top_level():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(postprocess))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top for a in n.names} | {n.module for n in top if isinstance(n, ast.ImportFrom)}
    assert "numpy" not in names


# --- the native NMS is held against the numpy reference ---------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 60),
    seed=st.integers(0, 2**32 - 1),
    classes=st.integers(1, 4),
    iou=st.sampled_from([0.3, 0.5, 0.65, 0.9]),
    max_det=st.sampled_from([0, 1, 5, 100]),
    ties=st.booleans(),
)
def test_native_nms_matches_reference(n, seed, classes, iou, max_det, ties):
    from mlbuild.harness.postprocess import nms, nms_reference

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, size=(n, 2)).astype(np.float32)
    wh = rng.uniform(0, 40, size=(n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = (rng.integers(0, 4, size=n) / 4 if ties else rng.uniform(0, 1, size=n)).astype(np.float32)
    cls = rng.integers(0, classes, size=n).astype(np.int64)
    assert nms(boxes, scores, cls, iou, max_det).tolist() == nms_reference(boxes, scores, cls, iou, max_det).tolist()
