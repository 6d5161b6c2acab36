"""Parsers for the LoadGen's ``mlperf_log_detail.txt`` and ``mlperf_log_summary.txt``.

Detail lines are ``:::MLLOG {json}``. The LoadGen writes string values without escaping
(except the git log), so a line that is not valid JSON is recovered with a pattern match
on its ``key``/``value``/``time_ms``/``is_error`` fields instead of being dropped. When a key
repeats (an accuracy run logs ``loaded_qsl_set`` once per set) ``detail_values`` keeps the
first occurrence, as the submission checker does.

Summary lines are ``label : value`` (``Samples per second: X`` has no space before the
colon); numbers become int/float, ``Yes``/``NO`` stay strings; the ``Recommendations:`` and
``Early Stopping Result:`` blocks are gathered as lists of bullet lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MARKER = ":::MLLOG"
_FALLBACK = re.compile(
    r'"key":\s*"(?P<key>[^"]*)",\s*"value":\s*(?P<value>.*?),\s*"time_ms":\s*(?P<time>[0-9.eE+-]+)'
)
_FLAG = re.compile(r'"(?P<name>is_error|is_warning)":\s*(?P<v>true|false)')


def _number(text: str) -> Any:
    t = text.strip()
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    try:
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", t, re.I):
            return float(t)
    except ValueError:
        pass
    return t


def parse_detail_text(text: str) -> list[dict[str, Any]]:
    """Every ``:::MLLOG`` line as ``{key, value, time_ms, is_error, is_warning}``."""
    entries = []
    for line in text.splitlines():
        if not line.startswith(MARKER):
            continue
        body = line[len(MARKER) :].strip()
        try:
            obj = json.loads(body)
            meta = obj.get("metadata") or {}
            entries.append(
                {
                    "key": obj.get("key"),
                    "value": obj.get("value"),
                    "time_ms": obj.get("time_ms"),
                    "is_error": bool(meta.get("is_error", False)),
                    "is_warning": bool(meta.get("is_warning", False)),
                }
            )
            continue
        except json.JSONDecodeError:
            pass
        m = _FALLBACK.search(body)
        if not m:
            continue
        raw = m.group("value").strip()
        if raw.startswith('"') and raw.endswith('"'):
            value: Any = raw[1:-1]
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        flags = {f.group("name"): f.group("v") == "true" for f in _FLAG.finditer(body)}
        entries.append(
            {
                "key": m.group("key"),
                "value": value,
                "time_ms": float(m.group("time")),
                "is_error": flags.get("is_error", False),
                "is_warning": flags.get("is_warning", False),
            }
        )
    return entries


def parse_detail(path: Path) -> list[dict[str, Any]]:
    return parse_detail_text(Path(path).read_text(encoding="utf-8", errors="replace"))


def detail_values(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """key -> value of the first occurrence of each key."""
    out: dict[str, Any] = {}
    for e in entries:
        if e["key"] is not None and e["key"] not in out:
            out[e["key"]] = e["value"]
    return out


def detail_errors(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{e['key']}: {e['value']}" for e in entries if e["is_error"]]


def parse_summary_text(text: str) -> dict[str, Any]:
    """The summary's ``label : value`` lines as a dict (labels as written, stripped)."""
    out: dict[str, Any] = {}
    block: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or set(line.strip()) == {"="}:
            block = None
            continue
        stripped = line.strip()
        if stripped in ("Recommendations:", "Early Stopping Result:"):
            block = stripped[:-1]
            out[block] = []
            continue
        if block is not None and stripped.startswith("*"):
            out[block].append(stripped.lstrip("* ").strip())
            continue
        block = None
        if ":" not in stripped:
            out.setdefault("_lines", []).append(stripped)
            continue
        label, _, value = stripped.partition(":")
        label, value = label.strip(), value.strip()
        if not label:
            continue
        out[label] = _number(value)
    warnings = re.search(r"(No|\d+) warnings? encountered", text)
    errors = re.search(r"(No|\d+) (?:ERRORS?|errors?) encountered", text)
    if warnings:
        out["warnings"] = 0 if warnings.group(1) == "No" else int(warnings.group(1))
    if errors:
        out["errors"] = 0 if errors.group(1) == "No" else int(errors.group(1))
    return out


def parse_summary(path: Path) -> dict[str, Any]:
    return parse_summary_text(Path(path).read_text(encoding="utf-8", errors="replace"))


PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")


def performance_metrics(summary: dict[str, Any], detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """The headline figures of a performance run, named the same way for every scenario.

    ``samples_per_second``: Offline ``Samples per second``, Server ``Completed samples per
    second``, SingleStream ``QPS w/ loadgen overhead``, MultiStream samples per query times
    the query rate implied by the mean query latency (absent when not derivable).
    """
    detail = detail or {}
    scenario = summary.get("Scenario") or detail.get("effective_scenario")
    m: dict[str, Any] = {
        "scenario": scenario,
        "mode": summary.get("Mode"),
        "validity": summary.get("Result is"),
        "min_duration_met": summary.get("Min duration satisfied"),
        "min_queries_met": summary.get("Min queries satisfied"),
        "early_stopping_met": summary.get("Early stopping satisfied"),
    }
    if "Performance constraints satisfied" in summary:
        m["perf_constraints_met"] = summary["Performance constraints satisfied"]
    sps = None
    if scenario == "Offline":
        sps = summary.get("Samples per second")
    elif scenario == "Server":
        sps = summary.get("Completed samples per second")
        m["scheduled_samples_per_second"] = summary.get("Scheduled samples per second")
    elif scenario == "SingleStream":
        sps = summary.get("QPS w/ loadgen overhead")
        m["qps_without_loadgen_overhead"] = summary.get("QPS w/o loadgen overhead")
        m["p90_latency_ns"] = summary.get("90.0th percentile latency (ns)")
    elif scenario == "MultiStream":
        m["p99_query_latency_ns"] = summary.get("99.0th percentile latency (ns)")
        spq = summary.get("samples_per_query")
        mean = detail.get("result_mean_query_latency_ns")
        if isinstance(spq, (int, float)) and isinstance(mean, (int, float)) and mean > 0:
            sps = spq * 1e9 / mean
    m["samples_per_second"] = float(sps) if isinstance(sps, (int, float)) else None
    lat: dict[str, Any] = {}
    for label, key in (("Min latency (ns)", "min"), ("Max latency (ns)", "max"), ("Mean latency (ns)", "mean")):
        if label in summary:
            lat[key] = summary[label]
    for p in PERCENTILES:
        label = f"{p} percentile latency (ns)"
        if label in summary:
            lat[f"p{p.rstrip('0').rstrip('.')}"] = summary[label]
    # MultiStream's summary lists per-query latencies under the same labels.
    m["latency_ns"] = lat
    for key in ("result_query_count", "result_samples_per_second", "early_stopping_latency_ss"):
        if key in detail:
            m[key] = detail[key]
    if "Early Stopping Result" in summary:
        m["early_stopping_result"] = summary["Early Stopping Result"]
    if "Recommendations" in summary:
        m["recommendations"] = summary["Recommendations"]
    m["warnings"] = summary.get("warnings")
    m["errors"] = summary.get("errors")
    return m
