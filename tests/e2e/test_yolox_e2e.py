"""The README's main job, end to end, as a user runs it: the committed manifests and lock,
`../shared/mirror` for the model and photos, pip's index for the locked wheels."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .conftest import MIRROR, Project

FAST = ["--set", "min_duration_ms=1000", "--set", "min_query_count=64"]


def _entry(p: Project, target: str, *extra: str) -> str:
    out = p.run("show", target, "--json", *extra).stdout
    return str(json.loads(out)["entry"])


def test_main_job_prints_map_and_throughput_and_is_reused(project: Project) -> None:
    r = project.run("realize", "yolox-coco128-offline", "--mirror", str(MIRROR), *FAST)
    result_path = Path(r.stdout.strip().splitlines()[-1])
    assert result_path.parent == project.store and result_path.name.endswith("-yolox-coco128-offline")
    assert re.search(r"mAP\s*:\s*\d+\.\d+%", r.stderr), r.stderr
    assert re.search(r"Samples per second\s*:\s*\d", r.stderr), r.stderr

    result = json.loads((result_path / "result.json").read_text())
    assert (result_path / "accuracy.txt").read_text().count("mAP=") == 1
    m = re.search(r"mAP=(\d+\.\d+)%", (result_path / "accuracy.txt").read_text())
    assert m and 25.0 < float(m.group(1)) < 60.0, "a COCO-trained YOLOX-nano on COCO photos scores 25-60% mAP"
    assert (result_path / "report.html").read_text().count("<svg") >= 2
    text = json.dumps(result)
    assert str(project.root) not in text and str(project.store) not in text, "results carry no absolute paths"

    # A second realize is a cache hit: same path, nothing built or fetched.
    again = project.run("realize", "yolox-coco128-offline", "--mirror", str(MIRROR), *FAST)
    assert again.stdout.strip().splitlines()[-1] == str(result_path)
    assert not re.search(r"^(build|run|get) ", again.stderr, re.M), again.stderr

    # A new run that changes only LoadGen settings reuses the preprocessing and the environment.
    pre = _entry(project, "coco128-letterbox")
    log = project.store / ".mlbuild" / "logs" / f"{pre}.log"
    before = log.stat().st_mtime_ns
    ss = project.run("realize", "yolox-coco128-offline", "--mirror", str(MIRROR), *FAST,
                     "--scenario", "SingleStream", "--mode", "performance", "--set", "max_query_count=64")
    ss_path = Path(ss.stdout.strip().splitlines()[-1])
    assert ss_path != result_path
    assert re.search(r"^run yolox-coco128-offline", ss.stderr, re.M), ss.stderr
    assert not re.search(r"^(build|get) ", ss.stderr, re.M), ss.stderr
    assert log.stat().st_mtime_ns == before
    ss_result = json.loads((ss_path / "result.json").read_text())
    assert "SingleStream" in json.dumps(ss_result)

    listing = project.run("results").stdout
    assert result_path.name[:20] in listing and ss_path.name[:20] in listing
