"""A run's identity split: accuracy is a pure derivation, performance a per-machine measurement.

The graph is planned from the project's own manifests and lock (pure: nothing is fetched or
run); `results` ordering is checked on a real store (SQLite registry, entries on disk)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from mlbuild import graph, lock, manifest
from mlbuild.cli import main
from mlbuild.harness import system
from mlbuild.store import Store

REPO = Path(__file__).resolve().parents[2]
RUN = "yolox-coco128-offline"
ACC, PERF = f"{RUN}/accuracy", f"{RUN}/performance"
MACHINE = {"arch": "x86_64", "cpu_model": "Test CPU A", "cpu_cores": 8, "memory_mib": 16000,
           "os": "Test OS", "kernel": "6.1.0"}
ISA = ["avx", "avx2", "fma"]


@pytest.fixture(scope="module")
def inputs() -> tuple[manifest.Manifest, lock.Lock]:
    return manifest.load(REPO / "manifests"), lock.read(REPO / "lock" / "mlbuild.lock")


def plan(inputs: tuple[manifest.Manifest, lock.Lock], overrides: dict[str, Any] | None = None, *,
         machine: dict[str, Any] | None = None, isa: list[str] | None = None, the_lock: lock.Lock | None = None
         ) -> graph.Graph:
    m, lk = inputs
    g = graph.plan(m, the_lock or lk, [RUN], overrides)
    # re-split the unsplit run node under a given machine/ISA (plan splits with this host's)
    unsplit = {n: v for n, v in g.nodes.items() if not n.startswith(f"{RUN}/")}
    unsplit[RUN] = _unsplit_run(g)
    return graph.split_runs(graph.Graph(unsplit, g.targets), machine=machine or MACHINE, isa=isa or ISA)


def _unsplit_run(g: graph.Graph) -> graph.Node:
    """The `mlperf-run` node the assembly replaced (its accuracy or performance part, mode restored)."""
    asm = g.nodes[RUN]
    part = g.nodes[ACC] if ACC in g.nodes else g.nodes[PERF]
    fp = {k: v for k, v in part.fingerprint.items()
          if k not in ("part", "machine", "repeat", "cpu_isa", "runtime", "mlbuild_version", "lock")}
    fp["params"] = dict(asm.params)
    return dataclasses.replace(part, name=RUN, fingerprint=fp, params=dict(asm.params))


def test_a_run_becomes_accuracy_performance_and_assembly(inputs: Any) -> None:
    g = plan(inputs)
    acc, perf, asm = g.nodes[ACC], g.nodes[PERF], g.nodes[RUN]
    assert asm.builder == "mlperf-result" and asm.inputs == {"accuracy": ACC, "performance": PERF}
    assert acc.builder == perf.builder == "mlperf-run"
    assert acc.params["mode"] == "accuracy" and perf.params["mode"] == "performance"
    assert acc.drv.endswith(f"-{RUN}-accuracy") and perf.drv.endswith(f"-{RUN}-performance")
    assert asm.drv.endswith(f"-{RUN}") and asm.fingerprint["inputs"] == {"accuracy": acc.drv,
                                                                            "performance": perf.drv}
    # the accuracy identity: ISA and runtime, no machine; the measurement: machine and repeat
    assert acc.fingerprint["cpu_isa"] == ISA and acc.fingerprint["runtime"]["onnxruntime"]
    assert "machine" not in acc.fingerprint and "repeat" not in acc.fingerprint
    assert perf.fingerprint["machine"] == MACHINE and perf.fingerprint["repeat"] == 0
    # the manifest's performance settings never reach the accuracy part
    assert acc.params["min_duration_ms"] == -1 and acc.params["target_qps"] == 0.0
    assert perf.params["min_duration_ms"] == 10000 and perf.params["target_qps"] == 100.0
    assert [n for n in g.order() if n.startswith(RUN)] == [ACC, PERF, RUN]


@pytest.mark.parametrize("key,value", [("min_duration_ms", 500), ("max_duration_ms", 9000), ("min_query_count", 7),
                                       ("max_query_count", 3), ("target_qps", 12.5), ("target_latency_ms", 50.0),
                                       ("performance_sample_count", 64)])
def test_a_performance_setting_keeps_the_accuracy_identity(inputs: Any, key: str, value: Any) -> None:
    a, b = plan(inputs), plan(inputs, {key: value})
    assert a.nodes[ACC].drv == b.nodes[ACC].drv
    assert a.nodes[PERF].drv != b.nodes[PERF].drv
    assert a.nodes[RUN].drv != b.nodes[RUN].drv


@pytest.mark.parametrize("key,value", [("nms_iou", 0.5), ("score_threshold", 0.2), ("intra_op_threads", 1),
                                       ("graph_optimization_level", "basic"), ("round", "v5.1")])
def test_what_can_change_a_detection_changes_both(inputs: Any, key: str, value: Any) -> None:
    a, b = plan(inputs), plan(inputs, {key: value})
    assert a.nodes[ACC].drv != b.nodes[ACC].drv and a.nodes[PERF].drv != b.nodes[PERF].drv


def test_the_machine_keys_only_the_measurement(inputs: Any) -> None:
    a = plan(inputs)
    for change in ({"cpu_model": "Test CPU B"}, {"cpu_cores": 16}, {"memory_mib": 32000}, {"kernel": "6.2.0"},
                   {"os": "Other OS"}):
        b = plan(inputs, machine=dict(MACHINE, **change))
        assert a.nodes[ACC].drv == b.nodes[ACC].drv, change
        assert a.nodes[PERF].drv != b.nodes[PERF].drv, change


def test_the_cpu_isa_keys_the_accuracy(inputs: Any) -> None:
    a, b = plan(inputs), plan(inputs, isa=[*ISA, "avx512f"])
    assert a.nodes[ACC].drv != b.nodes[ACC].drv


def test_this_hosts_machine_and_isa_are_what_plan_uses(inputs: Any) -> None:
    m, lk = inputs
    g = graph.plan(m, lk, [RUN])
    assert g.nodes[PERF].fingerprint["machine"] == system.machine_id()
    assert g.nodes[ACC].fingerprint["cpu_isa"] == system.cpu_isa_features()
    assert "nodename" not in json.dumps(g.nodes[PERF].fingerprint)
    import platform

    assert platform.node() not in json.dumps(g.nodes[PERF].fingerprint["machine"])


def test_mode_alone_yields_only_that_part(inputs: Any) -> None:
    acc_only = plan(inputs, {"mode": "accuracy"})
    assert ACC in acc_only.nodes and PERF not in acc_only.nodes
    assert acc_only.nodes[RUN].inputs == {"accuracy": ACC}
    # the accuracy part is the same derivation whichever mode asked for it
    assert acc_only.nodes[ACC].drv == plan(inputs).nodes[ACC].drv
    perf_only = plan(inputs, {"mode": "performance"})
    assert PERF in perf_only.nodes and ACC not in perf_only.nodes
    assert perf_only.nodes[PERF].drv == plan(inputs).nodes[PERF].drv


def test_rerun_takes_the_next_free_repeat(inputs: Any) -> None:
    g = plan(inputs)
    have: set[str] = set()
    seen = []
    for want in range(3):
        r = graph.rerun(g, lambda drv: (f"{drv}-entry", "0" * 64) if drv in have else None, lambda e: True)
        perf = r.nodes[PERF]
        assert perf.fingerprint["repeat"] == want
        assert r.nodes[ACC].drv == g.nodes[ACC].drv  # a rerun never repeats the accuracy run
        assert r.nodes[RUN].fingerprint["inputs"]["performance"] == perf.drv
        have.add(perf.drv)
        seen.append((perf.drv, r.nodes[RUN].drv))
    assert len({e for e, _ in seen}) == 3 and len({a for _, a in seen}) == 3
    assert seen[0] == (g.nodes[PERF].drv, g.nodes[RUN].drv)  # repeat 0 is what a plain realize builds


def test_closure_lock_digest_ignores_unrelated_artifacts(inputs: Any) -> None:
    _, lk = inputs
    g = plan(inputs)
    info = g.nodes[RUN].fingerprint["lock"]
    assert set(info["artifacts"]) == {"build-tools", "coco128", "data-deps", "installer", "loadgen-src", "run-deps",
                                      "yolox-nano-onnx"}
    assert info["artifacts"]["yolox-nano-onnx"] == {
        "method": "flat", "sha256": lk.artifacts["yolox-nano-onnx"].hash.sha256}
    # an artifact the run does not use, added to the lock, changes nothing of the run
    extra = dataclasses.replace(lk, artifacts={**lk.artifacts, "unrelated": lk.artifacts["loadgen-official"]})
    assert plan(inputs, the_lock=extra).nodes[RUN].fingerprint["lock"] == info
    assert plan(inputs, the_lock=extra).nodes[RUN].drv == g.nodes[RUN].drv
    # a changed byte of a used artifact changes the digest
    model = lk.artifacts["yolox-nano-onnx"]
    bad = dataclasses.replace(model, hash=dataclasses.replace(model.hash, sha256="0" * 64))
    changed = dataclasses.replace(lk, artifacts={**lk.artifacts, "yolox-nano-onnx": bad})
    assert plan(inputs, the_lock=changed).nodes[RUN].fingerprint["lock"]["digest"] != info["digest"]


# ------------------------------------------------------------------------------ results ordering


def _add_result(store: Store, name: str, sps: float, *, part: str | None = None) -> None:
    staged = store.meta / "tmp" / f"{name}.stage"
    staged.mkdir(parents=True)
    doc = {"params": {"scenario": "Offline", "mode": "performance", "loadgen": "pyo3"},
           "metrics": {"mAP": None, "samples_per_second": sps, "validity": "VALID"}}
    (staged / "result.json").write_text(json.dumps(doc))
    deriver = {"type": "built", "builder": "mlperf-run", **({"part": part} if part else {})}
    store.commit(staged, name, kind="run", method="tree", deriver=deriver)


def test_results_are_ordered_by_recorded_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "store"
    store = Store(root)
    # names sort a < b < c, completion order is c, a, b: `results show` must pick b
    _add_result(store, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-run", 1.0)
    _add_result(store, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-run", 2.0)
    _add_result(store, "cccccccccccccccccccccccccccccccc-run", 3.0)
    _add_result(store, "dddddddddddddddddddddddddddddddd-run-performance", 4.0, part="performance")
    store.record_completion("cccccccccccccccccccccccccccccccc-run", 1_000.0)
    store.record_completion("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-run", 2_000.0)
    store.record_completion("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-run", 3_000.0)
    store.record_completion("dddddddddddddddddddddddddddddddd-run-performance", 4_000.0)
    store.close()
    assert main(["results", "--store", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    want = ["c" * 32 + "-run", "a" * 32 + "-run", "b" * 32 + "-run"]
    assert [r["entry"] for r in rows] == want  # parts are not listed
    assert [r["completed_at"] for r in rows] == [1000.0, 2000.0, 3000.0]
    assert main(["results", "show", "--store", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["samples_per_second"] == 2.0
    assert main(["results", "--store", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("1970-01-01 00:16:40") and lines[1].endswith("cccccccccccccccccccccccccccccccc-run")


def test_completion_times_live_outside_entries(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    A = "a" * 32 + "-run"
    _add_result(store, A, 1.0)
    before = store.info(A)
    store.record_completion(A, 5.0)
    store.record_completion(A, 7.0)
    assert store.completed_at([A, "missing"]) == {A: 7.0}
    assert store.info(A) == before and store.verify_entry(A) == (True, "ok")


# ------------------------------------------------------------------------------ measurements run alone


class _Events:
    """A Reporter that keeps the order in which builds started and finished."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_task_start(self, key: str, description: str, total: int | None = None) -> None:
        self.events.append(f"start {key}")

    def on_task_progress(self, key: str, advance: int) -> None:
        pass

    def on_task_done(self, key: str, message: str = "") -> None:
        self.events.append(f"done {key}")

    def on_message(self, message: str) -> None:
        pass


