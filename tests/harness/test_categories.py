"""The ground truth's categories define what is scored: a ground truth with fewer categories
than the model, label maps by id, by name and by table, all checked before inference, and the
mAP held to an in-test pycocotools evaluation of the same detections."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlbuild.errors import InputError
from mlbuild.harness import categories
from mlbuild.harness.coco import COCO80

from .conftest import YOLOX, build

N = 16  # the letterboxed16 fixture: the first 16 coco128 photos


def _write(tmp: Path, doc: dict[str, Any]) -> Path:
    tmp.mkdir(parents=True)
    (tmp / "annotations.json").write_text(json.dumps(doc))
    return tmp


@pytest.fixture(scope="module")
def subset_doc(coco_ann: Path) -> dict[str, Any]:
    """coco128's ground truth with every other category that has boxes in the first 16 photos."""
    doc = json.loads((coco_ann / "annotations.json").read_text())
    first = {im["id"] for im in doc["images"][:N]}
    present = sorted({a["category_id"] for a in doc["annotations"] if a["image_id"] in first})
    keep = set(present[::2])
    assert len(keep) >= 3 and len(present) - len(keep) >= 3
    doc["categories"] = [c for c in doc["categories"] if c["id"] in keep]
    doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] in keep]
    return doc


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory, subset_doc, letterboxed16) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("subset")
    ann = _write(tmp / "ann", subset_doc)
    out = build("mlperf-run", tmp / "run", inputs={"env": tmp, "model": YOLOX, "preprocessed": letterboxed16,
                                                   "annotations": ann}, params={"mode": "accuracy"})
    return out, ann


def _records(out: Path) -> list[tuple[int, np.ndarray]]:
    entries = json.loads((out / "mlperf_log_accuracy.json").read_text())
    seen: dict[int, np.ndarray] = {}
    for e in entries:
        if e["qsl_idx"] not in seen:
            seen[e["qsl_idx"]] = np.frombuffer(bytes.fromhex(e["data"]), dtype=np.float32).reshape(-1, 7)
    return sorted(seen.items())


