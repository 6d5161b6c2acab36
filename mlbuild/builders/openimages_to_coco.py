"""MLPerf Open Images (RetinaNet) -> ``annotations.json`` restricted to the first ``count`` images.

Input ``dataset``: the layout MLPerf's ``vision/classification_and_detection/tools/
openimages_mlperf.sh`` (``openimages.py``) produces and its ``accuracy-openimages.py`` reads:

- ``annotations/openimages-mlperf.json``: COCO format, 264 categories whose ids are the
  0-based positions of the MLPerf class list (ids 0..263, the labels the RetinaNet model
  outputs), images with 1-based ids and ``file_name`` ``<ImageID>.jpg``, sorted by ImageID;
  annotations carry ``iscrowd`` = Open Images' ``IsGroupOf`` plus extra Open Images flags;
- ``validation/data/<ImageID>.jpg``: the images.

Output ``out/annotations.json``: images sorted by ``file_name`` (the source's ImageID order),
the first ``count`` of them (0 = all; a prefix, unlike CM's randomly drawn ``_500`` subset),
``file_name`` made relative to the dataset root (``validation/data/<ImageID>.jpg``); image
ids, sizes and category ids kept as in the source, so the model's labels are category ids;
annotations of the kept images only, with ``id, image_id, category_id, bbox, area,
iscrowd``; all categories. Every kept image must exist under ``validation/data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError
from mlbuild.harness import coco
from mlbuild.harness import params as hparams

NAME = "openimages-to-coco"
VERSION = 1
INPUTS = {"dataset": "MLPerf Open Images dir (annotations/openimages-mlperf.json, validation/data/*.jpg)"}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "count": Param(int, 0, "keep the first N images by file name (0 = all)"),
    "annotations_file": Param(str, "annotations/openimages-mlperf.json", "source annotations, relative to the dataset"),
    "images_dir": Param(str, "validation/data", "directory of the images, relative to the dataset"),
}
NEEDS_ENV = True
NEEDS_NETWORK = False


def _relative(value: str, name: str) -> Path:
    path = Path(value)
    if path.is_absolute() or ".." in path.parts or not value:
        raise InputError(f"builder `{NAME}`: param `{name}` must be a relative path inside the dataset, got {value!r}")
    return path


def build(ctx: BuildContext) -> None:
    p = hparams.resolve(NAME, PARAMS, ctx.params, {"count": hparams.non_negative})
    root = Path(ctx.inputs["dataset"])
    src_rel = _relative(p["annotations_file"], "annotations_file")
    img_rel = _relative(p["images_dir"], "images_dir")
    src = root / src_rel
    if not src.is_file():
        raise InputError(f"{src_rel}: annotations file missing from the dataset")
    doc = coco.load_annotations(src)
    rel_name = src_rel.as_posix()
    images = sorted(doc["images"], key=lambda im: im["file_name"])
    if p["count"]:
        if p["count"] > len(images):
            ctx.log(f"count {p['count']} > {len(images)} images in {rel_name}; keeping all")
        images = images[: p["count"]]
    kept = {}
    out_images = []
    for im in images:
        rel = (img_rel / im["file_name"]).as_posix()
        if not (root / rel).is_file():
            raise InputError(f"{rel_name}: image `{rel}` (id {im['id']}) is missing from the dataset")
        kept[im["id"]] = rel
        out_images.append({"file_name": rel, "height": im["height"], "id": im["id"], "width": im["width"]})
    out_anns: list[dict[str, Any]] = []
    for a in doc["annotations"]:
        if a["image_id"] not in kept:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        iscrowd = a.get("iscrowd", 0)
        if isinstance(iscrowd, bool) or iscrowd not in (0, 1):
            raise InputError(f"{rel_name}: annotation {a.get('id')!r} has `iscrowd` {iscrowd!r}, expected 0 or 1")
        out_anns.append(
            {
                "area": float(a.get("area", w * h)),
                "bbox": [x, y, w, h],
                "category_id": a["category_id"],
                "id": a.get("id", len(out_anns) + 1),
                "image_id": a["image_id"],
                "iscrowd": int(iscrowd),
            }
        )
    out_anns.sort(key=lambda a: a["id"])
    categories = [{"id": c["id"], "name": c.get("name", str(c["id"]))} for c in doc["categories"]]
    categories.sort(key=lambda c: c["id"])
    out = {
        "annotations": out_anns,
        "categories": categories,
        "images": out_images,
        "info": {
            "description": (
                f"MLPerf Open Images ({rel_name}), first {len(out_images)} images, by mlbuild {NAME} v{VERSION}"
            ),
        },
    }
    coco.dump_json(Path(ctx.out) / coco.ANNOTATIONS_FILE, out)
    ctx.log(
        f"wrote {coco.ANNOTATIONS_FILE}: {len(out_images)} images, {len(out_anns)} boxes, "
        f"{len(categories)} categories"
    )
