"""Output decoders: a model's raw outputs -> detections in original-image pixels.

A decoder is chosen by the run param ``decoder`` and registered by name in :data:`DECODERS`.
The protocol (:class:`Decoder`) is small:

- ``name``, ``default_score_threshold`` (used when ``score_threshold`` is negative),
  ``mlperf_model`` (the model name the LoadGen's ``mlperf.conf`` is read for) and ``batched``
  (whether the outputs carry a batch dimension; if not, a run uses batch size 1);
- ``check(outputs, input_size, model_name)`` -> the output names to fetch, in the order
  ``decode`` wants them; it raises :class:`InputError` (naming the model, the output, what was
  expected and what was found) before any inference when the model's outputs do not fit;
- ``decode(outputs, geometry)`` -> :class:`Detections` for one sample: ``outputs`` are that
  sample's arrays (batch dimension removed when ``batched``), ``geometry`` maps the model's
  input pixels back to the original image (:class:`Geometry`, from ``meta.json``).

:func:`records` turns detections into MLPerf's 7-value accuracy records. Shipped decoders:

- ``yolox``: YOLOX's grid output ``[N, A, 5 + C]`` (:class:`mlbuild.harness.postprocess.YoloxDecoder`);
- ``boxes-scores-labels``: post-processed detections (RetinaNet, SSD): outputs ``boxes [k, 4]``
  (xmin, ymin, xmax, ymax in input pixels), ``scores [k]``, ``labels [k]``; no batch dimension.
  ``retinanet`` is its old name (run param ``model_kind``) and still accepted;
- ``ultralytics``: the Ultralytics YOLO head (v8, v11 exports): ``[N, 4 + C, A]`` with rows
  ``cx, cy, w, h`` in input pixels then ``C`` class scores (already sigmoid, no objectness).

Labels: a decoder returns category ids. The two grid decoders return the class index mapped
through COCO's 80 -> 91 id table when the model has 80 classes, else the class index itself;
``boxes-scores-labels`` returns the model's ``labels`` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mlbuild.errors import InputError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

# Old `model_kind` values -> decoder names.
ALIASES = {"retinanet": "boxes-scores-labels"}
GRID_STRIDES = (8, 16, 32)
DECODER_HINT = "set run param `decoder` to the model's output format (yolox, boxes-scores-labels, ultralytics)"

OutputSpec = Mapping[str, tuple[list[Any], str]]  # name -> (shape, ONNX type string)


@dataclass(frozen=True)
class Detections:
    """One sample's detections: ``boxes [k, 4]`` xmin, ymin, xmax, ymax in original-image
    pixels, ``scores [k]``, ``labels [k]`` (category ids), best first."""

    boxes: NDArray[Any]
    scores: NDArray[Any]
    labels: NDArray[Any]


@dataclass(frozen=True)
class Geometry:
    """How a sample's model input relates to its original image (from ``meta.json``).

    ``letterbox``: the image was resized by ``scale`` and placed at ``offset`` (left, top) of
    the input; ``stretch``: resized to the whole input (``scale`` = input / original per axis).
    """

    kind: str
    input_w: int
    input_h: int
    width: int
    height: int
    scale: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)

    def to_original(self, boxes: NDArray[Any], *, clip: bool) -> NDArray[Any]:
        """``[k, 4]`` xyxy boxes in input pixels -> original-image pixels."""
        import numpy as np

        if self.kind == "letterbox":
            b = np.asarray(boxes, dtype=np.float32)
            if self.offset != (0.0, 0.0):
                b = b - np.asarray(self.offset * 2, dtype=np.float32)
            b = b / np.float32(self.scale[0])
        else:
            # float64: x * (w / input_w) normalised by w again gives x / input_w exactly in float32
            b = np.asarray(boxes, dtype=np.float64) * np.array(
                [self.width / self.input_w, self.height / self.input_h] * 2
            )
        if clip:
            b[:, 0::2] = np.clip(b[:, 0::2], 0, self.width)
            b[:, 1::2] = np.clip(b[:, 1::2], 0, self.height)
        return b


def geometry_kind(meta: Mapping[str, Any]) -> str:
    """``letterbox`` or ``stretch``: ``meta["geometry"]``, or derived from the older
    ``preprocess`` names (``letterbox``, ``retinanet``)."""
    kind = meta.get("geometry") or {"letterbox": "letterbox", "retinanet": "stretch"}.get(meta.get("preprocess", ""))
    if kind not in ("letterbox", "stretch"):
        raise InputError(
            f"meta.json: cannot tell how the tensors map to the images (geometry {meta.get('geometry')!r}, "
            f"preprocess {meta.get('preprocess')!r}); expected geometry `letterbox` or `stretch`",
            hints=["rebuild the preprocessed tensors with the `preprocess` builder"],
        )
    return str(kind)


def geometries(meta: Mapping[str, Any]) -> list[Geometry]:
    """One :class:`Geometry` per sample of ``meta.json``; raises InputError on a bad sample."""
    kind = geometry_kind(meta)
    _n, _c, ih, iw = meta["shape"]
    out = []
    for i, s in enumerate(meta["samples"]):
        sc = s.get("scale")
        if kind == "letterbox":
            ok = isinstance(sc, (int, float)) and not isinstance(sc, bool) and sc > 0
            scale = (float(sc), float(sc)) if ok else (0.0, 0.0)
        else:
            ok = isinstance(sc, list) and len(sc) == 2 and all(isinstance(v, (int, float)) and v > 0 for v in sc)
            scale = (float(sc[0]), float(sc[1])) if ok else (0.0, 0.0)
        if not ok:
            raise InputError(f"meta.json: sample {i} has no valid {kind} `scale` (found {sc!r})")
        off = s.get("offset", [0, 0])
        if not (isinstance(off, list) and len(off) == 2 and all(isinstance(v, (int, float)) for v in off)):
            raise InputError(f"meta.json: sample {i} has an invalid `offset` {off!r}; expected [left, top]")
        out.append(Geometry(kind, int(iw), int(ih), int(s["width"]), int(s["height"]), scale,
                            (float(off[0]), float(off[1]))))
    return out


def records(det: Detections, sample_index: int, geometry: Geometry) -> NDArray[np.float32]:
    """Detections -> float32 ``[k, 7]`` MLPerf records
    ``[sample_index, ymin, xmin, ymax, xmax, score, label]``, boxes normalised by the image size."""
    import numpy as np

    b = det.boxes
    w, h = geometry.width, geometry.height
    rec = np.empty((len(det.scores), 7), dtype=np.float32)
    rec[:, 0] = sample_index
    rec[:, 1] = b[:, 1] / h
    rec[:, 2] = b[:, 0] / w
    rec[:, 3] = b[:, 3] / h
    rec[:, 4] = b[:, 2] / w
    rec[:, 5] = det.scores
    rec[:, 6] = det.labels
    return rec


class Decoder(Protocol):
    name: ClassVar[str]
    default_score_threshold: ClassVar[float]
    mlperf_model: ClassVar[str]
    batched: ClassVar[bool]

    def check(self, outputs: OutputSpec, input_size: int, model_name: str) -> list[str]: ...

    def decode(self, outputs: Sequence[NDArray[Any]], geometry: Geometry) -> Detections: ...


def grid_anchors(input_size: int) -> int:
    """Anchor points of the stride-8/16/32 grids of a square ``input_size`` input."""
    return sum((input_size // s) ** 2 for s in GRID_STRIDES)


def _category_ids(num_classes: int) -> NDArray[np.float32]:
    import numpy as np

    from mlbuild.harness.coco import COCO80_IDS

    if num_classes == len(COCO80_IDS):
        return np.asarray(COCO80_IDS, dtype=np.float32)
    return np.arange(num_classes, dtype=np.float32)


def _one_float_output(outputs: OutputSpec, model_name: str, decoder: str, want: str) -> tuple[str, list[Any]]:
    if len(outputs) != 1:
        raise InputError(
            f"{model_name}: decoder `{decoder}` expects one output {want}, the model has {len(outputs)} "
            f"({', '.join(f'`{o}`' for o in sorted(outputs))})",
            hints=[DECODER_HINT],
        )
    ((name, (shape, typ)),) = outputs.items()
    if typ != "tensor(float)" or len(shape) != 3:
        raise InputError(
            f"{model_name}: decoder `{decoder}` expects output `{name}` as float {want}, found {typ} {shape}",
            hints=[DECODER_HINT],
        )
    return name, shape


class YoloxGrid:
    """``yolox``: YOLOX's raw grid output ``[N, A, 5 + C]`` (see ``postprocess.YoloxDecoder``);
    clipped to the image."""

    name: ClassVar[str] = "yolox"
    default_score_threshold: ClassVar[float] = 0.001
    mlperf_model: ClassVar[str] = "yolo"  # MLPerf's name: the embedded mlperf.conf knows `yolo`, never `yolox`
    batched: ClassVar[bool] = True

    def __init__(self, *, score_threshold: float, nms_iou: float, max_detections: int) -> None:
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_detections = max_detections
        self._grid: Any = None

    def check(self, outputs: OutputSpec, input_size: int, model_name: str) -> list[str]:
        name, shape = _one_float_output(outputs, model_name, self.name, "[N, A, 5+C]")
        anchors = grid_anchors(input_size)
        if isinstance(shape[1], int) and shape[1] != anchors:
            hint = []
            if isinstance(shape[2], int) and shape[2] == anchors:
                hint = ["this looks like an Ultralytics head [N, 4+C, A]: set run param `decoder = \"ultralytics\"`"]
            raise InputError(
                f"{model_name}: YOLOX output `{name}` has {shape[1]} anchor points, expected {anchors} "
                f"for a {input_size}x{input_size} input", hints=hint)
        if isinstance(shape[2], int) and shape[2] < 6:
            raise InputError(f"{model_name}: YOLOX output `{name}` has {shape[2]} values per anchor, expected 5 + C")
        return [name]

    def decode(self, outputs: Sequence[NDArray[Any]], geometry: Geometry) -> Detections:
        import numpy as np

        from mlbuild.harness.postprocess import YoloxDecoder, nms

        out = outputs[0]
        classes = int(out.shape[-1]) - 5
        if self._grid is None or self._grid.num_classes != classes:
            self._grid = YoloxDecoder(
                geometry.input_w, score_threshold=self.score_threshold, nms_iou=self.nms_iou,
                max_detections=self.max_detections, num_classes=classes,
                category_ids=tuple(int(v) for v in _category_ids(classes)),
            )
        g = self._grid
        boxes, scores, cls = g.decode(out)
        keep = nms(boxes, scores, cls, self.nms_iou, self.max_detections)
        return Detections(geometry.to_original(boxes[keep], clip=True), scores[keep],
                          np.asarray(g.category_ids[cls[keep]], dtype=np.float32))


class BoxesScoresLabels:
    """``boxes-scores-labels``: post-processed outputs ``boxes [k, 4]`` (xmin, ymin, xmax, ymax
    in input pixels), ``scores [k]`` and ``labels [k]`` (category ids), no batch dimension, as
    MLPerf's RetinaNet ONNX model. Detections below the threshold are dropped, the best
    ``max_detections`` kept (0 = all); no NMS (the model did it), no clipping."""

    name: ClassVar[str] = "boxes-scores-labels"
    default_score_threshold: ClassVar[float] = 0.05
    mlperf_model: ClassVar[str] = "retinanet"
    batched: ClassVar[bool] = False
    OUTPUTS: ClassVar[tuple[str, ...]] = ("boxes", "scores", "labels")

    def __init__(self, *, score_threshold: float, nms_iou: float, max_detections: int) -> None:
        self.score_threshold = score_threshold
        self.max_detections = max_detections

    def check(self, outputs: OutputSpec, input_size: int, model_name: str) -> list[str]:
        missing = [k for k in self.OUTPUTS if k not in outputs]
        if missing:
            raise InputError(
                f"{model_name}: decoder `{self.name}` expects outputs `boxes`, `scores`, `labels`; missing "
                + ", ".join(f"`{m}`" for m in missing)
                + f" (the model has {', '.join(f'`{o}`' for o in sorted(outputs))})",
                hints=[DECODER_HINT],
            )
        shape, _t = outputs["boxes"]
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != 4):
            raise InputError(f"{model_name}: output `boxes` must be [k, 4] (no batch dimension), found {shape}")
        return list(self.OUTPUTS)

    def decode(self, outputs: Sequence[NDArray[Any]], geometry: Geometry) -> Detections:
        import numpy as np

        boxes = np.asarray(outputs[0], dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(outputs[1], dtype=np.float32).reshape(-1)
        labels = np.asarray(outputs[2]).reshape(-1)
        keep = scores >= self.score_threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if self.max_detections > 0 and len(scores) > self.max_detections:
            order = np.argsort(-scores, kind="stable")[: self.max_detections]
            boxes, scores, labels = boxes[order], scores[order], labels[order]
        return Detections(geometry.to_original(boxes, clip=False), scores, labels.astype(np.float32))


class UltralyticsHead:
    """``ultralytics``: the YOLOv8/YOLO11 detection head as exported to ONNX: ``[N, 4 + C, A]``,
    per anchor ``cx, cy, w, h`` in input pixels and ``C`` sigmoid class scores (no objectness).
    Score = best class score (one class per box), keep scores >= threshold, per-class greedy NMS
    at ``nms_iou``, best ``max_detections`` (0 = all), then undo the letterbox and clip."""

    name: ClassVar[str] = "ultralytics"
    default_score_threshold: ClassVar[float] = 0.001
    mlperf_model: ClassVar[str] = "yolo"
    batched: ClassVar[bool] = True

    def __init__(self, *, score_threshold: float, nms_iou: float, max_detections: int) -> None:
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_detections = max_detections

    def check(self, outputs: OutputSpec, input_size: int, model_name: str) -> list[str]:
        name, shape = _one_float_output(outputs, model_name, self.name, "[N, 4+C, A]")
        anchors = grid_anchors(input_size)
        if isinstance(shape[2], int) and shape[2] != anchors:
            hint = []
            if isinstance(shape[1], int) and shape[1] == anchors:
                hint = ["this looks like a YOLOX head [N, A, 5+C]: set run param `decoder = \"yolox\"`"]
            raise InputError(
                f"{model_name}: Ultralytics output `{name}` has {shape[2]} anchor points (last dimension), "
                f"expected {anchors} for a {input_size}x{input_size} input", hints=hint)
        if isinstance(shape[1], int) and shape[1] < 5:
            raise InputError(f"{model_name}: Ultralytics output `{name}` has {shape[1]} rows, expected 4 + C")
        return [name]

    def decode(self, outputs: Sequence[NDArray[Any]], geometry: Geometry) -> Detections:
        import numpy as np

        from mlbuild.harness.postprocess import nms

        out = np.asarray(outputs[0], dtype=np.float32)
        cls_scores = out[4:]  # [C, A]
        cls = cls_scores.argmax(axis=0)
        scores = cls_scores[cls, np.arange(out.shape[1])]
        cand = np.flatnonzero(scores >= self.score_threshold)
        c = out[:4, cand].T
        boxes = np.concatenate([c[:, 0:2] - c[:, 2:4] / 2, c[:, 0:2] + c[:, 2:4] / 2], axis=1)
        scores, cls = scores[cand], cls[cand]
        keep = nms(boxes, scores, cls, self.nms_iou, self.max_detections)
        labels = _category_ids(int(out.shape[0]) - 4)[cls[keep]]
        return Detections(geometry.to_original(boxes[keep], clip=True), scores[keep], labels)


DECODERS: dict[str, type[Any]] = {}


def register(cls: type[Any]) -> type[Any]:
    """Register a decoder class under its ``name`` (the value of run param ``decoder``)."""
    DECODERS[cls.name] = cls
    return cls


for _cls in (YoloxGrid, BoxesScoresLabels, UltralyticsHead):
    register(_cls)


def resolve_name(decoder: str, model_kind: str = "") -> str:
    """The decoder a run uses: param ``decoder``, else the older ``model_kind`` (``yolox``,
    ``retinanet``), else ``yolox``. Both given and disagreeing is an error."""
    old = ALIASES.get(model_kind, model_kind)
    new = ALIASES.get(decoder, decoder)
    if new and old and new != old:
        raise InputError(
            f"run params: `decoder = {decoder!r}` and the older `model_kind = {model_kind!r}` disagree",
            hints=["drop `model_kind` (replaced by `decoder`)"],
        )
    name = new or old or "yolox"
    if name not in DECODERS:
        raise InputError(f"run param `decoder`: unknown decoder {name!r}; known: {', '.join(sorted(DECODERS))}")
    return name


def make(name: str, *, score_threshold: float, nms_iou: float, max_detections: int) -> Decoder:
    """An instance of decoder ``name`` (a registered name or alias)."""
    cls = DECODERS[resolve_name(name)]
    dec: Decoder = cls(score_threshold=score_threshold, nms_iou=nms_iou, max_detections=max_detections)
    return dec
