"""`path` inputs: local files and directories hashed into the lock (flat / tree), realized by content,
named file by file when they change, satisfied by `store add`ed bytes, clear when missing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mlbuild import lock as lockmod
from mlbuild.hashing import hash_tree
from tests.core._proj import mb, new_project
from tests.core.project import core_env  # noqa: F401  (fixture)
from tests.httpserver import LoopbackServer, Serve

pytestmark = pytest.mark.usefixtures("core_env")

DECLS = """
[path.gt]
description = "a COCO JSON"
path = "../data/gt.json"

[path.photos]
path = "../data/photos"
"""


@pytest.fixture
def proj(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    manifest = new_project(root, capsys)
    (root / "data" / "photos" / "sub").mkdir(parents=True)
    (root / "data" / "gt.json").write_text('{"images": []}\n')
    (root / "data" / "photos" / "a.jpg").write_bytes(b"photo a")
    (root / "data" / "photos" / "sub" / "b.jpg").write_bytes(b"photo b")
    with open(manifest, "a") as f:
        f.write(DECLS)
    monkeypatch.chdir(root)
    return root


def _lock(root: Path) -> lockmod.Lock:
    return lockmod.read(root / "lock" / "mlbuild.lock")


def test_lock_pins_a_file_flat_and_a_directory_as_a_tree_and_realize_gives_those_bytes(
        proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mb(capsys, "lock")
    lock = _lock(proj)
    gt, photos = lock.artifacts["gt"], lock.artifacts["photos"]
    assert (gt.kind, gt.hash.method, gt.source) == ("path", "flat", "../data/gt.json")
    assert gt.hash.sha256 == hashlib.sha256(b'{"images": []}\n').hexdigest()
    assert (photos.hash.method, photos.source) == ("tree", "../data/photos")
    assert photos.hash.sha256 == hash_tree(proj / "data" / "photos").sha256, "the store's own tree hash"
    assert [(f.path, f.sha256) for f in photos.files] == [
        ("a.jpg", hashlib.sha256(b"photo a").hexdigest()), ("sub/b.jpg", hashlib.sha256(b"photo b").hexdigest())]
    text = (proj / "lock" / "mlbuild.lock").read_text()
    assert str(proj) not in text, "the lock holds no absolute paths"
    paths = mb(capsys, "realize", "gt", "photos").out.split()
    assert Path(paths[0]).name.endswith("-gt.json") and Path(paths[0]).read_bytes() == b'{"images": []}\n'
    assert (Path(paths[1]) / "sub" / "b.jpg").read_bytes() == b"photo b"


def test_lock_check_names_each_changed_file(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mb(capsys, "lock")
    before = (proj / "lock" / "mlbuild.lock").read_text()
    mb(capsys, "lock", "--check")
    (proj / "data" / "gt.json").write_text('{"images": [1]}\n')
    (proj / "data" / "photos" / "sub" / "b.jpg").write_bytes(b"photo B")
    (proj / "data" / "photos" / "c.jpg").write_bytes(b"photo c")
    (proj / "data" / "photos" / "a.jpg").unlink()
    r = mb(capsys, "lock", "--check", expect=4)
    assert "`../data/gt.json` changed since it was locked" in r.err
    assert "`../data/photos/sub/b.jpg` changed since it was locked" in r.err
    assert "`../data/photos/c.jpg` was added" in r.err
    assert "`../data/photos/a.jpg` was removed" in r.err
    assert (proj / "lock" / "mlbuild.lock").read_text() == before, "--check writes nothing"
    mb(capsys, "lock")
    mb(capsys, "lock", "--check")
    assert [f.path for f in _lock(proj).artifacts["photos"].files] == ["c.jpg", "sub/b.jpg"]


def test_a_missing_path_names_the_path_and_the_manifest(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (proj / "data" / "gt.json").unlink()
    r = mb(capsys, "lock", expect=3)
    assert "manifests/proj.toml" in r.err and "`../data/gt.json` does not exist" in r.err
    assert "Traceback" not in r.err
    assert not (proj / "lock" / "mlbuild.lock").exists(), "a failed lock writes no lock"


def test_realize_refuses_a_path_changed_since_it_was_locked(proj: Path, capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    mb(capsys, "lock")
    (proj / "data" / "photos" / "a.jpg").write_bytes(b"edited")
    r = mb(capsys, "realize", "photos", "--store", str(tmp_path / "fresh-store"), expect=4)
    assert "`../data/photos/a.jpg` changed since it was locked" in r.err and "mlbuild lock" in r.err
    assert not list((tmp_path / "fresh-store").glob("*-photos"))


def test_symbolic_links_inside_a_path_directory_are_refused(proj: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.symlink("a.jpg", proj / "data" / "photos" / "link.jpg")
    r = mb(capsys, "lock", expect=3)
    assert "`../data/photos/link.jpg` is a symbolic link" in r.err


def test_store_added_bytes_satisfy_a_path_declared_by_sha256_offline(
        proj: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    model = tmp_path / "elsewhere" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"model bytes\n")
    sha = hashlib.sha256(b"model bytes\n").hexdigest()
    with open(proj / "manifests" / "proj.toml", "a") as f:
        f.write(f'\n[path.model]\npath = "../model.onnx"\nsha256 = "{sha}"\n')
    r = mb(capsys, "lock", "--offline", expect=3)
    assert "`../model.onnx` does not exist" in r.err
    mb(capsys, "store", "add", str(model), "--name", "weights.onnx")
    mb(capsys, "lock", "--offline")
    assert _lock(proj).artifacts["model"].hash.sha256 == sha
    mb(capsys, "lock", "--check")
    out = mb(capsys, "realize", "model", "--offline").out.strip()
    assert Path(out).read_bytes() == b"model bytes\n"


def test_store_added_bytes_satisfy_a_fetch_declared_by_sha256_under_lock_offline(
        proj: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, http_server: LoopbackServer) -> None:
    data = b"weights I already have\n"
    (tmp_path / "w.bin").write_bytes(data)
    url = http_server.route("/w/weights.bin", Serve(b"never served"))
    with open(proj / "manifests" / "proj.toml", "a") as f:
        f.write(f'\n[fetch.weights]\nurl = "{url}"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n')
    mb(capsys, "store", "add", str(tmp_path / "w.bin"))
    mb(capsys, "lock", "--offline")
    lock = _lock(proj)
    assert "weights" in lock.artifacts and not lock.unpinned
    assert Path(mb(capsys, "realize", "weights", "--offline").out.strip()).read_bytes() == data
    assert http_server.count("/w/weights.bin") == 0, "the store supplied the bytes: nothing was fetched"
