"""coco128 (YOLO-format labels) -> COCO-format ``annotations.json``.

Input ``dataset``: a directory with ``images/train2017/*.jpg`` and ``labels/train2017/*.txt``
(one ``class cx cy w h`` line per box, class 0..79 in COCO-80 order, the rest normalised to
0..1 by the image's width and height).

Output ``out/annotations.json``:

- ``images``: one per image file, sorted by ``file_name`` (relative to the dataset root, e.g.
  ``images/train2017/000000000009.jpg``); ``id`` is the numeric file stem (the COCO image id)
  when every stem is numeric, else the 1-based position; ``width``/``height`` from the JPEG
  header;
- ``annotations``: ids from 1 in image order then line order; ``bbox`` ``[x, y, w, h]`` in
  pixels, ``area = w*h``, ``iscrowd`` 0;
- ``categories``: the 80 COCO categories (ids 1..90 with gaps, COCO names and order).

An image without a label file has no boxes. A label file without an image is skipped with a
log line (the published coco128 has two: ``000000000656.txt`` and ``000000000659.txt``, which
is why it has 941 label lines but 929 boxes); param ``strict`` turns that into an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError
from mlbuild.harness import coco
from mlbuild.harness import params as hparams

NAME = "coco128-to-coco"
VERSION = 1
INPUTS = {"dataset": "coco128 directory (images/train2017/*.jpg, labels/train2017/*.txt)"}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "split": Param(str, "train2017", "sub-directory of images/ and labels/ to convert"),
    "strict": Param(bool, False, "a label file without an image is an error instead of skipped"),
}
NEEDS_ENV = True
NEEDS_NETWORK = False

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _parse_labels(path: Path, rel: str, width: int, height: int) -> list[tuple[int, list[float]]]:
    boxes = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{rel}: cannot read label file: {exc}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 5:
            raise InputError(
                f"{rel}:{lineno}: malformed label line, expected `class cx cy w h` (5 fields), "
                f"got {len(fields)}"
            )
        try:
            cls_f = float(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise InputError(f"{rel}:{lineno}: malformed label line, non-numeric field in {line.strip()!r}") from None
        if not cls_f.is_integer():
            raise InputError(f"{rel}:{lineno}: malformed label line, class `{fields[0]}` is not an integer")
        cls = int(cls_f)
        if not 0 <= cls < len(coco.COCO80):
            raise InputError(f"{rel}:{lineno}: unknown class {cls}, expected 0..{len(coco.COCO80) - 1}")
        values = (cx, cy, w, h)
        if any(v != v or v in (float("inf"), float("-inf")) for v in values) or w < 0 or h < 0:
            raise InputError(f"{rel}:{lineno}: malformed label line, bad box {line.strip()!r}")
        bw, bh = w * width, h * height
        x, y = cx * width - bw / 2, cy * height - bh / 2
        boxes.append((cls, [round(x, 4), round(y, 4), round(bw, 4), round(bh, 4)]))
    return boxes


def build(ctx: BuildContext) -> None:
    from mlbuild.harness import images as himages

    p = hparams.resolve(NAME, PARAMS, ctx.params)
    root = Path(ctx.inputs["dataset"])
    split = p["split"]
    if "/" in split or split in ("", ".", ".."):
        raise InputError(f"builder `{NAME}`: param `split` must be a directory name, got {split!r}")
    img_dir = root / "images" / split
    lbl_dir = root / "labels" / split
    if not img_dir.is_dir():
        raise InputError(f"images/{split}: no such directory in the dataset")
    image_files = sorted(
        f for f in img_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
    )
    if not image_files:
        raise InputError(f"images/{split}: empty dataset, no image files")
    label_files = sorted(lbl_dir.glob("*.txt")) if lbl_dir.is_dir() else []
    stems = {f.stem for f in image_files}
    orphans = [f for f in label_files if f.stem not in stems]
    if orphans:
        names = ", ".join(f"labels/{split}/{f.name}" for f in orphans)
        if p["strict"]:
            raise InputError(f"labels/{split}/{orphans[0].name}: label file has no image (orphans: {names})")
        ctx.log(f"skipping {len(orphans)} label file(s) without an image: {names}")
    labels = {f.stem: f for f in label_files if f.stem in stems}

    numeric = all(f.stem.isdigit() for f in image_files) and len({int(f.stem) for f in image_files}) == len(image_files)
    out_images = []
    out_anns: list[dict[str, Any]] = []
    for pos, f in enumerate(image_files, start=1):
        rel = f"images/{split}/{f.name}"
        width, height = himages.image_size(f)
        image_id = int(f.stem) if numeric else pos
        out_images.append({"file_name": rel, "height": height, "id": image_id, "width": width})
        lf = labels.get(f.stem)
        if lf is None:
            continue
        for cls, bbox in _parse_labels(lf, f"labels/{split}/{lf.name}", width, height):
            out_anns.append(
                {
                    "area": round(bbox[2] * bbox[3], 4),
                    "bbox": bbox,
                    "category_id": coco.COCO80_IDS[cls],
                    "id": len(out_anns) + 1,
                    "image_id": image_id,
                    "iscrowd": 0,
                }
            )
    doc = {
        "annotations": out_anns,
        "categories": [{"id": cid, "name": name} for cid, name in coco.COCO80],
        "images": out_images,
        "info": {"description": f"coco128 {split} converted by mlbuild {NAME} v{VERSION}"},
    }
    coco.dump_json(Path(ctx.out) / coco.ANNOTATIONS_FILE, doc)
    ctx.log(f"wrote {coco.ANNOTATIONS_FILE}: {len(out_images)} images, {len(out_anns)} boxes")
