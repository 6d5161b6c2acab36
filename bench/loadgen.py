"""Benchmark: the official mlperf_loadgen bindings vs ours (mlbuild_loadgen),
same LoadGen core, null SUT, interleaved, each run in its own subprocess.

Figures (medians over --repeats runs):
  * offline_1m_samples_per_s   Offline, one query of 1M samples, the LoadGen's
                               result_samples_per_second (higher is better).
                               official: best of inline ConstructSUT and
                               ConstructFastSUT; ours: best of
                               ConstructSUTBatched + QuerySamplesCompleteArrays
                               and ConstructSUTBatched completing by return
                               value.
  * offline_1m_starttest_wall_s  wall time of StartTest for the same run.
  * server_max_valid_qps_100ms  highest target QPS on one ladder (the same for
                               both sides) whose run is VALID (p99 <= 100 ms,
                               early stopping met), --server-ms long runs.
                               official: best of inline and fast SUTs; ours:
                               best of ConstructQueueSUT (a worker thread polls
                               and completes batches) and the batched inline SUT.
  * singlestream_loop_us_per_query  1e6 / result_qps_with_loadgen_overhead
                               (issue -> Python -> complete -> next issue);
                               variants as for Offline. The floor beside both:
                               a Rust-only null SUT on the same core with the
                               same settings (rust_loadgen_bindings/examples/
                               null_ss.rs), the core's own per-query cost.
  With --workers, the same SUT on both sides completing from a long-lived Python
  worker thread (issue_cb puts the query on a queue.Queue; the worker calls
  QuerySamplesComplete), the common harness shape; ours hands such completions to
  its completion thread (rust_loadgen_bindings/README.md):
  * singlestream_worker_us_per_query, server_worker_max_valid_qps_100ms,
    offline_worker_1m_samples_per_s.

Every figure names the winning variant of each side (reference_name, ours_name).
Runs are interleaved: each repeat runs every (side, variant) once, the order of
the sides alternating from repeat to repeat; figures are medians over repeats.

Usage: python bench/loadgen.py [--json] [--repeats 3] [--wheel-dir DIR] [--null-ss BIN] [--workers]
Ours is imported from --wheel-dir (an unzipped wheel), $MLBUILD_LOADGEN_PATH,
or the environment. The floor binary: --null-ss, or built with cargo when
$MLPERF_LOADGEN_SRC names the unpacked LoadGen sdist; otherwise the floor is
reported as not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# ---------------------------------------------------------------------------
# worker (runs inside a subprocess)


def _detail(outdir: str) -> dict:
    vals: dict = {}
    with open(os.path.join(outdir, "mlperf_log_detail.txt")) as f:
        for line in f:
            if line.startswith(":::MLLOG "):
                d = json.loads(line[9:])
                vals.setdefault(d["key"], d["value"])
    return vals


class _PutNone:
    """stop.set() for the worker variant: ends its loop."""

    def __init__(self, q) -> None:
        self.q = q

    def set(self) -> None:
        self.q.put(None)


def worker(spec: dict) -> dict:
    import threading

    if spec["backend"] == "official":
        import mlperf_loadgen as lg
    else:
        import mlbuild_loadgen as lg

    variant = spec["variant"]
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, spec["scenario"])
    s.mode = lg.TestMode.PerformanceOnly
    for k, v in spec["settings"].items():
        setattr(s, k, v)
    stop = threading.Event()
    th = None
    QSR = lg.QuerySampleResponse
    complete = lg.QuerySamplesComplete
    if variant == "inline":
        def issue(qs):
            complete([QSR(q.id, 0, 0) for q in qs])

        sut = lg.ConstructSUT(issue, lambda: None)
    elif variant == "fast":
        def issue_fast(ids, _idx):
            complete([QSR(i, 0, 0) for i in ids])

        sut = lg.ConstructFastSUT(issue_fast, lambda: None)
    elif variant == "batched":
        complete_arrays = lg.QuerySamplesCompleteArrays

        def issue_arrays(ids, _idx):
            complete_arrays(ids)

        sut = lg.ConstructSUTBatched(issue_arrays)
    elif variant == "batched_ret":
        # completes by return value (True: empty responses), see ConstructSUTBatched
        sut = lg.ConstructSUTBatched(lambda ids, idx: True)
    elif variant == "worker":
        import queue as queue_mod

        work: queue_mod.SimpleQueue = queue_mod.SimpleQueue()

        def issue_to_worker(qs):
            work.put(qs)

        def work_loop():
            while (qs := work.get()) is not None:
                complete([QSR(q.id, 0, 0) for q in qs])

        sut = lg.ConstructSUT(issue_to_worker, lambda: None)
        th = threading.Thread(target=work_loop, daemon=True)
        th.start()
        stop = _PutNone(work)  # type: ignore[assignment]
    elif variant == "queue":
        sut = lg.ConstructQueueSUT()
        poll, complete_arrays = lg.PollQueries, lg.QuerySamplesCompleteArrays

        def work():
            while not stop.is_set():
                ids, _idx = poll(sut, 0, 0.002)
                if len(ids):
                    complete_arrays(ids)

        th = threading.Thread(target=work, daemon=True)
        th.start()
    else:
        raise SystemExit(f"unknown variant {variant}")
    qsl = lg.ConstructQSL(QSL_TOTAL, QSL_PERF, lambda x: None, lambda x: None)
    with tempfile.TemporaryDirectory() as d:
        ls = lg.LogSettings()
        ls.log_output.outdir = d
        ls.enable_trace = False
        t0 = time.perf_counter()
        lg.StartTestWithLogSettings(sut, qsl, s, ls)
        wall = time.perf_counter() - t0
        stop.set()
        if th:
            th.join()
        det = _detail(d)
    return {
        "wall_s": wall,
        "validity": det.get("result_validity"),
        "samples_per_second": det.get("result_samples_per_second"),
        "qps_with_overhead": det.get("result_qps_with_loadgen_overhead"),
        "completed_per_s": det.get("result_completed_samples_per_sec"),
        "p99_ns": det.get("result_99.00_percentile_latency_ns"),
    }


# ---------------------------------------------------------------------------
# driver


def run(backend: str, variant: str, scenario: str, settings: dict, env: dict, timeout: float = 300) -> dict:
    spec = dict(backend=backend, variant=variant, scenario=scenario, settings=settings)
    p = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env,
        timeout=timeout,
    )
    if p.returncode != 0:
        raise RuntimeError(f"{backend}/{variant}/{scenario} failed:\n{p.stdout}\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


OFFLINE = dict(min_duration_ms=0, offline_expected_qps=1.0, min_query_count=1_000_000)
SS = dict(min_duration_ms=1000, single_stream_expected_latency_ns=2000.0, min_query_count=100)
QSL_TOTAL, QSL_PERF = 24781, 64
# One ladder for both sides: a side's figure is the highest rung it passes, so both must climb the same rungs.
LADDER = [100_000, 125_000, 150_000, 175_000, 200_000, 250_000, 300_000, 400_000, 500_000, 600_000, 800_000,
          1_000_000, 1_250_000, 1_500_000, 2_000_000]
VARIANTS = {
    "Offline": {"official": ("inline", "fast"), "ours": ("batched", "batched_ret")},
    "SingleStream": {"official": ("inline", "fast"), "ours": ("batched", "batched_ret")},
    "Server": {"official": ("inline", "fast"), "ours": ("queue", "batched")},
}
REPO = Path(__file__).resolve().parents[1]


def interleaved(scenario: str, rep: int) -> list[tuple[str, str]]:
    """Every (side, variant) of a scenario once; the side that goes first alternates by repeat."""
    sides = ("official", "ours") if rep % 2 == 0 else ("ours", "official")
    return [(side, v) for side in sides for v in VARIANTS[scenario][side]]


def null_ss_binary(given: str | None, log: Callable[[str], None]) -> Path | None:
    """The Rust-only null SUT (examples/null_ss.rs): --null-ss, else built with cargo if the sdist is known."""
    if given:
        return Path(given)
    if not os.environ.get("MLPERF_LOADGEN_SRC"):
        log("floor: not measured (pass --null-ss BIN or set MLPERF_LOADGEN_SRC to build it)")
        return None
    r = subprocess.run(["cargo", "build", "--release", "--example", "null_ss", "-p", "rust_loadgen_bindings",
                        "--message-format", "short"], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"floor: not measured (cargo build --example null_ss failed: {r.stderr.strip()[-500:]})")
        return None
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "examples" / "null_ss"


def run_null_ss(binary: Path) -> float:
    """us/query of the Rust-only null SUT under SS settings (1e6 / QPS w/ loadgen overhead)."""
    args = [str(binary), str(SS["single_stream_expected_latency_ns"]), str(SS["min_duration_ms"]), str(QSL_TOTAL),
            str(QSL_PERF)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"{binary} failed:\n{p.stdout}\n{p.stderr[-2000:]}")
    for line in p.stdout.splitlines():
        if line.startswith("QPS w/ loadgen overhead"):
            return 1e6 / float(line.split(":", 1)[1])
    raise RuntimeError(f"{binary} printed no 'QPS w/ loadgen overhead' line:\n{p.stdout}")


def server_settings(qps: int, ms: int) -> dict:
    return dict(
        min_duration_ms=ms,
        server_target_qps=float(qps),
        server_target_latency_ns=100_000_000,
        server_target_latency_percentile=0.99,
        min_query_count=100,
    )


def server_search(backend: str, variant: str, ms: int, env: dict, log: Callable[[str], None]) -> int:
    best = 0
    for qps in LADDER:
        r = run(backend, variant, "Server", server_settings(qps, ms), env)
        log(f"  server {backend}/{variant} {qps}: {r['validity']} p99={r['p99_ns']} completed/s={r['completed_per_s']}")
        if r["validity"] != "VALID":
            break
        best = qps
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--server-ms", type=int, default=2000)
    ap.add_argument("--wheel-dir", default=os.environ.get("MLBUILD_LOADGEN_PATH"))
    ap.add_argument("--only", default="offline,server,singlestream")
    ap.add_argument("--null-ss", help="the built rust_loadgen_bindings/examples/null_ss binary (the floor)")
    ap.add_argument("--workers", action="store_true",
                    help="also the 'worker' variant on both sides (completion from a long-lived Python thread)")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(json.loads(a.worker))))
        return

    if a.workers:
        for sides in VARIANTS.values():
            for side in sides:
                sides[side] = (*sides[side], "worker")
    env = dict(os.environ)
    if a.wheel_dir:
        env["PYTHONPATH"] = os.pathsep.join([a.wheel_dir, env.get("PYTHONPATH", "")])
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if a.json else (lambda m: print(m, flush=True))
    only = set(a.only.split(","))
    samples: dict[str, list[float]] = {}

    def add(name: str, v: float) -> None:
        samples.setdefault(name, []).append(v)

    floor_bin = null_ss_binary(a.null_ss, log) if "singlestream" in only else None
    for rep in range(a.repeats):
        log(f"repeat {rep + 1}/{a.repeats}")
        if "offline" in only:
            for backend, variant in interleaved("Offline", rep):
                r = run(backend, variant, "Offline", OFFLINE, env)
                log(f"  offline {backend}/{variant}: {r['samples_per_second']} samples/s, "
                    f"StartTest {r['wall_s']:.3f} s, {r['validity']}")
                add(f"offline/{backend}/{variant}/sps", float(r["samples_per_second"]))
                add(f"offline/{backend}/{variant}/wall", r["wall_s"])
        if "singlestream" in only:
            runs = interleaved("SingleStream", rep)
            if floor_bin is not None:  # the floor runs between the two sides
                runs.insert(len(runs) // 2, ("floor", "rust_null"))
            for backend, variant in runs:
                if backend == "floor":
                    us = run_null_ss(floor_bin)
                    log(f"  singlestream floor (Rust-only null SUT): {us:.2f} us/query")
                    add("ss_floor", us)
                    continue
                r = run(backend, variant, "SingleStream", SS, env)
                us = 1e6 / float(r["qps_with_overhead"])
                log(f"  singlestream {backend}/{variant}: {us:.2f} us/query ({r['validity']})")
                add(f"ss/{backend}/{variant}", us)
        if "server" in only:
            for backend, variant in interleaved("Server", rep):
                add(f"server/{backend}/{variant}", server_search(backend, variant, a.server_ms, env, log))

    med = {k: statistics.median(v) for k, v in samples.items()}

    def best(prefix: str, backend: str, suffix: str = "", higher: bool = True) -> tuple[float, str]:
        cands = {k: v for k, v in med.items() if k.startswith(f"{prefix}/{backend}/") and k.endswith(suffix)}
        k = (max if higher else min)(cands, key=lambda c: cands[c])
        return cands[k], k.split("/")[2]

    figures = []
    if "offline" in only:
        o, ov = best("offline", "ours", "/sps")
        r, rv = best("offline", "official", "/sps")
        figures.append(dict(name="offline_1m_samples_per_s", unit="samples/s", higher_is_better=True, ours=o,
                            reference=r, reference_name=f"mlperf_loadgen {rv}", ours_name=f"mlbuild_loadgen {ov}"))
        # the wall time of the same runs the throughput figure picked
        ow = med[f"offline/ours/{ov}/wall"]
        rw = med[f"offline/official/{rv}/wall"]
        figures.append(dict(name="offline_1m_starttest_wall_s", unit="s", higher_is_better=False, ours=ow, reference=rw,
                            reference_name=f"mlperf_loadgen {rv}", ours_name=f"mlbuild_loadgen {ov}"))
    if "server" in only:
        o, ov = best("server", "ours")
        r, rv = best("server", "official")
        figures.append(dict(name="server_max_valid_qps_100ms", unit="QPS", higher_is_better=True, ours=o, reference=r,
                            reference_name=f"mlperf_loadgen {rv}", ours_name=f"mlbuild_loadgen {ov}"))
    if "singlestream" in only:
        o, ov = best("ss", "ours", higher=False)
        r, rv = best("ss", "official", higher=False)
        fig = dict(name="singlestream_loop_us_per_query", unit="us/query", higher_is_better=False, ours=o,
                   reference=r, reference_name=f"mlperf_loadgen {rv}", ours_name=f"mlbuild_loadgen {ov}",
                   floor=med.get("ss_floor"), floor_name="Rust-only null SUT (examples/null_ss.rs), same settings")
        figures.append(fig)

    if a.workers:
        for scen, key, name, unit, higher in (
            ("offline", "offline/{}/worker/sps", "offline_worker_1m_samples_per_s", "samples/s", True),
            ("singlestream", "ss/{}/worker", "singlestream_worker_us_per_query", "us/query", False),
            ("server", "server/{}/worker", "server_worker_max_valid_qps_100ms", "QPS", True),
        ):
            if scen in only:
                figures.append(dict(name=name, unit=unit, higher_is_better=higher, ours=med[key.format("ours")],
                                    reference=med[key.format("official")], reference_name="mlperf_loadgen worker",
                                    ours_name="mlbuild_loadgen worker"))

    if a.json:
        # the required keys, the variant that won on our side, and the floor where there is one
        keys = ("name", "unit", "higher_is_better", "ours", "reference", "reference_name", "ours_name", "floor",
                "floor_name")
        print(json.dumps({"figures": [{k: f[k] for k in keys if k in f} for f in figures]}))
        return
    print(f"\nmedians over {a.repeats} runs (all variants: {json.dumps({k: round(v, 3) for k, v in med.items()})})\n")
    print(f"{'figure':34} {'official (best)':>18} {'ours (best)':>16} {'ratio':>8}")
    for f in figures:
        ratio = f["ours"] / f["reference"] if f["higher_is_better"] else f["reference"] / f["ours"]
        print(f"{f['name']:34} {f['reference']:>18,.3f} {f['ours']:>16,.3f} {ratio:>7.2f}x   "
              f"({f['reference_name']} vs {f['ours_name']})")
        if "floor" in f:
            floor = "not measured" if f["floor"] is None else f"{f['floor']:,.3f}"
            print(f"{'':34} floor: {floor} {f['unit']} ({f['floor_name']})")


if __name__ == "__main__":
    main()
