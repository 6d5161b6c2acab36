"""Helpers to compare LoadGen logs modulo timing."""

from __future__ import annotations

import json
from pathlib import Path

# Keys whose values depend on wall-clock time, the machine or the build.
TIMING_KEYS = {
    "test_datetime",
    "get_sut_name_duration_ns",
    "power_begin",
    "power_end",
    "early_stopping_result",
    "early_stopping_latency_ss",
    "early_stopping_latency_ms",
    "warning_generic_message",
    "logger_swap_request_slots_retry_count",
    "logger_swap_request_slots_retry_retry_count",
    "logger_swap_request_slots_retry_reencounter_count",
    "logger_start_reading_entries_retry_count",
    "logger_tls_total_log_cas_fail_count",
    "logger_tls_total_swap_buffers_slot_retry_count",
}
# Provenance of the particular build (the official wheel was built from a git
# checkout at another time than the sdist's generated version file).
BUILD_KEYS = {"loadgen_build_date_local", "loadgen_build_date_utc", "loadgen_git_log_message"}
DETERMINISTIC_RESULTS = {
    "result_validity",
    "result_min_duration_met",
    "result_min_queries_met",
    "result_perf_constraints_met",
    "result_query_count",
    "result_invalid_reason",
    "early_stopping_met",
    "result_scheduled_samples_per_sec",
}


def parse_detail(path: Path) -> list[dict]:
    out = []
    for line in Path(path).read_text().splitlines():
        assert line.startswith(":::MLLOG "), line[:80]
        out.append(json.loads(line[len(":::MLLOG "):]))
    return out


def comparable(entries: list[dict]) -> list[dict]:
    """Drops the logger's contention warnings (their number varies run to run)."""
    return [e for e in entries if not (e["key"] == "warning_generic_message" and "CAS failed" in str(e["value"]))]


def jtype(v) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def value_compared(key: str) -> bool:
    if key in TIMING_KEYS or key in BUILD_KEYS:
        return False
    if key.startswith("result_") and key not in DETERMINISTIC_RESULTS:
        return False
    return True


def assert_same_detail(a: list[dict], b: list[dict], *, what: str = "") -> None:
    a, b = comparable(a), comparable(b)
    ka = [e["key"] for e in a if e["key"] != "warning_generic_message"]
    kb = [e["key"] for e in b if e["key"] != "warning_generic_message"]
    assert ka == kb, f"{what}: key sequences differ"
    ea = [e for e in a if e["key"] != "warning_generic_message"]
    eb = [e for e in b if e["key"] != "warning_generic_message"]
    for x, y in zip(ea, eb):
        k = x["key"]
        assert jtype(x["value"]) == jtype(y["value"]), f"{what}: type of {k}: {x['value']!r} vs {y['value']!r}"
        if value_compared(k):
            assert x["value"] == y["value"], f"{what}: value of {k}: {x['value']!r} vs {y['value']!r}"
        mx, my = x["metadata"], y["metadata"]
        assert (mx["file"], mx["line_no"], mx["is_error"], mx["is_warning"]) == (
            my["file"],
            my["line_no"],
            my["is_error"],
            my["is_warning"],
        ), f"{what}: metadata of {k}: {mx} vs {my}"
        assert list(x) == list(y), f"{what}: field order of {k}"


def first(entries: list[dict], key: str):
    for e in entries:
        if e["key"] == key:
            return e["value"]
    raise KeyError(key)


def summary_result(path: Path) -> str:
    for line in Path(path).read_text().splitlines():
        if line.startswith("Result is :"):
            return line.split(":", 1)[1].strip()
    return ""
