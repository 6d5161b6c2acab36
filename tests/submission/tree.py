"""A synthetic submission tree that passes every checker rule, built from the rules' own facts
(spec §1.9), so that each test can break exactly one rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlbuild.submission import rules

DIVISION, SUBMITTER, SYSTEM, MODEL = "open", "acme", "box1", "yolox-nano"
SCEN = f"{DIVISION}/{SUBMITTER}/results/{SYSTEM}/{MODEL}/Offline"
LOADGEN_SHA1 = {"/loadgen.cc": "86bc3765857092b9d1f380604b101c771679842a",
                "/logging.cc": "0123456789abcdef0123456789abcdef01234567"}


def mllog(key: str, value: Any, *, error: bool = False) -> str:
    body = {"key": key, "value": value, "time_ms": 1.5, "namespace": "mlperf::logging", "event_type": "POINT_IN_TIME",
            "metadata": {"is_error": error, "is_warning": False, "file": "loadgen.cc", "line_no": 1, "pid": 7,
                         "tid": 7}}
    return ":::MLLOG " + json.dumps(body)


def perf_values() -> dict[str, Any]:
    qsl, sample, schedule = rules.ROUND_SEEDS["v6.0"]
    return {"loadgen_version": "6.0.17 @ d6147c7eb7", "loadgen_file_sha1": dict(LOADGEN_SHA1),
            "effective_scenario": "Offline", "effective_test_mode": "PerformanceOnly",
            "effective_performance_sample_count": 64, "effective_qsl_rng_seed": qsl,
            "effective_sample_index_rng_seed": sample, "effective_schedule_rng_seed": schedule,
            "effective_min_duration_ms": 600000, "effective_min_query_count": 1, "effective_samples_per_query": 66000,
            "result_validity": "VALID", "result_samples_per_second": 110.5}


def acc_values() -> dict[str, Any]:
    v = perf_values()
    for k in ("result_validity", "result_samples_per_second"):
        del v[k]
    v["effective_test_mode"] = "AccuracyOnly"
    return v


def detail(values: dict[str, Any], errors: tuple[str, ...] = ()) -> str:
    lines = [mllog(k, v) for k, v in values.items()] + [mllog("error_runtime", e, error=True) for e in errors]
    return "\n".join(lines) + "\n"


def system_json() -> dict[str, Any]:
    doc: dict[str, Any] = {k: "x" for k in rules.SYSTEM_REQUIRED_FIELDS}
    doc.update(division=DIVISION, submitter=SUBMITTER, status="available", system_type="edge", system_name=SYSTEM)
    return doc


def make(root: Path) -> Path:
    """Write a passing tree under ``root``; return ``root``."""
    sub = root / DIVISION / SUBMITTER
    (sub / "systems").mkdir(parents=True)
    (sub / "systems" / f"{SYSTEM}.json").write_text(json.dumps(system_json()))
    (sub / "src").mkdir()
    (sub / "src" / "loadgen-sdist-sha1.json").write_text(json.dumps({"sdist": "x", "sha1": LOADGEN_SHA1}))
    (sub / "model_mapping.json").write_text(json.dumps({MODEL: "yolo-95"}))
    scen = root / SCEN
    (scen / "performance" / "run_1").mkdir(parents=True)
    (scen / "performance" / "run_1" / "mlperf_log_detail.txt").write_text(detail(perf_values()))
    (scen / "performance" / "run_1" / "mlperf_log_summary.txt").write_text("Result is : VALID\n")
    (scen / "accuracy").mkdir()
    (scen / "accuracy" / "mlperf_log_detail.txt").write_text(detail(acc_values()))
    record = '{ "seq_id" : 0, "qsl_idx" : 3, "data" : "00" }'
    (scen / "accuracy" / "mlperf_log_accuracy.json").write_text(f"[\n{record}\n]\n")
    (scen / "accuracy" / "accuracy.txt").write_text("mAP=33.313%\nhash=" + "ab" * 32 + "\n")
    (scen / "measurements.json").write_text(json.dumps({k: "fp32" for k in rules.MEASUREMENTS_FIELDS}))
    (scen / "user.conf").write_text("yolo.Offline.min_duration = 600000\n")
    (scen / "README.md").write_text("# how to reproduce\n")
    return root
