"""Our submission checker: the rules of spec §1.9 (MLPerf's checker, v6.0), each failure with its
file and the value found.

A failed rule is either an ``error`` (the package is malformed: a file or field is missing) or
``not-submittable`` (well formed, but MLPerf would not accept the result: a short run, another
round's seeds, a missing run, an INVALID result, a LoadGen built from altered source).  Standard
library only: the ``mlperf-submission`` builder runs it on the tree it lays out.
"""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbuild.harness import logs
from mlbuild.submission import rules

ERROR = "error"
NOT_SUBMITTABLE = "not-submittable"
# the pinned LoadGen source's file digests, as `loadgen_file_sha1` keys them (written by the builder)
LOADGEN_SDIST_FILE = "loadgen-sdist-sha1.json"
KNOWN_BENCHMARKS = ("retinanet", "yolo-95", "yolo-99")


@dataclass(frozen=True)
class Finding:
    rule: str
    file: str  # relative to the checked root (`open/<submitter>/...`)
    message: str
    value: Any = None
    kind: str = ERROR

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "file": self.file, "message": self.message, "value": self.value,
                "kind": self.kind}

    def render(self) -> str:
        found = "" if self.value is None else f" (found: {self.value})"
        return f"[{self.rule}] {self.file}: {self.message}{found}"


@dataclass
class Report:
    root: str
    findings: list[Finding]
    checked: list[str]  # results/<system>/<model>/<scenario> directories checked
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "findings": [f.as_dict() for f in self.findings],
                "notes": self.notes, "checker": f"mlbuild (rules of MLPerf's {rules.CHECKER_VERSION} checker)"}


class _Ctx:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.findings: list[Finding] = []
        self.notes: list[str] = []

    def rel(self, p: Path) -> str:
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.as_posix()

    def fail(self, rule: str, path: Path, message: str, value: Any = None, kind: str = ERROR) -> None:
        self.findings.append(Finding(rule, self.rel(path), message, value, kind))


def _dirs(p: Path) -> list[Path]:
    return sorted(x for x in p.iterdir() if x.is_dir()) if p.is_dir() else []


def _round_of(seeds: tuple[Any, Any, Any]) -> str | None:
    return next((r for r, s in rules.ROUND_SEEDS.items() if tuple(s) == tuple(seeds)), None)


# ----------------------------------------------------------------------------- systems


def _check_system(c: _Ctx, f: Path, division: str, submitter: str) -> None:
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        c.fail("system_json", f, f"not readable JSON: {e}")
        return
    if not isinstance(doc, dict):
        c.fail("system_json", f, "expected a JSON object", type(doc).__name__)
        return
    missing = [k for k in rules.SYSTEM_REQUIRED_FIELDS if k not in doc]
    if missing:
        c.fail("system_fields", f, f"{len(missing)} required field(s) missing: {', '.join(missing)}")
    empty = [k for k in rules.SYSTEM_MEANINGFUL_FIELDS if k in doc and str(doc[k]).strip() == ""]
    if empty:
        c.fail("system_meaningful", f, f"field(s) need a meaningful value: {', '.join(empty)}",
               kind=NOT_SUBMITTABLE)
    if "status" in doc and str(doc["status"]).lower() not in rules.SYSTEM_STATUSES:
        c.fail("system_status", f, f"status must be one of {', '.join(rules.SYSTEM_STATUSES)}", doc["status"])
    if "system_type" in doc and str(doc["system_type"]) not in rules.SYSTEM_TYPES:
        c.fail("system_type", f, f"system_type must be one of {', '.join(rules.SYSTEM_TYPES)}", doc["system_type"])
    if "division" in doc and doc["division"] != division:
        c.fail("system_division", f, f"division must be the directory's, `{division}`", doc["division"])
    if "submitter" in doc and doc["submitter"] != submitter:
        c.fail("system_submitter", f, f"submitter must be the directory's, `{submitter}`", doc["submitter"])


# ----------------------------------------------------------------------------- one scenario


def _detail(c: _Ctx, f: Path) -> dict[str, Any] | None:
    try:
        entries = logs.parse_detail_text(f.read_text(encoding="utf-8", errors="replace"))
    except OSError as e:
        c.fail("detail_log", f, f"not readable: {e}")
        return None
    if not entries:
        c.fail("detail_log", f, "holds no `:::MLLOG` line")
        return None
    errors = logs.detail_errors(entries)
    if errors:
        c.fail("loadgen_errors", f, f"{len(errors)} LoadGen error line(s); the first: {errors[0]}",
               kind=NOT_SUBMITTABLE)
    return logs.detail_values(entries)


