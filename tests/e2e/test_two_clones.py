"""Two clones of the project at different paths, two stores at different paths: the default job's
environments, preprocessing and LoadGen wheel get identical entry names and identical bytes.

The first clone realizes into the session's store (entries other e2e tests already built are
reused), the second into a fresh store, so the wheel is compiled once more here."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild.hashing import hash_path

from .conftest import MIRROR, REPO

pytestmark = pytest.mark.slow

# Everything `yolox-coco128-offline` builds before its run, with both LoadGen backends.
TARGETS = ("coco128-annotations", "coco128-letterbox", "env-data", "env-run-official", "env-run-pyo3",
           "loadgen-pyo3", "env-build-tools")


def clone(dest: Path) -> Path:
    """The project's committed files at ``dest`` (as `git clone` gives them) and the built
    hashing module (what `pip install -e .` adds)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for so in (REPO / "mlbuild").glob("_native*.so"):
        shutil.copy2(so, dest / "mlbuild" / so.name)
    return dest


def realize(root: Path, store: Path) -> list[Path]:
    env = {**os.environ, "MLBUILD_NO_PROGRESS": "1", "PYTHONPATH": str(root)}
    env.pop("MLBUILD_STORE", None)
    r = subprocess.run([sys.executable, "-m", "mlbuild", "realize", *TARGETS, "--mirror", str(MIRROR),
                        "--store", str(store)], check=False, cwd=root, env=env, capture_output=True, text=True,
                       timeout=3000)
    assert r.returncode == 0, f"realize in {root} exited {r.returncode}\n{r.stderr[-4000:]}"
    paths = [Path(line) for line in r.stdout.strip().splitlines()[-len(TARGETS):]]
    assert [p.parent for p in paths] == [store] * len(TARGETS)
    return paths


def closure(store: Path, names: list[str]) -> dict[str, str]:
    """Every entry the targets reference (transitively), with its registered sha256."""
    con = sqlite3.connect(f"file:{store / '.mlbuild' / 'db.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        refs: dict[str, set[str]] = {}
        for a, b in con.execute("SELECT referrer, reference FROM refs"):
            refs.setdefault(a, set()).add(b)
        seen: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(refs.get(n, ()))
        hashes = dict(con.execute("SELECT name, sha256 FROM entries"))
        return {n: hashes[n] for n in sorted(seen)}
    finally:
        con.close()


def test_two_clones_build_identical_entries(tmp_path: Path, session_store: Path) -> None:
    a = clone(tmp_path / "a")
    b = clone(tmp_path / "b" / "a" / "deeper" / "checkout")
    imported = subprocess.run([sys.executable, "-c", "import mlbuild; print(mlbuild.__file__)"], cwd=b,
                              env={**os.environ, "PYTHONPATH": str(b)}, capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == str(b / "mlbuild" / "__init__.py"), "each clone runs its own mlbuild"

    store_b = tmp_path / "elsewhere" / "store-b"
    paths_a = realize(a, session_store)
    paths_b = realize(b, store_b)
    assert [p.name for p in paths_a] == [p.name for p in paths_b], "identical entry names for every target"

    entries_a = closure(session_store, [p.name for p in paths_a])
    entries_b = closure(store_b, [p.name for p in paths_b])
    assert sorted(entries_a) == sorted(entries_b), "identical names for every entry of the closure"
    assert entries_a == entries_b, "identical registered content hashes"
    built = [n for n in entries_a if n.split("-", 1)[1] in TARGETS]
    assert len(built) == len(TARGETS)
    for name in entries_a:  # and the bytes on disk, not only what the registries say
        assert hash_path(session_store / name, "tree" if (session_store / name).is_dir() else "flat") == \
            hash_path(store_b / name, "tree" if (store_b / name).is_dir() else "flat"), name
