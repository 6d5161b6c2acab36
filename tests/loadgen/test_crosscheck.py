"""The same null SUT under the official module and ours, each in its own
process: same core, same seeds => same sample order, same detail-log keys,
types, metadata and deterministic values, same validity."""

from __future__ import annotations

import pytest

from ._logs import assert_same_detail, parse_detail, summary_result

SEEDS = dict(qsl_rng_seed=2465351861681999779, sample_index_rng_seed=14276810075590677512,
             schedule_rng_seed=3936089224930324775)

SCENARIO_SETTINGS = {
    "SingleStream": dict(min_query_count=400, single_stream_expected_latency_ns=1_000_000.0),
    "MultiStream": dict(min_query_count=700, multi_stream_expected_latency_ns=8_000_000.0),
    "Server": dict(min_query_count=600, server_target_qps=20000.0),
    "Offline": dict(min_query_count=3000, offline_expected_qps=1.0),
}


@pytest.mark.parametrize("mode", ["AccuracyOnly", "PerformanceOnly"])
@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream", "Server", "Offline"])
def test_same_behaviour_as_official(run_backend, scenario, mode):
    spec = dict(
        scenario=scenario,
        mode=mode,
        total=300,
        perf=64,
        data="DEADBEEF",
        settings=dict(min_duration_ms=0, **SEEDS, **SCENARIO_SETTINGS[scenario]),
    )
    ref = run_backend("official", spec)
    ours = run_backend("ours", spec)

    assert ours["loads"] == ref["loads"]
    assert len(ref["indices"]) > 0
    assert ours["indices"] == ref["indices"]

    da = parse_detail(ref["outdir"] / "mlperf_log_detail.txt")
    db = parse_detail(ours["outdir"] / "mlperf_log_detail.txt")
    assert_same_detail(da, db, what=f"{scenario}/{mode}")

    sa, sb = ref["outdir"] / "mlperf_log_summary.txt", ours["outdir"] / "mlperf_log_summary.txt"
    assert summary_result(sa) == summary_result(sb)
    if mode == "PerformanceOnly":
        assert summary_result(sb) == "VALID"
    else:
        acc_a = (ref["outdir"] / "mlperf_log_accuracy.json").read_text()
        acc_b = (ours["outdir"] / "mlperf_log_accuracy.json").read_text()
        assert acc_a == acc_b
        assert acc_b.count('"DEADBEEF"') >= 300  # MultiStream pads sets to whole queries
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json",
                 "mlperf_log_trace.json"):
        assert (ours["outdir"] / name).exists()
