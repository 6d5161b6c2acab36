"""Images are decoded as MLPerf's reference decodes them: ``cv2.imread(path)`` (then BGR -> RGB).

Files are generated in-test with Pillow: JPEGs carrying EXIF orientations 1-8, a CMYK JPEG,
greyscale, palette and RGBA images; each decodes to exactly OpenCV's pixels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mlbuild.errors import InputError
from mlbuild.harness import images

from .conftest import build


def _opencv_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path))  # MLPerf's reference: IMREAD_COLOR, EXIF orientation applied
    assert bgr is not None, path
    return bgr[:, :, ::-1]


def _photo(w: int = 48, h: int = 32, seed: int = 0) -> np.ndarray:
    """An asymmetric picture (blocks, so JPEG keeps it recognisable) of ``w x h``."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.kron(small, np.ones((4, 4, 1), np.uint8))


def _jpeg_with_orientation(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_opencv(tmp_path, orientation):
    path = _jpeg_with_orientation(tmp_path / f"o{orientation}.jpg", _photo(), orientation)
    want = _opencv_rgb(path)
    got = images.decode_rgb(path)
    np.testing.assert_array_equal(got, want)
    # the header-only size is the upright one too: 48x32 stored, 32x48 shown for 5-8
    assert images.image_size(path) == (want.shape[1], want.shape[0])
    assert images.image_size(path) == ((32, 48) if orientation >= 5 else (48, 32))


def test_orientation_3_is_rotated_not_left_as_stored(tmp_path):
    pixels = _photo()
    path = _jpeg_with_orientation(tmp_path / "o3.jpg", pixels, 3)
    stored = np.asarray(Image.open(path).convert("RGB"))
    got = images.decode_rgb(path)
    # upside down relative to the stored pixels (up to JPEG's loss): rotated 180 degrees
    assert np.abs(got.astype(int) - stored[::-1, ::-1].astype(int)).mean() < 1.0
    assert np.abs(got.astype(int) - stored.astype(int)).mean() > 20.0


def test_cmyk_jpeg_as_opencv(tmp_path):
    rng = np.random.default_rng(3)
    cmyk = rng.integers(0, 256, (24, 40, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(cmyk, "CMYK").save(path, quality=95)
    want = _opencv_rgb(path)
    got = images.decode_rgb(path)
    np.testing.assert_array_equal(got, want)
    # Pillow's own conversion differs (the reason for the OpenCV formula)
    pillow = np.asarray(Image.open(path).convert("RGB"))
    assert np.any(pillow != want)


def test_cmyk_jpeg_with_orientation_as_opencv(tmp_path):
    rng = np.random.default_rng(4)
    cmyk = np.kron(rng.integers(0, 256, (6, 10, 4), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    path = tmp_path / "cmyk6.jpg"
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6
    Image.fromarray(cmyk, "CMYK").save(path, quality=95, exif=exif.tobytes())
    np.testing.assert_array_equal(images.decode_rgb(path), _opencv_rgb(path))


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA"])
def test_other_modes_as_opencv(tmp_path, mode):
    rgb = _photo(40, 24, seed=5)
    im = Image.fromarray(rgb)
    if mode == "L":
        im = im.convert("L")
    elif mode == "P":
        im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    else:
        im = im.convert(mode)
    path = tmp_path / f"{mode}.{'jpg' if mode == 'L' else 'png'}"
    im.save(path)
    np.testing.assert_array_equal(images.decode_rgb(path), _opencv_rgb(path))


def test_16_bit_greyscale_png_as_opencv(tmp_path):
    grey = np.random.default_rng(8).integers(0, 65536, (20, 30), dtype=np.uint16)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), grey)
    assert Image.open(path).mode == "I;16"
    np.testing.assert_array_equal(images.decode_rgb(path), _opencv_rgb(path))


def test_rotated_photo_passes_the_size_check_and_is_preprocessed_upright(tmp_path):
    """An orientation-6 photo annotated with its upright size (as COCO tools and OpenCV see it)
    is preprocessed; its tensor is the yolox preset applied to OpenCV's pixels."""
    data = tmp_path / "data"
    data.mkdir()
    path = _jpeg_with_orientation(data / "rot.jpg", _photo(64, 40, seed=6), 6)
    ann = tmp_path / "ann"
    ann.mkdir()
    w, h = images.image_size(path)
    assert (w, h) == (40, 64)
    doc = {"images": [{"id": 1, "file_name": "rot.jpg", "width": w, "height": h}], "annotations": [],
           "categories": [{"id": 1, "name": "x"}]}
    (ann / "annotations.json").write_text(json.dumps(doc))
    pre = build("letterbox", tmp_path / "pre", inputs={"dataset": data, "annotations": ann}, params={"size": 32})
    meta = json.loads((pre / "meta.json").read_text())
    assert meta["samples"][0]["width"] == 40 and meta["samples"][0]["height"] == 64
    got = np.fromfile(pre / "tensors.bin", np.float32).reshape(3, 32, 32)
    want, _scale = images.letterbox(_opencv_rgb(path), 32, 114)
    np.testing.assert_array_equal(got, want)
    # the stored (unrotated) size no longer matches: it is named, nothing is written
    doc["images"][0].update(width=64, height=40)
    (ann / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"rot\.jpg: decoded size 40x64 does not match the annotations' 64x40"):
        build("letterbox", tmp_path / "pre2", inputs={"dataset": data, "annotations": ann}, params={"size": 32})
