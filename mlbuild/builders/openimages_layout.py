"""`openimages-layout`: assemble MLPerf's Open Images directory from its two downloads.

MLPerf's RetinaNet tooling reads one directory holding
``annotations/openimages-mlperf.json`` and ``validation/data/<ImageID>.jpg``.
Upstream, those come from two places (the annotations release archive, and the
Open Images image bucket), so they are two pinned artifacts; this builder lays
them out as the tools expect.  Files are copied (the store never shares bytes
between entries through links), in sorted order.
"""

from __future__ import annotations

import shutil

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError

NAME = "openimages-layout"
VERSION = 1
INPUTS = {
    "annotations": "the unpacked MLPerf annotations archive (holds the annotations JSON)",
    "images": "the pinned image file set (holds validation/data/*.jpg)",
}
PARAMS = {
    "annotations_json": Param(str, "openimages-mlperf.json", "the annotations file's name inside `annotations`"),
}
NEEDS_ENV = False


def build(ctx: BuildContext) -> None:
    name = str(ctx.params.get("annotations_json", "openimages-mlperf.json"))
    src_root = ctx.inputs["annotations"]
    matches = sorted(src_root.rglob(name)) if src_root.is_dir() else ([src_root] if src_root.name == name else [])
    if len(matches) != 1:
        raise InputError(f"expected exactly one `{name}` in the annotations input, found {len(matches)}",
                         hints=["set the `annotations_json` parameter to the file's name"])
    (ctx.out / "annotations").mkdir(parents=True)
    shutil.copyfile(matches[0], ctx.out / "annotations" / "openimages-mlperf.json")
    images = ctx.inputs["images"] / "validation" / "data"
    if not images.is_dir():
        raise InputError("the images input has no `validation/data` directory")
    dest = ctx.out / "validation" / "data"
    dest.mkdir(parents=True)
    count = 0
    for p in sorted(images.iterdir()):
        if p.is_file():
            shutil.copyfile(p, dest / p.name)
            count += 1
    if count == 0:
        raise InputError("the images input holds no images under `validation/data`")
    ctx.log(f"laid out {count} images and {name}")



