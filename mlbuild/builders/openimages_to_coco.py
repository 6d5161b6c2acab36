"""`openimages-to-coco`: ``coco-dataset`` on MLPerf's own Open Images layout (RetinaNet).

Input ``dataset``: the directory MLPerf's ``vision/classification_and_detection/tools/
openimages_mlperf.sh`` (``openimages.py``) produces and its ``accuracy-openimages.py`` reads
(``openimages-layout`` assembles it from the two downloads):

- ``annotations/openimages-mlperf.json``: COCO format, 264 categories whose ids are the
  0-based positions of the MLPerf class list (ids 0..263, the labels the RetinaNet model
  outputs), images with 1-based ids and ``file_name`` ``<ImageID>.jpg``, sorted by ImageID;
  annotations carry ``iscrowd`` = Open Images' ``IsGroupOf`` plus extra Open Images flags;
- ``validation/data/<ImageID>.jpg``: the images.

This is ``coco-dataset`` (``mlbuild.harness.datasets.convert``, same checks and output
format) with that layout's paths as defaults and one difference: the sample order is by
``file_name`` (the source's ImageID order). Output ``annotations.json``: the first ``count``
images (0 = all) -- a prefix of the ImageID order, unlike CM's ``_500``, which is a seeded random
draw with its own annotations -- with ``file_name`` relative to the dataset root
(``validation/data/<ImageID>.jpg``) and ``coco_url`` kept (MLPerf's ``accuracy-openimages.py
--verbose`` reads it); image ids, sizes and category ids as in the source, so the model's
labels are category ids; the kept images' boxes; all categories.
"""

from __future__ import annotations

from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError
from mlbuild.harness import coco, datasets
from mlbuild.harness import params as hparams

NAME = "openimages-to-coco"
VERSION = 2
INPUTS = {"dataset": "MLPerf Open Images dir (annotations/openimages-mlperf.json, validation/data/*.jpg)"}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "count": Param(int, 0, "keep the first N images by file name (0 = all)"),
    "annotations_file": Param(str, "annotations/openimages-mlperf.json", "source annotations, relative to the dataset"),
    "images_dir": Param(str, "validation/data", "directory of the images, relative to the dataset"),
}
NEEDS_ENV = True
NEEDS_NETWORK = False


def build(ctx: BuildContext) -> None:
    p = hparams.resolve(NAME, PARAMS, ctx.params, {"count": hparams.non_negative})
    root = Path(ctx.inputs["dataset"])
    src_rel = datasets.relative(p["annotations_file"], f"builder `{NAME}`: param `annotations_file`").as_posix()
    img_rel = datasets.relative(p["images_dir"], f"builder `{NAME}`: param `images_dir`").as_posix()
    if src_rel in ("", ".") or img_rel in ("", "."):
        raise InputError(f"builder `{NAME}`: params `annotations_file` and `images_dir` must not be empty")
    src = root / src_rel
    if not src.is_file():
        raise InputError(f"{src_rel}: annotations file missing from the dataset",
                         hints=["`dataset` must be MLPerf's Open Images layout (`openimages-layout` builds it)"])
    if not (root / img_rel).is_dir():
        raise InputError(f"{img_rel}: no such directory in the dataset",
                         hints=["`dataset` must be MLPerf's Open Images layout (`openimages-layout` builds it)"])
    doc = datasets.convert(
        src,
        root,
        count=p["count"],
        images_dir=img_rel,
        order="file_name",
        description=f"MLPerf Open Images ({src_rel}), first {{n}} images, by mlbuild {NAME} v{VERSION}",
        log=ctx.log,
    )
    coco.dump_json(Path(ctx.out) / coco.ANNOTATIONS_FILE, doc)
    ctx.log(
        f"wrote {coco.ANNOTATIONS_FILE}: {len(doc['images'])} images, {len(doc['annotations'])} boxes, "
        f"{len(doc['categories'])} categories"
    )
