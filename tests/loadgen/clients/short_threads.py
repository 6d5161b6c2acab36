"""Offline client completing every sample from its own short-lived thread, the way the
upstream py_demo_offline.py does (one `threading.Thread` per issued batch). Written against
`mlperf_loadgen` as an upstream client is; run it on our binding with
`python -m mlbuild_loadgen.run short_threads.py ...`.

Usage: short_threads.py OUTDIR [--samples N] [--repeat R] [--per-thread K | --slices N] [--trace 0|1]
Prints the module's name, then one line per test: 'result <VALID|INVALID> completed <n>'.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import mlperf_loadgen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--per-thread", type=int, default=1, help="samples per thread (0: the whole query, as the demo)")
    ap.add_argument("--slices", type=int, default=0,
                    help="the demo's pattern instead: per query, N threads; thread i completes every N-th "
                         "sample after sleeping (1 + i %% 3) * --slice-sleep seconds, so threads exit while "
                         "the test goes on")
    ap.add_argument("--slice-sleep", type=float, default=0.3)
    ap.add_argument("--calls", type=int, default=1,
                    help="with --slices: each thread completes its samples in this many QuerySamplesComplete calls")
    ap.add_argument("--demo", action="store_true",
                    help="the demo's own settings: default min duration (600 s at 1000 QPS: one query of "
                         "660000 samples), a 1024/128 QSL, default log settings")
    ap.add_argument("--trace", type=int, default=0, help="LogSettings.enable_trace (the demo keeps the default, on)")
    args = ap.parse_args()
    print(f"module {mlperf_loadgen.__name__}", flush=True)

    completed = 0
    lock = threading.Lock()

    def process(samples):
        time.sleep(0.0005 * (1 + len(samples) % 7))
        responses = [mlperf_loadgen.QuerySampleResponse(s.id, 0, 0) for s in samples]
        mlperf_loadgen.QuerySamplesComplete(responses)
        nonlocal completed
        with lock:
            completed += len(samples)

    def process_slice(query_samples, i):
        time.sleep(args.slice_sleep * (1 + i % 3))
        mine = query_samples[i::args.slices]
        step = max(1, -(-len(mine) // args.calls))
        for j in range(0, len(mine), step):
            process(mine[j:j + step])

    def issue_query(query_samples):
        if args.slices:
            for i in range(args.slices):
                threading.Thread(target=process_slice, args=(query_samples, i)).start()
            return
        k = args.per_thread or len(query_samples)
        for i in range(0, len(query_samples), k):
            threading.Thread(target=process, args=[query_samples[i:i + k]]).start()

    def flush_queries():
        pass

    for r in range(args.repeat):
        completed = 0
        settings = mlperf_loadgen.TestSettings()
        settings.scenario = mlperf_loadgen.TestScenario.Offline
        settings.mode = mlperf_loadgen.TestMode.PerformanceOnly
        settings.offline_expected_qps = 1000
        if not args.demo:
            settings.min_duration_ms = 0
            settings.min_query_count = args.samples
        out = Path(args.outdir) / f"run{r}"
        out.mkdir(parents=True, exist_ok=True)
        log = mlperf_loadgen.LogSettings()
        log.log_output.outdir = str(out)
        log.enable_trace = args.trace
        sut = mlperf_loadgen.ConstructSUT(issue_query, flush_queries)
        total, perf = (1024, 128) if args.demo else (args.samples, args.samples)
        qsl = mlperf_loadgen.ConstructQSL(total, perf, lambda ix: None, lambda ix: None)
        mlperf_loadgen.StartTestWithLogSettings(sut, qsl, settings, log)
        mlperf_loadgen.DestroyQSL(qsl)
        mlperf_loadgen.DestroySUT(sut)
        summary = (out / "mlperf_log_summary.txt").read_text()
        result = summary.split("Result is : ", 1)[1].split()[0]
        print(f"result {result} completed {completed}", flush=True)
    stats = getattr(mlperf_loadgen, "_completion_stats", None)
    if stats:  # ours: (completions handed to the completion thread, threads held at exit)
        print("stats {} {}".format(*stats()), flush=True)


if __name__ == "__main__":
    main()
