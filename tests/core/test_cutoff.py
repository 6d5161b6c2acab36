"""Early cut-off: entries are named from their inputs' content, so a bit-identical rebuild stops there.

The edits are made to a copy of the package (with a second builder, ``concat-up``, so that
the upstream and downstream builders have different code), driven as ``python -m mlbuild``
subprocesses with that copy first on ``PYTHONPATH``.  Also: `realize --check` says what it
could not check.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild.errors import MlbuildError
from mlbuild.graph import Graph, plan
from mlbuild.realize import Realizer, require_success
from tests.core.project import HELLO, Project, Result
from tests.core.test_identity import copy_project

MANIFEST = """\
[fetch.hello]
url = "{base}/files/hello.txt"

[build.up]
builder = "concat-up"
inputs = {{ a = "hello", b = "hello" }}
params = {{ sep = "{sep}" }}

[build.down]
builder = "concat"
inputs = {{ a = "up" }}
params = {{ sep = "-" }}
"""


class Copy:
    """A project run by a copy of the package that registers a second builder, `concat-up`."""

    def __init__(self, project: Project, tmp: Path) -> None:
        self.p = project
        self.pkg = copy_project(tmp / "pkgcopy")
        concat = (self.pkg / "builders" / "concat.py").read_text()
        assert 'NAME = "concat"' in concat
        (self.pkg / "builders" / "concat_up.py").write_text(concat.replace('NAME = "concat"', 'NAME = "concat-up"'))
        init = self.pkg / "builders" / "__init__.py"
        text = init.read_text()
        assert '    "concat": "concat",' in text
        registered = '    "concat": "concat",\n    "concat-up": "concat_up",'
        init.write_text(text.replace('    "concat": "concat",', registered))
        self.write(" | ")

    def write(self, sep: str) -> None:
        self.p.manifest_path.write_text(MANIFEST.format(base=self.p.server.base, sep=sep))

    def run(self, *argv: str, store: Path | None = None, expect: int = 0) -> Result:
        env = self.p.env()
        env["PYTHONPATH"] = str(self.pkg.parent)
        r = subprocess.run([sys.executable, "-m", "mlbuild", *self.p.args(argv, store)], cwd=self.p.root, env=env,
                           capture_output=True, text=True, timeout=120, check=False)
        res = Result(r.returncode, r.stdout, r.stderr)
        assert r.returncode == expect, f"mlbuild {' '.join(argv)} exited {r.returncode}\n{r.stderr}"
        return res

    def graph(self, target: str) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = json.loads(self.run("graph", target, "--format", "json").out)
        return out

    def builds(self, r: Result) -> set[str]:
        """The targets a realize built (its plain progress lines `built NAME`)."""
        return {line.split()[1] for line in r.err.splitlines() if line.startswith("built ")}

    def sha(self, entry: str) -> str:
        con = sqlite3.connect(self.p.store_dir / ".mlbuild" / "db.sqlite")
        try:
            (sha,) = con.execute("SELECT sha256 FROM entries WHERE name=?", (entry,)).fetchone()
            return str(sha)
        finally:
            con.close()

    def realisations(self) -> dict[str, str]:
        con = sqlite3.connect(self.p.store_dir / ".mlbuild" / "db.sqlite")
        try:
            return dict(con.execute("SELECT drv, entry FROM realisations").fetchall())
        finally:
            con.close()


@pytest.fixture
def copy(project: Project, tmp_path: Path) -> Copy:
    c = Copy(project, tmp_path)
    c.run("lock", store=project.root / "lockstore")
    return c


def test_before_building_the_downstream_entry_is_resolved_after_its_inputs(copy: Copy) -> None:
    g = copy.graph("down")
    assert g["up"]["entry"] and g["up"]["valid"] is False  # its inputs are fixed: resolvable from the lock
    assert g["down"]["entry"] is None and str(g["down"]["drv"]).endswith("-down")
    tree = copy.run("graph", "down").out
    assert "down [build] · (resolved after its inputs build)" in tree
    show = copy.run("show", "down").out
    assert "(resolved after its inputs build)" in show and f"drv          {g['down']['drv']}" in show
    # `show` says what code the entry depends on: the builder's import closure, by relative path
    assert "  mlbuild/builders/concat.py " in show and "  mlbuild/builders/concat_up.py " not in show
    assert "  mlbuild/sandbox.py " in show and "  native/src/lib.rs " not in show  # concat never reaches _native
    copy.run("realize", "down")
    g2 = copy.graph("down")
    assert g2["down"]["entry"] and g2["down"]["valid"] is True and g2["up"]["entry"] == g["up"]["entry"]


def test_a_bit_identical_rebuild_does_not_rebuild_downstream(copy: Copy) -> None:
    p = copy.p
    first = copy.run("realize", "down")
    assert copy.builds(first) == {"up", "down"}
    up1, down1 = p.entry("up"), p.entry("down")
    g1 = copy.graph("down")
    log = p.store_dir / ".mlbuild" / "logs" / f"{down1}.log"
    mtime = log.stat().st_mtime_ns

    # a comment in the upstream builder: its derivation changes, its output does not
    with open(copy.pkg / "builders" / "concat_up.py", "a") as f:
        f.write("\n# a comment changes the code digest, not the output\n")
    second = copy.run("realize", "down")
    assert copy.builds(second) == {"up"}
    assert second.out.strip() == str(p.store_dir / down1)  # same downstream entry
    ups = sorted(n for n in p.registered() if n.endswith("-up"))
    assert len(ups) == 2 and up1 in ups
    up2 = next(n for n in ups if n != up1)
    assert copy.sha(up1) == copy.sha(up2)  # bit-identical
    assert log.stat().st_mtime_ns == mtime  # downstream not rebuilt
    g2 = copy.graph("down")
    assert g2["down"]["drv"] != g1["down"]["drv"] and g2["down"]["entry"] == down1
    assert g2["up"]["drv"] != g1["up"]["drv"] and g2["up"]["entry"] == up2
    # both derivations of `down` are realised as the one entry
    real = copy.realisations()
    assert real[str(g1["down"]["drv"])] == real[str(g2["down"]["drv"])] == down1
    # the entry's deriver names the inputs by content
    info = json.loads(copy.run("show", str(p.store_dir / down1), "--json").out)
    assert info["deriver"]["inputs"] == {"a": {"label": "up", "sha256": copy.sha(up1)}}
    assert info["deriver"]["drv"] == g1["down"]["drv"]  # the derivation that built it
    assert "mlbuild/builders/concat.py" in info["code"] and "mlbuild/builders/concat_up.py" not in info["code"]
    text = copy.run("show", str(p.store_dir / up2)).out
    assert "code (the builder's import closure)" in text and "  mlbuild/builders/concat_up.py " in text
    # and nothing is done again
    assert copy.builds(copy.run("realize", "down")) == set()


def test_an_upstream_change_of_output_rebuilds_downstream(copy: Copy) -> None:
    p = copy.p
    copy.run("realize", "down")
    down1 = p.entry("down")
    assert (p.store_dir / down1 / "result.txt").read_bytes() == HELLO + b" | " + HELLO
    copy.write(" + ")
    r = copy.run("realize", "down")
    assert copy.builds(r) == {"up", "down"}
    down2 = Path(r.out.strip()).name
    assert down2 != down1 and (p.store_dir / down2 / "result.txt").read_bytes() == HELLO + b" + " + HELLO
    assert (p.store_dir / down1 / "result.txt").exists()  # the old entry is untouched


def test_a_downstream_edit_rebuilds_only_downstream(copy: Copy) -> None:
    copy.run("realize", "down")
    with open(copy.pkg / "builders" / "concat.py", "a") as f:
        f.write("\n# an edit of the downstream builder\n")
    assert copy.builds(copy.run("realize", "down")) == {"down"}


# --------------------------------------------------------------------------- in-process: resolution


def test_resolution_needs_every_built_input_realised(locked: Project) -> None:
    from mlbuild import lock as lockmod
    from mlbuild import manifest
    from mlbuild.store import Store

    g = plan(manifest.load(locked.root / "manifests"), lockmod.read(locked.lock_path), ["bundle"])
    assert g.nodes["greeting"].entry is None and g.nodes["bundle"].entry is None
    store = Store(locked.store_dir)
    try:
        assert store.realisation(g.nodes["greeting"].drv) is None
        r = g.resolve(store.realisation)
        assert r.nodes["greeting"].entry is not None  # fixed inputs only
        assert r.nodes["bundle"].entry is None  # `greeting` has no realisation yet
        Realizer(store, g, fetcher_factory=lambda: _fetcher(locked), jobs=1).run()
        r = g.resolve(store.realisation)
        assert r.nodes["bundle"].entry == locked.entry("bundle")
        assert store.realisation(g.nodes["bundle"].drv) == (locked.entry("bundle"),
                                                             store.info(locked.entry("bundle")).hash.sha256)
    finally:
        store.close()


def _fetcher(p: Project) -> object:
    from mlbuild.fetch import Fetcher

    return Fetcher(mirrors=[], offline=False)


# --------------------------------------------------------------------------- realize --check


def test_check_of_a_fixed_entry_is_not_checked_not_identical(locked: Project) -> None:
    r = locked.cli("realize", "hello", "--check")
    assert "check `hello`: not checked: a fixed-output entry is not rebuilt" in r.err
    assert "identical" not in r.err


def test_check_of_a_performance_only_run_is_not_checked(locked: Project) -> None:
    """A run without an accuracy result cannot be compared: reported as not checked, never identical."""
    from mlbuild import lock as lockmod
    from mlbuild import manifest
    from mlbuild.store import Store

    g = plan(manifest.load(locked.root / "manifests"), lockmod.read(locked.lock_path), ["greeting"])
    g = Graph({**g.nodes, "greeting": dataclasses.replace(g.nodes["greeting"], kind="run")}, g.targets)
    store = Store(locked.store_dir)
    try:
        r = Realizer(store, g, fetcher_factory=lambda: _fetcher(locked), jobs=1)
        r.run()
        (res,) = r.check(["greeting"])
        assert res.status == "not-checked" and not res.identical
        assert res.detail.startswith("not checked: a performance-only run")
        require_success([res])  # not a failure ...
        (fixed,) = r.check(["hello"])
        assert fixed.status == "not-checked"
        differs = dataclasses.replace(res, status="differs", detail="differs: x")
        with pytest.raises(MlbuildError, match="not bit-identical"):  # ... while a difference is
            require_success([res, differs])
    finally:
        store.close()


def test_check_of_a_deterministic_build_is_identical_and_of_a_noisy_one_differs(locked: Project) -> None:
    locked.append_manifest("""
[build.noisy]
builder = "concat"
inputs = {{ a = "hello" }}
params = {{ nondeterministic = true }}
""")
    locked.cli("lock")
    r = locked.cli("realize", "greeting", "--check")
    assert "check `greeting`: bit-identical" in r.err
    r = locked.cli("realize", "noisy", "--check", expect=None)
    assert r.code != 0 and "check `noisy`: differs: store has sha256" in r.err
