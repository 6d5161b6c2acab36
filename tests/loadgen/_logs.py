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
    return not (key.startswith("result_") and key not in DETERMINISTIC_RESULTS)


# How the issuing of a performance run ended. The LoadGen pre-generates a fixed query schedule;
# whether the SUT drains it before min_duration (an `error_runtime` "Ran out of generated queries",
# the run INVALID) or reaches min_duration first (a `generic_message` "Ending naturally", VALID)
# depends only on how fast the machine runs the queries. The official sample logs ran out
# (SingleStream, ~3 us/query); a busy machine (> 5 us/query) ends naturally.
RAN_OUT = "ran out of generated queries"
NATURAL = "ended naturally"
# The other timing-dependent outcomes of a null-SUT run: whether min_duration was reached (also
# in Offline, where one query of expected_qps samples may take more or less than min_duration),
# whether the latency constraint held and whether early stopping was met.
OUTCOME_FLAGS = ("result_min_duration_met", "result_perf_constraints_met", "early_stopping_met")
# Entries and values that follow from the outcome (see loadgen.cc IssueQueries / results.cc).
OUTCOME_ENTRIES = {"result_invalid_reason"}
OUTCOME_VALUES = {"result_validity", "result_query_count", "num_errors", *OUTCOME_FLAGS}


def _is_ending_entry(e: dict) -> bool:
    v = str(e["value"])
    return (e["key"] == "error_runtime" and v.startswith("Ending early: Ran out of generated queries")) or (
        e["key"] == "generic_message" and v.startswith("Ending naturally")
    )


def ending(entries: list[dict]) -> str | None:
    """RAN_OUT, NATURAL, or None (no performance issuing, e.g. accuracy mode)."""
    for e in entries:
        if _is_ending_entry(e):
            return RAN_OUT if e["key"] == "error_runtime" else NATURAL
    return None


def timing_outcome(entries: list[dict]) -> tuple[str | None, tuple[object, ...]]:
    """How the issuing ended and the timing-dependent result flags."""
    flags = {}
    for e in entries:
        if e["key"] in OUTCOME_FLAGS:
            flags.setdefault(e["key"], e["value"])
    return ending(entries), tuple(flags.get(k) for k in OUTCOME_FLAGS)


def assert_outcome_consistent(entries: list[dict], *, what: str = "") -> None:
    """The entries that follow from a run's timing outcome agree with it and with each other."""
    how = ending(entries)
    keys = {e["key"] for e in entries}
    errors = sum(1 for e in entries if e["metadata"]["is_error"])
    assert first(entries, "num_errors") == errors, f"{what}: num_errors is not the number of error entries"
    valid = first(entries, "result_validity") == "VALID"
    assert ("result_invalid_reason" in keys) == (not valid), f"{what}: result_invalid_reason iff INVALID"
    flags = [first(entries, k) for k in ("result_min_duration_met", "result_min_queries_met", "early_stopping_met")]
    if "result_perf_constraints_met" in keys:
        flags.append(first(entries, "result_perf_constraints_met"))
    assert valid == all(flags), f"{what}: validity does not follow from the result flags"
    if how is not None:
        generated = first(entries, "generated_query_count")
        issued = first(entries, "result_query_count")
    # (whether min_duration was met is judged on completion times, not by the issuing loop: an
    # Offline run "ends naturally" and may still miss it)
    if how == RAN_OUT:
        assert issued == generated, f"{what}: ran out, yet not all queries issued"
    elif how == NATURAL:
        assert issued <= generated, f"{what}: more queries issued than generated"


def assert_same_detail(a: list[dict], b: list[dict], *, what: str = "") -> None:
    """Same keys in the same order, same types and metadata, same deterministic values.

    When the two runs' timing outcomes differ (how the issuing ended: RAN_OUT vs NATURAL; min
    duration, latency constraint or early stopping met or not: a matter of the machine's speed),
    each log must be consistent with its own outcome, and everything else must still match: the
    ending entry and the entries and values that follow from the outcome are set aside."""
    a, b = comparable(a), comparable(b)
    (ending_a, flags_a), (ending_b, flags_b) = timing_outcome(a), timing_outcome(b)
    endings_explained = ending_a == ending_b or {ending_a, ending_b} == {RAN_OUT, NATURAL}
    skip_values: set[str] = set()
    if (ending_a, flags_a) != (ending_b, flags_b) and endings_explained:
        assert_outcome_consistent(a, what=f"{what} (first log)")
        assert_outcome_consistent(b, what=f"{what} (second log)")
        a = [e for e in a if not _is_ending_entry(e) and e["key"] not in OUTCOME_ENTRIES]
        b = [e for e in b if not _is_ending_entry(e) and e["key"] not in OUTCOME_ENTRIES]
        skip_values = OUTCOME_VALUES
    ka = [e["key"] for e in a if e["key"] != "warning_generic_message"]
    kb = [e["key"] for e in b if e["key"] != "warning_generic_message"]
    assert ka == kb, f"{what}: key sequences differ"
    ea = [e for e in a if e["key"] != "warning_generic_message"]
    eb = [e for e in b if e["key"] != "warning_generic_message"]
    for x, y in zip(ea, eb, strict=True):
        k = x["key"]
        assert jtype(x["value"]) == jtype(y["value"]), f"{what}: type of {k}: {x['value']!r} vs {y['value']!r}"
        if value_compared(k) and k not in skip_values:
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
