"""Parsers of the LoadGen's summary and detail logs, on the official 6.0.17 sample logs."""

from __future__ import annotations

from mlbuild.harness import logs

from .conftest import SAMPLES

assert SAMPLES.is_dir(), f"the shared LoadGen samples are expected at {SAMPLES}"


def test_server_summary():
    s = logs.parse_summary(SAMPLES / "server_perf_mlperf_log_summary.txt")
    assert s["Scenario"] == "Server" and s["Result is"] == "VALID"
    assert s["Completed samples per second"] == 2003.41
    assert s["99.90 percentile latency (ns)"] == 383756
    assert s["target_latency (ns)"] == 100000000
    assert s["qsl_rng_seed"] == 2085463073848966840
    assert s["Early Stopping Result"] == ["Run successful."]
    assert s["warnings"] == 0 and s["errors"] == 0
    m = logs.performance_metrics(s)
    assert m["samples_per_second"] == 2003.41 and m["validity"] == "VALID" and m["perf_constraints_met"] == "Yes"
    assert m["latency_ns"]["p99"] == 187663 and m["latency_ns"]["p99.9"] == 383756


def test_offline_and_singlestream_summaries():
    off = logs.performance_metrics(logs.parse_summary(SAMPLES / "offline_perf_mlperf_log_summary.txt"))
    assert off["samples_per_second"] == 922232.0 and off["validity"] == "INVALID" and off["min_duration_met"] == "NO"
    assert off["recommendations"]
    ss_raw = logs.parse_summary(SAMPLES / "singlestream_perf_mlperf_log_summary.txt")
    ss = logs.performance_metrics(ss_raw)
    assert ss["p90_latency_ns"] == 2383 and ss["samples_per_second"] == 338747.83
    assert ss_raw["errors"] == 1 and ss_raw["warnings"] == 1
    assert len(ss["early_stopping_result"]) == 4


def test_detail_log():
    entries = logs.parse_detail(SAMPLES / "server_perf_mlperf_log_detail.full.txt")
    v = logs.detail_values(entries)
    assert v["loadgen_version"] == "6.0.17 @ d6147c7eb7"
    assert v["effective_scenario"] == "Server" and v["result_validity"] == "VALID"
    assert isinstance(v["effective_qsl_rng_seed"], int)
    assert logs.detail_errors(entries) == []
    ss = logs.parse_detail(SAMPLES / "singlestream_perf_mlperf_log_detail.full.txt")
    errs = logs.detail_errors(ss)
    assert len(errs) == 1 and errs[0].startswith("error_runtime: Ending early")


def test_detail_line_that_is_not_json_is_recovered():
    line = (
        ':::MLLOG {"key": "sut_name", "value": "my "quoted" sut", "time_ms": 1.5, "namespace": "mlperf::logging", '
        '"event_type": "POINT_IN_TIME", "metadata": {"is_error": true, "is_warning": false}}'
    )
    (e,) = logs.parse_detail_text(line + "\nnot a marker line\n")
    assert e["key"] == "sut_name" and e["value"] == 'my "quoted" sut' and e["time_ms"] == 1.5 and e["is_error"]


def test_first_occurrence_wins():
    text = "\n".join(
        f':::MLLOG {{"key": "loaded_qsl_set", "value": [{i}], "time_ms": {i}.0, '
        '"metadata": {"is_error": false, "is_warning": false}}'
        for i in range(3)
    )
    assert logs.detail_values(logs.parse_detail_text(text)) == {"loaded_qsl_set": [0]}