def _interleaved(events: list[str]) -> bool:
    running = 0
    for e in events:
        running += 1 if e.startswith("start") else -1
        if running > 1:
            return True
    return False


@pytest.mark.parametrize("exclusive", [False, True])
def test_an_exclusive_builder_runs_with_nothing_beside_it(locked: Any, monkeypatch: pytest.MonkeyPatch,
                                                          exclusive: bool) -> None:
    from mlbuild import builders
    from mlbuild.realize import Realizer

    locked.append_manifest("""
[build.slow-a]
builder = "concat"
inputs = {{ a = "hello" }}
params = {{ sleep = 0.6, sep = "a" }}

[build.slow-b]
builder = "concat"
inputs = {{ a = "hello" }}
params = {{ sleep = 0.6, sep = "b" }}
""")
    locked.cli("realize", "hello")  # the fixed input, fetched from the loopback upstream
    if exclusive:
        monkeypatch.setattr(builders.load("concat"), "EXCLUSIVE", True, raising=False)
    g = graph.plan(manifest.load(locked.root / "manifests"), lock.read(locked.lock_path), ["slow-a", "slow-b"])
    store = Store(locked.store_dir)
    events = _Events()
    try:
        Realizer(store, g, fetcher_factory=lambda: None, reporter=events, jobs=2).run()
    finally:
        store.close()
    assert sorted(e for e in events.events if e.startswith("done")) == ["done build:slow-a", "done build:slow-b"]
    assert _interleaved(events.events) is not exclusive, events.events


def test_a_benchmark_run_is_exclusive() -> None:
    from mlbuild import builders

    assert builders.load("mlperf-run").EXCLUSIVE is True
    assert not getattr(builders.load("mlperf-result"), "EXCLUSIVE", False)  # assembling measures nothing
