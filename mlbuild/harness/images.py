"""Image decoding, resizing and parametrised preprocessing, plus the parallel tensor writer.

Resizing is bilinear with OpenCV's ``INTER_LINEAR`` conventions, written in numpy: pixel
centres at half-integers (``src = (dst + 0.5) * in/out - 0.5``), coordinates clamped at the
borders, no antialiasing when shrinking. The MLPerf and YOLOX references resize with
``cv2.resize(..., INTER_LINEAR)``; OpenCV is not in the locked environment, so this module
reproduces its sampling grid in float32 (OpenCV's 8-bit path rounds through an 11-bit fixed
point, so letterboxed pixels can differ from it by one grey level).

Images are decoded as MLPerf's reference decodes them, ``cv2.imread(path)`` (OpenCV, flag
``IMREAD_COLOR``), with Pillow: the EXIF orientation is applied (1-8: flips and quarter turns;
:func:`image_size` reports the oriented size too), greyscale is replicated to three channels,
alpha is dropped, 16-bit greyscale keeps its high byte, and a CMYK JPEG is converted with
OpenCV's integer formula (per channel ``k - ((255 - x) * k >> 8)`` on the stored,
Adobe-inverted values) rather than Pillow's, which differs by up to 2 levels.
``tests/harness/test_image_decode.py`` holds this to OpenCV.

Preprocessing is parameters (:class:`Preprocess`): letterbox (keep aspect, pad) or stretch,
size, placement, channel order, value range, mean/std; :data:`PRESETS` names the sets the
shipped models use (``yolox``, ``retinanet``, ``ultralytics``).

Output tensors are written by ``write_tensors`` into one preallocated float32 file; each image
is processed independently and written at its own offset, so the bytes are the same for any
number of worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbuild.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

TENSORS_FILE = "tensors.bin"
META_FILE = "meta.json"


EXIF_ORIENTATION = 0x0112


def _orientation(im: Any) -> int:
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: OpenCV ignores it too
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(arr: NDArray[Any], orientation: int) -> NDArray[Any]:
    """Apply EXIF orientation ``1..8`` to an HxWxC array (the stored pixels -> upright)."""
    import numpy as np

    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.transpose(1, 0, 2)
    elif orientation == 6:
        arr = arr.transpose(1, 0, 2)[:, ::-1]
    elif orientation == 7:
        arr = arr.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        arr = arr.transpose(1, 0, 2)[::-1]
    return np.ascontiguousarray(arr)


def _cmyk_like_opencv(im: Any) -> NDArray[np.uint8]:
    """A decoded CMYK JPEG -> RGB as OpenCV converts it (integer, ``>> 8``)."""
    import numpy as np

    cmyk = np.asarray(im, dtype=np.int32)
    # Pillow un-inverts Adobe CMYK; OpenCV works on the stored (inverted) values
    raw = 255 - cmyk if "adobe" in im.info else cmyk
    k = raw[..., 3:4]
    rgb = k - (((255 - raw[..., :3]) * k) >> 8)
    return rgb.astype(np.uint8)


def decode_rgb(path: Path) -> NDArray[np.uint8]:
    """Decode an image file to an upright HxWx3 uint8 RGB array, as ``cv2.imread`` (then
    BGR -> RGB) does: EXIF orientation applied, CMYK converted with OpenCV's formula."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            orientation = _orientation(im)
            if im.mode == "CMYK" and im.format == "JPEG":
                rgb = _cmyk_like_opencv(im)
            elif im.mode.startswith("I;16"):
                # 16-bit greyscale: OpenCV keeps the high byte (Pillow's RGB conversion clips)
                grey = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
                rgb = np.repeat(grey[:, :, None], 3, axis=2)
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"{path.name}: cannot decode image: {exc}") from None
    return orient(rgb, orientation)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image (EXIF orientation applied), from the header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = int(im.size[0]), int(im.size[1])
            return (h, w) if _orientation(im) >= 5 else (w, h)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise InputError(f"{path.name}: cannot read image header: {exc}") from None


