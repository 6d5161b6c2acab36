"""Realize: reuse, new entries for new params, --check, -j, the sandbox, introspection, the plan cache."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.core.project import ARCHIVE, HELLO, SET_A, SET_B, Project

FETCHED = ("/files/hello.txt", "/set/a.txt", "/set/sub/b.txt", "/arch/data.tar.gz")


def counts(p: Project) -> dict[str, int]:
    return {u: p.server.count(u) for u in FETCHED}


def test_realize_builds_the_closure_and_prints_paths(locked: Project) -> None:
    p = locked
    r = p.cli("realize", "bundle", "greeting")
    bundle, greeting = (Path(line) for line in r.out.split())
    assert bundle == p.store_dir / p.entry("bundle") and greeting == p.store_dir / p.entry("greeting")
    assert (greeting / "result.txt").read_bytes() == HELLO + b" | " + SET_A + SET_B
    archive = p.store_dir / p.entry("archive")
    assert sorted(str(x.relative_to(archive)) for x in archive.rglob("*")) == ["bin", "bin/run.sh", "link", "x.txt"]
    assert os.access(archive / "bin" / "run.sh", os.X_OK) and not os.access(archive / "x.txt", os.X_OK)
    assert os.readlink(archive / "link") == "x.txt"
    assert (bundle / "result.txt").read_bytes() == (greeting / "result.txt").read_bytes() + b"\n" + \
        b"#!/bin/sh\necho run\n" + b"archived x\n"
    # every file fetched exactly once; the archive is kept as its own flat entry
    assert counts(p) == dict.fromkeys(FETCHED, 1)
    assert p.entry("data.tar.gz") and (p.store_dir / p.entry("data.tar.gz")).read_bytes() == ARCHIVE
    # entries are read-only with normalised times
    st = (greeting / "result.txt").stat()
    assert st.st_mode & 0o222 == 0 and st.st_mtime == 1


def test_second_realize_does_no_work(locked: Project) -> None:
    p = locked
    p.cli("realize", "bundle")
    log = p.store_dir / ".mlbuild" / "logs" / f"{p.entry('bundle')}.log"
    before = (log.stat().st_ino, log.stat().st_mtime_ns)
    c = counts(p)
    for _ in range(2):  # from the plan cache, then (cache dropped) by planning
        r = p.cli("realize", "bundle")
        assert r.out.strip() == str(p.store_dir / p.entry("bundle"))
        assert counts(p) == c
        assert (log.stat().st_ino, log.stat().st_mtime_ns) == before
        for f in (p.store_dir / ".mlbuild" / "plans").iterdir():
            f.unlink()


def test_changed_param_is_a_new_entry_and_inputs_are_reused(locked: Project) -> None:
    p = locked
    first = Path(p.cli("realize", "greeting").out.strip())
    c, entries = counts(p), p.registered()
    second = Path(p.cli("realize", "greeting", "--set", "sep=+").out.strip())
    assert second != first and first.exists()
    assert (second / "result.txt").read_bytes() == HELLO + b"+" + SET_A + SET_B
    assert counts(p) == c
    assert p.registered() - entries == {second.name}
    # the same through a manifest edit
    p.manifest_path.write_text(p.manifest_path.read_text().replace('sep = " | "', 'sep = "+"'))
    assert Path(p.cli("realize", "greeting").out.strip()) == second
    r = p.cli("realize", "greeting", "--set", "nosuch=1", expect=2)
    assert "no target among greeting has a parameter named nosuch" in r.err


def test_check_reports_bit_identical_and_catches_nondeterminism(locked: Project) -> None:
    p = locked
    p.append_manifest('[build.noisy]\nbuilder = "concat"\ninputs = {{ a = "hello" }}\n'
                      'params = {{ nondeterministic = true }}\n')
    r = p.cli("realize", "greeting", "--check")
    assert "check `greeting`: bit-identical" in r.err
    p.cli("realize", "noisy")
    r = p.cli("realize", "noisy", "--check", expect=8)
    assert "check `noisy`: differs: store has sha256" in r.err
    assert "error: rebuild is not bit-identical: `noisy`" in r.err
    assert r.out == ""


def test_failing_builder_names_the_target_and_leaves_no_entry(locked: Project) -> None:
    p = locked
    p.append_manifest('[build.broken]\nbuilder = "concat"\ninputs = {{ a = "hello" }}\nparams = {{ fail = true }}\n')
    r = p.cli("realize", "broken", expect=7)
    assert "error: concat was asked to fail" in r.err
    assert "build log:" in r.err
    assert not [n for n in p.registered() if n.endswith("-broken")]
    assert not [n for n in p.on_disk() if n.endswith("-broken")]
    assert not list((p.store_dir / ".mlbuild" / "tmp").iterdir())


def test_jobs_run_independent_builds_in_parallel(locked: Project) -> None:
    p = locked
    p.append_manifest(
        '[build.slow1]\nbuilder = "concat"\ninputs = {{ a = "hello" }}\nparams = {{ sleep = 1.5 }}\n\n'
        '[build.slow2]\nbuilder = "concat"\ninputs = {{ a = "fileset" }}\nparams = {{ sleep = 1.5 }}\n\n'
        '[build.both]\nbuilder = "concat"\ninputs = {{ a = "slow1", b = "slow2" }}\n')
    p.cli("realize", "hello", "fileset")  # fetches out of the timing
    t0 = time.monotonic()
    p.cli("realize", "both", "-j", "2")
    parallel = time.monotonic() - t0
    assert parallel < 2.9, f"-j 2 took {parallel:.2f} s for two independent 1.5 s builds"
    # serial for comparison, in a fresh store (fetches are local: a mirror export of the first)
    p.cli("mirror", "export", "both", str(p.root / "cas"))
    t0 = time.monotonic()
    p.cli("realize", "both", "-j", "1", "--mirror", str(p.root / "cas"), store=p.root / "serial")
    assert time.monotonic() - t0 >= 3.0


def test_builder_environment_is_scrubbed(locked: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    p = locked
    monkeypatch.setenv("MLBUILD_TEST_SECRET", "leak")
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")
    p.append_manifest('[build.envcheck]\nbuilder = "concat"\ninputs = {{ a = "hello" }}\n'
                      'params = {{ env_report = true }}\n')
    out = Path(p.cli("realize", "envcheck").out.strip())
    report = json.loads((out / "env.json").read_text())
    allowed = {"LANG", "LC_ALL", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "SOURCE_DATE_EPOCH", "TZ", "HOME",
               "TMPDIR", "PATH", "MLBUILD_PYTHON", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LC_CTYPE"}
    assert set(report["keys"]) <= allowed, set(report["keys"]) - allowed
    assert "MLBUILD_TEST_SECRET" not in report["keys"] and "PYTHONPATH" not in report["keys"]
    home, tmp, cwd = Path(report["HOME"]), Path(report["TMPDIR"]), Path(report["cwd"])
    assert home.name == "home" and tmp.name == "tmp" and home.parent == tmp.parent == cwd.parent
    # fixed per derivation (as Nix's /build), so recorded build paths don't vary between builds
    assert home.parent.name == out.name and home.parent.parent.name == "mlbuild-build"
    assert str(home) != os.path.expanduser("~")
    assert not home.parent.exists()  # the sandbox directory is gone afterwards
    info = json.loads(p.cli("show", "envcheck", "--json").out)
    assert info["sandbox"] in ("bwrap", "unshare-net", "env-scrubbed")
    log = p.cli("log", "envcheck").out
    assert log.startswith(f"# builder concat, sandbox {info['sandbox']}\n")


def test_show_graph_why_depends_and_log(locked: Project) -> None:
    p = locked
    bundle = Path(p.cli("realize", "bundle").out.strip())
    info = json.loads(p.cli("show", "bundle", "--json").out)
    assert info["name"] == "bundle" and info["kind"] == "build" and info["builder"] == "concat"
    assert info["entry"] == bundle.name and info["path"] == str(bundle) and info["valid"] is True
    assert info["inputs"] == {"a": p.entry("greeting"), "b": p.entry("archive")}
    assert info["params"]["sep"] == "\n" and "sep" in info["param_docs"]
    assert info["declared_at"].startswith("manifests/test.toml:")
    assert info["method"] == "tree" and len(info["sha256"]) == 64 and info["sandbox"]
    # by store path
    info2 = json.loads(p.cli("show", str(bundle), "--json").out)
    assert info2["entry"] == bundle.name and info2["references"] == sorted(info["inputs"].values())
    assert info2["deriver"]["builder"] == "concat"
    fetched = json.loads(p.cli("show", "hello", "--json").out)
    assert fetched["kind"] == "fetch" and fetched["method"] == "flat" and fetched["size"] == len(HELLO)

    g = json.loads(p.cli("graph", "bundle", "--format", "json").out)
    assert set(g) == {"bundle", "greeting", "archive", "hello", "fileset"}
    assert g["bundle"]["inputs"] == {"a": "greeting", "b": "archive"} and all(v["valid"] for v in g.values())
    dot = p.cli("graph", "bundle", "--format", "dot").out
    assert dot.startswith("digraph mlbuild {") and '"greeting" -> "bundle" [label="a"];' in dot
    assert '"hello" -> "greeting" [label="a"];' in dot and dot.rstrip().endswith("}")
    tree = p.cli("graph", "bundle").out.splitlines()
    assert tree[0] == f"bundle [build] ✓ {bundle.name}"
    assert f"    a: greeting [build] ✓ {p.entry('greeting')}" in tree
    assert f"        a: hello [fetch] ✓ {p.entry('hello.txt')}" in tree

    chain = p.cli("why-depends", "bundle", "hello").out.splitlines()
    assert chain == ["bundle", "  └─ a: greeting", "    └─ a: hello"]
    chain = p.cli("why-depends", str(bundle), p.entry("data.tar.gz")).out.splitlines()
    assert [c.strip(" └─") for c in chain] == [bundle.name, p.entry("archive"), p.entry("data.tar.gz")]
    r = p.cli("why-depends", "greeting", "archive", expect=2)
    assert "`greeting` does not depend on `archive`" in r.err

    log = p.cli("log", "bundle").out
    assert log.startswith("# builder concat") and "wrote" in log
    assert p.cli("log", bundle.name[:10]).out == log
    r = p.cli("log", "hello", expect=5)
    assert "no build log" in r.err


def test_plan_cache_answers_a_noop_and_is_invalidated_by_an_edit(locked: Project,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p = locked
    first = p.cli("realize", "greeting").out
    import mlbuild.graph

    calls = []
    real_plan = mlbuild.graph.plan
    monkeypatch.setattr(mlbuild.graph, "plan", lambda *a, **k: calls.append(1) or real_plan(*a, **k))
    assert p.cli("realize", "greeting").out == first
    assert calls == []  # answered from the saved plan: no planning at all
    # editing a manifest parameter changes the key: planned again, a new entry
    p.manifest_path.write_text(p.manifest_path.read_text().replace('sep = " | "', 'sep = " / "'))
    second = p.cli("realize", "greeting").out
    assert calls and second != first
    assert (Path(second.strip()) / "result.txt").read_bytes() == HELLO + b" / " + SET_A + SET_B
    calls.clear()
    assert p.cli("realize", "greeting").out == second
    assert calls == []
    # a different override is a different key
    p.cli("realize", "greeting", "--set", "sep=#")
    assert calls
