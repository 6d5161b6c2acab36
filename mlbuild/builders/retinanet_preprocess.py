"""MLPerf RetinaNet preprocessing -> ``tensors.bin`` + ``meta.json``: the ``preprocess``
builder's ``retinanet`` preset, with its ``size``.

As the MLPerf reference (``pre_process_openimages_retinanet``): decode, convert to RGB,
resize to ``size x size`` without keeping the aspect ratio (bilinear on OpenCV's
``INTER_LINEAR`` grid, in float32), divide by 255, store float32 NCHW. Decoding is as
``cv2.imread`` (EXIF orientation applied). Inputs ``dataset`` and ``annotations`` as for ``letterbox``;
each sample's ``scale`` in ``meta.json`` is ``[size/width, size/height]``. Uses ``ctx.jobs``
processes; the bytes do not depend on it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.harness import params as hparams

NAME = "retinanet-preprocess"
VERSION = 1
INPUTS = {
    "dataset": "image root directory (annotation file_name entries are relative to it)",
    "annotations": "directory with annotations.json (defines the sample order)",
}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "size": Param(int, 800, "side of the square model input", min=1, max=16384),
    "count": Param(int, 0, "preprocess only the first N images of annotations.json (0 = all)", min=0),
}
NEEDS_ENV = True
NEEDS_NETWORK = False


def build(ctx: BuildContext) -> None:
    from mlbuild.harness import images as himages

    p = hparams.resolve(
        NAME, PARAMS, ctx.params, {"size": hparams.positive, "count": hparams.non_negative}
    )
    spec = replace(himages.PRESETS["retinanet"], size=p["size"])
    himages.preprocess_dataset(
        spec=spec,
        dataset=Path(ctx.inputs["dataset"]),
        annotations=Path(ctx.inputs["annotations"]),
        count=p["count"],
        out=Path(ctx.out),
        jobs=int(ctx.jobs),
        log=ctx.log,
        extra_meta={
            "channel_order": "RGB",
            "count": p["count"],
            "preprocess": "retinanet",
            "resize": "bilinear (OpenCV INTER_LINEAR grid, no antialias), no aspect keep",
            "size": p["size"],
            "value_range": "0-1",
        },
    )
