"""letterbox / retinanet-preprocess: bytes independent of jobs, known pixels, meta, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlbuild.errors import InputError
from mlbuild.harness import images

from .conftest import COCO128, build


def _load(pre: Path) -> tuple[dict, np.ndarray]:
    meta = json.loads((pre / "meta.json").read_text())
    return meta, np.memmap(pre / "tensors.bin", dtype=np.float32, mode="r", shape=tuple(meta["shape"]))


def test_letterbox_bytes_same_for_jobs_1_and_2(tmp_path, coco_ann, letterboxed16):
    inputs = {"dataset": COCO128, "annotations": coco_ann}
    one = build("letterbox", tmp_path / "j1", inputs=inputs, params={"count": 16}, jobs=1)
    assert (one / "tensors.bin").read_bytes() == (letterboxed16 / "tensors.bin").read_bytes()
    assert (one / "meta.json").read_bytes() == (letterboxed16 / "meta.json").read_bytes()


def test_letterbox_meta_and_layout(letterboxed16):
    meta, t = _load(letterboxed16)
    assert meta["shape"] == [16, 3, 416, 416]
    assert meta["dtype"] == "float32" and meta["layout"] == "NCHW" and meta["channel_order"] == "BGR"
    assert (letterboxed16 / "tensors.bin").stat().st_size == 16 * 3 * 416 * 416 * 4
    s0 = meta["samples"][0]
    assert s0 == {
        "file_name": "images/train2017/000000000009.jpg", "height": 480, "image_id": 9, "scale": 0.65, "width": 640
    }
    # 640x480 -> 416x312 at the top-left, the rest is padding
    assert np.all(t[0, :, 312:, :] == 114.0)
    assert np.any(t[0, :, :312, :] != 114.0)
    assert t.min() >= 0.0 and t.max() <= 255.0
    assert np.all(t == np.round(t))  # 8-bit values, as YOLOX's uint8 resize


def test_letterbox_pixels_follow_the_decoded_image(letterboxed16):
    _meta, t = _load(letterboxed16)
    rgb = np.asarray(Image.open(COCO128 / "images/train2017/000000000009.jpg").convert("RGB"), dtype=np.float32)
    # the 0.65 downscale keeps broad structure: compare a 52x52 block mean (BGR order in the tensor)
    got = t[0, :, 100:152, 100:152].mean(axis=(1, 2))
    want = rgb[154:234, 154:234].mean(axis=(0, 1))[::-1]
    assert np.allclose(got, want, atol=6.0)


def _solid(path: Path, size: tuple[int, int], rgb: tuple[int, int, int]) -> None:
    Image.new("RGB", size, rgb).save(path, format="PNG")


def _tiny_dataset(tmp_path: Path, sizes: list[tuple[int, int]]) -> tuple[Path, Path]:
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    imgs = []
    for i, (w, h) in enumerate(sizes):
        _solid(root / "img" / f"{i:03d}.png", (w, h), (10, 20, 30))
        imgs.append({"id": i + 1, "file_name": f"img/{i:03d}.png", "width": w, "height": h})
    ann = tmp_path / "ann"
    ann.mkdir()
    doc = {"images": imgs, "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (ann / "annotations.json").write_text(json.dumps(doc))
    return root, ann


def test_letterbox_known_pixels(tmp_path):
    root, ann = _tiny_dataset(tmp_path, [(200, 100)])
    pre = build("letterbox", tmp_path / "pre", inputs={"dataset": root, "annotations": ann})
    meta, t = _load(pre)
    assert meta["samples"][0]["scale"] == pytest.approx(2.08)
    # 200x100 -> 416x208 at the top-left; BGR order
    assert t[0, 0, 0, 0] == 30.0 and t[0, 1, 0, 0] == 20.0 and t[0, 2, 0, 0] == 10.0
    assert np.all(t[0, 0, :208, :] == 30.0)
    assert np.all(t[0, :, 208:, :] == 114.0)


def test_retinanet_known_pixels(tmp_path):
    root, ann = _tiny_dataset(tmp_path, [(64, 32)])
    inputs = {"dataset": root, "annotations": ann}
    pre = build("retinanet-preprocess", tmp_path / "pre", inputs=inputs, params={"size": 40})
    meta, t = _load(pre)
    assert meta["shape"] == [1, 3, 40, 40] and meta["channel_order"] == "RGB"
    assert meta["samples"][0]["scale"] == [40 / 64, 40 / 32]
    assert np.allclose(t[0, 0], 10 / 255) and np.allclose(t[0, 1], 20 / 255) and np.allclose(t[0, 2], 30 / 255)


def test_bilinear_matches_opencv_grid():
    # OpenCV INTER_LINEAR, 2 -> 4: source x = (dst + 0.5) / 2 - 0.5, clamped at the borders
    src = np.array([[[0.0], [100.0]]], dtype=np.float32)  # 1x2x1
    out = images.resize_bilinear(src, 4, 1)
    assert out[0, :, 0].tolist() == [0.0, 25.0, 75.0, 100.0]
    # 4 -> 2 samples between pixel pairs, no antialias
    src = np.array([[[0.0], [10.0], [20.0], [30.0]]], dtype=np.float32)
    assert images.resize_bilinear(src, 2, 1)[0, :, 0].tolist() == [5.0, 25.0]


def test_preprocess_jobs_independent_on_mixed_sizes(tmp_path):
    root, ann = _tiny_dataset(tmp_path, [(30 + 7 * i, 20 + 5 * i) for i in range(9)])
    inputs = {"dataset": root, "annotations": ann}
    a = build("retinanet-preprocess", tmp_path / "a", inputs=inputs, params={"size": 24}, jobs=1)
    b = build("retinanet-preprocess", tmp_path / "b", inputs=inputs, params={"size": 24}, jobs=2)
    assert (a / "tensors.bin").read_bytes() == (b / "tensors.bin").read_bytes()
    assert (a / "meta.json").read_bytes() == (b / "meta.json").read_bytes()


def test_missing_image_and_size_mismatch(tmp_path):
    root, ann = _tiny_dataset(tmp_path, [(20, 10), (20, 10)])
    (root / "img" / "001.png").unlink()
    with pytest.raises(InputError, match=r"img/001\.png: image listed in annotations\.json is missing"):
        build("letterbox", tmp_path / "pre", inputs={"dataset": root, "annotations": ann})
    _solid(root / "img" / "001.png", (21, 10), (0, 0, 0))
    with pytest.raises(InputError, match=r"001\.png: decoded size 21x10 does not match the annotations' 20x10"):
        build("letterbox", tmp_path / "pre2", inputs={"dataset": root, "annotations": ann})


def test_empty_annotations_and_bad_params(tmp_path):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "annotations.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(InputError, match=r"annotations\.json: empty dataset"):
        build("letterbox", tmp_path / "pre", inputs={"dataset": tmp_path, "annotations": ann})
    with pytest.raises(InputError, match=r"param `pad` must be in 0\.\.255"):
        build("letterbox", tmp_path / "pre2", inputs={"dataset": tmp_path, "annotations": ann}, params={"pad": 300})
    with pytest.raises(InputError, match=r"param `size` must be int"):
        build("letterbox", tmp_path / "pre3", inputs={"dataset": tmp_path, "annotations": ann}, params={"size": "416"})


def test_undecodable_image(tmp_path):
    root, ann = _tiny_dataset(tmp_path, [(20, 10)])
    (root / "img" / "000.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"000\.png: cannot decode image"):
        build("retinanet-preprocess", tmp_path / "pre", inputs={"dataset": root, "annotations": ann},
              params={"size": 8})
