"""`coco-dataset`: a COCO JSON and its images -> the dataset's annotations.json (subset, checks),
and `openimages-layout` / `openimages-to-coco` as its MLPerf-layout case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlbuild.builders import BuildContext, load
from mlbuild.errors import InputError
from tests.core.project import Project
from tests.httpserver import Serve


def _build(name: str, out: Path, inputs: dict[str, Path], params: dict[str, Any] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True)
    tmp = out.parent / (out.name + ".tmp")
    tmp.mkdir()
    load(name).build(BuildContext(inputs=inputs, params=params or {}, out=out, tmp=tmp))
    return json.loads((out / "annotations.json").read_text())


# ids deliberately not in file-name order: the sample order is ascending id
IMAGES = [
    {"id": 42, "file_name": "b.jpg", "width": 640, "height": 480, "coco_url": "http://images.example/b.jpg",
     "license": 1},
    {"id": 7, "file_name": "c.jpg", "width": 300, "height": 200},
    {"id": 13, "file_name": "a.jpg", "width": 100, "height": 100},
    {"id": 99, "file_name": "d.jpg", "width": 50, "height": 60},
]


def _gt() -> dict[str, Any]:
    return {
        "info": {"year": 2020},
        "images": [dict(im) for im in IMAGES],
        "annotations": [
            {"id": 5, "image_id": 42, "category_id": 3, "bbox": [1, 2, 30, 40], "area": 1000.0, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 9, "image_id": 13, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1, "segmentation": []},
            {"id": 11, "image_id": 99, "category_id": 1, "bbox": [1, 1, 2, 2]},
            {"image_id": 7, "category_id": 3, "bbox": [3, 3, 4, 4]},  # no id: numbered after the largest
        ],
        "categories": [{"id": 3, "name": "car", "supercategory": "vehicle"}, {"id": 1, "name": "person"}],
    }


def _images(root: Path, names: list[str], sub: str = "") -> Path:
    d = root / sub if sub else root
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"not decoded here: " + n.encode())
    return root


@pytest.fixture
def gt_file(tmp_path: Path) -> Path:
    # a store entry of one fetched file is named `<digest>-<name>`: no `.json` suffix
    p = tmp_path / "0f3a9c1e2b4d5f60718293a4b5c6d7e8-ground-truth"
    p.write_text(json.dumps(_gt()))
    return p


def test_sample_order_is_image_id_and_output_format(tmp_path: Path, gt_file: Path) -> None:
    imgs = _images(tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    doc = _build("coco-dataset", tmp_path / "out", {"annotations": gt_file, "images": imgs})
    assert [im["id"] for im in doc["images"]] == [7, 13, 42, 99]
    assert doc["images"][2] == {"coco_url": "http://images.example/b.jpg", "file_name": "b.jpg", "height": 480,
                                "id": 42, "width": 640}
    assert doc["images"][0]["coco_url"] is None, "MLPerf's scripts read coco_url: present even when the source lacks it"
    assert [a["id"] for a in doc["annotations"]] == [2, 5, 9, 11, 12]
    assert doc["annotations"][-1] == {"area": 16.0, "bbox": [3.0, 3.0, 4.0, 4.0], "category_id": 3, "id": 12,
                                      "image_id": 7, "iscrowd": 0}
    assert doc["annotations"][2]["iscrowd"] == 1 and doc["annotations"][2]["area"] == 25.0
    assert doc["categories"] == [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    # deterministic bytes: the same inputs give the same file
    again = tmp_path / "again"
    _build("coco-dataset", again, {"annotations": gt_file, "images": imgs})
    assert (again / "annotations.json").read_bytes() == (tmp_path / "out" / "annotations.json").read_bytes()


def test_count_takes_the_first_ids_and_only_their_boxes(tmp_path: Path, gt_file: Path) -> None:
    # only the two selected images need to be there
    imgs = _images(tmp_path / "photos", ["c.jpg", "a.jpg"])
    doc = _build("coco-dataset", tmp_path / "out", {"annotations": gt_file, "images": imgs}, {"count": 2})
    assert [im["id"] for im in doc["images"]] == [7, 13]
    assert sorted({a["image_id"] for a in doc["annotations"]}) == [7, 13]
    assert len(doc["annotations"]) == 3


def test_ids_select_and_are_checked(tmp_path: Path, gt_file: Path) -> None:
    imgs = _images(tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    doc = _build("coco-dataset", tmp_path / "o1", {"annotations": gt_file, "images": imgs}, {"ids": [99, 42]})
    assert [im["id"] for im in doc["images"]] == [42, 99]
    doc = _build("coco-dataset", tmp_path / "o2", {"annotations": gt_file, "images": imgs},
                 {"ids": [99, 42, 7], "count": 2})
    assert [im["id"] for im in doc["images"]] == [7, 42]
    with pytest.raises(InputError, match=r"param `ids` names 2 image id\(s\) the annotations do not have: 8, 1000"):
        _build("coco-dataset", tmp_path / "o3", {"annotations": gt_file, "images": imgs}, {"ids": [7, 8, 1000]})
    with pytest.raises(InputError, match=r"param `ids` lists image id 7 more than once"):
        _build("coco-dataset", tmp_path / "o4", {"annotations": gt_file, "images": imgs}, {"ids": [7, 7]})
    with pytest.raises(InputError, match=r"param `ids` must list integer image ids, got '7'"):
        _build("coco-dataset", tmp_path / "o5", {"annotations": gt_file, "images": imgs}, {"ids": ["7"]})


def test_missing_images_are_named(tmp_path: Path, gt_file: Path) -> None:
    imgs = _images(tmp_path / "photos", ["a.jpg"])
    with pytest.raises(InputError) as exc:
        _build("coco-dataset", tmp_path / "out", {"annotations": gt_file, "images": imgs})
    msg = str(exc.value)
    assert "3 of the 4 selected images are missing from the images input" in msg
    assert "c.jpg (id 7), b.jpg (id 42), d.jpg (id 99)" in msg
    assert any("images_dir" in h for h in exc.value.hints)
    assert not (tmp_path / "out" / "annotations.json").exists()


def test_images_directory_is_found_inside_an_unpacked_archive(tmp_path: Path, gt_file: Path) -> None:
    imgs = _images(tmp_path / "unpacked", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], sub="coco/val2017")
    doc = _build("coco-dataset", tmp_path / "out", {"annotations": gt_file, "images": imgs})
    assert [im["file_name"] for im in doc["images"]] == [
        "coco/val2017/c.jpg", "coco/val2017/a.jpg", "coco/val2017/b.jpg", "coco/val2017/d.jpg"]
    # file_name is relative to the images input, what the preprocessors' `dataset` input is
    assert all((imgs / im["file_name"]).is_file() for im in doc["images"])
    doc = _build("coco-dataset", tmp_path / "out2", {"annotations": gt_file, "images": imgs},
                 {"images_dir": "coco/val2017", "count": 1})
    assert doc["images"][0]["file_name"] == "coco/val2017/c.jpg"
    # names are names, not glob patterns
    odd = _gt()
    odd["images"][1]["file_name"] = "c[1].jpg"
    odd_file = tmp_path / "odd.json"
    odd_file.write_text(json.dumps(odd))
    _images(imgs, ["c[1].jpg"], sub="coco/val2017")
    doc = _build("coco-dataset", tmp_path / "odd", {"annotations": odd_file, "images": imgs}, {"count": 1})
    assert doc["images"][0]["file_name"] == "coco/val2017/c[1].jpg"
    # the same names in two places: which one is meant cannot be guessed
    _images(imgs, ["c.jpg"], sub="copy")
    with pytest.raises(InputError, match=r"holds `c\.jpg` under 2 directories \(coco/val2017, copy\)"):
        _build("coco-dataset", tmp_path / "out3", {"annotations": gt_file, "images": imgs})
    with pytest.raises(InputError, match=r"the images input has no directory `nope`"):
        _build("coco-dataset", tmp_path / "out4", {"annotations": gt_file, "images": imgs}, {"images_dir": "nope"})
    with pytest.raises(InputError, match=r"param `images_dir` must be a relative path"):
        _build("coco-dataset", tmp_path / "out5", {"annotations": gt_file, "images": imgs}, {"images_dir": "../x"})


def test_annotations_input_file_or_directory(tmp_path: Path, gt_file: Path) -> None:
    imgs = _images(tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    unpacked = tmp_path / "ann-archive"
    (unpacked / "annotations").mkdir(parents=True)
    (unpacked / "annotations" / "instances_val.json").write_text(json.dumps(_gt()))
    (unpacked / "README.txt").write_text("readme")
    doc = _build("coco-dataset", tmp_path / "o1", {"annotations": unpacked, "images": imgs})
    assert len(doc["images"]) == 4
    (unpacked / "annotations" / "captions_val.json").write_text("{}")
    with pytest.raises(InputError) as exc:
        _build("coco-dataset", tmp_path / "o2", {"annotations": unpacked, "images": imgs})
    assert "holds 2 JSON files (annotations/captions_val.json, annotations/instances_val.json), expected one" in str(
        exc.value)
    assert any("annotations_file" in h for h in exc.value.hints)
    for name in ("instances_val.json", "annotations/instances_val.json"):
        doc = _build("coco-dataset", tmp_path / f"o3-{name.count('/')}", {"annotations": unpacked, "images": imgs},
                     {"annotations_file": name})
        assert len(doc["images"]) == 4
    with pytest.raises(InputError, match=r"has no `gt\.json`; its JSON files: annotations/captions_val\.json"):
        _build("coco-dataset", tmp_path / "o4", {"annotations": unpacked, "images": imgs},
               {"annotations_file": "gt.json"})
    empty = tmp_path / "nojson"
    empty.mkdir()
    (empty / "labels.txt").write_text("x")
    with pytest.raises(InputError, match=r"holds no `\.json` file \(it holds labels\.txt\)"):
        _build("coco-dataset", tmp_path / "o5", {"annotations": empty, "images": imgs})
    with pytest.raises(InputError, match=r"is a single file; expected a directory holding the images"):
        _build("coco-dataset", tmp_path / "o6", {"annotations": gt_file, "images": imgs / "a.jpg"})


def test_bad_ground_truth_is_an_input_error(tmp_path: Path) -> None:
    imgs = _images(tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])
    doc = _gt()
    doc["annotations"][0]["category_id"] = 77
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"bad\.json: `annotations\[0\]` names unknown category id 77"):
        _build("coco-dataset", tmp_path / "o1", {"annotations": bad, "images": imgs})
    doc = _gt()
    doc["annotations"][1]["id"] = 5
    bad.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"bad\.json: duplicate annotation id 5"):
        _build("coco-dataset", tmp_path / "o2", {"annotations": bad, "images": imgs})


def test_openimages_layout_takes_a_single_file_entry(tmp_path: Path) -> None:
    """The layout builder refused a one-file annotations input ("expected exactly one ... found 0")."""
    single = tmp_path / "9e1d0c2b3a4f5e6d7c8b9a0f1e2d3c4b-openimages-mlperf-annotations"
    single.write_text(json.dumps(_gt()))
    imgs = _images(tmp_path / "fileset", ["a.jpg", "b.jpg"], sub="validation/data")
    out = tmp_path / "layout"
    out.mkdir()
    load("openimages-layout").build(BuildContext(inputs={"annotations": single, "images": imgs}, params={},
                                                 out=out, tmp=tmp_path))
    assert (out / "annotations" / "openimages-mlperf.json").read_bytes() == single.read_bytes()
    assert sorted(p.name for p in (out / "validation" / "data").iterdir()) == ["a.jpg", "b.jpg"]
    other = tmp_path / "dir"
    other.mkdir()
    (other / "something-else.json").write_text("{}")
    with pytest.raises(InputError, match=r"has no `openimages-mlperf\.json`; its JSON files: something-else\.json"):
        load("openimages-layout").build(BuildContext(inputs={"annotations": other, "images": imgs}, params={},
                                                     out=tmp_path / "l2", tmp=tmp_path))


def test_openimages_to_coco_is_coco_dataset_on_mlperf_layout(tmp_path: Path) -> None:
    root = tmp_path / "oi"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "openimages-mlperf.json").write_text(json.dumps(_gt()))
    _images(root, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], sub="validation/data")
    oi = _build("openimages-to-coco", tmp_path / "oi-out", {"dataset": root, "env": tmp_path}, {"count": 3})
    # MLPerf's layout is ordered by file name (ImageID); otherwise the same output as coco-dataset's
    assert [im["file_name"] for im in oi["images"]] == [
        "validation/data/a.jpg", "validation/data/b.jpg", "validation/data/c.jpg"]
    gen = _build("coco-dataset", tmp_path / "gen", {"annotations": root / "annotations", "images": root},
                 {"ids": [13, 42, 7]})
    assert sorted(oi["images"], key=lambda im: im["id"]) == gen["images"]
    assert oi["annotations"] == gen["annotations"] and oi["categories"] == gen["categories"]
    assert oi["images"][1]["coco_url"] == "http://images.example/b.jpg"


GT_MANIFEST = """\
[fetch.my-gt]
description = "a COCO ground truth, one file"
url = "{base}/gt/instances.json"

