"""A project of one's own, outside the checkout: `mlbuild init`, a `path` ground truth, photos
served from a loopback server, the shipped YOLOX-nano by name; the mAP mlbuild reports is the one an
independent pycocotools evaluation gets from the same detections. And the README's "Benchmark your
own model" commands, run as written from a directory holding a model, a COCO JSON and images."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlbuild.harness.coco import COCO80
from tests.httpserver import LoopbackServer, Serve

from .conftest import MIRROR, REPO

COCO128 = next(MIRROR.glob("raw.githubusercontent.com/mujianyu/yolov8/*/datasets/coco128"), MIRROR / "missing")
YOLOX = next(MIRROR.glob("raw.githubusercontent.com/Bigisland1729/object-detection-models/*/yolox_nano.onnx"),
             MIRROR / "missing")
PHOTOS = ("000000000009", "000000000025", "000000000030", "000000000034", "000000000036", "000000000042")


def ground_truth(ids: tuple[str, ...] = PHOTOS) -> dict[str, Any]:
    """coco128's YOLO labels of ``ids`` as a COCO JSON (pixel boxes, the 80 COCO categories)."""
    from PIL import Image

    images, anns = [], []
    for n, i in enumerate(ids, start=1):
        with Image.open(COCO128 / "images" / "train2017" / f"{i}.jpg") as im:
            w, h = im.size
        images.append({"id": n, "file_name": f"{i}.jpg", "width": w, "height": h})
        for line in (COCO128 / "labels" / "train2017" / f"{i}.txt").read_text().split("\n"):
            if not line.strip():
                continue
            c, xc, yc, bw, bh = line.split()
            bw_px, bh_px = float(bw) * w, float(bh) * h
            x, y = float(xc) * w - bw_px / 2, float(yc) * h - bh_px / 2
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": COCO80[int(c)][0],
                         "bbox": [x, y, bw_px, bh_px], "area": bw_px * bh_px, "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": nm} for c, nm in COCO80]}


def pycocotools_map(gt: dict[str, Any], accuracy_log: Path) -> float:
    """COCO mAP (percent) of the accuracy log's detections, decoded here from MLPerf's record format."""
    import contextlib

    import numpy as np
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dets = []
    seen: set[int] = set()
    for e in json.loads(accuracy_log.read_text()):
        idx = int(e["qsl_idx"])
        if idx in seen:
            continue
        seen.add(idx)
        img = gt["images"][idx]
        for _i, ymin, xmin, ymax, xmax, score, label in np.frombuffer(bytes.fromhex(e["data"]),
                                                                      np.float32).reshape(-1, 7).astype(float):
            x0, y0 = xmin * img["width"], ymin * img["height"]
            dets.append({"image_id": img["id"], "category_id": int(label), "score": float(score),
                         "bbox": [x0, y0, xmax * img["width"] - x0, ymax * img["height"] - y0]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.params.imgIds = [im["id"] for im in gt["images"]]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]) * 100


def _photos_tar() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in PHOTOS:
            data = (COCO128 / "images" / "train2017" / f"{i}.jpg").read_bytes()
            ti = tarfile.TarInfo(f"{i}.jpg")
            ti.size, ti.mtime, ti.mode = len(data), 1_600_000_000, 0o644
            tf.addfile(ti, io.BytesIO(data))
    return raw.getvalue()


def _env(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLBUILD_")}
    env.update(MLBUILD_NO_PROGRESS="1", MLBUILD_STORE=str(store), NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return env


def _mlbuild(cwd: Path, store: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "mlbuild", *args], cwd=cwd, env=_env(store), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"mlbuild {' '.join(args)} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.slow
def test_own_project_scores_the_shipped_model_as_pycocotools_does(
        tmp_path: Path, session_store: Path, http_server: LoopbackServer) -> None:
    assert COCO128.is_dir(), f"coco128 is expected in the shared mirror at {MIRROR}"
    root = tmp_path / "bench"
    assert REPO not in root.parents
    _mlbuild(tmp_path, session_store, "init", "bench")
    gt = ground_truth()
    (root / "data").mkdir()
    (root / "data" / "instances.json").write_text(json.dumps(gt))
    url = http_server.route("/photos/coco-photos.tar", Serve(_photos_tar()))
    _mlbuild(root, session_store, "add", "fetch", "photos", url, "--unpack", "tar")
    _mlbuild(root / "data", session_store, "add", "path", "gt", "instances.json")
    _mlbuild(root, session_store, "add", "run", "own", "--model", "yolox-nano-onnx", "--annotations", "gt",
             "--images", "photos", "--set", "mode=accuracy")
    text = (root / "manifests" / "bench.toml").read_text()
    assert '[path.gt]\npath = "../data/instances.json"' in text
    r = _mlbuild(root, session_store, "realize", "own", "--mirror", str(MIRROR))
    out = Path(r.stdout.strip().splitlines()[-1])
    m = re.search(r"mAP=\s*(\d+\.\d+)%", (out / "accuracy.txt").read_text())
    assert m, (out / "accuracy.txt").read_text()
    ours = float(m.group(1))
    theirs = pycocotools_map(gt, out / "mlperf_log_accuracy.json")
    assert abs(ours - theirs) < 0.01, (ours, theirs)
    assert 10.0 < ours < 90.0, "a COCO-trained YOLOX-nano finds COCO objects"
    # an edited ground truth is named by `lock --check`
    gt["annotations"] = gt["annotations"][1:]
    (root / "data" / "instances.json").write_text(json.dumps(gt))
    check = subprocess.run([sys.executable, "-m", "mlbuild", "lock", "--check"], cwd=root, env=_env(session_store),
                           capture_output=True, text=True)
    assert check.returncode == 4 and "`../data/instances.json` changed since it was locked" in check.stderr


def _readme_commands() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Benchmark your own model", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return block


@pytest.mark.slow
def test_readme_benchmark_your_own_model_works_as_written(
        tmp_path: Path, session_store: Path, http_server: LoopbackServer) -> None:
    block = _readme_commands()
    assert "mlbuild init" in block and "mlbuild realize" in block
    bench = tmp_path / "my-bench"
    (bench / "images").mkdir(parents=True)
    # "your" model: the shipped YOLOX-nano, downloaded from the mirror over loopback; "your" photos and labels
    url = http_server.route("/models/model.onnx", Serve(YOLOX.read_bytes()))
    with urllib.request.urlopen(url) as resp:  # loopback only
        (bench / "model.onnx").write_bytes(resp.read())
    gt = ground_truth(PHOTOS[:4])
    (bench / "instances.json").write_text(json.dumps(gt))
    for im in gt["images"]:
        (bench / "images" / im["file_name"]).write_bytes(
            (COCO128 / "images" / "train2017" / im["file_name"]).read_bytes())
    env = _env(session_store)
    env["MLBUILD_MIRRORS"] = str(MIRROR)  # the locked wheels' mirror, as a user's environment sets it
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, f"the README's commands failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert re.search(r"mAP\s*:\s*\d+\.\d+%", r.stdout + r.stderr), r.stdout + r.stderr
    assert re.search(r"Samples per second\s*:\s*\d", r.stdout + r.stderr), r.stderr
    assert (bench / "manifests" / "my-bench.toml").is_file() and (bench / "lock" / "mlbuild.lock").is_file()
    results = list(session_store.glob("*-my-run"))
    assert results and (results[0] / "report.html").is_file()
