"""Each rule of the submission checker, broken once in an otherwise passing tree, is caught with
its rule name, the file and the value found; the passing tree passes (also as a tarball)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mlbuild.submission import checker, rules

from . import tree

SUB = f"{tree.DIVISION}/{tree.SUBMITTER}"
PERF = f"{tree.SCEN}/performance/run_1/mlperf_log_detail.txt"
ACC_DETAIL = f"{tree.SCEN}/accuracy/mlperf_log_detail.txt"
SYSTEM = f"{SUB}/systems/{tree.SYSTEM}.json"


def _perf(root: Path, **changes: object) -> None:
    v = tree.perf_values()
    v.update(changes)
    (root / PERF).write_text(tree.detail(v))


def _system(root: Path, edit: Callable[[dict[str, object]], None]) -> None:
    doc = tree.system_json()
    edit(doc)
    (root / SYSTEM).write_text(json.dumps(doc))


def test_the_passing_tree_passes(tmp_path: Path) -> None:
    report = checker.check(tree.make(tmp_path))
    assert report.ok, [f.render() for f in report.findings]
    assert report.checked == [tree.SCEN]
    with tarfile.open(tmp_path / "open.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "open", arcname="open")
    assert checker.check(tmp_path / "open.tar.gz").ok
    assert checker.check(tmp_path / "open").ok  # the division directory itself


V60 = rules.ROUND_SEEDS["v6.0"]
V61 = rules.ROUND_SEEDS["v6.1"]

CASES: list[tuple[str, Callable[[Path], None], str, str, object, str]] = [
    # (rule, break it, file, message fragment, value found, kind)
    ("min_duration", lambda r: _perf(r, effective_min_duration_ms=10000), PERF, "600 s", 10000,
     checker.NOT_SUBMITTABLE),
    ("seeds", lambda r: _perf(r, effective_qsl_rng_seed=V61[0], effective_sample_index_rng_seed=V61[1],
                               effective_schedule_rng_seed=V61[2]), PERF, "these are v6.1's", list(V61),
     checker.NOT_SUBMITTABLE),
    ("seeds", lambda r: _perf(r, effective_qsl_rng_seed=0), PERF, "no round's", [0, V60[1], V60[2]],
     checker.NOT_SUBMITTABLE),
    ("result_validity", lambda r: _perf(r, result_validity="INVALID"), PERF, "must be VALID", "INVALID",
     checker.NOT_SUBMITTABLE),
    ("performance_sample_count", lambda r: _perf(r, effective_performance_sample_count=32), PERF, ">= 64", 32,
     checker.NOT_SUBMITTABLE),
    ("min_query_count", lambda r: _perf(r, effective_min_query_count=0), PERF, ">= 1", 0, checker.NOT_SUBMITTABLE),
    ("scenario", lambda r: _perf(r, effective_scenario="Server"), PERF, "`Offline`", "Server", checker.ERROR),
    ("performance_metric", lambda r: _perf(r, result_samples_per_second="fast"), PERF, "result_samples_per_second",
     "fast", checker.ERROR),
    ("loadgen_source", lambda r: _perf(r, loadgen_file_sha1=dict(tree.LOADGEN_SHA1, **{"/loadgen.cc": "f" * 40})),
     PERF, "altered source", {"/loadgen.cc": "f" * 40}, checker.NOT_SUBMITTABLE),
    ("loadgen_file_sha1", lambda r: _perf(r, loadgen_file_sha1=None), PERF, "no `loadgen_file_sha1`", None,
     checker.NOT_SUBMITTABLE),
    ("loadgen_errors",
     lambda r: (r / PERF).write_text(tree.detail(tree.perf_values(), ("Ran out of generated queries",))),
     PERF, "Ran out of generated queries", None, checker.NOT_SUBMITTABLE),
    ("performance_run", lambda r: (r / PERF).unlink(), PERF, "no performance run", None, checker.NOT_SUBMITTABLE),
    ("performance_summary", lambda r: (r / PERF).with_name("mlperf_log_summary.txt").unlink(),
     PERF.replace("detail", "summary"), "missing", None, checker.ERROR),
    ("accuracy_run", lambda r: (r / tree.SCEN / "accuracy" / "mlperf_log_accuracy.json").unlink(),
     f"{tree.SCEN}/accuracy/mlperf_log_accuracy.json", "no accuracy run", None, checker.NOT_SUBMITTABLE),
    ("accuracy_log_size", lambda r: (r / tree.SCEN / "accuracy" / "mlperf_log_accuracy.json").write_text("x" * 10241),
     f"{tree.SCEN}/accuracy/mlperf_log_accuracy.json", "at most 10240 bytes", 10241, checker.ERROR),
    ("accuracy_result", lambda r: (r / tree.SCEN / "accuracy" / "accuracy.txt").write_text("hash=" + "ab" * 32 + "\n"),
     f"{tree.SCEN}/accuracy/accuracy.txt", "no `mAP=` line", ["hash=" + "ab" * 32], checker.ERROR),
    ("accuracy_hash", lambda r: (r / tree.SCEN / "accuracy" / "accuracy.txt").write_text("mAP=33.3%\n"),
     f"{tree.SCEN}/accuracy/accuracy.txt", "hash=", None, checker.ERROR),
    ("accuracy_detail_log", lambda r: (r / ACC_DETAIL).unlink(), ACC_DETAIL, "accuracy run's LoadGen detail log",
     None, checker.NOT_SUBMITTABLE),
    ("accuracy_mode", lambda r: (r / ACC_DETAIL).write_text(tree.detail(tree.perf_values())), ACC_DETAIL,
     "AccuracyOnly", "PerformanceOnly", checker.ERROR),
    ("loadgen_errors", lambda r: (r / ACC_DETAIL).write_text(tree.detail(tree.acc_values(), ("boom",))), ACC_DETAIL,
     "boom", None, checker.NOT_SUBMITTABLE),
    ("measurements", lambda r: (r / tree.SCEN / "measurements.json").write_text(json.dumps({"retraining": "no"})),
     f"{tree.SCEN}/measurements.json", "input_data_types", None, checker.ERROR),
    ("measure_files", lambda r: (r / tree.SCEN / "user.conf").write_text(""), f"{tree.SCEN}/user.conf",
     "missing or empty", None, checker.ERROR),
    ("measure_files", lambda r: (r / tree.SCEN / "README.md").unlink(), f"{tree.SCEN}/README.md",
     "missing or empty", None, checker.ERROR),
    ("system_fields", lambda r: _system(r, lambda d: d.pop("host_storage_type")), SYSTEM, "host_storage_type", None,
     checker.ERROR),
    ("system_meaningful", lambda r: _system(r, lambda d: d.update(cooling="")), SYSTEM, "cooling", None,
     checker.NOT_SUBMITTABLE),
    ("system_status", lambda r: _system(r, lambda d: d.update(status="soon")), SYSTEM, "available", "soon",
     checker.ERROR),
    ("system_type", lambda r: _system(r, lambda d: d.update(system_type="laptop")), SYSTEM, "edge", "laptop",
     checker.ERROR),
    ("system_division", lambda r: _system(r, lambda d: d.update(division="closed")), SYSTEM, "`open`", "closed",
     checker.ERROR),
    ("system_submitter", lambda r: _system(r, lambda d: d.update(submitter="other")), SYSTEM, "`acme`", "other",
     checker.ERROR),
    ("system_json", lambda r: (r / SYSTEM).write_text("{"), SYSTEM, "not readable JSON", None, checker.ERROR),
    ("system_json", lambda r: (r / SYSTEM).rename(r / SYSTEM.replace(tree.SYSTEM, "other")), SYSTEM,
     "results/box1 has no system description", None, checker.ERROR),
    ("src_dir", lambda r: __import__("shutil").rmtree(r / SUB / "src"), f"{SUB}/src", "missing", None, checker.ERROR),
    ("model_mapping", lambda r: (r / SUB / "model_mapping.json").unlink(), f"{SUB}/results/{tree.SYSTEM}/{tree.MODEL}",
     "does not map it", tree.MODEL, checker.ERROR),
]


@pytest.mark.parametrize(("rule", "brk", "file", "fragment", "value", "kind"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_is_caught_with_file_and_value(tmp_path: Path, rule: str, brk: Callable[[Path], None], file: str,
                                                 fragment: str, value: object, kind: str) -> None:
    root = tree.make(tmp_path)
    brk(root)
    report = checker.check(root)
    assert not report.ok
    hits = [f for f in report.findings if f.rule == rule]
    assert hits, [f.render() for f in report.findings]
    f = hits[0]
    assert f.file == file
    assert fragment in f.message
    assert f.value == value
    assert f.kind == kind
    assert file in f.render() and f.message in f.render()
    # the break is reported once, and does not drag unrelated rules with it
    assert len(report.findings) <= 2, [x.render() for x in report.findings]


def test_no_division_directory(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    report = checker.check(tmp_path)
    assert [f.rule for f in report.findings] == ["tree"]
    assert report.findings[0].value == ["stuff"]


def test_not_a_package_is_a_usage_error(tmp_path: Path) -> None:
    from mlbuild.errors import UsageError

    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(UsageError, match="neither a directory nor a tar archive"):
        checker.check(tmp_path / "x.txt")
    with pytest.raises(UsageError, match="no such package"):
        checker.check(tmp_path / "missing")
