"""A LoadGen client written the way the upstream demos and harnesses are, against
`mlperf_loadgen` (run it on our binding with `python -m mlbuild_loadgen.run conformance.py ...`).

What it does that upstream clients do:
* every one of the 12 bool settings set from an int, a numpy bool or None (harnesses copy
  them from argparse ints and config dicts), `infer_token_latencies = 1` included;
* `--pattern workers`: a long-lived thread pool completes the samples (the vision harness);
* `--pattern qdl`: a QDL whose name callback reads an attribute set only after
  ConstructQDL (the LoadGen-over-network demo), completing each query from a new thread;
* `--pattern tokens`: FirstTokenComplete then QuerySamplesComplete with n_tokens from a
  worker (the token-latency demos); in Offline the token latencies are inferred instead.

Usage: conformance.py OUTDIR --scenario S --pattern workers|qdl|tokens
Prints 'module NAME', 'result VALID|INVALID', 'completed N', 'first_tokens N'.
"""

from __future__ import annotations

import argparse
import array
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np

SCENARIO_SETTINGS = {
    "SingleStream": {"single_stream_expected_latency_ns": 200000, "min_query_count": 150},
    "MultiStream": {"multi_stream_expected_latency_ns": 2000000, "min_query_count": 700},
    # A 1 s latency bound: the runs must stay VALID on a loaded 2-core CI machine.
    "Server": {"server_target_qps": 2000, "min_query_count": 1200, "server_target_latency_ns": 1_000_000_000},
    "Offline": {"offline_expected_qps": 2000, "min_query_count": 1000},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--scenario", default="Offline", choices=sorted(SCENARIO_SETTINGS))
    ap.add_argument("--pattern", default="workers", choices=["workers", "qdl", "tokens"])
    args = ap.parse_args()
    print(f"module {lg.__name__}", flush=True)
    tokens = args.pattern == "tokens"
    infer = tokens and args.scenario == "Offline"

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.__members__[args.scenario]
    settings.mode = lg.TestMode(2)  # PerformanceOnly, by value
    settings.min_duration_ms = 0
    for k, v in SCENARIO_SETTINGS[args.scenario].items():
        setattr(settings, k, v)
    # The 8 bool fields of TestSettings, from ints, numpy bools and None.
    settings.server_coalesce_queries = 0
    settings.sample_concatenate_permutation = None
    settings.test05 = np.bool_(False)
    settings.print_timestamps = 0
    settings.performance_issue_unique = 0
    settings.performance_issue_same = np.int64(0)
    settings.use_token_latencies = int(tokens and not infer)
    settings.infer_token_latencies = 1 if infer else 0
    if infer:
        settings.token_latency_scaling_factor = 7
    if tokens and not infer:
        settings.ttft_latency = 2_000_000_000
        settings.tpot_latency = 2_000_000_000

    log = lg.LogSettings()
    log.log_output.outdir = args.outdir
    # The 4 bool fields of the log settings.
    log.log_output.prefix_with_datetime = 0
    log.log_output.copy_detail_to_stdout = np.bool_(False)
    log.log_output.copy_summary_to_stdout = None
    log.enable_trace = 0

    payload = array.array("f", [0.5, 1.5, 2.5, 3.5])
    ptr, n = payload.buffer_info()
    size = n * payload.itemsize
    done = {"completed": 0, "first_tokens": 0}
    lock = threading.Lock()

    def complete(samples) -> None:
        if tokens and not infer:
            lg.FirstTokenComplete([lg.QuerySampleResponse(s.id, ptr, size) for s in samples])
            with lock:
                done["first_tokens"] += len(samples)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, ptr, size, 5) for s in samples])
        with lock:
            done["completed"] += len(samples)

    pool = ThreadPoolExecutor(max_workers=4)
    work: queue.Queue = queue.Queue()

    def token_worker() -> None:
        while (item := work.get()) is not None:
            complete(item)

    token_thread = threading.Thread(target=token_worker, daemon=True)
    if tokens:
        token_thread.start()

    def issue_query(query_samples) -> None:
        if tokens:
            work.put(list(query_samples))
        elif args.pattern == "qdl":
            threading.Thread(target=complete, args=(list(query_samples),)).start()
        else:
            step = max(1, len(query_samples) // 4)
            for i in range(0, len(query_samples), step):
                pool.submit(complete, query_samples[i:i + step])

    def flush_queries() -> None:
        pass

    class NetworkClient:
        """The network demo's shape: the name comes from an attribute set after ConstructQDL."""

        def __init__(self) -> None:
            self.qdl = lg.ConstructQDL(issue_query, flush_queries, self.client_get_name)
            self.sut_server_addr = ["http://127.0.0.1:8000"]

        def client_get_name(self) -> str:
            return "Network SUT: " + ",".join(self.sut_server_addr)

    total = 1024
    qsl = lg.ConstructQSL(total, 512, lambda ix: None, lambda ix: None)
    if args.pattern == "qdl":
        client = NetworkClient()
        lg.StartTestWithLogSettings(client.qdl, qsl, settings, log)
        lg.DestroyQDL(client.qdl)
    else:
        sut = lg.ConstructSUT(issue_query, flush_queries)
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
        lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)
    pool.shutdown()
    if tokens:
        work.put(None)
        token_thread.join()
    summary = (Path(args.outdir) / "mlperf_log_summary.txt").read_text()
    print(f"result {summary.split('Result is : ', 1)[1].split()[0]}")
    print(f"completed {done['completed']}")
    print(f"first_tokens {done['first_tokens']}")


if __name__ == "__main__":
    main()