[fetch.my-photos]
description = "its photos"
base_url = "{base}/photos/"
files = ["val/a.jpg", "val/b.jpg", "val/c.jpg"]

[build.my-dataset]
builder = "coco-dataset"
inputs = {{ annotations = "my-gt", images = "my-photos" }}
params = {{ count = 2 }}
"""


def test_realize_a_dataset_from_a_fetched_json_and_a_file_set(project: Project) -> None:
    gt = _gt()
    gt["images"] = [dict(im, file_name=im["file_name"]) for im in gt["images"] if im["id"] in (7, 13, 42)]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in (7, 13, 42)]
    project.route("/gt/instances.json", Serve(json.dumps(gt).encode()))
    for n in ("a", "b", "c"):
        project.route(f"/photos/val/{n}.jpg", Serve(f"photo {n}".encode()))
    project.write_manifest(GT_MANIFEST)
    project.lock()
    r = project.cli("realize", "my-dataset")
    out = Path(r.out.strip().splitlines()[-1])
    doc = json.loads((out / "annotations.json").read_text())
    assert [(im["id"], im["file_name"]) for im in doc["images"]] == [(7, "val/c.jpg"), (13, "val/a.jpg")]
    # a subset that names a photo the file set lacks: a clear error, nothing stored for it
    project.write_manifest(GT_MANIFEST.replace("count = 2", "ids = [7, 42]").replace('"val/b.jpg", ', ""))
    project.lock()
    before = project.registered()
    bad = project.cli("realize", "my-dataset", expect=None)
    assert bad.code != 0
    assert "1 of the 2 selected images are missing from the images input: val/b.jpg (id 42)" in bad.err
    assert "Traceback" not in bad.err
    assert {n for n in project.registered() if n.endswith("-my-dataset")} == {
        n for n in before if n.endswith("-my-dataset")}
