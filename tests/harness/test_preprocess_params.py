"""Preprocessing as parameters (builder ``preprocess``): the named sets reproduce the shipped
builders bit for bit (the default job's tensors are pinned), the Ultralytics letterbox agrees
with an OpenCV implementation of it, and every parameter does what it says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mlbuild.errors import InputError
from mlbuild.harness import images

from .conftest import COCO128, build

# sha256 of tensors.bin / meta.json of the default job's `coco128-letterbox` (all 128 photos,
# size 416, pad 114) as built by mlbuild before preprocessing became parameters (commit 083f5f2).
DEFAULT_JOB_TENSORS = "bc95aca1e745e9589b159e618c1647b67a9b8c3bcfa94501f754da065e1e7beb"
DEFAULT_JOB_META = "63f475018089b0598e4024f7824506250f981d3e35ab8be66039bf23f3d3766b"
# retinanet-preprocess, size 320, first 32 photos, same commit
RETINANET_320_32 = "ea17166710ac3ed6219b0c25b56d404337478a9b5bb1302676a7047e342972c0"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load(pre: Path) -> tuple[dict, np.ndarray]:
    meta = json.loads((pre / "meta.json").read_text())
    return meta, np.fromfile(pre / "tensors.bin", np.float32).reshape(meta["shape"])


def test_default_jobs_tensors_are_bit_identical(tmp_path, coco_ann):
    pre = build("letterbox", tmp_path / "lb", inputs={"dataset": COCO128, "annotations": coco_ann}, jobs=2)
    assert _sha(pre / "tensors.bin") == DEFAULT_JOB_TENSORS
    assert _sha(pre / "meta.json") == DEFAULT_JOB_META
    rn = build("retinanet-preprocess", tmp_path / "rn", inputs={"dataset": COCO128, "annotations": coco_ann},
               params={"size": 320, "count": 32}, jobs=2)
    assert _sha(rn / "tensors.bin") == RETINANET_320_32


def test_presets_are_the_shipped_builders(tmp_path, coco_ann, letterboxed16):
    inputs = {"dataset": COCO128, "annotations": coco_ann}
    g = build("preprocess", tmp_path / "g", inputs=inputs, params={"preset": "yolox", "count": 16}, jobs=2)
    assert (g / "tensors.bin").read_bytes() == (letterboxed16 / "tensors.bin").read_bytes()
    gm, lm = json.loads((g / "meta.json").read_text()), json.loads((letterboxed16 / "meta.json").read_text())
    assert gm["samples"] == lm["samples"] and gm["geometry"] == "letterbox" and gm["preprocess"] == "yolox"
    r = build("preprocess", tmp_path / "r", inputs=inputs, params={"preset": "retinanet", "size": 48, "count": 4})
    o = build("retinanet-preprocess", tmp_path / "o", inputs=inputs, params={"size": 48, "count": 4})
    assert (r / "tensors.bin").read_bytes() == (o / "tensors.bin").read_bytes()
    # the explicit parameters of a preset are the preset
    explicit = {"preset": "ultralytics", "resize": "letterbox", "size": 416, "placement": "top-left",
                "new_size": "floor", "pad": 114, "channel_order": "BGR", "value_range": "0-255",
                "round_to_uint8": "yes", "count": 16}
    e = build("preprocess", tmp_path / "e", inputs=inputs, params=explicit)
    assert (e / "tensors.bin").read_bytes() == (letterboxed16 / "tensors.bin").read_bytes()


def _ultralytics_letterbox_cv2(bgr: np.ndarray, size: int) -> tuple[np.ndarray, int, int]:
    """Ultralytics' LetterBox(auto=False, center=True) with OpenCV, then RGB, 0-1, CHW."""
    h, w = bgr.shape[:2]
    r = min(size / h, size / w)
    nw, nh = round(w * r), round(h * r)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    if (w, h) != (nw, nh):
        bgr = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out = cv2.copyMakeBorder(bgr, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return out[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0, left, top


def test_ultralytics_preset_matches_an_opencv_letterbox(tmp_path, coco_ann):
    pre = build("preprocess", tmp_path / "u", inputs={"dataset": COCO128, "annotations": coco_ann},
                params={"preset": "ultralytics", "size": 320, "count": 6})
    meta, t = _load(pre)
    assert meta["shape"] == [6, 3, 320, 320] and meta["channel_order"] == "RGB" and meta["value_range"] == "0-1"
    for i, s in enumerate(meta["samples"]):
        want, left, top = _ultralytics_letterbox_cv2(cv2.imread(str(COCO128 / s["file_name"])), 320)
        assert s["offset"] == [left, top]
        assert s["scale"] == pytest.approx(min(320 / s["width"], 320 / s["height"]))
        # padding is exact; resized pixels within one grey level (OpenCV's 8-bit path rounds
        # through 11-bit fixed point, we interpolate in float)
        pad = want == np.float32(114 / 255)
        assert np.mean(t[i][pad] == want[pad]) > 0.99
        assert np.abs(t[i] - want).max() <= 1 / 255 + 1e-6
        assert np.mean(t[i] == want) > 0.9


def test_parameters_act_as_documented(tmp_path, coco_ann):
    inputs = {"dataset": COCO128, "annotations": coco_ann}

    def run(name: str, **params):
        return _load(build("preprocess", tmp_path / name, inputs=inputs, params={"count": 2, "size": 64, **params}))

    base_meta, base = run("base")
    _m, bgr = run("bgr", channel_order="BGR")
    np.testing.assert_array_equal(bgr, base[:, ::-1])
    _m, raw = run("raw", value_range="0-255")
    np.testing.assert_array_equal(raw / np.float32(255.0), base)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    norm_meta, norm = run("norm", mean=mean, std=std)
    m32, s32 = np.float32(mean)[None, :, None, None], np.float32(std)[None, :, None, None]
    np.testing.assert_array_equal(norm, (base - m32) / s32)
    assert norm_meta["mean"] == mean and norm_meta["std"] == std
    top_meta, top = run("top", placement="top-left", pad=0)
    assert top_meta["samples"][0].get("offset") is None and base_meta["samples"][0]["offset"] == [0, 8]
    # 640x480 -> 64x48: content at the top-left, zero padding below it
    assert np.all(top[0, :, 48:, :] == 0) and np.any(top[0, :, :48, :] != 0)
    st_meta, st = run("stretch", resize="stretch")
    assert st_meta["geometry"] == "stretch" and st_meta["samples"][0]["scale"] == [0.1, 64 / 480]
    _m, fl = run("float", resize="stretch", round_to_uint8="no")
    assert np.any(fl * 255 != np.round(fl * 255)) and np.allclose(fl, st, atol=0.5 / 255 + 1e-6)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mean": [0.5, 0.5], "std": [1, 1, 1]}, r"`mean` must be 3 numbers"),
        ({"mean": [0.5, 0.5, 0.5]}, r"`mean` and `std` go together"),
        ({"mean": [0, 0, 0], "std": [1, 0, 1]}, r"`std` must not contain 0"),
        ({"mean": ["a", 0, 0], "std": [1, 1, 1]}, r"param `mean` must be a list of numbers"),
        ({"channel_order": "GBR"}, r"param `channel_order` must be one of"),
    ],
)
def test_bad_parameters_are_named(tmp_path, coco_ann, params, message):
    with pytest.raises(InputError, match=message):
        build("preprocess", tmp_path / "bad", inputs={"dataset": COCO128, "annotations": coco_ann},
              params={"count": 1, **params})
    assert not (tmp_path / "bad" / "tensors.bin").exists()


def test_preset_table_is_documented():
    assert set(images.PRESETS) == {"yolox", "retinanet", "ultralytics"}
    for spec in images.PRESETS.values():
        assert spec.problems() == []
