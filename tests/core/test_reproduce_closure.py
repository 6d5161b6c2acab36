"""`mlbuild reproduce` on the concat closure: a peer's exported entry (lock + attestation) is
realized in another store from a copy of the project at another path, and compared artifact by
artifact: identical, different (and why), unavailable (and why)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlbuild import provenance
from mlbuild.store import Store
from tests.core.project import Project, Result
from tests.httpserver import Status


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "keys"
    monkeypatch.setenv("MLBUILD_KEYS", str(d))
    return d


def peer_export(p: Project, dest: Path) -> str:
    """The peer: realize `bundle`, sign it (as realize does when a key exists), export it."""
    p.cli("key", "generate")
    entry = Path(p.cli("realize", "bundle").out.strip()).name
    assert provenance.attest_result(Store(p.store_dir), entry, p.lock_path) is not None
    p.cli("export", entry, str(dest))
    return entry


def second_clone(p: Project, tmp_path: Path) -> Path:
    """A copy of the project's manifests and lock at another path (no store)."""
    other = tmp_path / "elsewhere" / "clone"
    other.mkdir(parents=True)
    shutil.copytree(p.root / "manifests", other / "manifests")
    shutil.copytree(p.root / "lock", other / "lock")
    return other


def in_clone(p: Project, clone: Path, *argv: str, expect: int) -> Result:
    """`mlbuild ARGV` as run in the clone: its manifests, its store, no `--lock` given."""
    from mlbuild.cli import main

    p.capsys.readouterr()
    code = main([*argv, "--manifests", str(clone / "manifests"), "--store", str(clone / "store")])
    cap = p.capsys.readouterr()
    assert code == expect, f"mlbuild {' '.join(argv)} exited {code}, expected {expect}\n{cap.err}"
    return Result(code, cap.out, cap.err)


def reproduce(p: Project, clone: Path, *argv: str, expect: int) -> dict:
    return dict(json.loads(in_clone(p, clone, "reproduce", *argv, "--json", expect=expect).out))


def test_reproduce_from_an_export_in_another_clone_is_identical(locked: Project, keys: Path, tmp_path: Path) -> None:
    p = locked
    entry = peer_export(p, tmp_path / "peer")
    clone = second_clone(p, tmp_path)
    rep = reproduce(p, clone, str(tmp_path / "peer"), expect=0)
    assert rep["ok"] and rep["target"] == "bundle" and rep["ours"] == entry == rep["theirs"]
    arts = {a["name"]: a for a in rep["artifacts"]}
    assert set(arts) == {"hello", "fileset", "archive", "greeting", "bundle"}
    assert {a["status"] for a in arts.values()} == {"identical"}
    for name in ("greeting", "bundle"):  # the attestation recorded the bytes: compared, not assumed
        assert arts[name]["ours_sha256"] == arts[name]["theirs_sha256"] is not None
    # realized in the clone's own store, not found in the peer's
    assert (clone / "store" / entry / "result.txt").read_bytes() == (p.store_dir / entry / "result.txt").read_bytes()
    text = in_clone(p, clone, "reproduce", str(tmp_path / "peer"), expect=0).out
    assert "result: reproduced: every deterministic artifact identical" in text


def test_a_peer_with_another_param_is_different_and_says_why(locked: Project, keys: Path, tmp_path: Path) -> None:
    p = locked
    clone = second_clone(p, tmp_path)
    # the peer changed greeting's separator in their manifests
    p.manifest_path.write_text(p.manifest_path.read_text().replace('sep = " | "', 'sep = " + "'))
    peer_export(p, tmp_path / "peer")
    rep = reproduce(p, clone, str(tmp_path / "peer"), expect=10)
    arts = {a["name"]: a for a in rep["artifacts"]}
    assert [n for n, a in arts.items() if a["status"] != "identical"] == ["greeting", "bundle"]
    assert arts["greeting"]["why"] == 'params.sep: theirs " + ", ours " | "'
    assert arts["bundle"]["why"] == "input `a` differs"
    assert arts["greeting"]["ours"] != arts["greeting"]["theirs"]
    assert arts["greeting"]["ours_sha256"] != arts["greeting"]["theirs_sha256"]
    r = in_clone(p, clone, "reproduce", str(tmp_path / "peer"), expect=10)
    assert "error: `bundle` was not reproduced: `greeting` different, `bundle` different" in r.err


def test_what_cannot_be_realized_is_unavailable_with_the_reason(locked: Project, keys: Path, tmp_path: Path) -> None:
    p = locked
    peer_export(p, tmp_path / "peer")
    clone = second_clone(p, tmp_path)
    p.route("/files/hello.txt", Status(404))
    rep = reproduce(p, clone, str(tmp_path / "peer"), expect=10)
    arts = {a["name"]: a for a in rep["artifacts"]}
    assert arts["hello"]["status"] == "unavailable" and "404" in arts["hello"]["why"]
    assert arts["greeting"]["status"] == "unavailable" and arts["greeting"]["why"] == \
        "needs `hello`, which is unavailable"
    assert arts["bundle"]["why"] == "needs `greeting`, which is unavailable"
    assert arts["archive"]["status"] == arts["fileset"]["status"] == "identical"


def test_only_a_lockfile_realizes_the_closure_and_checks_pins(locked: Project, tmp_path: Path) -> None:
    p = locked
    clone = second_clone(p, tmp_path)
    shared = tmp_path / "shared.lock"
    shutil.copyfile(p.lock_path, shared)
    r = in_clone(p, clone, "reproduce", str(shared), expect=2)
    assert "which target?" in r.error
    rep = reproduce(p, clone, str(shared), "--target", "greeting", expect=0)
    arts = {a["name"]: a for a in rep["artifacts"]}
    assert arts["hello"]["status"] == arts["fileset"]["status"] == "identical"
    assert arts["greeting"]["status"] == "unknown" and "recorded nothing" in arts["greeting"]["why"]


def test_a_lock_from_other_manifests_is_refused_clearly(locked: Project, keys: Path, tmp_path: Path) -> None:
    p = locked
    peer_export(p, tmp_path / "peer")
    clone = second_clone(p, tmp_path)
    text = (clone / "manifests" / "test.toml").read_text()
    (clone / "manifests" / "test.toml").write_text(text.replace("hello.txt", "hello2.txt"))
    before = sorted(x.name for x in (clone / "lock").iterdir())
    r = in_clone(p, clone, "reproduce", str(tmp_path / "peer"), expect=4)
    assert "does not fit the local manifests" in r.error and "--manifests DIR" in r.err
    assert sorted(x.name for x in (clone / "lock").iterdir()) == before
