"""The no-op realize answered before the command line loads (mlbuild.fastpath), and when it must not answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild import fastpath, keypaths, plancache, statkey
from mlbuild.store import Store
from tests.core.project import Project

# What the answer may not import: each costs more than the whole no-op check.
HEAVY = ("mlbuild.cli", "mlbuild.store", "mlbuild.manifest", "sqlite3", "typing", "pathlib", "json", "re",
         "hashlib", "argparse", "shutil")


def fast(p: Project, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int | None, str]:
    """``mlbuild realize ARGV`` through the fast path only, in the project directory."""
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(p.root)
    try:
        rc = fastpath.main([*argv, "--store", str(p.store_dir)])
    finally:
        os.chdir(cwd)
    return rc, capsys.readouterr().out


def test_a_noop_realize_is_answered_by_the_fast_path_with_the_full_paths_answer(
        locked: Project, capsys: pytest.CaptureFixture[str]) -> None:
    p = locked
    assert fast(p, capsys, "greeting") == (None, "")  # nothing realized yet: the full path's job
    full = p.cli("realize", "greeting").out
    assert fast(p, capsys, "greeting", "-q") == (0, full)
    assert fast(p, capsys, "greeting") == (0, full)
    # anything but the plain form goes to the full command line
    for extra in (["--scenario", "Offline"], ["--set", "sep=#"], ["-v"], ["--rerun"], ["--check"], ["--offline"]):
        assert fast(p, capsys, "greeting", *extra) == (None, "")
    # a target the saved plan does not name
    assert fast(p, capsys, "greeting", "bundle") == (None, "")


def test_the_fast_path_finds_the_project_as_the_cli_does(locked: Project, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlbuild import project

    p = locked
    full = p.cli("realize", "greeting").out
    deep = p.root / "notes" / "deeper"
    deep.mkdir(parents=True)
    for where in (p.root, deep, p.root.parent):
        found = project.find_root(where)
        assert fastpath.find_root(str(where)) == (str(found) if found else None)
    monkeypatch.chdir(deep)  # below the project: same manifests, lock and (here, given) store
    capsys.readouterr()
    assert fastpath.main(["greeting", "--store", str(p.store_dir)]) == 0
    assert capsys.readouterr().out == full
    monkeypatch.chdir(p.root.parent)  # outside any project: the full path's error, not an answer
    assert fastpath.main(["greeting", "--store", str(p.store_dir)]) is None


def test_the_answer_imports_nothing_heavy(locked: Project) -> None:
    p = locked
    p.cli("realize", "greeting")
    probe = (
        "import sys, atexit\n"
        f"sys.argv = ['mlbuild', 'realize', 'greeting', '-q', '--store', {str(p.store_dir)!r}]\n"
        f"atexit.register(lambda: print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
        "from mlbuild._entry import main\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], cwd=p.root, env=p.env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{p.store_dir / p.entry('greeting')}\n"
    assert "LOADED []" in r.stderr


def test_gc_repair_and_a_new_registry_invalidate_saved_plans(locked: Project,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    p = locked
    full = p.cli("realize", "greeting").out
    assert fast(p, capsys, "greeting")[0] == 0
    store = Store(p.store_dir)
    g = store.generation()
    store.bump_generation()  # what gc does before it deletes, and repair before it moves anything aside
    assert store.generation() == g + 1
    store.close()
    assert fast(p, capsys, "greeting") == (None, "")
    assert p.cli("realize", "greeting").out == full  # the full path re-saves under the new stamp
    assert fast(p, capsys, "greeting") == (0, full)
    # an entry of the closure gone from disk
    entry = p.store_dir / p.entry("greeting")
    aside = p.root / "aside"
    os.chmod(p.store_dir, 0o755)
    shutil.move(str(entry), aside)
    assert fast(p, capsys, "greeting") == (None, "")
    shutil.move(str(aside), entry)
    assert fast(p, capsys, "greeting")[0] == 0
    # a registry replaced by another file (a restored backup: another inode)
    reg = p.store_dir / ".mlbuild" / "db.sqlite"
    shutil.copyfile(reg, reg.with_name("copy"))
    os.replace(reg.with_name("copy"), reg)
    assert fast(p, capsys, "greeting") == (None, "")
    p.cli("realize", "greeting")
    assert fast(p, capsys, "greeting")[0] == 0
    # a registry whose header is damaged in place (same inode)
    with open(reg, "r+b") as f:
        f.write(b"\x5a" * 100)
    assert fast(p, capsys, "greeting") == (None, "")


def test_gc_bumps_the_generation_only_when_it_deletes(locked: Project) -> None:
    p = locked
    p.cli("realize", "greeting")
    p.cli("realize", "greeting", "--set", "sep=#")
    store = Store(p.store_dir)
    g = store.generation()
    store.close()
    p.cli("gc")
    assert Store(p.store_dir).generation() == g  # nothing collected: saved plans stay good
    # drop the lockfile's roots by removing the lock: now entries are collectable
    p.lock_path.unlink()
    r = p.cli("gc")
    assert "removed" in r.out, r.out
    assert Store(p.store_dir).generation() == g + 1


def test_a_signing_key_appearing_sends_unattested_runs_to_the_full_path(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    for env in ({"MLBUILD_KEYS": str(tmp_path / "k")}, {"HOME": str(tmp_path)}, {}):
        monkeypatch.delenv("MLBUILD_KEYS", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert fastpath.signing_key_file() == str(keypaths.signing_key_path())


def test_statkey_which_agrees_with_shutil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for cmd in ("sh", "python3", "c++", "no-such-tool-here"):
        assert statkey.which(cmd) == shutil.which(cmd)
    d = tmp_path / "bin"
    d.mkdir()
    (d / "tool").write_text("#!/bin/sh\n")
    (d / "tool").chmod(0o755)
    (d / "dir-tool").mkdir()
    monkeypatch.setenv("PATH", f"{d}:{os.environ['PATH']}")
    assert statkey.which("tool") == shutil.which("tool") == str(d / "tool")
    assert statkey.which("dir-tool") is None


def test_the_code_key_memo_matches_hashing_and_never_trusts_a_fresh_edit(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "mlbuild"
    shutil.copytree(plancache.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    monkeypatch.setattr(plancache, "RACY_S", 0.0)  # the copy's ctimes are now; pretend the window passed
    memo = tmp_path / "memo"
    plain = plancache.code_key(pkg)
    assert plancache.code_key(pkg, memo) == plain
    assert len(list(memo.iterdir())) == 1  # remembered
    assert plancache.code_key(pkg, memo) == plain  # and answered from the memo
    # an edit that keeps the size and the mtime is still seen (ctime and inode differ)
    f = pkg / "harness" / "images.py"
    st = f.stat()
    data = f.read_bytes()
    f.write_bytes(data.replace(b"def ", b"def_", 1).replace(b"def_", b"def ", 1)[:-1] + b"#")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = plancache.code_key(pkg)
    assert edited != plain and plancache.code_key(pkg, memo) == edited
    # a file edited within the racy window: hashed, but not remembered (its next edit could keep every stat)
    monkeypatch.setattr(plancache, "RACY_S", 3600.0)
    n = len(list(memo.iterdir()))
    f.write_bytes(data)
    assert plancache.code_key(pkg, memo) == plancache.code_key(pkg) == plain
    assert len(list(memo.iterdir())) == n