def _axis(n_in: int, n_out: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    import numpy as np

    scale = n_in / n_out
    f = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    i0 = np.floor(f).astype(np.int64)
    frac = f - i0
    low = i0 < 0
    i0[low] = 0
    frac[low] = 0.0
    high = i0 >= n_in - 1
    i0[high] = n_in - 1
    frac[high] = 0.0
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, frac.astype(np.float32)


def resize_bilinear(img: NDArray[Any], out_w: int, out_h: int) -> NDArray[np.float32]:
    """Bilinear resize (OpenCV ``INTER_LINEAR`` grid) of an HxWxC array; returns float32."""
    import numpy as np

    h, w = img.shape[:2]
    src = img.astype(np.float32, copy=False)
    if (out_w, out_h) == (w, h):
        return src.copy()
    y0, y1, fy = _axis(h, out_h)
    x0, x1, fx = _axis(w, out_w)
    fy = fy[:, None, None]
    fx = fx[None, :, None]
    top = src[y0]
    bottom = src[y1]
    rows = top + (bottom - top) * fy  # out_h x w x C
    left = rows[:, x0]
    right = rows[:, x1]
    return left + (right - left) * fx


RESIZES = ("letterbox", "stretch")
PLACEMENTS = ("top-left", "center")
NEW_SIZES = ("floor", "round")
CHANNEL_ORDERS = ("RGB", "BGR")
VALUE_RANGES = ("0-255", "0-1")


@dataclass(frozen=True)
class Preprocess:
    """One image -> one CHW float32 tensor, as parameters.

    - ``resize``: ``letterbox`` keeps the aspect ratio (``r = min(size/h, size/w)``; the new
      size is ``int(w*r)`` with ``new_size = "floor"`` (YOLOX) or ``round(w*r)`` with
      ``"round"`` (Ultralytics)) and pads to ``size x size`` with ``pad`` (0..255), the image
      at the ``top-left`` or ``center`` (left/top padding ``round(d/2 - 0.1)``, Ultralytics'
      rule); ``stretch`` resizes to ``size x size`` ignoring the aspect ratio.
    - bilinear on OpenCV's ``INTER_LINEAR`` grid; ``round_to_uint8``: round the resized pixels
      to 8 bits as ``cv2.resize`` on a uint8 image does.
    - ``channel_order`` of the tensor, ``value_range`` ``0-255`` (raw) or ``0-1`` (divided by
      255), then ``(x - mean[c]) / std[c]`` when ``mean``/``std`` are given (3 values each, in
      the tensor's channel order, in the value range's units).
    """

    resize: str = "letterbox"
    size: int = 640
    placement: str = "center"
    new_size: str = "round"
    pad: int = 114
    channel_order: str = "RGB"
    value_range: str = "0-1"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    round_to_uint8: bool = True

    def problems(self) -> list[str]:
        """What is wrong with these parameters (empty when they are usable)."""
        out = []
        for name, value, allowed in (
            ("resize", self.resize, RESIZES), ("placement", self.placement, PLACEMENTS),
            ("new_size", self.new_size, NEW_SIZES), ("channel_order", self.channel_order, CHANNEL_ORDERS),
            ("value_range", self.value_range, VALUE_RANGES),
        ):
            if value not in allowed:
                out.append(f"`{name}` must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        if self.size < 1:
            out.append(f"`size` must be > 0, got {self.size}")
        if not 0 <= self.pad <= 255:
            out.append(f"`pad` must be in 0..255, got {self.pad}")
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if vals and len(vals) != 3:
                out.append(f"`{name}` must be 3 numbers (one per channel) or empty, got {list(vals)}")
        if bool(self.mean) != bool(self.std):
            out.append("`mean` and `std` go together: give both or neither")
        if any(v == 0 for v in self.std):
            out.append(f"`std` must not contain 0, got {list(self.std)}")
        return out

    def meta(self) -> dict[str, Any]:
        """The parameters as recorded in ``meta.json``."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["geometry"] = self.resize
        return d

    def apply(self, rgb: NDArray[np.uint8]) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """(CHW float32 tensor, the sample's geometry for ``meta.json``: ``scale``, ``offset``)."""
        import numpy as np

        size = self.size
        h, w = rgb.shape[:2]
        geo: dict[str, Any]
        if self.resize == "stretch":
            canvas = resize_bilinear(rgb, size, size)
            if self.round_to_uint8:
                canvas = np.clip(np.floor(canvas + 0.5), 0, 255)
            geo = {"scale": [size / w, size / h]}
        else:
            r = min(size / h, size / w)
            if self.new_size == "floor":
                nw, nh = max(1, int(w * r)), max(1, int(h * r))
            else:
                nw, nh = max(1, round(w * r)), max(1, round(h * r))
            resized = resize_bilinear(rgb, nw, nh)
            if self.round_to_uint8:
                resized = np.clip(np.floor(resized + 0.5), 0, 255)
            left = top = 0
            if self.placement == "center":
                left, top = round((size - nw) / 2 - 0.1), round((size - nh) / 2 - 0.1)
            canvas = np.full((size, size, 3), float(self.pad), dtype=np.float32)
            canvas[top : top + nh, left : left + nw] = resized
            geo = {"scale": r}
            if self.placement == "center":
                geo["offset"] = [left, top]
        if self.channel_order == "BGR":
            canvas = canvas[:, :, ::-1]
        out = canvas.transpose(2, 0, 1)
        if self.value_range == "0-1":
            out = out / np.float32(255.0)
        if self.mean:
            mean = np.asarray(self.mean, np.float32)[:, None, None]
            out = (out - mean) / np.asarray(self.std, np.float32)[:, None, None]
        return out.astype(np.float32, copy=False), geo


# The parameter sets of the shipped models (builder `preprocess`, param `preset`).
PRESETS: dict[str, Preprocess] = {
    # YOLOX (its `preproc`): top-left letterbox, int() size, pad 114, BGR, raw 0-255
    "yolox": Preprocess("letterbox", 416, "top-left", "floor", 114, "BGR", "0-255", (), (), True),
    # MLPerf RetinaNet (`pre_process_openimages_retinanet`): 800x800 stretch, RGB, 0-1, in float
    "retinanet": Preprocess("stretch", 800, "top-left", "floor", 0, "RGB", "0-1", (), (), False),
    # Ultralytics YOLOv8/11 (`LetterBox(auto=False, center=True)`): centred, round() size, pad 114, RGB, 0-1
    "ultralytics": Preprocess("letterbox", 640, "center", "round", 114, "RGB", "0-1", (), (), True),
}


def letterbox(rgb: NDArray[np.uint8], size: int, pad: float) -> tuple[NDArray[np.float32], float]:
    """YOLOX preprocessing of an RGB uint8 image: (CHW float32 BGR tensor, scale); the
    ``yolox`` preset at ``size`` and ``pad``."""
    spec = replace(PRESETS["yolox"], size=size, pad=int(pad))
    tensor, geo = spec.apply(rgb)
    return tensor, float(geo["scale"])


def retinanet(rgb: NDArray[np.uint8], size: int) -> NDArray[np.float32]:
    """MLPerf RetinaNet preprocessing: the ``retinanet`` preset at ``size``."""
    return replace(PRESETS["retinanet"], size=size).apply(rgb)[0]


# ---------------------------------------------------------------------------------------------
# The parallel writer.


def _pwrite_all(fd: int, data: NDArray[Any], offset: int) -> None:
    view = data.data.cast("B")  # the array's own buffer (C-contiguous: ascontiguousarray)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _work(
    args: tuple[Preprocess, str, tuple[int, int, int, int], list[Any]],
) -> list[tuple[int, dict[str, Any], int, int]]:
    """Process a chunk of samples; writes each tensor into the shared file at its offset."""
    import numpy as np

    spec, out_path, shape, items = args
    _n, c, hh, ww = shape
    sample_bytes = c * hh * ww * 4
    done = []
    fd = os.open(out_path, os.O_WRONLY)
    try:
        for index, image_path, exp_w, exp_h in items:
            rgb = decode_rgb(Path(image_path))
            h, w = rgb.shape[:2]
            if (w, h) != (exp_w, exp_h):
                raise InputError(
                    f"{Path(image_path).name}: decoded size {w}x{h} does not match the "
                    f"annotations' {exp_w}x{exp_h}"
                )
            tensor, geo = spec.apply(rgb)
            tensor = np.ascontiguousarray(tensor, dtype=np.float32)
            if tensor.shape != (c, hh, ww):
                raise InputError(f"{Path(image_path).name}: preprocessing made {tensor.shape}, expected {(c, hh, ww)}")
            _pwrite_all(fd, tensor, index * sample_bytes)
            done.append((index, geo, w, h))
    finally:
        os.close(fd)
    return done


def _chunks(items: Sequence[Any], jobs: int) -> list[list[Any]]:
    if not items:
        return []
    per = max(1, min(16, len(items) // (jobs * 4) or 1))
    return [list(items[i : i + per]) for i in range(0, len(items), per)]


def write_tensors(
    *,
    spec: Preprocess,
    dataset: Path,
    images: Sequence[dict[str, Any]],
    out: Path,
    jobs: int,
    log: Callable[[str], None],
    extra_meta: dict[str, Any],
) -> dict[str, Any]:
    """Preprocess ``images`` (annotation entries, in sample order) into ``out/tensors.bin``.

    Writes ``out/meta.json`` and returns the meta document. ``jobs`` worker processes share
    the work; the output bytes do not depend on ``jobs``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    problems = spec.problems()
    if problems:
        raise InputError(f"preprocessing parameters: {'; '.join(problems)}")
    n = len(images)
    if n == 0:
        raise InputError("annotations.json: empty dataset, nothing to preprocess")
    channels, size = 3, spec.size
    shape = (n, channels, size, size)
    items = []
    for i, img in enumerate(images):
        path = Path(dataset) / img["file_name"]
        if not path.is_file():
            raise InputError(f"{img['file_name']}: image listed in annotations.json is missing from the dataset")
        items.append((i, str(path), int(img["width"]), int(img["height"])))
    out_path = Path(out) / TENSORS_FILE
    nbytes = n * channels * size * size * 4
    with open(out_path, "wb") as fh:
        fh.truncate(nbytes)
    tasks = [(spec, str(out_path), shape, chunk) for chunk in _chunks(items, max(1, jobs))]
    results: list[tuple[int, dict[str, Any], int, int]] = []
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            results.extend(_work(t))
    else:
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
            for done in pool.map(_work, tasks):
                results.extend(done)
    results.sort(key=lambda r: r[0])
    if [r[0] for r in results] != list(range(n)):
        raise InputError(f"{TENSORS_FILE}: preprocessing produced {len(results)} of {n} samples")
    log(f"preprocessed {n} images into {TENSORS_FILE} ({nbytes} bytes, {jobs} jobs)")
    samples = []
    for (_, geo, w, h), img in zip(results, images, strict=True):  # one result per image (checked above)
        samples.append({"file_name": img["file_name"], "height": h, "image_id": img["id"], "width": w, **geo})
    meta = {
        "dtype": "float32",
        "layout": "NCHW",
        "shape": list(shape),
        "samples": samples,
        **extra_meta,
    }
    (Path(out) / META_FILE).write_text(json.dumps(meta, sort_keys=True) + "\n", encoding="utf-8")
    # Sanity: the file has exactly the promised size.
    if out_path.stat().st_size != nbytes:
        raise InputError(f"{TENSORS_FILE}: wrote {out_path.stat().st_size} bytes, expected {nbytes}")
    return meta


def preprocess_dataset(
    *, spec: Preprocess, dataset: Path, annotations: Path, count: int, out: Path, jobs: int,
    log: Callable[[str], None], extra_meta: dict[str, Any],
) -> dict[str, Any]:
    """The body of the preprocessing builders: the first ``count`` images (0 = all) of the
    ``annotations`` input's ``annotations.json``, preprocessed with ``spec`` into ``out``."""
    from mlbuild.harness import coco

    doc = coco.load_annotations(Path(annotations))
    items = doc["images"][:count] if count else doc["images"]
    return write_tensors(spec=spec, dataset=Path(dataset), images=items, out=Path(out), jobs=max(1, jobs), log=log,
                         extra_meta=extra_meta)


def read_meta(inp: Path) -> tuple[dict[str, Any], Path]:
    """Read and check a preprocessed-tensors input: returns (meta, path of tensors.bin)."""
    inp = Path(inp)
    meta_path = inp / META_FILE
    tensors = inp / TENSORS_FILE
    if not meta_path.is_file():
        raise InputError(f"{inp.name}: no `{META_FILE}` in the preprocessed input")
    if not tensors.is_file():
        raise InputError(f"{inp.name}: no `{TENSORS_FILE}` in the preprocessed input")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{META_FILE}: cannot read: {exc}") from None
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(v, int) and v >= 0 for v in shape)):
        raise InputError(f"{META_FILE}: `shape` must be 4 non-negative integers, got {shape!r}")
    if meta.get("dtype") != "float32":
        raise InputError(f"{META_FILE}: `dtype` must be `float32`, got {meta.get('dtype')!r}")
    if meta.get("layout", "NCHW") != "NCHW":
        raise InputError(f"{META_FILE}: `layout` must be `NCHW`, got {meta.get('layout')!r}")
    n, c, h, w = shape
    if n == 0:
        raise InputError(f"{META_FILE}: empty dataset, `shape` has 0 samples")
    samples = meta.get("samples")
    if not isinstance(samples, list) or len(samples) != n:
        got = len(samples) if isinstance(samples, list) else samples
        raise InputError(f"{META_FILE}: `samples` has {got} entries but `shape` says {n}")
    expected = n * c * h * w * 4
    actual = tensors.stat().st_size
    if actual != expected:
        raise InputError(
            f"{TENSORS_FILE}: size is {actual} bytes, expected {expected} "
            f"(shape {n}x{c}x{h}x{w} float32 from {META_FILE})"
        )
    return meta, tensors
