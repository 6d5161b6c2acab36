"""`mlbuild diff`: two store entries, two lockfiles, two results - the inputs that differ and
how each difference propagated to what was rebuilt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.core.project import Project
from tests.httpserver import Serve


def test_diff_of_two_entries_traces_a_param_through_what_it_rebuilt(locked: Project) -> None:
    p = locked
    a = Path(p.cli("realize", "bundle").out.strip()).name
    p.manifest_path.write_text(p.manifest_path.read_text().replace('sep = " | "', 'sep = " + "'))
    b = Path(p.cli("realize", "bundle").out.strip()).name
    assert a != b
    r = p.cli("diff", a, b, "--json")
    rep = json.loads(r.out)
    assert rep["kind"] == "entries"
    assert rep["inputs"] == [{"path": "greeting.params.sep", "a": " | ", "b": " + "}], rep["inputs"]
    top = rep["rebuilt"][0]
    assert top["name"] == "bundle" and top["causes"] == []
    assert [(v["name"], v["input"]) for v in top["via"]] == [("greeting", "a")]
    assert top["via"][0]["causes"] == [{"path": "params.sep", "a": " | ", "b": " + "}]
    assert rep["reused"] == ["b"], "the archive input did not change"
    text = p.cli("diff", a, b).out
    assert "greeting.params.sep:  |  ->  + " in text
    assert "bundle:" in text and "because input `a`" in text and "because params.sep" in text
    assert "reused unchanged: b" in text
    # an entry against itself: nothing differs
    same = json.loads(p.cli("diff", a, a, "--json").out)
    assert same["inputs"] == [] and same["rebuilt"] == []


def test_diff_of_two_lockfiles_names_the_changed_artifact_and_the_builds_it_reaches(locked: Project) -> None:
    p = locked
    old = p.root / "old.lock"
    shutil.copyfile(p.lock_path, old)
    p.route("/files/hello.txt", Serve(b"a new hello\n"))
    p.lock("--update", "hello")
    r = p.cli("diff", str(old), str(p.lock_path), "--json")
    rep = json.loads(r.out)
    assert rep["kind"] == "locks"
    paths = [c["path"] for c in rep["inputs"]]
    assert paths and all(x.startswith("artifacts.hello.") for x in paths), paths
    assert "artifacts.hello.sha256" in paths
    tops = {t["name"]: t for t in rep["rebuilt"]}
    assert set(tops) == {"bundle"}, "only the top of what the change reaches is listed"
    assert tops["bundle"]["via"][0]["name"] == "greeting"
    assert tops["bundle"]["via"][0]["causes"][0]["path"] == "input `a` (`hello`) changed in the lock"
    assert "archive" in rep["reused"] and "fileset" in rep["reused"]
    assert json.loads(p.cli("diff", str(old), str(old), "--json").out)["inputs"] == []


def test_diff_of_two_results_separates_inputs_from_timing_and_machine(locked: Project, tmp_path: Path) -> None:
    """Exported result directories: the run's own record (result.json, written here as a run writes
    it: params, inputs, metrics, performance, system) drives the diff."""
    p = locked
    dirs = []
    for i, (sep, sps, cpu) in enumerate(((" | ", 101.5, "cpu A"), ("#", 99.0, "cpu B"))):
        entry = Path(p.cli("realize", "greeting", "--set", f"sep={sep}").out.strip()).name
        d = tmp_path / f"r{i}"
        p.cli("export", entry, str(d), "--with-lock", str(p.lock_path))
        shown = json.loads(p.cli("show", entry, "--json").out)
        inputs = {k: {"entry": next(r for r in shown["references"] if r.split("-", 1)[1] == v["label"]),
                      "sha256": v["sha256"]} for k, v in shown["deriver"]["inputs"].items()}
        (d / "result.json").write_text(json.dumps({
            "run": {"entry": entry}, "params": {"sep": sep, "sleep": 0.0},
            "provenance": {"inputs": inputs, "lock": {"digest": "same lock"}},
            "metrics": {"mAP": 40.0, "samples_per_second": sps, "latency_ns": {"p90": int(2e9 / sps)}},
            "performance": {"samples_per_second": sps, "latency_ns": {"mean": int(1e9 / sps)}},
            "system": {"cpu_model": cpu}}))
        dirs.append(d)
    rep = json.loads(p.cli("diff", str(dirs[0] / "result.json"), str(dirs[1]), "--json").out)
    assert rep["kind"] == "results"
    assert rep["inputs"] == [{"path": "params.sep", "a": " | ", "b": "#"}]
    assert rep["rebuilt"][0]["causes"] == rep["inputs"]
    assert sorted(rep["reused"]) == ["a", "b"]
    assert rep["outputs"] == [], "mAP is the same"
    assert {c["path"] for c in rep["timing_expected_to_differ"]} == {
        "metrics.samples_per_second", "metrics.latency_ns.p90", "performance.samples_per_second",
        "performance.latency_ns.mean"}
    assert rep["machine"] == [{"path": "system.cpu_model", "a": "cpu A", "b": "cpu B"}]
    text = p.cli("diff", str(dirs[0]), str(dirs[1])).out
    assert "params.sep" in text and "timing fields (measured; expected to differ)" in text


def test_diff_refuses_two_different_kinds(locked: Project) -> None:
    p = locked
    entry = Path(p.cli("realize", "greeting").out.strip()).name
    r = p.cli("diff", entry, str(p.lock_path), expect=2)
    assert "diff compares two of a kind" in r.error
    r = p.cli("diff", "nosuch", entry, expect=2)
    assert "`nosuch` is neither" in r.error
