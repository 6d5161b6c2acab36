"""Runs one LoadGen test with a null SUT under either backend, in its own
process. Usage: python _runner.py '<json spec>' (see conftest.run_backend).

spec keys: backend ("official"|"ours"), scenario, mode, settings (attribute
overrides), user_conf + model (FromConfig first), conf_type, total, perf,
sut ("list"|"fast"|"batched"|"queue"), data (hex response bytes), trace,
record (store issued indices), outdir. Writes outdir/result.json.
"""

from __future__ import annotations

import array
import json
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec["backend"] == "official":
        import mlperf_loadgen as lg
    else:
        import mlbuild_loadgen as lg

    s = lg.TestSettings()
    scenario = spec.get("scenario", "Offline")
    s.scenario = getattr(lg.TestScenario, scenario)
    rc = None
    if spec.get("user_conf"):
        rc = s.FromConfig(spec["user_conf"], spec.get("model", "retinanet"), scenario, spec.get("conf_type", 1))
    s.mode = getattr(lg.TestMode, spec.get("mode", "PerformanceOnly"))
    for k, v in spec.get("settings", {}).items():
        setattr(s, k, v)

    payload = array.array("B", bytes.fromhex(spec.get("data", "")))
    ptr, size = payload.buffer_info() if len(payload) else (0, 0)
    record = spec.get("record", True)
    indices: list[int] = []
    loads: list[list[int]] = []
    kind = spec.get("sut", "list")
    stop = threading.Event()
    worker = None

    if kind == "list":
        def issue(qs):
            if record:
                indices.extend(q.index for q in qs)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, ptr, size) for q in qs])

        sut = lg.ConstructSUT(issue, lambda: None)
    elif kind == "fast":
        def issue(ids, idx):
            if record:
                indices.extend(idx)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, ptr, size) for i in ids])

        sut = lg.ConstructFastSUT(issue, lambda: None)
    elif kind == "batched":
        import numpy as np

        def issue(ids, idx):
            if record:
                indices.extend(idx.tolist())
            n = len(ids)
            lg.QuerySamplesCompleteArrays(ids, np.full(n, ptr, np.uint64), np.full(n, size, np.uint64))

        sut = lg.ConstructSUTBatched(issue, lambda: None)
    elif kind == "queue":
        sut = lg.ConstructQueueSUT()

        def work():
            while not stop.is_set():
                ids, idx = lg.PollQueries(sut, 0, 0.005)
                if len(ids):
                    if record:
                        indices.extend(idx.tolist())
                    lg.QuerySamplesCompleteArrays(ids)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
    else:
        raise SystemExit(f"unknown sut {kind}")

    def load(ix):
        loads.append(list(ix))

    qsl = lg.ConstructQSL(spec.get("total", 1024), spec.get("perf", 64), load, lambda ix: None)
    ls = lg.LogSettings()
    ls.log_output.outdir = spec["outdir"]
    ls.enable_trace = bool(spec.get("trace", False))
    t0 = time.perf_counter()
    lg.StartTestWithLogSettings(sut, qsl, s, ls, spec.get("audit", "audit.config"))
    wall = time.perf_counter() - t0
    stop.set()
    if worker:
        worker.join()
    if kind == "fast":
        lg.DestroyFastSUT(sut)
    else:
        lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)
    Path(spec["outdir"], "result.json").write_text(
        json.dumps({"indices": indices, "loads": loads, "wall_s": wall, "from_config_rc": rc})
    )


if __name__ == "__main__":
    main()