def _check_loadgen_source(c: _Ctx, f: Path, values: Mapping[str, Any], pinned: Mapping[str, str] | None) -> None:
    logged = values.get("loadgen_file_sha1")
    if not isinstance(logged, dict):
        c.fail("loadgen_file_sha1", f, "the detail log has no `loadgen_file_sha1` map", kind=NOT_SUBMITTABLE)
        return
    if pinned is None:
        return
    changed = sorted(k for k, v in logged.items() if k in pinned and pinned[k] != v)
    if changed:
        c.fail("loadgen_source", f, f"the LoadGen was built from altered source: {len(changed)} file(s) differ "
               f"from the pinned sdist: {', '.join(changed[:5])}", {k: logged[k] for k in changed[:3]},
               kind=NOT_SUBMITTABLE)


def _check_performance(c: _Ctx, scen: Path, scenario: str, pinned: Mapping[str, str] | None) -> None:
    f = scen / "performance" / "run_1" / "mlperf_log_detail.txt"
    if not f.is_file():
        c.fail("performance_run", f, "missing: the result has no performance run", kind=NOT_SUBMITTABLE)
        return
    if not (f.parent / "mlperf_log_summary.txt").is_file():
        c.fail("performance_summary", f.parent / "mlperf_log_summary.txt", "missing")
    v = _detail(c, f)
    if v is None:
        return
    if v.get("effective_scenario") != scenario:
        c.fail("scenario", f, f"effective_scenario must be the directory's, `{scenario}`", v.get("effective_scenario"))
    psc = v.get("effective_performance_sample_count")
    if not isinstance(psc, int) or psc < rules.MIN_PERFORMANCE_SAMPLE_COUNT:
        c.fail("performance_sample_count", f,
               f"effective_performance_sample_count must be >= {rules.MIN_PERFORMANCE_SAMPLE_COUNT}", psc,
               kind=NOT_SUBMITTABLE)
    seeds = (v.get("effective_qsl_rng_seed"), v.get("effective_sample_index_rng_seed"),
             v.get("effective_schedule_rng_seed"))
    want = rules.ROUND_SEEDS[rules.CHECKER_VERSION]
    if seeds != want:
        other = _round_of(seeds)
        c.fail("seeds", f, f"the effective qsl/sample-index/schedule seeds must be {rules.CHECKER_VERSION}'s "
               + (f"(these are {other}'s)" if other else "(these are no round's)"), list(seeds),
               kind=NOT_SUBMITTABLE)
    dur = v.get("effective_min_duration_ms")
    if not isinstance(dur, (int, float)) or dur < rules.MIN_DURATION_MS:
        c.fail("min_duration", f, f"effective_min_duration_ms must be >= {rules.MIN_DURATION_MS} (600 s, in the open "
               "division too): a shorter run is a demo", dur, kind=NOT_SUBMITTABLE)
    mqc = v.get("effective_min_query_count")
    if not isinstance(mqc, int) or mqc < 1:
        c.fail("min_query_count", f, "effective_min_query_count must be >= 1", mqc, kind=NOT_SUBMITTABLE)
    validity = v.get("result_validity")
    if validity != "VALID":
        c.fail("result_validity", f, "the performance run must be VALID", validity, kind=NOT_SUBMITTABLE)
    metric = {"Offline": "result_samples_per_second", "Server": "result_completed_samples_per_sec",
              "SingleStream": "early_stopping_latency_ss", "MultiStream": "early_stopping_latency_ms"}.get(scenario)
    if metric and not isinstance(v.get(metric), (int, float)):
        c.fail("performance_metric", f, f"no numeric `{metric}`", v.get(metric))
    _check_loadgen_source(c, f, v, pinned)


def _check_accuracy(c: _Ctx, scen: Path, pinned: Mapping[str, str] | None) -> None:
    adir = scen / "accuracy"
    log = adir / "mlperf_log_accuracy.json"
    if not log.is_file():
        c.fail("accuracy_run", log, "missing: the result has no accuracy run", kind=NOT_SUBMITTABLE)
        return
    size = log.stat().st_size
    if size > rules.MAX_ACCURACY_LOG_SIZE:
        c.fail("accuracy_log_size", log, f"must be at most {rules.MAX_ACCURACY_LOG_SIZE} bytes (truncated as "
               "truncate_accuracy_log.py does)", size)
    txt = adir / "accuracy.txt"
    if not txt.is_file():
        c.fail("accuracy_result", txt, "missing")
    else:
        text = txt.read_text(encoding="utf-8", errors="replace")
        if not any(re.match(rules.MAP_PATTERN, line) for line in text.splitlines()):
            c.fail("accuracy_result", txt, "no `mAP=` line", text.strip().splitlines()[-1:] or None)
        if not any(re.match(rules.HASH_PATTERN, line) for line in text.splitlines()):
            c.fail("accuracy_hash", txt, "no `hash=<sha256 of the full accuracy log>` line")
    det = adir / "mlperf_log_detail.txt"
    if not det.is_file():
        c.fail("accuracy_detail_log", det, "missing: the accuracy run's LoadGen detail log", kind=NOT_SUBMITTABLE)
        return
    v = _detail(c, det)
    if v is not None and v.get("effective_test_mode") not in (None, "AccuracyOnly"):
        c.fail("accuracy_mode", det, "the accuracy run's detail log must be of an AccuracyOnly run",
               v.get("effective_test_mode"))
    if v is not None:
        _check_loadgen_source(c, det, v, pinned)


