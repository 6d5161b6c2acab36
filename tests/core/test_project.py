"""Projects anywhere: `mlbuild init`, root discovery (-C DIR > nearest ancestor with manifests/ >
an error pointing at `mlbuild init`), and the shipped benchmarks usable by name from a project."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from mlbuild import lock as lockmod
from tests.core._proj import REPO, mb, new_project
from tests.core.project import core_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("core_env")

OWN = """
[path.notes]
path = "../notes.txt"

[build.both]
description = "my file and the shipped model, side by side"
builder = "concat"
inputs = { a = "notes", b = "yolox-nano-onnx" }
"""


def _shipped_lock() -> lockmod.Lock:
    return lockmod.read(REPO / "lock" / "mlbuild.lock")


def test_init_writes_a_commented_project_and_refuses_to_overwrite(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "My Bench"
    manifest = new_project(root, capsys)
    assert manifest == root / "manifests" / "my-bench.toml"
    text = manifest.read_text()
    assert text.startswith("#") and "mlbuild add path" in text
    assert tomllib.loads(text) == {}, "the example is all comments: an empty project locks and validates"
    assert "/store/" in (root / ".gitignore").read_text().split()
    r = mb(capsys, "init", str(root), expect=2)
    assert "already an mlbuild project" in r.err
    assert manifest.read_text() == text


def test_commands_find_the_nearest_project_above_and_write_lock_and_store_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    manifest = new_project(root, capsys)
    (root / "notes.txt").write_text("my notes\n")
    with open(manifest, "a") as f:
        f.write('\n[path.notes]\npath = "../notes.txt"\n')
    deep = root / "data" / "deeper"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    mb(capsys, "lock")
    assert (root / "lock" / "mlbuild.lock").is_file() and not (deep / "lock").exists()
    out = mb(capsys, "realize", "notes").out.strip()
    assert Path(out).parent == root / "store" and Path(out).read_text() == "my notes\n"
    assert not (deep / "store").exists()


def test_dash_c_selects_a_project_from_anywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    new_project(root, capsys)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    mb(capsys, "-C", str(root), "lock")
    assert (root / "lock" / "mlbuild.lock").is_file()
    r = mb(capsys, "lock", "--check", "-C", str(root))
    assert "satisfies" in r.err
    assert not (elsewhere / "lock").exists()
    bad = mb(capsys, "-C", str(tmp_path / "missing"), "lock", expect=2)
    assert "`-C" in bad.err and "expected a directory" in bad.err


def test_outside_any_project_the_error_points_at_init(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = mb(capsys, "lock", expect=3)
    assert "no mlbuild project here" in r.err and "mlbuild init" in r.err
    assert "Traceback" not in r.err
    assert not (tmp_path / "lock").exists()


def test_shipped_declarations_are_usable_by_name_with_their_shipped_pins(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    manifest = new_project(root, capsys)
    (root / "notes.txt").write_text("my notes\n")
    with open(manifest, "a") as f:
        f.write(OWN)
    monkeypatch.chdir(root)
    mb(capsys, "lock", "--offline")  # nothing to fetch: the shipped model keeps its shipped pin
    lock = lockmod.read(root / "lock" / "mlbuild.lock")
    assert lock.artifacts["yolox-nano-onnx"] == _shipped_lock().artifacts["yolox-nano-onnx"]
    assert "coco128" not in lock.artifacts, "only the shipped declarations the project uses are taken"
    listed = mb(capsys, "show", "--list").out
    assert "yolox-nano-onnx" in listed and "both" in listed
    mb(capsys, "lock", "--check")


def test_a_shipped_target_by_name_has_the_checkout_identity(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    new_project(root, capsys)
    monkeypatch.chdir(root)
    mb(capsys, "lock")
    mine = json.loads(mb(capsys, "show", "yolox-coco128-offline", "--json").out)
    theirs = json.loads(mb(capsys, "show", "yolox-coco128-offline", "--json", "--manifests",
                           str(REPO / "manifests"), "--lock", str(REPO / "lock" / "mlbuild.lock")).out)
    assert mine["drv"] == theirs["drv"]
    assert mine["declared_at"].startswith("mlbuild:manifests/yolox-coco128.toml")


def test_a_project_declaration_overrides_the_shipped_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    manifest = new_project(root, capsys)
    (root / "notes.txt").write_text("my notes\n")
    (root / "model.onnx").write_bytes(b"not really a model\n")
    with open(manifest, "a") as f:
        f.write(OWN + '\n[path.yolox-nano-onnx]\npath = "../model.onnx"\n')
    monkeypatch.chdir(root)
    mb(capsys, "lock")
    art = lockmod.read(root / "lock" / "mlbuild.lock").artifacts["yolox-nano-onnx"]
    assert art.kind == "path" and art.source == "../model.onnx"
    assert art.hash.sha256 != _shipped_lock().artifacts["yolox-nano-onnx"].hash.sha256
