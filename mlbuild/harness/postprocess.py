"""Model outputs -> MLPerf object-detection accuracy records.

Every response carries float32 records of 7 values per detection::

    [sample_index, ymin, xmin, ymax, xmax, score, label]

with the box normalised to 0..1 by the original image's height and width (what MLPerf's
``accuracy-coco.py`` / ``accuracy-openimages.py`` read from ``mlperf_log_accuracy.json``), and
``label`` the dataset's category id (COCO ids 1..90 for YOLOX; the RetinaNet model's own label,
which is the ``openimages-mlperf.json`` category id, for RetinaNet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlbuild.harness.coco import COCO80_IDS

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

YOLOX_STRIDES = (8, 16, 32)


class YoloxDecoder:
    """Decode YOLOX ``output [1, A, 5 + C]`` into detections in original-image pixels.

    Per anchor point of the stride-8/16/32 grids: ``x, y = (o[0:2] + cell) * stride``,
    ``w, h = exp(o[2:4]) * stride`` (centre and size in the input), score = objectness x best
    class score, keep scores >= ``score_threshold``, per-class NMS at ``nms_iou`` (greedy, by
    descending score), keep the best ``max_detections``, divide by the letterbox scale and clip
    to the image.
    """

    def __init__(
        self,
        input_size: int,
        *,
        score_threshold: float,
        nms_iou: float,
        max_detections: int,
        num_classes: int = 80,
        category_ids: tuple[int, ...] = COCO80_IDS,
    ) -> None:
        import numpy as np

        grids = []
        strides = []
        for s in YOLOX_STRIDES:
            n = input_size // s
            ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
            strides.append(np.full((n * n, 1), s))
        self.grid = np.concatenate(grids).astype(np.float32)
        self.stride = np.concatenate(strides).astype(np.float32)
        self.anchors = int(self.grid.shape[0])
        self.num_classes = num_classes
        self.category_ids = np.asarray(category_ids, dtype=np.float32)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)

    def decode(self, out: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64]]:
        """One image's ``[A, 5+C]`` array -> (boxes xyxy in input pixels, scores, class index)."""
        import numpy as np

        out = np.asarray(out, dtype=np.float32).reshape(self.anchors, 5 + self.num_classes)
        # class scores are <= 1, so only anchors whose objectness passes can pass
        cand = np.flatnonzero(out[:, 4] >= self.score_threshold)
        o = out[cand]
        cls = o[:, 5:]
        cls_idx = cls.argmax(axis=1)
        scores = o[:, 4] * cls[np.arange(len(cand)), cls_idx]
        keep = scores >= self.score_threshold
        if not keep.any():
            e = np.zeros((0,), np.float32)
            return np.zeros((0, 4), np.float32), e, np.zeros((0,), np.int64)
        cand, o = cand[keep], o[keep]
        xy = (o[:, 0:2] + self.grid[cand]) * self.stride[cand]
        wh = np.exp(o[:, 2:4]) * self.stride[cand]
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
        return boxes, scores[keep], cls_idx[keep]

    def records(
        self, out: NDArray[Any], sample_index: int, scale: float, width: int, height: int
    ) -> NDArray[np.float32]:
        """One image's model output -> float32 ``[k, 7]`` accuracy records."""
        import numpy as np

        boxes, scores, cls = self.decode(out)
        keep = nms(boxes, scores, cls, self.nms_iou, self.max_detections)
        boxes = boxes[keep] / np.float32(scale)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
        rec = np.empty((len(keep), 7), dtype=np.float32)
        rec[:, 0] = sample_index
        rec[:, 1] = boxes[:, 1] / height
        rec[:, 2] = boxes[:, 0] / width
        rec[:, 3] = boxes[:, 3] / height
        rec[:, 4] = boxes[:, 2] / width
        rec[:, 5] = scores[keep]
        rec[:, 6] = self.category_ids[cls[keep]]
        return rec


