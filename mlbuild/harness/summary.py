"""Reading a run's ``result.json`` back, for ``mlbuild results``.

- ``load_result(dir)``: the parsed ``result.json`` of a run directory (or the file itself);
  if a run directory has LoadGen logs but no ``result.json``, a result is rebuilt from the
  summary/detail logs and ``accuracy.txt``.
- ``format_summary(result)``: a plain-text table in the spirit of the LoadGen summary.
- ``key_figures(result)``: the one-line figures of ``mlbuild results`` (scenario, mode,
  loadgen, map, samples_per_second, validity).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mlbuild.errors import InputError
from mlbuild.harness import logs

RESULT_FILE = "result.json"


def load_result(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_file():
        return _read(path)
    if (path / RESULT_FILE).is_file():
        return _read(path / RESULT_FILE)
    return _from_logs(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read the run result: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path.name}: expected a JSON object")
    return doc


def _from_logs(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"params": {}, "metrics": {"mAP": None, "samples_per_second": None, "validity": None}}
    found = False
    for sub in ("performance", "."):
        summary = path / sub / "mlperf_log_summary.txt"
        if summary.is_file() and "Scenario" in (s := logs.parse_summary(summary)):
            detail_path = path / sub / "mlperf_log_detail.txt"
            detail = logs.detail_values(logs.parse_detail(detail_path)) if detail_path.is_file() else {}
            perf = logs.performance_metrics(s, detail)
            result["performance"] = perf
            result["metrics"].update(
                samples_per_second=perf.get("samples_per_second"),
                validity=perf.get("validity"),
                latency_ns=perf.get("latency_ns"),
                scenario=perf.get("scenario"),
            )
            result["params"]["scenario"] = perf.get("scenario")
            found = True
            break
    for sub in (".", "accuracy"):
        acc = path / sub / "accuracy.txt"
        if acc.is_file():
            m = re.search(r"mAP=\s*([\d.]+)", acc.read_text(encoding="utf-8", errors="replace"))
            if m:
                result["metrics"]["mAP"] = float(m.group(1))
                found = True
                break
    if not found:
        raise InputError(f"{path.name}: no `{RESULT_FILE}` and no LoadGen summary or accuracy.txt in the run directory")
    return result


def run_results(store: Any) -> list[tuple[str, float | None]]:
    """The store's run results as ``(entry, completed_at)``, oldest first by recorded completion
    time (entries of a store that predates the record first, by name).  The accuracy and
    performance parts of a split run are not results of their own; their target is."""
    names = [name for name, deriver in store.db.execute("SELECT name, deriver FROM entries WHERE kind='run'")
             if not json.loads(deriver).get("part")]
    times = store.completed_at(names)
    return sorted(((n, times.get(n)) for n in names), key=lambda r: (r[1] is not None, r[1] or 0.0, r[0]))


def newest_result(store: Any) -> str | None:
    """The most recently completed run result, or None when the store holds none."""
    runs = run_results(store)
    return runs[-1][0] if runs else None


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def key_figures(result: dict[str, Any]) -> dict[str, Any]:
    params = result.get("params", {})
    metrics = result.get("metrics", {})
    return {
        "scenario": params.get("scenario") or metrics.get("scenario"),
        "mode": params.get("mode"),
        "loadgen": params.get("loadgen"),
        "model_kind": params.get("decoder") or params.get("model_kind"),
        "map": metrics.get("mAP"),
        "samples_per_second": metrics.get("samples_per_second"),
        "validity": metrics.get("validity"),
    }


def format_summary(result: dict[str, Any]) -> str:
    params = result.get("params", {})
    metrics = result.get("metrics", {})
    perf = result.get("performance") or {}
    acc = result.get("accuracy") or {}
    system = result.get("system") or {}
    bar = "=" * 56
    rows: list[tuple[str, str]] = [
        ("Decoder", str(params.get("decoder") or params.get("model_kind") or "-")),
        ("Scenario", str(params.get("scenario") or metrics.get("scenario") or "-")),
        ("Mode", str(params.get("mode", "-"))),
        ("LoadGen", str(params.get("loadgen", "-"))),
        ("Round (seeds)", str(params.get("round", "-"))),
        ("Samples", _num(result.get("dataset", {}).get("samples"), "d")),
    ]
    out = [bar, "mlbuild run summary", bar]
    out += [f"{k:<32s}: {v}" for k, v in rows]
    if metrics.get("mAP") is not None or acc:
        out += ["", "Accuracy", "-" * 56, f"{'mAP':<32s}: {_num(metrics.get('mAP'), '.3f')}%"]
        if acc:
            out.append(f"{'Detections':<32s}: {_num(acc.get('detections'), 'd')}")
    if perf or metrics.get("samples_per_second") is not None:
        out += ["", "Performance", "-" * 56]
        out.append(f"{'Result is':<32s}: {perf.get('validity') or metrics.get('validity') or '-'}")
        out.append(f"{'Samples per second':<32s}: {_num(metrics.get('samples_per_second'), '.2f')}")
        for key, label in (
            ("min_duration_met", "Min duration satisfied"),
            ("min_queries_met", "Min queries satisfied"),
            ("early_stopping_met", "Early stopping satisfied"),
            ("perf_constraints_met", "Performance constraints satisfied"),
        ):
            if perf.get(key) is not None:
                out.append(f"{label:<32s}: {perf[key]}")
        lat = perf.get("latency_ns") or metrics.get("latency_ns") or {}
        for key in ("min", "mean", "p50", "p90", "p95", "p97", "p99", "p99.9", "max"):
            if key in lat:
                out.append(f"{('latency ' + key + ' (ms)'):<32s}: {_num(lat[key] / 1e6, '.3f')}")
    errs = result.get("loadgen_errors") or {}
    n_err = sum(len(v) for v in errs.values()) if isinstance(errs, dict) else 0
    if n_err:
        out += ["", f"{n_err} LoadGen error(s) logged; see mlperf_log_detail.txt"]
    if system:
        out += ["", "System", "-" * 56]
        out.append(f"{'CPU':<32s}: {system.get('cpu_model', '-')} ({system.get('cpu_count', '-')} cores)")
        libs = system.get("libraries") or {}
        if libs:
            out.append(f"{'Libraries':<32s}: " + ", ".join(f"{k} {v}" for k, v in sorted(libs.items())))
        lgv = (system.get("loadgen") or {}).get("loadgen_version")
        if lgv:
            out.append(f"{'LoadGen version':<32s}: {lgv}")
    prov = result.get("provenance") or {}
    if prov:
        out += ["", "Provenance", "-" * 56]
        out.append(f"{'mlbuild':<32s}: {(prov.get('mlbuild') or {}).get('version', '-')}")
        out.append(f"{'Lock (closure digest)':<32s}: {(prov.get('lock') or {}).get('digest', '-')}")
        acc_log = prov.get("accuracy_log") or {}
        if acc_log:
            out.append(f"{'Accuracy log sha256':<32s}: {acc_log.get('sha256', '-')}")
        if prov.get("repeat") is not None:
            out.append(f"{'Measurement repeat':<32s}: {prov['repeat']}")
    out.append(bar)
    return "\n".join(out)
