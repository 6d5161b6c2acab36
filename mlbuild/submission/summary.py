"""``summary.csv`` and ``summary.json``: one row per model and scenario, with the seed's columns."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from mlbuild.submission import rules

COLUMNS = ("Organization", "Availability", "Division", "SystemType", "SystemName", "Platform", "Model",
           "MlperfModel", "Scenario", "Result", "Accuracy", "number_of_nodes", "host_processor_model_name",
           "host_processors_per_node", "host_processor_core_count", "accelerator_model_name",
           "accelerators_per_node", "Location", "framework", "operating_system", "notes", "compliance", "errors",
           "version", "inferred", "has_power", "Units")


def _result_value(scenario: str, metrics: Mapping[str, Any]) -> Any:
    if scenario in ("Offline", "Server"):
        return metrics.get("samples_per_second")
    lat = metrics.get("latency_ns") or {}
    key = "p90" if scenario == "SingleStream" else "p99"
    v = lat.get(key) if isinstance(lat, dict) else None
    return round(v / 1e6, 6) if isinstance(v, (int, float)) else None


def row(*, system: Mapping[str, Any], system_id: str, model: str, benchmark: str, scenario: str,
        metrics: Mapping[str, Any], location: str, reasons: Sequence[str]) -> dict[str, Any]:
    m = metrics.get("mAP")
    return {
        "Organization": system.get("submitter"),
        "Availability": system.get("status"),
        "Division": system.get("division"),
        "SystemType": system.get("system_type"),
        "SystemName": system.get("system_name"),
        "Platform": system_id,
        "Model": model,
        "MlperfModel": benchmark,
        "Scenario": scenario,
        "Result": _result_value(scenario, metrics),
        "Accuracy": f"mAP: {m}" if m is not None else "",
        "number_of_nodes": system.get("number_of_nodes"),
        "host_processor_model_name": system.get("host_processor_model_name"),
        "host_processors_per_node": system.get("host_processors_per_node"),
        "host_processor_core_count": system.get("host_processor_core_count"),
        "accelerator_model_name": system.get("accelerator_model_name"),
        "accelerators_per_node": system.get("accelerators_per_node"),
        "Location": location,
        "framework": system.get("framework"),
        "operating_system": system.get("operating_system"),
        "notes": "not submittable: " + "; ".join(reasons) if reasons else "",
        "compliance": 0 if reasons else 1,
        "errors": len(reasons),
        "version": rules.CHECKER_VERSION,
        "inferred": 0,
        "has_power": False,
        "Units": rules.UNITS.get(scenario, ""),
    }


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in COLUMNS})
    return buf.getvalue()