def _pycocotools_map(out: Path, gt_doc: dict[str, Any], relabel: dict[int, int] | None = None) -> list[float]:
    """pycocotools over every logged detection (labels as logged, or relabelled), images 0..N-1."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = gt_doc["images"][:N]
    dets = []
    for idx, recs in _records(out):
        im = images[idx]
        for r in recs.astype(np.float64):
            label = int(r[6]) if relabel is None else relabel.get(int(r[6]), -1)
            ymin, xmin, ymax, xmax = r[1] * im["height"], r[2] * im["width"], r[3] * im["height"], r[4] * im["width"]
            dets.append({"image_id": im["id"], "category_id": label, "score": float(r[5]),
                         "bbox": [xmin, ymin, xmax - xmin, ymax - ymin]})
    gt = COCO()
    ids = {im["id"] for im in images}
    gt.dataset = {"images": images, "categories": gt_doc["categories"],
                  "annotations": [a for a in gt_doc["annotations"] if a["image_id"] in ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
        ev.params.imgIds = sorted(ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def test_fewer_categories_than_the_model_drops_and_counts(subset_run, subset_doc):
    out, _ = subset_run
    r = json.loads((out / "result.json").read_text())
    keep = {c["id"] for c in subset_doc["categories"]}
    labels = np.concatenate([recs[:, 6] for _, recs in _records(out)]).astype(int)
    outside = [int(x) for x in labels if int(x) not in keep]
    assert outside, "the model answers classes the subset ground truth lacks"
    acc = r["accuracy"]
    assert acc["dropped"]["detections"] == len(outside)
    assert acc["dropped"]["labels"] == {str(k): outside.count(k) for k in sorted(set(outside))}
    assert acc["detections"] == len(labels) - len(outside)
    assert r["warnings"] and f"{len(outside)} detections" in r["warnings"][0]
    assert sorted(acc["per_class_ap"]) == sorted(c["name"] for c in subset_doc["categories"])
    assert r["categories"]["label_map"] == "id" and r["categories"]["scored"] == sorted(keep)
    # pycocotools, given every detection (those of other classes too), scores the same
    stats = _pycocotools_map(out, subset_doc)
    assert r["metrics"]["mAP"] == round(100.0 * stats[0], 3)
    assert acc["stats"] == [round(s, 6) for s in stats]
    assert r["metrics"]["mAP"] > 10.0


def _renumbered(doc: dict[str, Any], start: int) -> tuple[dict[str, Any], dict[int, int]]:
    """The same ground truth with new category ids (from ``start``) and upper-case names."""
    new = {c["id"]: start + k for k, c in enumerate(doc["categories"])}
    return {
        **doc,
        "categories": [{"id": new[c["id"]], "name": c["name"].upper()} for c in doc["categories"]],
        "annotations": [dict(a, category_id=new[a["category_id"]]) for a in doc["annotations"]],
    }, new


def test_label_map_by_name_and_by_table(tmp_path, subset_run, subset_doc, letterboxed16):
    base = json.loads((subset_run[0] / "result.json").read_text())
    doc, new = _renumbered(subset_doc, 1001)
    ann = _write(tmp_path / "ann", doc)
    inputs = {"env": tmp_path, "model": YOLOX, "preprocessed": letterboxed16, "annotations": ann}
    by_name = build("mlperf-run", tmp_path / "name", inputs=inputs, params={"mode": "accuracy", "label_map": "name"})
    r = json.loads((by_name / "result.json").read_text())
    assert r["metrics"]["mAP"] == base["metrics"]["mAP"]
    assert r["accuracy"]["detections"] == base["accuracy"]["detections"]
    assert r["categories"]["table"] == {str(k): v for k, v in sorted(new.items())}
    assert r["metrics"]["mAP"] == round(100.0 * _pycocotools_map(by_name, doc, relabel=new)[0], 3)
    # a table naming model classes by name and ground-truth categories by id: only those are scored
    first, second = subset_doc["categories"][:2]
    table = f"{first['name']}={new[first['id']]}, {second['id']}={second['name'].upper()}"
    by_table = build("mlperf-run", tmp_path / "table", inputs=inputs, params={"mode": "accuracy", "label_map": table})
    t = json.loads((by_table / "result.json").read_text())
    pair = {first["id"]: new[first["id"]], second["id"]: new[second["id"]]}
    assert t["categories"]["table"] == {str(k): v for k, v in sorted(pair.items())}
    assert t["metrics"]["mAP"] == round(100.0 * _pycocotools_map(by_table, doc, relabel=pair)[0], 3)
    assert t["accuracy"]["dropped"]["detections"] > r["accuracy"]["dropped"]["detections"]


def test_a_wrong_label_map_fails_before_inference(tmp_path, subset_doc, letterboxed16):
    # ids that the model never answers: by id nothing could be scored
    doc, _ = _renumbered(subset_doc, 1001)
    ann = _write(tmp_path / "a1", doc)
    out = tmp_path / "r1"
    with pytest.raises(InputError, match=r"none of yolox_nano\.onnx's 80 labels is a category id of annotations\.json"):
        build("mlperf-run", out, inputs={"env": tmp_path, "model": YOLOX, "preprocessed": letterboxed16,
                                         "annotations": ann}, params={"mode": "accuracy"})
    assert list(out.iterdir()) == [], "nothing ran: no LoadGen log was written"
    # ids the model has, meaning other classes: scoring by id would be silently wrong
    doc, _ = _renumbered(subset_doc, 1)
    ann = _write(tmp_path / "a2", doc)
    out = tmp_path / "r2"
    with pytest.raises(InputError) as exc:
        build("mlperf-run", out, inputs={"env": tmp_path, "model": YOLOX, "preprocessed": letterboxed16,
                                         "annotations": ann}, params={"mode": "accuracy"})
    assert "name different classes in yolox_nano.onnx and annotations.json (2: `bicycle` vs `" in str(exc.value)
    assert any('label_map = \\"name\\"' in h or 'label_map = "name"' in h for h in exc.value.hints)
    assert list(out.iterdir()) == []


def test_resolve_checks_the_map():
    gt = [{"id": 7, "name": "dog"}, {"id": 9, "name": "traffic_light"}]
    model = dict(COCO80)
    # names that only restate ids contradict nothing: scored by id
    generic = [{"id": 1, "name": "class 1"}, {"id": 2, "name": "2"}, {"id": 3, "name": "class_3"}]
    assert categories.resolve("id", model, generic).target(2) == 2
    with pytest.raises(InputError, match=r"name different classes .* \(3: `car` vs `truck`\)"):
        categories.resolve("id", model, [*generic[:2], {"id": 3, "name": "truck"}])
    lm = categories.resolve("name", model, gt)
    assert lm.table == {18: 7, 10: 9} and lm.target(18) == 7 and lm.target(1) is None
    lm = categories.resolve("id", None, gt)  # RetinaNet: labels unknown before the run, mapped by id
    assert lm.target(7) == 7 and lm.target(8) is None
    lm = categories.resolve(" 3 = dog , person=9", model, gt)
    assert lm.table == {3: 7, 1: 9}
    with pytest.raises(InputError, match=r"class names are not known"):
        categories.resolve("name", None, gt)
    with pytest.raises(InputError, match=r"`car` is a name, but the model's class names are not known"):
        categories.resolve("car=7", None, gt)
    with pytest.raises(InputError, match=r"annotations\.json has no category named `cat`"):
        categories.resolve("cat=cat", model, gt)
    with pytest.raises(InputError, match=r"annotations\.json has no category id 8"):
        categories.resolve("1=8", model, gt)
    with pytest.raises(InputError, match=r"model label 1 is mapped twice"):
        categories.resolve("1=7, person=9", model, gt)
    with pytest.raises(InputError, match=r"must be \"id\", \"name\" or a table"):
        categories.resolve("by-name", model, gt)
    with pytest.raises(InputError, match=r"names two categories `dog` \(ids 3 and 7\)"):
        categories.resolve("name", model, [*gt, {"id": 3, "name": "Dog"}])
    # by id, ground-truth categories the model has no label for are a warning, not an error
    lm = categories.resolve("id", model, [{"id": 1, "name": "person"}, {"id": 500, "name": "unicorn"}])
    assert lm.warnings and "unicorn" in lm.warnings[0]
