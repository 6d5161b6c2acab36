"""`coco-dataset`: a COCO detection dataset (a COCO JSON and its images) -> ``annotations.json``.

The generic dataset step: any ground truth in COCO's detection format, with its images, becomes
what the preprocessors (``letterbox``, ``retinanet-preprocess``) and ``mlperf-run`` read.

Inputs (each a store entry: one file, or a directory):

- ``annotations``: the COCO JSON. A single-file entry (a fetched ``.json``, a ``path`` input of
  one file) is that file, whatever its name; a directory (an unpacked archive, a ``path``
  directory) must hold exactly one ``.json`` file, or param ``annotations_file`` names it
  (a relative path, or a bare file name searched for anywhere in the directory).
- ``images``: a directory holding the images (a fetched file set, a ``path`` directory, an
  unpacked archive). Each image's ``file_name`` is looked up under ``images_dir`` inside it;
  when ``images_dir`` is empty, it is found: the directory of the input where the first selected
  image's ``file_name`` exists (an error when there are several).

Params:

- ``count``: keep the first N images in ascending image-id order (0 = all). The order is the
  sample order (sample ``i`` is ``images[i]``), so ``count = N`` is always the same N images.
- ``ids``: keep only these image ids (each must exist in the JSON, no duplicates); still in
  ascending id order; with ``count`` too, the first ``count`` of them.
- ``annotations_file``, ``images_dir``: as above.

Every selected image must exist in ``images``: a missing one is an error naming the first
missing files and how many are missing. Images that are not selected need not be present (a
file set fetched for a subset is fine).

Output ``annotations.json`` (sorted keys, deterministic):

- ``images``: ``{id, file_name, width, height, coco_url}`` of the selected images, in sample
  order; ``file_name`` is relative to the root of ``images`` (``images_dir`` prefixed), so a
  preprocessor's ``dataset`` input is the same ``images`` entry; ``coco_url`` is the source's
  (null when absent: MLPerf's accuracy scripts read it);
- ``annotations``: the boxes of the selected images, ``{id, image_id, category_id, bbox, area,
  iscrowd}``, sorted by id (``area`` defaults to ``w*h``; ``iscrowd`` to 0; a missing ``id`` is
  numbered after the largest one, in source order);
- ``categories``: all of the source's categories, ``{id, name}``, sorted by id. They define what
  is scored (see ``mlperf-run``'s ``label_map``).

``openimages-to-coco`` is this builder on MLPerf's Open Images layout (``annotations/
openimages-mlperf.json`` + ``validation/data/``), selecting by file name order.
"""

from __future__ import annotations

from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.harness import coco, datasets
from mlbuild.harness import params as hparams

NAME = "coco-dataset"
VERSION = 1
INPUTS = {
    "annotations": "the COCO JSON: a single-file entry, or a directory holding it",
    "images": "a directory entry holding the images (a file set, a `path` directory, an unpacked archive)",
}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "count": Param(int, 0, "keep the first N images in ascending image-id order (0 = all)", min=0),
    "ids": Param(list, [], "keep only these image ids (ascending id order; empty = all)"),
    "annotations_file": Param(
        str, "", "the JSON inside a directory `annotations` input: relative path or bare name ('' = its only .json)"),
    "images_dir": Param(str, "", "directory inside `images` that `file_name` is relative to ('' = found)"),
}
NEEDS_ENV = False
NEEDS_NETWORK = False


def build(ctx: BuildContext) -> None:
    p = hparams.resolve(NAME, PARAMS, ctx.params, {"count": hparams.non_negative})
    src = datasets.find_annotations_file(Path(ctx.inputs["annotations"]), p["annotations_file"])
    doc = datasets.convert(
        src,
        Path(ctx.inputs["images"]),
        count=p["count"],
        ids=p["ids"],
        images_dir=p["images_dir"],
        description=f"COCO dataset, {{n}} images, by mlbuild {NAME} v{VERSION}",
        log=ctx.log,
    )
    coco.dump_json(Path(ctx.out) / coco.ANNOTATIONS_FILE, doc)
    ctx.log(f"wrote {coco.ANNOTATIONS_FILE}: {len(doc['images'])} images, {len(doc['annotations'])} boxes, "
            f"{len(doc['categories'])} categories")
