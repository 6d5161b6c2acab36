"""Reproduce a peer's run, end to end: the README main job realized from one copy of the project,
then, from a copy at another path with its own store, given only the first's lockfile and
result.json, `mlbuild reproduce` realizes the same closure and finds every artifact and the
accuracy output identical.  `mlbuild diff` of two runs that differ in one LoadGen setting names
that setting and nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlbuild import provenance
from mlbuild.store import Store

from .conftest import MIRROR, Project

FAST = ["--set", "min_duration_ms=1000", "--set", "min_query_count=64"]


def _realize(p: Project, *extra: str) -> Path:
    r = p.run("realize", "yolox-coco128-offline", "--mirror", str(MIRROR), *FAST, *extra)
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_clone_reproduces_the_main_job_from_the_lock_and_result(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLBUILD_KEYS", str(tmp_path / "keys"))
    project.run("key", "generate")
    first = _realize(project)
    # realize signed the result (a key exists): the envelope sits beside it in the store's metadata,
    # never inside the entry; exported for the peer, verified by them
    att = provenance.attestation_path(Store(project.store), first.name)
    assert att.is_file() and json.loads(att.read_text())["payloadType"] == "application/vnd.in-toto+json"
    # a lock that pins one of the result's inputs differently is not exported with it
    lock_text = (project.root / "lock" / "mlbuild.lock").read_text()
    onnx_sha = json.loads((first / "result.json").read_text())["provenance"]["lock"]["artifacts"][
        "yolox-nano-onnx"]["sha256"]
    other_lock = tmp_path / "other.lock"
    other_lock.write_text(lock_text.replace(onnx_sha, "0" * 64))
    bad = project.run("export", first.name, str(tmp_path / "nope"), "--with-lock", str(other_lock), check=False)
    assert bad.returncode == 9 and "pins yolox-nano-onnx differently" in bad.stderr
    exported = tmp_path / "export"
    project.run("export", first.name, str(exported))
    v = project.run("verify", str(exported), "--key", str(tmp_path / "keys" / "mlbuild-ed25519.pub"), "--json",
                    env={"MLBUILD_STORE": str(tmp_path / "no-store")})
    assert json.loads(v.stdout)["ok"]

    # the second clone, at another path, with its own store, gets only the lock and result.json
    given = tmp_path / "mail"
    given.mkdir()
    for name in ("result.json", "mlbuild.lock"):
        shutil.copyfile(exported / name, given / name)
    clone = Project(tmp_path / "elsewhere" / "second-clone", tmp_path / "store-b")
    clone.root.mkdir(parents=True)
    shutil.copytree(project.root / "manifests", clone.root / "manifests")
    shutil.copytree(project.root / "lock", clone.root / "lock")
    r = clone.run("reproduce", str(given / "result.json"), "--lock", str(given / "mlbuild.lock"),
                  "--mirror", str(MIRROR), "--json", timeout=1800)
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["theirs"] == first.name
    statuses = {a["name"]: a["status"] for a in rep["artifacts"]}
    # everything deterministic is identical; the performance measurement (and the result assembled
    # from it) is a measurement of this machine, shown rather than judged
    measured = {"yolox-coco128-offline/performance", "yolox-coco128-offline"}
    assert {n for n, s in statuses.items() if s == "measured"} == measured, statuses
    assert {s for n, s in statuses.items() if n not in measured} == {"identical"}, statuses
    assert {"yolox-coco128-offline/accuracy", "coco128-letterbox", "yolox-nano-onnx", "coco128"} <= set(statuses)
    arts = {a["name"]: a for a in rep["artifacts"]}
    acc = arts["yolox-coco128-offline/accuracy"]
    assert acc["ours"] == acc["theirs"] and acc["ours_sha256"] == acc["theirs_sha256"] is not None
    assert rep["accuracy"]["status"] == "identical" and rep["accuracy"]["map_delta"] == 0
    assert "accuracy log digests compared" in rep["accuracy"]["detail"]
    # realized in the second store: the accuracy bytes there are the first's
    second = clone.store / rep["ours"]
    assert second.is_dir() and not str(second).startswith(str(project.store))
    assert (second / "accuracy.txt").read_bytes() == (first / "accuracy.txt").read_bytes()
    perf = rep["performance"]
    assert perf["theirs"]["samples_per_second"] > 0 and perf["ours"]["samples_per_second"] > 0
    assert perf["theirs"]["machine"]["cpu_model"] and perf["ours"]["machine"]["cpu_model"]
    # the exported directory (with the accuracy log) compares the detections record by record
    r = clone.run("reproduce", str(exported), "--mirror", str(MIRROR))
    assert "accuracy: identical: mAP" in r.stdout and "128 accuracy records compared" in r.stdout
    assert "result: reproduced: every deterministic artifact identical and the accuracy output identical" in r.stdout
    # a peer whose detections differ in one sample: named by its qsl_idx, exit non-zero
    other = tmp_path / "other-peer"
    shutil.copytree(exported, other)
    log = other / "accuracy" / "mlperf_log_accuracy.json"
    records = json.loads(log.read_text())
    victim = next(r for r in records if r["qsl_idx"] == 5)
    victim["data"] = ("00" if victim["data"][:2] != "00" else "11") + victim["data"][2:]
    log.write_text(json.dumps(records))
    r = clone.run("reproduce", str(other), "--mirror", str(MIRROR), "--json", check=False)
    assert r.returncode == 10, r.stderr
    acc = json.loads(r.stdout)["accuracy"]
    assert acc["status"] == "different" and acc["first_differing_qsl_idx"] == 5 and acc["differing_samples"] == 1
    assert "accuracy different" in r.stderr


@pytest.mark.slow
def test_diff_of_two_runs_differing_in_one_loadgen_setting_names_only_it(project: Project) -> None:
    a = _realize(project, "--mode", "performance")
    b = _realize(project, "--mode", "performance", "--set", "min_query_count=96")
    assert a != b
    rep = json.loads(project.run("diff", str(a / "result.json"), str(b), "--json").stdout)
    assert rep["inputs"] == [{"path": "params.min_query_count", "a": 64, "b": 96}]
    assert [r["name"] for r in rep["rebuilt"]] == ["yolox-coco128-offline"]
    assert sorted(rep["reused"]) == ["annotations", "env", "model", "preprocessed"]
    assert rep["outputs"] == [], rep["outputs"]
    assert any(c["path"] == "performance.samples_per_second" for c in rep["timing_expected_to_differ"])
    text = project.run("diff", a.name, b.name).stdout
    assert "params.min_query_count: 64 -> 96" in text
