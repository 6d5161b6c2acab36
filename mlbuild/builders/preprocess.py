"""Image preprocessing as parameters -> ``tensors.bin`` + ``meta.json``.

The generic builder behind ``letterbox`` (YOLOX) and ``retinanet-preprocess`` (MLPerf
RetinaNet): ``preset`` picks a named parameter set (``harness.images.PRESETS``: ``yolox``,
``retinanet``, ``ultralytics``) and every other parameter given overrides it (empty string /
negative number / empty list: the preset's value). For each of the first ``count`` images
(0 = all) of ``annotations.json``, in its order:

1. decode as ``cv2.imread`` does (EXIF orientation applied; ``harness.images.decode_rgb``);
2. ``resize``: ``letterbox`` (keep the aspect ratio, ``new_size`` ``floor`` or ``round``,
   pad with ``pad`` at the ``top-left`` or ``center``) or ``stretch`` (to ``size x size``),
   bilinear on OpenCV's ``INTER_LINEAR`` grid, optionally rounded to 8 bits;
3. ``channel_order`` RGB or BGR, ``value_range`` 0-255 or 0-1, then ``(x - mean) / std``.

``meta.json`` records the resolved parameters, ``geometry`` (``letterbox`` / ``stretch``) and
each sample's ``scale`` (letterbox: ``r``; stretch: ``[size/width, size/height]``) and, for a
centred letterbox, ``offset`` ``[left, top]``: the decoders map boxes back with them.
Uses ``ctx.jobs`` processes; the bytes do not depend on it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError
from mlbuild.harness import params as hparams

NAME = "preprocess"
VERSION = 1
INPUTS = {
    "dataset": "image root directory (annotation file_name entries are relative to it)",
    "annotations": "directory with annotations.json (defines the sample order)",
}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "preset": Param(str, "ultralytics", "named parameter set the others override",
                    ("yolox", "retinanet", "ultralytics")),
    "resize": Param(str, "", "letterbox (keep aspect, pad) or stretch (empty = preset's)",
                    ("", "letterbox", "stretch")),
    "size": Param(int, 0, "side of the square model input (0 = preset's)", min=0, max=16384),
    "placement": Param(str, "", "letterbox: image at the top-left or center (empty = preset's)",
                       ("", "top-left", "center")),
    "new_size": Param(str, "", "letterbox: resized size int(w*r) `floor` (YOLOX) or round(w*r) `round` (Ultralytics)",
                      ("", "floor", "round")),
    "pad": Param(int, -1, "letterbox fill value 0..255 (negative = preset's)", min=-1, max=255),
    "channel_order": Param(str, "", "tensor channel order (empty = preset's)", ("", "RGB", "BGR")),
    "value_range": Param(str, "", "0-255 (raw) or 0-1 (divided by 255) (empty = preset's)", ("", "0-255", "0-1")),
    "mean": Param(list, [], "3 per-channel means subtracted after value_range (empty = preset's)"),
    "std": Param(list, [], "3 per-channel std-devs divided by after mean (empty = preset's)"),
    "round_to_uint8": Param(str, "", "round resized pixels to 8 bits as cv2.resize on uint8 (empty = preset's)",
                            ("", "yes", "no")),
    "count": Param(int, 0, "preprocess only the first N images of annotations.json (0 = all)", min=0),
}
NEEDS_ENV = True
NEEDS_NETWORK = False


def _floats(name: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise InputError(f"builder `{NAME}`: param `{name}` must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


def spec_from_params(p: dict[str, Any]) -> Any:
    """The :class:`harness.images.Preprocess` of resolved params (preset, then overrides)."""
    from mlbuild.harness import images as himages

    spec = himages.PRESETS[p["preset"]]
    names = ("resize", "placement", "new_size", "channel_order", "value_range")
    over: dict[str, Any] = {k: p[k] for k in names if p[k]}
    if p["size"] > 0:
        over["size"] = p["size"]
    if p["pad"] >= 0:
        over["pad"] = p["pad"]
    for k in ("mean", "std"):
        vals = _floats(k, p[k])
        if vals:
            over[k] = vals
    if p["round_to_uint8"]:
        over["round_to_uint8"] = p["round_to_uint8"] == "yes"
    spec = replace(spec, **over)
    problems = spec.problems()
    if problems:
        raise InputError(f"builder `{NAME}`: {'; '.join(problems)}")
    return spec


def build(ctx: BuildContext) -> None:
    p = hparams.resolve(NAME, PARAMS, ctx.params, {"count": hparams.non_negative})
    spec = spec_from_params(p)
    from mlbuild.harness import images as himages

    himages.preprocess_dataset(
        spec=spec, dataset=Path(ctx.inputs["dataset"]), annotations=Path(ctx.inputs["annotations"]),
        count=p["count"], out=Path(ctx.out), jobs=int(ctx.jobs), log=ctx.log,
        extra_meta=dict(spec.meta(), count=p["count"], preprocess=p["preset"]),
    )