def _check_measurements(c: _Ctx, scen: Path) -> None:
    f = scen / "measurements.json"
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        c.fail("measurements", f, f"missing or not JSON: {e}")
    else:
        empty = [k for k in rules.MEASUREMENTS_FIELDS if not isinstance(doc, dict) or not str(doc.get(k, "")).strip()]
        if empty:
            c.fail("measurements", f, f"field(s) missing or empty: {', '.join(empty)}")
    for name in ("user.conf", "README.md"):
        p = scen / name
        if not p.is_file() or p.stat().st_size == 0:
            c.fail("measure_files", p, "missing or empty")


# ----------------------------------------------------------------------------- the tree


def _submitters(c: _Ctx) -> Iterator[tuple[str, Path]]:
    divisions = [d for d in _dirs(c.root) if d.name in rules.DIVISIONS]
    if not divisions:
        c.fail("tree", c.root, f"no division directory ({' or '.join(rules.DIVISIONS)})",
               [d.name for d in _dirs(c.root)] or None)
    for d in divisions:
        subs = _dirs(d)
        if not subs:
            c.fail("tree", d, "no submitter directory")
        for s in subs:
            yield d.name, s


def check_tree(root: Path) -> Report:
    """Check the submission tree under ``root`` (the directory holding ``open/``)."""
    c = _Ctx(root)
    checked: list[str] = []
    for division, sub in _submitters(c):
        systems = sorted((sub / "systems").glob("*.json")) if (sub / "systems").is_dir() else []
        if not systems:
            c.fail("system_json", sub / "systems", "no systems/<system>.json")
        for f in systems:
            _check_system(c, f, division, sub.name)
        if not (sub / "src").is_dir():
            c.fail("src_dir", sub / "src", "missing (the code that ran)")
        pinned: dict[str, str] | None = None
        pf = sub / "src" / LOADGEN_SDIST_FILE
        if pf.is_file():
            try:
                pinned = dict(json.loads(pf.read_text(encoding="utf-8"))["sha1"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                c.fail("loadgen_source", pf, f"not readable: {e}")
        else:
            c.notes.append(f"{c.rel(pf)}: absent, so the LoadGen's source was not compared with a pinned sdist")
        mapping: dict[str, Any] = {}
        mf = sub / "model_mapping.json"
        if mf.is_file():
            try:
                mapping = dict(json.loads(mf.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError) as e:
                c.fail("model_mapping", mf, f"not readable JSON object: {e}")
        results = sub / "results"
        if not _dirs(results):
            c.fail("results", results, "no results/<system>/ directory")
        for system in _dirs(results):
            if not (sub / "systems" / f"{system.name}.json").is_file():
                c.fail("system_json", sub / "systems" / f"{system.name}.json",
                       f"missing: results/{system.name} has no system description")
            for model in _dirs(system):
                bench = mapping.get(model.name, model.name)
                if bench not in KNOWN_BENCHMARKS:
                    c.fail("model_mapping", model, f"`{model.name}` is no benchmark of {rules.CHECKER_VERSION} and "
                           "model_mapping.json does not map it to one", bench)
                for scen in _dirs(model):
                    checked.append(c.rel(scen))
                    if scen.name not in rules.SCENARIOS:
                        c.fail("scenario", scen, f"not a scenario ({', '.join(rules.SCENARIOS)})", scen.name)
                        continue
                    _check_performance(c, scen, scen.name, pinned)
                    _check_accuracy(c, scen, pinned)
                    _check_measurements(c, scen)
    return Report(str(root), c.findings, checked, c.notes)


def check(path: Path) -> Report:
    """Check a package: a directory (holding ``open/``, or ``open/`` itself, or a package entry) or a
    ``.tar.gz`` of the tree."""
    from mlbuild.errors import UsageError

    path = Path(path)
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise UsageError(f"`{path}` is neither a directory nor a tar archive",
                             hints=["give the package directory or its open.tar.gz"])
        with tempfile.TemporaryDirectory(prefix="mlbuild-check-") as tmp:
            with tarfile.open(path, "r:*") as tf:
                tf.extractall(tmp, filter="data")
            report = check_tree(Path(tmp))
            report.root = str(path)
            return report
    if not path.is_dir():
        raise UsageError(f"`{path}`: no such package directory or tarball")
    if path.name in rules.DIVISIONS and not any(d.name in rules.DIVISIONS for d in _dirs(path)):
        path = path.parent
    return check_tree(path)
