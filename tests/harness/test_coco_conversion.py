"""coco128-to-coco on the real coco128, and its bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlbuild.errors import InputError
from mlbuild.harness.coco import COCO80

from .conftest import COCO128, build


def _doc(out: Path) -> dict:
    return json.loads((out / "annotations.json").read_text())


def test_coco128_counts_and_categories(coco_ann):
    doc = _doc(coco_ann)
    assert len(doc["images"]) == 128
    assert len(doc["annotations"]) == 929
    names = [im["file_name"] for im in doc["images"]]
    assert names == sorted(names)
    assert names[0] == "images/train2017/000000000009.jpg"
    assert doc["images"][0]["id"] == 9
    assert (doc["images"][0]["width"], doc["images"][0]["height"]) == (640, 480)
    cats = doc["categories"]
    assert len(cats) == 80
    assert cats[0] == {"id": 1, "name": "person"}
    assert cats[-1] == {"id": 90, "name": "toothbrush"}
    assert {a["category_id"] for a in doc["annotations"]} <= {c["id"] for c in cats}
    # ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are COCO's gaps
    assert not {12, 26, 29, 30, 45, 66, 68, 69, 71, 83} & {c["id"] for c in cats}
    assert [a["id"] for a in doc["annotations"]] == list(range(1, 930))
    assert all(a["iscrowd"] == 0 for a in doc["annotations"])


def test_coco128_box_conversion(coco_ann):
    # labels/train2017/000000000009.txt line 1: "45 0.479492 0.688771 0.955609 0.5955" on a 640x480 image
    first = _doc(coco_ann)["annotations"][0]
    assert first["image_id"] == 9
    assert first["category_id"] == 51  # class 45 = bowl = COCO id 51
    x, y, w, h = first["bbox"]
    assert w == pytest.approx(0.955609 * 640, abs=1e-3)
    assert h == pytest.approx(0.5955 * 480, abs=1e-3)
    assert x == pytest.approx(0.479492 * 640 - w / 2, abs=1e-3)
    assert y == pytest.approx(0.688771 * 480 - h / 2, abs=1e-3)
    assert first["area"] == pytest.approx(w * h, abs=1e-2)


def test_coco128_output_is_deterministic(coco_ann, tmp_path):
    again = build("coco128-to-coco", tmp_path / "again", inputs={"dataset": COCO128})
    assert (again / "annotations.json").read_bytes() == (coco_ann / "annotations.json").read_bytes()


def test_coco128_orphan_labels_skipped_or_strict(tmp_path):
    logs: list[str] = []
    build("coco128-to-coco", tmp_path / "a", inputs={"dataset": COCO128}, logs=logs)
    assert any("000000000656.txt" in m and "000000000659.txt" in m for m in logs)
    with pytest.raises(InputError, match=r"labels/train2017/000000000656\.txt: label file has no image"):
        build("coco128-to-coco", tmp_path / "b", inputs={"dataset": COCO128}, params={"strict": True})


def _mini(tmp_path: Path, n: int = 2) -> Path:
    """A small coco128-shaped dataset made of the first n real images."""
    root = tmp_path / "mini"
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "labels" / "train2017").mkdir(parents=True)
    for f in sorted((COCO128 / "images" / "train2017").iterdir())[:n]:
        shutil.copy(f, root / "images" / "train2017" / f.name)
        lbl = COCO128 / "labels" / "train2017" / (f.stem + ".txt")
        if lbl.exists():
            shutil.copy(lbl, root / "labels" / "train2017" / lbl.name)
    return root


def test_unknown_class_names_file_and_line(tmp_path):
    root = _mini(tmp_path)
    lbl = root / "labels" / "train2017" / "000000000009.txt"
    lbl.write_text("1 0.5 0.5 0.2 0.2\n80 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InputError, match=r"labels/train2017/000000000009\.txt:2: unknown class 80"):
        build("coco128-to-coco", tmp_path / "out", inputs={"dataset": root})


@pytest.mark.parametrize(
    "line, what",
    [
        ("3 0.5 0.5 0.1", "expected `class cx cy w h`"),
        ("3 0.5 abc 0.1 0.1", "non-numeric"),
        ("2.5 0.5 0.5 0.1 0.1", "not an integer"),
        ("2 0.5 0.5 -0.1 0.1", "bad box"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, what):
    root = _mini(tmp_path)
    (root / "labels" / "train2017" / "000000000025.txt").write_text("1 0.5 0.5 0.2 0.2\n" + line + "\n")
    with pytest.raises(InputError, match=rf"labels/train2017/000000000025\.txt:2: malformed label line.*{what}"):
        build("coco128-to-coco", tmp_path / "out", inputs={"dataset": root})


def test_empty_dataset(tmp_path):
    root = tmp_path / "empty"
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "labels" / "train2017").mkdir(parents=True)
    with pytest.raises(InputError, match=r"images/train2017: empty dataset"):
        build("coco128-to-coco", tmp_path / "out", inputs={"dataset": root})
    with pytest.raises(InputError, match=r"images/val2017: no such directory"):
        build("coco128-to-coco", tmp_path / "out2", inputs={"dataset": root}, params={"split": "val2017"})


def test_unknown_param(tmp_path):
    with pytest.raises(InputError, match=r"unknown param `sizee`"):
        build("coco128-to-coco", tmp_path / "out", inputs={"dataset": tmp_path}, params={"sizee": 1})


def test_coco80_table():
    assert len(COCO80) == 80
    ids = [c for c, _ in COCO80]
    assert ids == sorted(ids) and len(set(ids)) == 80 and ids[-1] == 90
