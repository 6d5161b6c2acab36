"""Accuracy is pure, performance is a measurement; result.json describes itself.

Real runs through the CLI, as a user runs them: the project's manifests and lock plus a
16-image run target (so each run takes seconds), the session store, YOLOX-nano under the
LoadGen.  What is checked is what users rely on: a performance-only change does not rerun
the accuracy pass, another machine never gets this machine's samples/s, `--rerun` keeps the
earlier measurement, `results show` shows the newest, and result.json's provenance agrees
with the store and the files it names."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlbuild import __version__
from mlbuild.harness import system
from tests.e2e.conftest import MIRROR, REPO, Project

pytestmark = pytest.mark.slow

TARGET = "yolox-coco16"
LOADGEN = "official" if platform.machine() == "x86_64" else "pyo3"  # the official wheel is x86_64 only
MANIFEST = f"""
[build.coco16-letterbox]
description = "the first 16 coco128 photos, letterboxed"
builder = "letterbox"
inputs = {{ dataset = "coco128", annotations = "coco128-annotations", env = "env-data" }}
params = {{ size = 416, pad = 114, count = 16 }}

[run.{TARGET}]
description = "YOLOX-nano on 16 photos, both modes, short performance run"
inputs = {{ model = "yolox-nano-onnx", preprocessed = "coco16-letterbox", annotations = "coco128-annotations" }}
envs = {{ official = "env-run-official", pyo3 = "env-run-pyo3" }}
params = {{ model_kind = "yolox", mode = "both", loadgen = "{LOADGEN}", min_duration_ms = 200, min_query_count = 16 }}
"""


@pytest.fixture(scope="module")
def proj(tmp_path_factory: pytest.TempPathFactory, session_store: Path) -> Project:
    assert MIRROR.is_dir(), f"the shared mirror is expected at {MIRROR}"
    root = tmp_path_factory.mktemp("results-project")
    shutil.copytree(REPO / "manifests", root / "manifests")
    shutil.copytree(REPO / "lock", root / "lock")
    (root / "manifests" / "results-test.toml").write_text(MANIFEST)
    return Project(root, session_store)


def realize(p: Project, *extra: str) -> tuple[Path, dict[str, Any], str]:
    r = p.run("realize", TARGET, "--mirror", str(MIRROR), *extra)
    path = Path(r.stdout.strip().splitlines()[-1])
    return path, json.loads((path / "result.json").read_text()), r.stderr


def ran(stderr: str, part: str) -> bool:
    return re.search(rf"^ran {TARGET}/{part}$", stderr, re.M) is not None


def entry_info(p: Project, entry: str) -> dict[str, Any]:
    return dict(json.loads(p.run("show", entry, "--json").stdout))


@pytest.fixture(scope="module")
def first(proj: Project) -> tuple[Path, dict[str, Any], str]:
    return realize(proj)


def test_result_json_proves_what_it_is(proj: Project, first: tuple[Path, dict[str, Any], str]) -> None:
    path, result, stderr = first
    assert ran(stderr, "accuracy") and ran(stderr, "performance")
    # the layout users know
    for f in ("accuracy.txt", "accuracy/accuracy.txt", "accuracy/mlperf_log_accuracy.json", "report.html",
              "performance/mlperf_log_summary.txt", "performance/mlperf_log_detail.txt"):
        assert (path / f).is_file(), f
    assert result["metrics"]["mAP"] > 10 and result["metrics"]["samples_per_second"] > 0
    assert result["params"]["mode"] == "both" and result["params"]["min_duration_ms"] == 200
    assert result["run"]["entry"] == path.name
    prov = result["provenance"]

    # every input with its entry and the content hash the store registered for it
    assert set(prov["inputs"]) == {"env", "model", "preprocessed", "annotations"}
    for name, inp in prov["inputs"].items():
        assert entry_info(proj, inp["entry"])["sha256"] == inp["sha256"], name
    # both parts, by entry and content hash
    for part in ("accuracy", "performance"):
        pid = prov["parts"][part]
        assert pid["entry"].endswith(f"-{TARGET}-{part}") and entry_info(proj, pid["entry"])["sha256"] == pid["sha256"]
    # the accuracy log's digest is the digest of the file in the result
    acc_log = path / prov["accuracy_log"]["path"]
    assert hashlib.sha256(acc_log.read_bytes()).hexdigest() == prov["accuracy_log"]["sha256"]
    # the closure lock digest: exactly the locked artifacts the run depends on, as the lock pins them
    lock_text = (proj.root / "lock" / "mlbuild.lock").read_text()
    arts = prov["lock"]["artifacts"]
    assert {"yolox-nano-onnx", "coco128", "run-deps", "data-deps"} <= set(arts)
    for name, a in arts.items():
        assert a["sha256"] in lock_text, name
    canon = json.dumps(arts, sort_keys=True, separators=(",", ":")).encode()
    assert prov["lock"]["digest"] == hashlib.sha256(canon).hexdigest()
    assert re.search(rf"Lock \(closure digest\)\s*: {prov['lock']['digest']}", stderr), stderr  # the summary shows it
    # mlbuild's version (pyproject's) and the builder's source digest
    pyproject = (REPO / "pyproject.toml").read_text()
    m = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert m and prov["mlbuild"]["version"] == m.group(1) == __version__
    assert re.fullmatch(r"[0-9a-f]{32}", prov["mlbuild"]["builder_source"])
    # the LoadGen module's files, hashed as they are in the run environment
    env = proj.store / prov["inputs"]["env"]["entry"] / "site-packages"
    assert prov["loadgen_files"]
    for fname, digest in prov["loadgen_files"].items():
        assert hashlib.sha256((env / fname).read_bytes()).hexdigest() == digest, fname
    # the machine of the measurement, the ISA of the accuracy
    assert prov["machine"] == system.machine_id()
    assert prov["cpu_isa"] == system.cpu_isa_features() and prov["repeat"] == 0
    text = json.dumps(result)
    assert str(proj.store) not in text and str(proj.root) not in text and platform.node() not in text


def test_accuracy_part_is_pure(proj: Project, first: tuple[Path, dict[str, Any], str]) -> None:
    _, result, _ = first
    acc = proj.store / result["provenance"]["parts"]["accuracy"]["entry"]
    acc_result = json.loads((acc / "result.json").read_text())
    # nothing of the machine or the clock: CPU model, cores, memory, kernel, timings
    assert sorted(p.name for p in acc.iterdir()) == ["accuracy.txt", "mlperf_log_accuracy.json", "report.html",
                                                     "result.json"]
    assert "cpu_model" not in acc_result["system"] and "memory_bytes" not in acc_result["system"]
    assert acc_result["provenance"]["machine"] is None and "performance" not in acc_result
    # rebuilt in place, the accuracy entry has the same bytes
    from mlbuild import graph, lock, manifest
    from mlbuild.realize import Realizer
    from mlbuild.store import Store

    g = graph.plan(manifest.load(proj.root / "manifests"), lock.read(proj.root / "lock" / "mlbuild.lock"), [TARGET])
    store = Store(proj.store)
    try:
        assert g.resolve(store.realisation).nodes[f"{TARGET}/accuracy"].entry == acc.name
        before = store.info(acc.name)
        assert before is not None
        r = Realizer(store, g, fetcher_factory=lambda: None, jobs=1, force=[acc.name])
        r.run()
        assert r.built == [acc.name]
        after = store.info(acc.name)
        assert after is not None and after.hash.sha256 == before.hash.sha256
    finally:
        store.close()


def test_a_performance_setting_reuses_the_accuracy_result(proj: Project, first: tuple[Path, dict[str, Any], str]
                                                           ) -> None:
    path, result, _ = first
    acc_entry = result["provenance"]["parts"]["accuracy"]["entry"]
    acc_log = proj.store / ".mlbuild" / "logs" / f"{acc_entry}.log"
    before = acc_log.stat().st_mtime_ns
    path2, result2, stderr = realize(proj, "--set", "min_duration_ms=300", "--set", "target_qps=50")
    assert ran(stderr, "performance") and not ran(stderr, "accuracy"), stderr
    assert acc_log.stat().st_mtime_ns == before
    assert result2["provenance"]["parts"]["accuracy"] == result["provenance"]["parts"]["accuracy"]
    assert result2["provenance"]["parts"]["performance"] != result["provenance"]["parts"]["performance"]
    assert path2 != path and result2["params"]["min_duration_ms"] == 300
    assert result2["metrics"]["mAP"] == result["metrics"]["mAP"]


def test_another_machine_never_gets_this_machines_measurement(proj: Project,
                                                             first: tuple[Path, dict[str, Any], str]) -> None:
    _, result, _ = first
    # the same store, seen from a machine with another CPU model
    code = ("import sys; import mlbuild.harness.system as s; s._cpu_model = lambda: 'Other CPU 9000'; "
            "from mlbuild.cli import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, MLBUILD_NO_PROGRESS="1", MLBUILD_STORE=str(proj.store))
    r = subprocess.run([sys.executable, "-c", code, "realize", TARGET, "--mirror", str(MIRROR)], cwd=proj.root,
                       env=env, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr
    assert ran(r.stderr, "performance") and not ran(r.stderr, "accuracy"), r.stderr
    other = json.loads((Path(r.stdout.strip().splitlines()[-1]) / "result.json").read_text())
    assert other["provenance"]["machine"]["cpu_model"] == "Other CPU 9000"
    assert other["provenance"]["parts"]["performance"]["entry"] != result["provenance"]["parts"]["performance"]["entry"]
    assert other["provenance"]["parts"]["accuracy"] == result["provenance"]["parts"]["accuracy"]
    # and this machine still gets its own, from the store
    again = proj.run("realize", TARGET, "--mirror", str(MIRROR))
    assert not ran(again.stderr, "performance") and Path(again.stdout.strip().splitlines()[-1]).name == \
        result["run"]["entry"]


def test_rerun_keeps_every_measurement_and_results_show_the_newest(proj: Project,
                                                                    first: tuple[Path, dict[str, Any], str]) -> None:
    path, result, _ = first
    path2, result2, stderr = realize(proj, "--rerun")
    assert ran(stderr, "performance") and not ran(stderr, "accuracy"), stderr
    assert result2["provenance"]["repeat"] == 1 and path2 != path
    old_perf = result["provenance"]["parts"]["performance"]["entry"]
    assert result2["provenance"]["parts"]["performance"]["entry"] != old_perf
    assert (proj.store / old_perf).is_dir() and (path / "result.json").is_file()  # the earlier one is kept
    path3, result3, _ = realize(proj, "--rerun")
    assert result3["provenance"]["repeat"] == 2
    # the newest completed result, whatever its digest sorts as
    shown = json.loads(proj.run("results", "show", "--json").stdout)
    assert shown["run"]["entry"] == path3.name
    rows = json.loads(proj.run("results", "--json").stdout)
    order = [r["entry"] for r in rows]
    assert order.index(path.name) < order.index(path2.name) < order.index(path3.name) == len(order) - 1
    assert not any(e.endswith(("-accuracy", "-performance")) for e in order)
    # a plain realize is repeat 0 again, from the store
    plain = proj.run("realize", TARGET, "--mirror", str(MIRROR))
    assert Path(plain.stdout.strip().splitlines()[-1]) == path and not ran(plain.stderr, "performance")


def test_check_rebuilds_the_accuracy_part_bit_for_bit(proj: Project, first: tuple[Path, dict[str, Any], str]) -> None:
    r = proj.run("realize", TARGET, "--mirror", str(MIRROR), "--check")
    assert f"check `{TARGET}/accuracy`: bit-identical" in r.stderr, r.stderr
