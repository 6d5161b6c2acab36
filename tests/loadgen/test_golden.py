"""Our backend against the official logs in ../shared/specs/loadgen-samples
(made with the official 6.0.17 wheel, sample_user.conf, a DEADBEEF null SUT,
QSL 24781/64), modulo timing values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._logs import assert_same_detail, first, parse_detail, timing_outcome
from .conftest import SAMPLES

assert SAMPLES.is_dir(), f"the shared LoadGen samples are expected at {SAMPLES}"

CONF = SAMPLES / "sample_user.conf"
BASE = dict(user_conf=str(CONF), model="retinanet", total=24781, perf=64, data="DEADBEEF")

# Summary lines whose numbers are timing-dependent.
TIMING_LABEL = re.compile(r"latency|per second|QPS w|Samples per second|estimate|Would discard|Scheduled samples")


def summary_skeleton(text: str, *, ending_agnostic: bool = False) -> list[str]:
    """The summary modulo timing values. ``ending_agnostic``: also modulo the lines that follow
    from the run's timing outcome (validity, min duration, constraints, early stopping,
    recommendations, query and error counts); the caller checks those against the run's own
    detail log."""
    out = []
    in_recommendations = False
    for line in text.splitlines():
        if ending_agnostic:
            if line == "Recommendations:":
                in_recommendations = True
                continue
            if in_recommendations and line.startswith(" * "):
                continue
            in_recommendations = False
            if line.startswith(("Result is :", "  Min duration satisfied :", "  Performance constraints satisfied :",
                                "  Early stopping satisfied:")):
                line = line.split(":", 1)[0] + ": <follows from the ending>"
            elif "ERROR" in line or line.startswith("No errors encountered"):
                line = "<error count line>"
            elif line.startswith(" * Processed at least"):
                line = re.sub(r"\(\d+\)", "(N)", line)
        if "warning" in line:
            out.append("<warnings line: count varies with logger contention>")
        elif TIMING_LABEL.search(line):
            out.append(re.sub(r"[-+]?\d[\d.e+]*", "N", line))
        else:
            out.append(line)
    return out


def assert_summary_agrees_with_detail(summary: str, detail: list[dict]) -> None:
    """The summary's validity block and error count say what the run's detail log says."""
    lines = summary.splitlines()
    assert f"Result is : {first(detail, 'result_validity')}" in lines
    met = "Yes" if first(detail, "result_min_duration_met") else "NO"
    assert f"  Min duration satisfied : {met}" in lines
    met = "Yes" if first(detail, "early_stopping_met") else "NO"
    assert f"  Early stopping satisfied: {met}" in lines
    n = first(detail, "num_errors")
    assert lines[-1] == ("No errors encountered during test." if n == 0 else f"{n} ERROR{'S' if n > 1 else ''} "
                         "encountered. See detailed log.")
    assert ("Recommendations:" in lines) == (first(detail, "result_validity") != "VALID")


def assert_matches_golden(name: str, out: Path) -> None:
    golden = parse_detail(SAMPLES / f"{name}_mlperf_log_detail.full.txt")
    ours = parse_detail(out / "mlperf_log_detail.txt")
    assert_same_detail(golden, ours, what=name)
    assert first(ours, "loadgen_file_sha1") == first(golden, "loadgen_file_sha1")
    assert first(ours, "loadgen_version") == "6.0.17 @ d6147c7eb7"

    g_sum = (SAMPLES / f"{name}_mlperf_log_summary.txt").read_text()
    o_sum = (out / "mlperf_log_summary.txt").read_text()
    if any(e["key"] == "result_validity" for e in ours):
        assert_summary_agrees_with_detail(o_sum, ours)
    agnostic = timing_outcome(ours) != timing_outcome(golden)
    assert summary_skeleton(o_sum, ending_agnostic=agnostic) == summary_skeleton(g_sum, ending_agnostic=agnostic)


@pytest.mark.parametrize(
    "name,scenario,mode,record",
    [
        ("offline_perf", "Offline", "PerformanceOnly", False),
        ("offline_acc", "Offline", "AccuracyOnly", False),
        ("server_perf", "Server", "PerformanceOnly", False),
        ("singlestream_perf", "SingleStream", "PerformanceOnly", False),
    ],
)
def test_matches_official_sample_logs(run_backend, name, scenario, mode, record):
    res = run_backend("ours", dict(BASE, scenario=scenario, mode=mode, record=record), timeout=150)
    assert res["from_config_rc"] == 0
    out = res["outdir"]
    assert_matches_golden(name, out)

    if name == "offline_acc":
        acc = (out / "mlperf_log_accuracy.json").read_bytes()
        assert acc[:1500] == (SAMPLES / "offline_acc_mlperf_log_accuracy.head1500B.json").read_bytes()
        assert acc[-300:] == (SAMPLES / "offline_acc_mlperf_log_accuracy.tail300B.json").read_bytes()
