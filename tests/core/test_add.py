"""`mlbuild add`: tables appended with tomlkit, the rest of the manifest kept byte for byte; what it
added is locked; an addition that does not validate leaves the manifest as it was."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import pytest

from mlbuild import lock as lockmod
from tests.core._proj import mb, new_project
from tests.core.project import core_env  # noqa: F401  (fixture)
from tests.httpserver import LoopbackServer, Serve

pytestmark = pytest.mark.usefixtures("core_env")

# Comments, odd spacing, a dotted key, an inline table and no newline at the end: all kept as written.
COMMENTED = """\
# My benchmarks.   Hand-written;  keep   this layout!

[path.notes]   # trailing comment
path   =   "../notes.txt"     # where my notes live
description = 'single quotes'

# a build over it
[build.echo]
builder = "concat"
inputs = {a = "notes" ,  b = "notes"}
params.sep = "--"
# last line has no newline"""


@pytest.fixture
def proj(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    manifest = new_project(root, capsys)
    manifest.write_text(COMMENTED)
    (root / "notes.txt").write_text("notes\n")
    monkeypatch.chdir(root)
    return root


def _manifest(root: Path) -> Path:
    return root / "manifests" / "proj.toml"


def test_add_fetch_keeps_the_manifest_byte_for_byte_and_locks_what_it_added(
        proj: Path, capsys: pytest.CaptureFixture[str], http_server: LoopbackServer) -> None:
    data = b"model weights\n"
    url = http_server.route("/m/model.onnx", Serve(data))
    mirror = http_server.route("/alt/model.onnx", Serve(data))
    r = mb(capsys, "add", "fetch", "my-model", url, mirror)
    text = _manifest(proj).read_text()
    assert text.startswith(COMMENTED), "everything before the added table is unchanged"
    added = text[len(COMMENTED):]
    assert added == f'\n\n[fetch.my-model]\nurls = ["{url}", "{mirror}"]\n'
    assert tomllib.loads(text)["fetch"]["my-model"]["urls"] == [url, mirror]
    lock = lockmod.read(proj / "lock" / "mlbuild.lock")
    assert lock.artifacts["my-model"].hash.sha256 == hashlib.sha256(data).hexdigest()
    assert "next: mlbuild realize my-model" in r.err


def test_add_path_writes_the_path_relative_to_the_manifest(proj: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (proj / "data" / "imgs").mkdir(parents=True)
    (proj / "data" / "imgs" / "x.jpg").write_bytes(b"x")
    monkeypatch.chdir(proj / "data")
    mb(capsys, "add", "path", "imgs", "imgs")
    text = _manifest(proj).read_text()
    assert text == COMMENTED + '\n\n[path.imgs]\npath = "../data/imgs"\n'
    assert lockmod.read(proj / "lock" / "mlbuild.lock").artifacts["imgs"].hash.method == "tree"
    again = text
    mb(capsys, "add", "path", "notes2", "../notes.txt", "--no-lock")
    assert _manifest(proj).read_text() == again + '\n[path.notes2]\npath = "../notes.txt"\n'


def test_add_run_adds_the_preprocessing_and_passes_set_through(proj: Path, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    (proj / "gt.json").write_text('{"images": [], "annotations": [], "categories": []}\n')
    (proj / "imgs").mkdir()
    (proj / "imgs" / "a.jpg").write_bytes(b"a")
    r = mb(capsys, "add", "run", "mine", "--model", "yolox-nano-onnx", "--annotations", "gt.json",
           "--images", "imgs", "--set", "scenario=SingleStream", "--set", "min_duration_ms=1000", "--offline")
    doc = tomllib.loads(_manifest(proj).read_text())
    assert _manifest(proj).read_text().startswith(COMMENTED)
    run = doc["run"]["mine"]
    assert run["inputs"] == {"model": "yolox-nano-onnx", "preprocessed": "mine-letterbox",
                             "annotations": "mine-dataset"}
    assert run["params"]["scenario"] == "SingleStream" and run["params"]["min_duration_ms"] == 1000
    assert doc["build"]["mine-letterbox"]["inputs"] == {"dataset": "mine-images", "annotations": "mine-dataset",
                                                       "env": "env-data"}
    # the COCO JSON and its images go through a coco-dataset build (every image checked present)
    assert doc["build"]["mine-dataset"] == {"description": "COCO dataset of `mine` (added by `mlbuild add`)",
                                            "builder": "coco-dataset",
                                            "inputs": {"annotations": "mine-annotations", "images": "mine-images"}}
    assert doc["path"]["mine-annotations"]["path"] == "../gt.json"
    lock = lockmod.read(proj / "lock" / "mlbuild.lock")
    assert {"mine-annotations", "mine-images", "yolox-nano-onnx"} <= set(lock.artifacts)
    assert "next: mlbuild realize mine" in r.err


def test_an_addition_that_does_not_validate_leaves_the_manifest_as_it_was(
        proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _manifest(proj).read_bytes()
    r = mb(capsys, "add", "run", "bad", "--model", "notes", "--annotations", "notes", "--images", "notes",
           "--set", "no_such_param=1", expect=3)
    assert "no_such_param" in r.err
    assert _manifest(proj).read_bytes() == before
    r = mb(capsys, "add", "path", "notes", "notes.txt", expect=2)
    assert "already declared" in r.err
    r = mb(capsys, "add", "path", "Bad Name", "notes.txt", expect=2)
    assert "invalid name" in r.err
    r = mb(capsys, "add", "path", "gone", "no-such-file.json", expect=2)
    assert "does not exist" in r.err
    assert _manifest(proj).read_bytes() == before
    assert not (proj / "lock" / "mlbuild.lock").exists()


def test_a_failed_lock_undoes_the_addition(proj: Path, capsys: pytest.CaptureFixture[str],
                                           http_server: LoopbackServer) -> None:
    before = _manifest(proj).read_bytes()
    url = http_server.url("/nothing/here.onnx")  # 404: something is wrong, not just offline
    r = mb(capsys, "add", "fetch", "missing", url, expect=None)
    assert r.code != 0 and "back as it was" in r.err
    assert _manifest(proj).read_bytes() == before


def test_add_dataset_declares_a_coco_dataset_build_or_says_what_to_do(
        proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (proj / "gt.json").write_text('{"images": [], "annotations": [], "categories": []}\n')
    (proj / "imgs").mkdir()
    before = _manifest(proj).read_bytes()
    mb(capsys, "add", "dataset", "ds", "--annotations", "gt.json", "--images", "imgs", "--no-lock")
    build = tomllib.loads(_manifest(proj).read_text())["build"]["ds"]
    assert build["builder"] == "coco-dataset"
    assert build["inputs"]["annotations"] == "ds-annotations" and build["inputs"]["images"] == "ds-images"
    assert _manifest(proj).read_bytes().startswith(before)
    # a run on it letterboxes the dataset's images, scored against the dataset's annotations.json
    (proj / "m.onnx").write_bytes(b"not really a model")
    mb(capsys, "add", "run", "r", "--model", "m.onnx", "--dataset", "ds", "--no-lock")
    doc = tomllib.loads(_manifest(proj).read_text())
    assert doc["build"]["r-letterbox"]["inputs"]["dataset"] == "ds-images"
    assert doc["build"]["r-letterbox"]["inputs"]["annotations"] == "ds"
    assert doc["run"]["r"]["inputs"]["annotations"] == "ds"
