"""``mlperf_log_accuracy.json`` -> COCO mAP, the way MLPerf's ``accuracy-coco.py`` /
``accuracy-openimages.py`` compute it.

Each entry's ``data`` is the hex of float32 records ``[idx, ymin, xmin, ymax, xmax, score,
label]`` (normalised box, ``label`` = category id). Records are turned back into pixel
``[x, y, w, h]`` with the original image size, and evaluated with pycocotools ``COCOeval``
(``bbox``) on the images that were run. A sample issued more than once counts once.

The ground truth's categories are what is scored: each record's label goes through the run's
label map (:mod:`mlbuild.harness.categories`; default: a label is the category of that id), and a
detection whose label maps to no ground-truth category is dropped and counted (``dropped``),
as pycocotools' ``COCOeval`` ignores detections of categories the ground truth lacks.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbuild.errors import InputError, RunError

if TYPE_CHECKING:
    from mlbuild.harness.categories import LabelMap


def read_accuracy_log(path: Path) -> dict[int, bytes]:
    """qsl_idx -> response bytes (first occurrence)."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"{Path(path).name}: cannot read the accuracy log: {exc}") from None
    out: dict[int, bytes] = {}
    for e in entries:
        idx = int(e["qsl_idx"])
        if idx in out:
            continue
        try:
            out[idx] = bytes.fromhex(e.get("data", ""))
        except ValueError:
            raise RunError(f"{Path(path).name}: entry for qsl_idx {idx} has non-hex `data`") from None
    return out


def evaluate(
    accuracy_log: Path, annotations: dict[str, Any], n_samples: int, label_map: LabelMap | None = None
) -> dict[str, Any]:
    """COCOeval over the first ``n_samples`` images of ``annotations``; labels mapped by
    ``label_map`` (None: by id).

    Returns ``{"mAP": percent, "stats": [12 COCO stats], "per_class_ap": {name: percent|None},
    "samples": n, "samples_logged": k, "detections": d (scored), "mismatched_index": m,
    "dropped": {"detections": x, "labels": {label: count}}}``.
    """
    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = annotations["images"]
    if n_samples > len(images):
        raise InputError(f"annotations.json: {len(images)} images, but the run has {n_samples} samples")
    logged = read_accuracy_log(accuracy_log)
    dets: list[dict[str, Any]] = []
    mismatched = 0
    gt_ids = {int(c["id"]) for c in annotations["categories"]}
    dropped: dict[int, int] = {}
    for idx in sorted(logged):
        if idx >= n_samples:
            raise RunError(f"{Path(accuracy_log).name}: qsl_idx {idx} is outside the {n_samples} samples")
        data = logged[idx]
        if len(data) % 28:
            raise RunError(
                f"{Path(accuracy_log).name}: qsl_idx {idx} carries {len(data)} bytes, not a multiple of 7 float32"
            )
        if not data:
            continue
        recs = np.frombuffer(data, dtype=np.float32).reshape(-1, 7).astype(np.float64)
        img = images[idx]
        w, h = img["width"], img["height"]
        for r in recs:
            if int(r[0]) != idx:
                mismatched += 1
            label = int(r[6])
            cat = label_map.target(label) if label_map is not None else (label if label in gt_ids else None)
            if cat is None:
                dropped[label] = dropped.get(label, 0) + 1
                continue
            ymin, xmin, ymax, xmax = r[1] * h, r[2] * w, r[3] * h, r[4] * w
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)],
                    "score": float(r[5]),
                }
            )
    img_ids = [images[i]["id"] for i in range(n_samples)]
    wanted = set(img_ids)
    gt = COCO()
    gt.dataset = {
        "images": [dict(im) for im in images[:n_samples]],
        "annotations": [
            dict(a, area=a.get("area", a["bbox"][2] * a["bbox"][3]), iscrowd=a.get("iscrowd", 0))
            for a in annotations["annotations"]
            if a["image_id"] in wanted
        ],
        "categories": annotations["categories"],
    }
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(s) for s in ev.stats]
    per_class: dict[str, Any] = {}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    names = {c["id"]: str(c.get("name", c["id"])) for c in annotations["categories"]}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        valid = p[p > -1]
        per_class[names.get(cat_id, str(cat_id))] = round(float(valid.mean()) * 100.0, 3) if valid.size else None
    return {
        "mAP": round(100.0 * max(stats[0], 0.0), 3),
        "stats": [round(s, 6) for s in stats],
        "per_class_ap": per_class,
        "samples": n_samples,
        "samples_logged": len(logged),
        "detections": len(dets),
        "mismatched_index": mismatched,
        "dropped": {"detections": sum(dropped.values()), "labels": {str(k): v for k, v in sorted(dropped.items())}},
        "cocoeval_summary": sink.getvalue().strip().splitlines()[-12:],
    }


def accuracy_text(result: dict[str, Any]) -> str:
    """``accuracy.txt``: COCOeval's summary lines then ``mAP=NN.NNN%`` (MLPerf's format)."""
    lines = [line for line in result.get("cocoeval_summary", []) if line.strip().startswith("Average")]
    lines.append(f"mAP={result['mAP']:.3f}%")
    return "\n".join(lines) + "\n"
