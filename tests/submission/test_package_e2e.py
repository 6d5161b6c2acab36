"""Packages from real short runs of the embedded benchmark (each LoadGen backend), checked, and
rebuilt byte for byte in a second store; the one-command flow of the manifests' submission target."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from mlbuild.store import Store
from mlbuild.submission import layout, package, rules, summary
from tests.e2e.conftest import MIRROR, Project

pytestmark = [pytest.mark.slow, pytest.mark.needs_index]

FAST = ["--set", "min_duration_ms=1000", "--set", "min_query_count=64"]
SYSTEM_TOML = """host_storage_type = "NVMe SSD"
host_storage_capacity = "1 TB"
cooling = "air"
host_processors_per_node = 1
host_memory_configuration = "1x 24 GB"
host_networking = "virtio"
host_network_card_count = 1
host_networking_topology = "N/A"
"""


def _realize(p: Project, *extra: str) -> Path:
    r = p.run("realize", "yolox-coco128-offline", "--mirror", str(MIRROR), *FAST, *extra)
    return Path(r.stdout.strip().splitlines()[-1])


def _package(p: Project, *args: str) -> tuple[Path, str, str]:
    r = p.run("submission", *args)
    lines = r.stdout.strip().splitlines()
    path = Path(lines[-2])
    m = re.fullmatch(r"(\S+)  sha256:([0-9a-f]{64})", lines[-1])
    assert m, r.stdout
    assert Path(m.group(1)) == path / "open.tar.gz"
    return path, m.group(2), r.stderr


def _sdist_entry(store: Path) -> str:
    return next(p.name for p in store.iterdir() if p.name.endswith("-loadgen-src"))


def test_package_of_a_pyo3_run(project: Project, tmp_path: Path) -> None:
    result = _realize(project, "--loadgen", "pyo3")
    (tmp_path / "system.toml").write_text(SYSTEM_TOML)
    pkg, sha, err = _package(project, result.name, "--submitter", "acme", "--system-name", "box1",
                             "--system-toml", str(tmp_path / "system.toml"), "--out", str(tmp_path / "copy"))
    assert pkg.parent == project.store and pkg.name.endswith("-mlperf-submission")
    blob = (pkg / "open.tar.gz").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == sha
    assert (tmp_path / "copy" / "open.tar.gz").read_bytes() == blob
    assert "NOT SUBMITTABLE" in err and "[min_duration]" in err

    sub = pkg / "open" / "acme"
    system = json.loads((sub / "systems" / "box1.json").read_text())
    assert set(rules.SYSTEM_REQUIRED_FIELDS) <= set(system) and len(rules.SYSTEM_REQUIRED_FIELDS) == 35
    res = json.loads((result / "result.json").read_text())
    machine = res["provenance"]["machine"]
    assert system["host_processor_model_name"] == machine["cpu_model"]
    assert system["host_processor_core_count"] == machine["cpu_cores"]
    assert system["host_storage_type"] == "NVMe SSD" and system["division"] == "open"
    assert json.loads((sub / "model_mapping.json").read_text()) == {"yolox-nano": "yolo-95"}
    assert (sub / "src" / "mlbuild" / "harness" / "run.py").is_file() and (sub / "code").is_dir()
    sources = json.loads((sub / "src" / "SOURCES.json").read_text())
    assert sources["builder_source"] == res["provenance"]["mlbuild"]["builder_source"], "src/ is the code that ran"

    scen = sub / "results" / "box1" / "yolox-nano" / "Offline"
    perf = (scen / "performance" / "run_1" / "mlperf_log_detail.txt").read_text()
    assert perf == (result / "performance" / "mlperf_log_detail.txt").read_text()
    # the run's LoadGen settings come from mlperf.conf's `yolo` entries: performance_sample_count 64
    assert re.search(r'"key": "effective_performance_sample_count", "value": 64,', perf)
    # the accuracy pass's LoadGen logs: kept beside the pure accuracy entry, packaged here
    acc_detail = (scen / "accuracy" / "mlperf_log_detail.txt").read_text()
    assert '"value": "AccuracyOnly"' in acc_detail
    acc_part = res["provenance"]["parts"]["accuracy"]["entry"]
    assert not (project.store / acc_part / "mlperf_log_detail.txt").exists()
    assert (project.store / ".mlbuild" / "side" / acc_part / "mlperf_log_detail.txt").read_text() == acc_detail
    full = (result / "accuracy" / "mlperf_log_accuracy.json").read_bytes()
    truncated = (scen / "accuracy" / "mlperf_log_accuracy.json").read_bytes()
    assert len(full) > 10 * 1024 >= len(truncated)
    assert truncated == full[:4096] + b"\n\n...\n\n" + full[-4096:]
    acc_txt = (scen / "accuracy" / "accuracy.txt").read_text()
    assert f"hash={hashlib.sha256(full).hexdigest()}\n" in acc_txt
    assert re.search(rf"^mAP={res['metrics']['mAP']:.3f}%$", acc_txt, re.M)
    for name in ("measurements.json", "user.conf", "README.md", "mlbuild-result.json"):
        assert (scen / name).stat().st_size > 0
    assert "yolo.Offline.min_duration = 1000" in (scen / "user.conf").read_text()
    assert "mlbuild reproduce mlbuild-result.json" in (scen / "README.md").read_text()
    assert layout.lock_digest(res) in (scen / "README.md").read_text()

    rows = list(csv.DictReader(io.StringIO((pkg / "summary.csv").read_text())))
    assert list(rows[0]) == list(summary.COLUMNS) and len(rows) == 1
    assert rows[0]["Model"] == "yolox-nano" and rows[0]["MlperfModel"] == "yolo-95"
    assert float(rows[0]["Result"]) == res["metrics"]["samples_per_second"]
    doc = json.loads((pkg / "summary.json").read_text())
    assert doc["submittable"] is False and doc["tarball"] == {"file": "open.tar.gz", "sha256": sha}
    rules_failed = {f["rule"] for f in doc["check"]["findings"]}
    assert rules_failed == {"min_duration"}, doc["check"]["findings"]
    assert "NOT SUBMITTABLE" in (pkg / "README.md").read_text()
    with tarfile.open(pkg / "open.tar.gz") as tf:
        names = tf.getnames()
    assert all(n in ("open", "open/acme") or n.startswith("open/acme/") for n in names)
    assert str(project.store) not in blob.decode("latin-1") and str(project.root) not in blob.decode("latin-1")

    # the checker, on the tarball and on the tree: exit 1, the rule with its file and value
    for target in (pkg / "open.tar.gz", tmp_path / "copy"):
        r = project.run("submission", "check", str(target), check=False)
        assert r.returncode == 1, r.stderr
        assert re.search(r"\[min_duration\] open/acme/results/box1/yolox-nano/Offline/performance/run_1/"
                         r"mlperf_log_detail.txt: .*\(found: 1000\)", r.stderr), r.stderr

    # the same results in a second store give the same package entry and the same tarball bytes
    two = Store(tmp_path / "store2")
    one = Store(project.store)
    try:
        for entry in (result.name, _sdist_entry(project.store)):
            info = one.info(entry)
            assert info is not None
            with two.staging(entry) as st:
                shutil.copytree(project.store / entry, st / "out", symlinks=True)
                two.commit(st / "out", entry, kind=info.kind, method="tree", deriver=info.deriver)
        src = _sdist_entry(project.store)
        again = package.build(two, [result.name], {"submitter": "acme", "system_name": "box1",
                                                   "system": package.system_overrides(tmp_path / "system.toml")},
                              loadgen_src=(src, one.info(src).hash.sha256))  # type: ignore[union-attr]
    finally:
        one.close()
        two.close()
    assert again.entry == pkg.name
    assert again.tarball.read_bytes() == blob


def test_package_of_an_official_run_and_bad_input(project: Project) -> None:
    official = _realize(project, "--loadgen", "official")
    pkg, sha, _ = _package(project, official.name, "--submitter", "acme")
    doc = json.loads((pkg / "summary.json").read_text())
    failed = {f["rule"] for f in doc["check"]["findings"]}
    # the official wheel's logged LoadGen sources match the pinned sdist: no `loadgen_source` finding
    assert "loadgen_source" not in failed and "min_duration" in failed
    assert not any("not compared" in n for n in doc["notes"]), doc["notes"]
    system = next((pkg / "open" / "acme" / "systems").glob("*.json"))
    assert "official binding" in json.loads(system.read_text())["other_software_stack"]
    # rebuilt from the same result: the same entry and bytes
    pkg2, sha2, _ = _package(project, official.name, "--submitter", "acme")
    assert (pkg2, sha2) == (pkg, sha)

    # two results of the same model and scenario cannot share a package; nothing is left behind
    pyo3 = _realize(project, "--loadgen", "pyo3")
    before = sorted(p.name for p in project.store.iterdir())
    r = project.run("submission", official.name, pyo3.name, "--submitter", "acme", check=False)
    assert r.returncode != 0 and "two results for yolox-nano/Offline" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in project.store.iterdir()) == before
    r = project.run("submission", official.name, check=False)
    assert r.returncode == 2 and "--submitter" in r.stderr
    r = project.run("submission", official.name, "--submitter", "a/b", check=False)
    assert r.returncode != 0 and "submitter 'a/b'" in r.stderr


def test_the_submission_target_is_one_command(project: Project, tmp_path: Path) -> None:
    first = project.run("submission", "yolox-coco128-submission", "--mirror", str(MIRROR))
    again = project.run("submission", "yolox-coco128-submission", "--mirror", str(MIRROR))
    sha = [line for line in first.stdout.splitlines() if "sha256:" in line]
    assert sha and sha == [line for line in again.stdout.splitlines() if "sha256:" in line]
    assert "NOT SUBMITTABLE" in first.stderr and "[min_duration]" in first.stderr
    pkg = Path(first.stdout.strip().splitlines()[-2])
    doc = json.loads((pkg / "summary.json").read_text())
    assert doc["rows"][0]["Model"] == "yolox-nano" and doc["submittable"] is False
    assert any(f["rule"] == "min_duration" and f["value"] == 10000 for f in doc["check"]["findings"])
