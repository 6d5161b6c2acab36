"""COCO-format annotations: the COCO-80 class table and the reader every stage shares.

The annotations file (``annotations.json``) is the dataset's index: the order of its ``images``
list is the sample order, so sample index ``i`` is ``images[i]`` (``coco-dataset`` sorts them by
image id, ``openimages-to-coco`` and ``coco128-to-coco`` by ``file_name``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlbuild.errors import InputError

# COCO-80 in the usual order (the order of YOLO class indices 0..79), with the COCO category
# ids (1..90 with gaps) of the official instances annotations.
COCO80: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"),
    (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"),
    (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"),
    (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"),
    (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"),
    (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"),
    (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"),
    (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"),
    (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)
COCO80_IDS: tuple[int, ...] = tuple(cid for cid, _ in COCO80)

ANNOTATIONS_FILE = "annotations.json"


def dump_json(path: Path, obj: Any, *, indent: int | None = None) -> None:
    """Write ``obj`` as deterministic JSON (sorted keys, trailing newline)."""
    text = json.dumps(obj, sort_keys=True, indent=indent, ensure_ascii=True, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def annotations_path(inp: Path) -> Path:
    """The annotations file of an ``annotations`` input (a directory, or the file itself)."""
    inp = Path(inp)
    if inp.is_dir():
        path = inp / ANNOTATIONS_FILE
        if not path.is_file():
            raise InputError(f"{inp}: no `{ANNOTATIONS_FILE}` in the annotations input")
        return path
    if inp.is_file():
        return inp
    raise InputError(f"{inp}: annotations input does not exist")


def load_annotations(inp: Path) -> dict[str, Any]:
    """Read and check a COCO-format annotations file; returns the parsed document.

    Checks what the later stages rely on: ``images`` is non-empty, each image has an int
    ``id``, a relative ``file_name`` and positive ``width``/``height``, ids are unique, and
    every annotation names a known image and category.
    """
    path = annotations_path(inp)
    name = path.name
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{name}: cannot read annotations: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise InputError(f"{name}: `{key}` must be a list")
    images = doc["images"]
    if not images:
        raise InputError(f"{name}: empty dataset, `images` has no entries")
    seen: set[int] = set()
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            raise InputError(f"{name}: `images[{i}]` is not an object")
        for key in ("id", "width", "height"):
            if not isinstance(img.get(key), int) or isinstance(img.get(key), bool):
                raise InputError(f"{name}: `images[{i}].{key}` must be an integer")
        if img["width"] <= 0 or img["height"] <= 0:
            raise InputError(f"{name}: `images[{i}]` has size {img['width']}x{img['height']}")
        fname = img.get("file_name")
        if not isinstance(fname, str) or not fname or os.path.isabs(fname) or ".." in Path(fname).parts:
            raise InputError(f"{name}: `images[{i}].file_name` must be a relative path, got {fname!r}")
        if img["id"] in seen:
            raise InputError(f"{name}: duplicate image id {img['id']}")
        seen.add(img["id"])
    cat_ids = set()
    for i, cat in enumerate(doc["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise InputError(f"{name}: `categories[{i}].id` must be an integer")
        cat_ids.add(cat["id"])
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise InputError(f"{name}: `annotations[{i}]` is not an object")
        if ann.get("image_id") not in seen:
            raise InputError(f"{name}: `annotations[{i}]` names unknown image id {ann.get('image_id')!r}")
        if ann.get("category_id") not in cat_ids:
            raise InputError(
                f"{name}: `annotations[{i}]` names unknown category id {ann.get('category_id')!r}"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise InputError(f"{name}: `annotations[{i}].bbox` must be 4 numbers")
    return doc
