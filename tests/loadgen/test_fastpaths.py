"""Batched issue callbacks, queue SUT, array/buffer completions, GIL release."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from ._inproc import log_settings, null_qsl, result, settings


def test_batched_sut_arrays_are_zero_copy_numpy(lg, tmp_path):
    seen = []

    def issue(ids, idx):
        a = np.asarray(ids)
        assert a.dtype == np.uint64 and len(a) == len(ids)
        assert memoryview(idx).format == "Q" and memoryview(ids).readonly
        seen.append((len(ids), int(np.asarray(idx).max())))
        lg.QuerySamplesCompleteArrays(a)  # numpy in, no per-sample objects

    sut = lg.ConstructSUTBatched(issue)
    qsl = null_qsl(lg)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, min_query_count=5000), log_settings(lg, tmp_path))
    assert result(tmp_path) == "VALID"
    assert seen[0][0] == 5000 and seen[0][1] < 256
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_u64array_sequence_protocol(lg, tmp_path):
    got = {}

    def issue(ids, idx):
        got["list"] = ids.tolist()
        got["iter"] = list(ids)
        got["neg"] = ids[-1]
        got["slice"] = ids[1:3]
        got["repr"] = repr(ids)
        lg.QuerySamplesCompleteArrays(ids.tolist())  # plain ints work too

    sut = lg.ConstructSUTBatched(issue)
    qsl = null_qsl(lg)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, min_query_count=100), log_settings(lg, tmp_path))
    assert got["list"] == got["iter"] and got["neg"] == got["list"][-1] and got["slice"] == got["list"][1:3]
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_buffer_completion_writes_accuracy_log(lg, tmp_path):
    def issue(ids, idx):
        n = len(ids)
        # each sample's 4-byte record is its own index, little endian
        buf = np.asarray(idx).astype("<u4").tobytes()
        lg.QuerySamplesCompleteBuffer(ids, buf, 4)
        assert n > 0

    sut = lg.ConstructSUTBatched(issue)
    qsl = null_qsl(lg, total=300)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, mode="AccuracyOnly"), log_settings(lg, tmp_path))
    entries = json.loads((tmp_path / "mlperf_log_accuracy.json").read_text())
    assert len(entries) == 300
    for e in entries:
        assert bytes.fromhex(e["data"]) == int(e["qsl_idx"]).to_bytes(4, "little")
    with pytest.raises(ValueError):
        lg.QuerySamplesCompleteBuffer([1, 2], b"abc", 4)  # buffer too small
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_arrays_with_data_pointers_and_response_cb(lg, tmp_path):
    payload = np.frombuffer(b"\xde\xad\xbe\xef", dtype=np.uint8)
    ptr = payload.ctypes.data
    replaced = np.frombuffer(b"\x01\x02", dtype=np.uint8)
    calls = []

    def response_cb(r):
        calls.append(r.id)
        r.data, r.size = replaced.ctypes.data, 2  # lazy host copy, like the official response_cb

    def issue(ids, idx):
        n = len(ids)
        lg.QuerySamplesCompleteArrays(ids, np.full(n, ptr, np.uint64), np.full(n, 4, np.uint64),
                                      response_cb=response_cb)

    sut = lg.ConstructSUTBatched(issue)
    qsl = null_qsl(lg, total=100)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, mode="AccuracyOnly"), log_settings(lg, tmp_path))
    entries = json.loads((tmp_path / "mlperf_log_accuracy.json").read_text())
    assert len(entries) == 100 == len(calls)
    assert {e["data"] for e in entries} == {"0102"}
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_queue_sut_server_from_worker_thread(lg, tmp_path):
    sut = lg.ConstructQueueSUT()
    stop = threading.Event()
    done = []

    def worker():
        while not stop.is_set():
            ids, _idx = lg.PollQueries(sut, 256, 0.01)
            if len(ids):
                done.append(len(ids))
                lg.QuerySamplesCompleteArrays(ids)

    t = threading.Thread(target=worker)
    t.start()
    qsl = null_qsl(lg)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings(lg, "Server", min_query_count=2000), log_settings(lg, tmp_path))
    finally:
        stop.set()
        t.join()
    assert result(tmp_path) == "VALID"
    assert sum(done) == 2000
    with pytest.raises(ValueError):
        lg.PollQueries(12345)
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)


def test_gil_released_while_core_runs(lg, tmp_path):
    """StartTest releases the GIL: a Python thread completes the samples while
    the main thread is inside StartTest, and another thread keeps running."""
    import queue

    q: queue.SimpleQueue = queue.SimpleQueue()
    ticks = [0]
    stop = threading.Event()

    def spinner():
        while not stop.is_set():
            ticks[0] += 1

    def completer():
        while True:
            item = q.get()
            if item is None:
                return
            lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in item])

    threads = [threading.Thread(target=spinner), threading.Thread(target=completer)]
    for t in threads:
        t.start()
    sut = lg.ConstructFastSUT(lambda ids, idx: q.put(list(ids)), lambda: None)
    qsl = null_qsl(lg)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, "SingleStream", min_query_count=400), log_settings(lg, tmp_path))
    stop.set()
    q.put(None)
    for t in threads:
        t.join()
    assert result(tmp_path) == "VALID"
    assert ticks[0] > 0
    lg.DestroyFastSUT(sut)
    lg.DestroyQSL(qsl)


def test_first_token_complete(lg, tmp_path):
    tokens = 4

    def issue(qs):
        rs = [lg.QuerySampleResponse(q.id, 0, 0, tokens) for q in qs]
        lg.FirstTokenComplete(rs)
        lg.QuerySamplesComplete(rs)

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = null_qsl(lg)
    s = settings(lg, "Server", min_query_count=600, use_token_latencies=True)
    lg.StartTestWithLogSettings(sut, qsl, s, log_settings(lg, tmp_path))
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)

    detail = {}
    for line in (tmp_path / "mlperf_log_detail.txt").read_text().splitlines():
        e = json.loads(line[len(":::MLLOG "):])
        detail.setdefault(e["key"], e["value"])
    # every sample reported its first token and its token count: no error, a valid run
    assert detail["num_errors"] == 0
    assert detail["result_validity"] == "VALID"
    assert result(tmp_path) == "VALID"
    # a sample's first token comes no later than its completion
    assert 0 < detail["result_first_token_min_latency_ns"] <= detail["result_min_latency_ns"]
    assert detail["result_first_token_max_latency_ns"] <= detail["result_max_latency_ns"]
    assert detail["result_first_token_mean_latency_ns"] <= detail["result_mean_latency_ns"]
    # the token throughput counts the reported tokens: 4 per completed sample
    per_sample = detail["result_completed_tokens_per_second"] / detail["result_completed_samples_per_sec"]
    assert per_sample == pytest.approx(tokens, rel=0.05)
    text = (tmp_path / "mlperf_log_summary.txt").read_text()
    assert "TTFT Early Stopping Result:" in text and "Mean First Token latency (ns)" in text


def test_batched_sut_completes_by_return_value(lg, tmp_path):
    sut = lg.ConstructSUTBatched(lambda ids, idx: True)
    qsl = null_qsl(lg)
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, "SingleStream", min_query_count=400), log_settings(lg, tmp_path))
    assert result(tmp_path) == "VALID"
    lg.DestroySUT(sut)

    # a bytes-like return: equal slices per sample, copied into the accuracy log
    sut = lg.ConstructSUTBatched(lambda ids, idx: np.asarray(idx).astype("<u2").tobytes())
    lg.StartTestWithLogSettings(sut, qsl, settings(lg, mode="AccuracyOnly"), log_settings(lg, tmp_path))
    entries = json.loads((tmp_path / "mlperf_log_accuracy.json").read_text())
    assert len(entries) == 256
    assert all(bytes.fromhex(e["data"]) == int(e["qsl_idx"]).to_bytes(2, "little") for e in entries)
    lg.DestroySUT(sut)

    sut = lg.ConstructSUTBatched(lambda ids, idx: 42)
    with pytest.raises(lg.SutCallbackError, match="must return None, True, or a bytes-like"):
        lg.StartTestWithLogSettings(sut, qsl, settings(lg), log_settings(lg, tmp_path))
    lg.DestroySUT(sut)
    lg.DestroyQSL(qsl)
