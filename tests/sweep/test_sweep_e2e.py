"""`mlbuild sweep` end to end on the default target, as a user runs it; and the same sweep as
Ray tasks on a loopback cluster the test starts, into stores of their own."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import MIRROR, REPO, Project

from .raycluster import LOOPBACK_ENV, Cluster

TARGET = "yolox-coco128-offline"
# short runs: 128 samples (the manifest's min_query_count) at whatever speed the machine has
SHORT = ["--set", "min_duration_ms=300", "--set", "target_qps=30", "--set", "intra_op_threads=1"]
AXES = ["--set", "sessions=1,2,0"]
# a performance-only setting of the Ray sweep's own (its points are new measurements)
RAY_PERF = ["--set", "max_duration_ms=600000"]

pytestmark = [pytest.mark.slow, pytest.mark.needs_index]


@pytest.fixture(scope="module")
def sweep_project(tmp_path_factory: pytest.TempPathFactory, session_store: Path) -> Project:
    root = tmp_path_factory.mktemp("sweep") / "project"
    root.mkdir()
    shutil.copytree(REPO / "manifests", root / "manifests")
    shutil.copytree(REPO / "lock", root / "lock")
    return Project(root, session_store)


def _sweep(p: Project, *extra: str, env: dict[str, str] | None = None, timeout: float = 900
           ) -> tuple[dict, str]:
    r = p.run("sweep", TARGET, "--mirror", str(MIRROR), *AXES, *SHORT, "--json", *extra, env=env, timeout=timeout)
    text = r.stdout
    doc = json.loads(text[: text.rindex("}") + 1])
    return doc, r.stderr


@pytest.fixture(scope="module")
def local_sweep(sweep_project: Project) -> dict:
    doc, _ = _sweep(sweep_project)
    return doc


def test_sweep_runs_every_point_reuses_them_and_names_the_best(sweep_project: Project, local_sweep: dict) -> None:
    doc = local_sweep
    pts = doc["points"]
    assert [pt["settings"] for pt in pts] == [{"sessions": 1}, {"sessions": 2}, {"sessions": 0}]
    ok, bad = pts[:2], pts[2]
    # the failing point is reported (plan-time range check) and the sweep went on
    assert bad["entry"] is None and "sessions" in bad["error"] and "1..64" in bad["error"]
    for pt in ok:
        assert pt["error"] is None and pt["entry"].endswith(f"-{TARGET}")
        assert pt["validity"] == "VALID" and pt["metrics"]["samples_per_second"] > 0
        assert pt["metrics"]["latency_p99_ms"] > 0 and 25.0 < pt["metrics"]["mAP"] < 60.0
        assert (sweep_project.store / pt["entry"]).is_dir()
    # one result per point; decoding is per sample: the same accuracy log whatever the sessions
    assert ok[0]["entry"] != ok[1]["entry"]
    assert ok[0]["accuracy_sha256"] == ok[1]["accuracy_sha256"] is not None
    best = doc["best"]
    assert best in (0, 1)
    assert ok[best]["metrics"]["samples_per_second"] == max(pt["metrics"]["samples_per_second"] for pt in ok)
    assert doc["pareto"] and set(doc["pareto"]) <= {0, 1} and best in doc["pareto"]

    # the sweep is a store entry of its own, with a self-contained report
    entry = sweep_project.store / doc["entry"]
    assert json.loads((entry / "sweep.json").read_text())["points"] == pts
    html = (entry / "report.html").read_text()
    assert html.count("<svg") == 2 and "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")

    # a point is an ordinary run: `realize` with its settings names the same entry, from the store
    r = sweep_project.run("realize", TARGET, "--mirror", str(MIRROR), *SHORT, "--set", "sessions=2")
    assert Path(r.stdout.strip().splitlines()[-1]).name == ok[1]["entry"]
    assert not re.search(r"^(run|build|get) ", r.stderr, re.M), r.stderr

    # the second call reuses every point: same entries, nothing run, the same sweep entry
    again, err = _sweep(sweep_project)
    assert [pt["entry"] for pt in again["points"]] == [pt["entry"] for pt in pts]
    assert again["entry"] == doc["entry"]
    assert err.count(": reused") == 2 and not re.search(r"^(run|build|get) ", err, re.M), err


def test_a_point_that_fails_while_running_is_reported(sweep_project: Project, local_sweep: dict) -> None:
    # a YOLOX model decoded as RetinaNet fails inside the run; the yolox point is reused
    r = sweep_project.run("sweep", TARGET, "--mirror", str(MIRROR), *SHORT, "--set", "sessions=2",
                          "--set", "decoder=retinanet,yolox", check=False)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith("retinanet"))
    assert "FAILED" in row and "boxes-scores-labels" in row, row
    assert next(ln for ln in lines if ln.startswith("yolox")).find(local_sweep["points"][1]["entry"]) > 0
    assert "1 of 2 point(s) failed" in r.stdout


def _seed(src: Path, dest: Path, entries: list[str]) -> None:
    """Copy entries (and their realisations) from store ``src`` into store ``dest``, hash-checked."""
    import io

    from mlbuild.rayexec import export_entries, import_entries
    from mlbuild.store import Store

    a, b = Store(src), Store(dest)
    try:
        buf = io.BytesIO()
        records = export_entries(a, entries, set(entries), buf)
        buf.seek(0)
        import_entries(b, records, buf)
    finally:
        a.close()
        b.close()


def test_ray_sweep_gives_the_same_identities_and_accuracy(sweep_project: Project, local_sweep: dict,
                                                          tmp_path: Path) -> None:
    from mlbuild.store import Store

    ok = local_sweep["points"][:2]
    s = Store(sweep_project.store)
    try:
        closure = s.closure([ok[0]["entry"]])
        # the run's inputs (environments, model, tensors), not the run results themselves
        inputs = sorted(n for n in closure if (info := s.info(n)) is not None and info.kind != "run")
    finally:
        s.close()
    node = tmp_path / "node-store"
    _seed(sweep_project.store, node, inputs)  # what shared caches (#9) give a node
    # new performance settings: the points are measured on the node; their accuracy parts are the
    # local sweep's (performance-only settings are not in the accuracy identity)
    other = RAY_PERF
    ray_dir = Path(tempfile.mkdtemp(prefix="mlbray-", dir="/tmp"))  # Ray's socket paths must fit 107 bytes
    cluster = Cluster(ray_dir)
    try:
        doc, err = _sweep(sweep_project, "--ray", cluster.address, "--ray-store", str(node), *other,
                          env=LOOPBACK_ENV, timeout=600)
        # `realize --ray` of an accuracy-only run (no benchmark slot needed): realized on the node,
        # brought home under the name this store's own plan gives it
        acc = [*SHORT, "--set", "sessions=3", "--mode", "accuracy"]
        r = sweep_project.run("realize", TARGET, "--mirror", str(MIRROR), *acc, "--ray", cluster.address,
                              "--ray-store", str(node), env=LOOPBACK_ENV, timeout=300)
        realized = Path(r.stdout.strip().splitlines()[-1]).name
    finally:
        cluster.stop()
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert not cluster.pids()
    pts = doc["points"]
    shown = json.loads(sweep_project.run("show", TARGET, *acc, "--json").stdout)
    assert shown["entry"] == realized and (node / realized).is_dir() and (sweep_project.store / realized).is_dir()
    acc_log = sweep_project.store / realized / "mlperf_log_accuracy.json"
    assert hashlib.sha256(acc_log.read_bytes()).hexdigest() == ok[0]["accuracy_sha256"]
    assert "sessions" in pts[2]["error"]
    assert err.count("submitted to Ray") == 2, err
    for mine, local in zip(pts[:2], ok, strict=True):
        assert mine["error"] is None, mine["error"]
        assert mine["validity"] == "VALID"
        assert (sweep_project.store / mine["entry"]).is_dir() and (node / mine["entry"]).is_dir()
        # the node's accuracy pass came home as the very entry the local sweep made (hash-checked)
        assert mine["parts"]["accuracy"] == local["parts"]["accuracy"]
        assert mine["accuracy_sha256"] == local["accuracy_sha256"] is not None
        assert mine["parts"]["performance"] != local["parts"]["performance"]
    # the same sweep run locally computes the same identities: it finds every point in the store
    again, err = _sweep(sweep_project, *other)
    assert err.count(": reused") == 2 and not re.search(r"^(run|build|get) ", err, re.M), err
    for mine, local in zip(pts, again["points"], strict=True):
        assert (mine["entry"], mine["drv"], mine["parts"]) == (local["entry"], local["drv"], local["parts"])
    assert again["entry"] == doc["entry"]
