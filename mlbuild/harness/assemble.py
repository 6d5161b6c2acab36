"""The body of the ``mlperf-result`` builder: a run target's output from its parts.

Standard library only (it runs without an environment).  Reads each part's ``result.json``,
copies its LoadGen files into the target's layout and writes the merged ``result.json`` and
``report.html``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mlbuild.errors import InputError
from mlbuild.harness import coco, provenance, report

# what a part holds that the target does not copy (it writes its own)
_NOT_COPIED = ("result.json", "report.html", provenance.TIMELINE_FILE)


def _read_result(part: str, path: Path) -> dict[str, Any]:
    f = path / "result.json"
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path.name}/result.json: the {part} part's result cannot be read: {exc}") from None
    if not isinstance(doc, dict) or doc.get("part") != part:
        raise InputError(f"{path.name}/result.json: expected the result of a {part} part, found "
                         f"part {doc.get('part') if isinstance(doc, dict) else None!r}")
    return doc


def _copy_files(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in _NOT_COPIED:
            shutil.copyfile(f, dest / f.name)


def merge(params: dict[str, Any], parts: dict[str, dict[str, Any]], part_ids: dict[str, dict[str, Any]],
          fingerprint: dict[str, Any], entry: str, layout: dict[str, str]) -> dict[str, Any]:
    """The target's ``result.json`` from its parts' results (pure: no clock, no host)."""
    acc = parts.get("accuracy")
    perf = parts.get("performance")
    first = acc or perf
    assert first is not None
    metrics: dict[str, Any] = {"mAP": None, "samples_per_second": None, "validity": None}
    if acc:
        metrics["mAP"] = acc["metrics"].get("mAP")
    if perf:
        for k in ("samples_per_second", "validity", "latency_ns", "scenario"):
            metrics[k] = perf["metrics"].get(k)
    run_params = dict(params)
    for k in ("score_threshold_effective", "batch_size_effective"):
        run_params[k] = first["params"].get(k)
    inputs: dict[str, Any] = {}
    for r in parts.values():
        inputs.update(r.get("provenance", {}).get("inputs", {}))
    prov_first = first.get("provenance", {})
    result: dict[str, Any] = {
        "schema": first.get("schema"),
        "builder": {"name": "mlperf-run", "version": first.get("builder", {}).get("version")},
        "params": run_params,
        "inputs": dict(first.get("inputs", {})),
        "run": {"entry": entry, "digest": entry.split("-", 1)[0]} if entry else {},
        "model": first.get("model"),
        "dataset": first.get("dataset"),
        "metrics": metrics,
        "loadgen_errors": {k: (r.get("loadgen_errors") or {}).get(k, []) for k, r in sorted(parts.items())},
        "logs": layout,
        # the machine a measurement ran on, else the environment's (pure) description
        "system": (perf or first).get("system"),
        "provenance": {
            "mlbuild": dict(prov_first.get("mlbuild") or {}, version=fingerprint.get("mlbuild_version")),
            "lock": fingerprint.get("lock"),
            "inputs": dict(sorted(inputs.items())),
            "parts": part_ids,
            "loadgen_files": prov_first.get("loadgen_files"),
            "accuracy_log": (acc.get("provenance") or {}).get("accuracy_log") if acc else None,
            "machine": (perf.get("provenance") or {}).get("machine") if perf else None,
            "cpu_isa": prov_first.get("cpu_isa"),
            "runtime": prov_first.get("runtime"),
            "repeat": (perf.get("provenance") or {}).get("repeat") if perf else None,
        },
    }
    if acc:
        result["accuracy"] = acc.get("accuracy")
    if first.get("categories") is not None:  # what was scored, how labels mapped (harness.categories)
        result["categories"] = first["categories"]
    if acc and acc.get("warnings"):
        result["warnings"] = acc["warnings"]
    if perf:
        result["performance"] = perf.get("performance")
    return result


def assemble(ctx: Any) -> None:
    out = Path(ctx.out)
    params = dict(ctx.params)
    mode = params.get("mode", "both")
    parts: dict[str, dict[str, Any]] = {}
    part_ids: dict[str, dict[str, Any]] = {}
    layout: dict[str, str] = {}
    for part in ("accuracy", "performance"):
        src = ctx.inputs.get(part)
        if src is None:
            continue
        src = Path(src)
        parts[part] = _read_result(part, src)
        part_ids[part] = {"entry": src.name, "sha256": ctx.input_hashes.get(part),
                          "derivation": src.name.split("-", 1)[0]}
        dest = out / part if mode == "both" else out
        _copy_files(src, dest)
        side = (getattr(ctx, "input_sides", None) or {}).get(part)
        if part == "accuracy" and side is not None:
            # the accuracy pass's LoadGen logs, kept beside its (pure) entry: this entry is a measurement's
            _copy_files(Path(side), dest)
        layout[part] = part if mode == "both" else "."
    if not parts:
        raise InputError("mlperf-result: neither an accuracy nor a performance part was given")
    if "accuracy" in parts and mode == "both":
        shutil.copyfile(out / "accuracy" / "accuracy.txt", out / "accuracy.txt")
    result = merge(params, parts, part_ids, dict(ctx.fingerprint), ctx.entry, layout)
    if result["provenance"]["accuracy_log"] and mode == "both":
        result["provenance"]["accuracy_log"]["path"] = "accuracy/mlperf_log_accuracy.json"
    coco.dump_json(out / "result.json", result, indent=2)
    timelines: dict[str, Any] = {}
    tl_file = Path(ctx.inputs["performance"]) / provenance.TIMELINE_FILE if "performance" in parts else None
    if tl_file is not None and tl_file.is_file():
        tl = json.loads(tl_file.read_text(encoding="utf-8"))
        timelines["performance"] = SimpleNamespace(issued=tl["issued"], completed=tl["completed"])
    (out / "report.html").write_text(report.render(result, timelines), encoding="utf-8")
