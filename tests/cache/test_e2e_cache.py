"""The default job through a binary cache: the closure of `yolox-coco128-offline` copied to a
directory cache and back into an empty store at another path (identical entries, `store verify`
clean), and a realize in a third empty store that substitutes every build and fetch (only the
performance measurement and the result assembled from it are made again, by design)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mlbuild.provenance import generate_key
from tests.e2e.conftest import MIRROR, Project, project  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
# Not the other e2e tests' settings: the session store is shared, and this test signs its result with a
# key of its own (another test's realize would find the result signed already, by this key).
FAST = ["--set", "min_duration_ms=1001", "--set", "min_query_count=64"]
TARGET = "yolox-coco128-offline"


def closure(store: Path, names: list[str]) -> dict[str, tuple[str, str]]:
    con = sqlite3.connect(f"file:{store / '.mlbuild' / 'db.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        refs: dict[str, set[str]] = {}
        for a, b in con.execute("SELECT referrer, reference FROM refs"):
            refs.setdefault(a, set()).add(b)
        rows = {r[0]: (r[1], r[2]) for r in con.execute("SELECT name, sha256, deriver FROM entries")}
    finally:
        con.close()
    seen: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(refs.get(n, ()))
    return {n: rows[n] for n in sorted(seen)}


def test_default_target_through_a_directory_cache(project: Project, tmp_path: Path) -> None:  # noqa: F811
    _, pub, _ = generate_key(tmp_path / "keys")
    env = {"MLBUILD_KEYS": str(tmp_path / "keys"), "MLBUILD_TRUSTED_KEYS": str(pub)}
    r = project.run("realize", TARGET, "--mirror", str(MIRROR), *FAST, env=env)
    result = Path(r.stdout.strip().splitlines()[-1])
    cache = tmp_path / "cache"
    up = project.run("copy", "--to", f"file://{cache}", str(result), env=env)
    assert "uploaded" in up.stderr and "build traces" in up.stderr

    other = tmp_path / "elsewhere" / "store"
    down = project.run("copy", "--from", str(cache), result.name, "--store", str(other), env=env)
    want = closure(project.store, [result.name])
    assert f"downloaded {len(want)} entries" in down.stderr, down.stderr
    assert closure(other, [result.name]) == want
    verify = project.run("store", "verify", "--store", str(other), env=env)
    assert verify.returncode == 0

    third = tmp_path / "third" / "store"
    sub = project.run("realize", TARGET, *FAST, "--store", str(third), "--substituter", str(cache), env=env)
    made = [ln for ln in sub.stderr.splitlines() if ln.startswith(("built ", "ran ", "fetched "))]
    assert made == [f"ran {TARGET}/performance", f"ran {TARGET}"], sub.stderr
    acc = [n for n in want if n.endswith(f"-{TARGET}-accuracy")]
    assert acc and closure(third, acc) == closure(project.store, acc)
