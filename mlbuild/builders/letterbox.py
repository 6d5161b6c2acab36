"""YOLOX letterbox preprocessing -> ``tensors.bin`` + ``meta.json``: the ``preprocess``
builder's ``yolox`` preset, with its ``size`` and ``pad``.

Inputs: ``dataset`` (the image root that ``file_name`` entries are relative to) and
``annotations`` (a directory with ``annotations.json``; its ``images`` order is the sample
order). For each of the first ``count`` images (0 = all):

1. decode as ``cv2.imread`` does (EXIF orientation applied; ``harness.images.decode_rgb``);
2. resize keeping the aspect ratio so it fits ``size x size`` (``r = min(size/h, size/w)``,
   new size ``int(w*r) x int(h*r)``), bilinear on OpenCV's ``INTER_LINEAR`` grid (half-pixel
   centres, no antialias), rounded to 8 bits as YOLOX's ``cv2.resize`` on uint8 does;
3. place it at the top-left of a ``size x size`` canvas filled with ``pad``;
4. reorder RGB -> BGR and store raw 0..255 values as float32 NCHW.

``meta.json`` records each sample's ``scale`` (``r``): detections are divided by it.
Uses ``ctx.jobs`` processes; the bytes do not depend on it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.harness import params as hparams

NAME = "letterbox"
VERSION = 1
INPUTS = {
    "dataset": "image root directory (annotation file_name entries are relative to it)",
    "annotations": "directory with annotations.json (defines the sample order)",
}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "size": Param(int, 416, "side of the square model input", min=1, max=16384),
    "pad": Param(int, 114, "fill value of the padding (0..255)", min=0, max=255),
    "count": Param(int, 0, "preprocess only the first N images of annotations.json (0 = all)", min=0),
}
NEEDS_ENV = True
NEEDS_NETWORK = False


def build(ctx: BuildContext) -> None:
    from mlbuild.harness import images as himages

    p = hparams.resolve(
        NAME,
        PARAMS,
        ctx.params,
        {
            "size": hparams.positive,
            "pad": lambda v: None if 0 <= v <= 255 else "must be in 0..255",
            "count": hparams.non_negative,
        },
    )
    spec = replace(himages.PRESETS["yolox"], size=p["size"], pad=p["pad"])
    himages.preprocess_dataset(
        spec=spec,
        dataset=Path(ctx.inputs["dataset"]),
        annotations=Path(ctx.inputs["annotations"]),
        count=p["count"],
        out=Path(ctx.out),
        jobs=int(ctx.jobs),
        log=ctx.log,
        extra_meta={
            "channel_order": "BGR",
            "count": p["count"],
            "pad": p["pad"],
            "placement": "top-left",
            "preprocess": "letterbox",
            "resize": "bilinear (OpenCV INTER_LINEAR grid, no antialias), rounded to uint8",
            "size": p["size"],
            "value_range": "0-255",
        },
    )