def nms(
    boxes: NDArray[Any], scores: NDArray[Any], classes: NDArray[Any], iou_threshold: float, max_detections: int
) -> NDArray[np.int64]:
    """Per-class greedy NMS (native code, ``mlbuild._native.nms``); same result as
    :func:`nms_reference`, which the tests hold it against, at a fraction of the cost."""
    import numpy as np

    from mlbuild import _native

    if len(scores) == 0:
        return np.zeros((0,), dtype=np.int64)
    kept = _native.nms(
        np.ascontiguousarray(boxes, dtype=np.float32), np.ascontiguousarray(scores, dtype=np.float32),
        np.ascontiguousarray(classes, dtype=np.int64), float(iou_threshold), int(max(max_detections, 0)),
    )
    return np.asarray(kept, dtype=np.int64)


def nms_reference(
    boxes: NDArray[Any], scores: NDArray[Any], classes: NDArray[Any], iou_threshold: float, max_detections: int
) -> NDArray[np.int64]:
    """Per-class greedy NMS in numpy; returns kept indices by descending score (stable on ties).

    Greedy as torchvision's ``batched_nms``: within a class, walk the boxes by descending
    score and drop every later box whose IoU with a kept one exceeds ``iou_threshold``; boxes
    of different classes never suppress each other. Each class's pairwise IoU matrix is
    computed at once, so the Python loop only tests and masks.
    """
    import numpy as np

    n = len(scores)
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    order = np.argsort(-scores, kind="stable")  # global rank -> index
    cls_sorted = classes[order]
    by_class = np.argsort(cls_sorted, kind="stable")  # ranks grouped by class, by rank inside
    grouped = cls_sorted[by_class]
    bounds = np.flatnonzero(np.diff(grouped)) + 1
    kept_ranks = []
    b = boxes.astype(np.float32)
    for ranks in np.split(by_class, bounds):
        if ranks.size == 1:
            kept_ranks.append(ranks)
            continue
        bb = b[order[ranks]]
        x1, y1, x2, y2 = bb[:, 0], bb[:, 1], bb[:, 2], bb[:, 3]
        area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        iw = np.maximum(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), 0)
        ih = np.maximum(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), 0)
        inter = iw * ih
        union = area[:, None] + area[None, :] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            sup = np.where(union > 0, inter / union, 0.0) > iou_threshold
        sup = np.triu(sup, k=1)
        alive = np.ones(ranks.size, dtype=bool)
        for i in range(ranks.size):
            if alive[i]:
                alive &= ~sup[i]
        kept_ranks.append(ranks[alive])
    ranks = np.sort(np.concatenate(kept_ranks))
    if max_detections > 0:
        ranks = ranks[:max_detections]
    return order[ranks].astype(np.int64)


def retinanet_records(
    boxes: NDArray[Any],
    scores: NDArray[Any],
    labels: NDArray[Any],
    sample_index: int,
    size: int,
    score_threshold: float,
    max_detections: int,
) -> NDArray[np.float32]:
    """MLPerf RetinaNet ONNX outputs -> float32 ``[k, 7]`` records.

    The model returns post-processed detections: ``boxes [k, 4]`` as ``xmin, ymin, xmax, ymax``
    in ``size x size`` input pixels, ``scores [k]`` (descending), ``labels [k]`` (int64 category
    ids). As the reference (``PostProcessOpenImagesRetinanet``), detections below
    ``score_threshold`` are dropped and boxes are normalised by the input size.
    """
    import numpy as np

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    keep = scores >= score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if max_detections > 0 and len(scores) > max_detections:
        order = np.argsort(-scores, kind="stable")[:max_detections]
        boxes, scores, labels = boxes[order], scores[order], labels[order]
    rec = np.empty((len(scores), 7), dtype=np.float32)
    rec[:, 0] = sample_index
    rec[:, 1] = boxes[:, 1] / size
    rec[:, 2] = boxes[:, 0] / size
    rec[:, 3] = boxes[:, 3] / size
    rec[:, 4] = boxes[:, 2] / size
    rec[:, 5] = scores
    rec[:, 6] = labels.astype(np.float32)
    return rec
