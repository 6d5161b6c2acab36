"""`openimages-layout`: assemble MLPerf's own Open Images directory from its two downloads.

MLPerf's RetinaNet tooling reads one directory holding
``annotations/openimages-mlperf.json`` and ``validation/data/<ImageID>.jpg``.
Upstream, those come from two places (the annotations release archive, and the
Open Images image bucket), so they are two pinned artifacts; this builder lays
them out as the tools expect (``openimages-to-coco`` then reads the layout).

Inputs as ``coco-dataset``'s: ``annotations`` is the JSON itself (a single-file entry, any
name) or a directory (the unpacked archive) holding it, found by the ``annotations_json`` param
(a bare name searched for anywhere in it, or a relative path; ``""``: its only ``.json``);
``images`` holds ``validation/data/*``. Files are copied (the store never shares bytes between
entries through links), in sorted order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError
from mlbuild.harness import datasets

NAME = "openimages-layout"
VERSION = 2
INPUTS = {
    "annotations": "the annotations JSON, or a directory holding it (the unpacked MLPerf annotations archive)",
    "images": "the pinned image file set (holds validation/data/*.jpg)",
}
PARAMS = {
    "annotations_json": Param(
        str, "openimages-mlperf.json",
        "the annotations file inside a directory `annotations` input (a name or relative path; '' = its only .json)"),
}
NEEDS_ENV = False


def build(ctx: BuildContext) -> None:
    name = str(ctx.params.get("annotations_json", "openimages-mlperf.json"))
    src = datasets.find_annotations_file(Path(ctx.inputs["annotations"]), name, param="annotations_json")
    (ctx.out / "annotations").mkdir(parents=True)
    shutil.copyfile(src, ctx.out / "annotations" / "openimages-mlperf.json")
    images = Path(ctx.inputs["images"]) / "validation" / "data"
    if not images.is_dir():
        raise InputError("the images input has no `validation/data` directory",
                         hints=["`images` must hold MLPerf's image paths, `validation/data/<ImageID>.jpg`"])
    dest = ctx.out / "validation" / "data"
    dest.mkdir(parents=True)
    count = 0
    for p in sorted(images.iterdir()):
        if p.is_file():
            shutil.copyfile(p, dest / p.name)
            count += 1
    if count == 0:
        raise InputError("the images input holds no images under `validation/data`")
    ctx.log(f"laid out {count} images and {src.name}")
