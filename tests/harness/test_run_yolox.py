"""mlperf-run end to end with the real YOLOX-nano, coco128, ONNX Runtime and official LoadGen."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlbuild.errors import InputError, RunError
from mlbuild.harness import logs, summary

from .conftest import YOLOX, build

FAST = {"min_duration_ms": 0, "min_query_count": 16}


def _run(tmp_path: Path, name: str, pre: Path, ann: Path, model: Path = YOLOX, **params) -> Path:
    return build(
        "mlperf-run",
        tmp_path / name,
        inputs={"env": tmp_path, "model": model, "preprocessed": pre, "annotations": ann},
        params=params,
    )


@pytest.fixture(scope="module")
def both_run(tmp_path_factory, letterboxed16, coco_ann) -> Path:
    return _run(tmp_path_factory.mktemp("run"), "both", letterboxed16, coco_ann, mode="both", **FAST)


def test_accuracy_and_performance(both_run):
    out = both_run
    for sub in ("accuracy", "performance"):
        for f in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"):
            assert (out / sub / f).is_file(), f"{sub}/{f}"
    text = (out / "accuracy.txt").read_text()
    assert text == (out / "accuracy" / "accuracy.txt").read_text()
    last = text.strip().splitlines()[-1]
    assert last.startswith("mAP=") and last.endswith("%")
    r = json.loads((out / "result.json").read_text())
    mAP = r["metrics"]["mAP"]
    assert 30.0 < mAP < 80.0, mAP  # real model, real photos (COCO-trained, so on the high side)
    assert float(last[4:-1]) == pytest.approx(mAP, abs=1e-3)
    assert r["accuracy"]["samples"] == r["accuracy"]["samples_logged"] == 16
    assert r["accuracy"]["mismatched_index"] == 0
    assert r["accuracy"]["per_class_ap"]["person"] is not None
    # performance figures from the summary log
    assert r["metrics"]["validity"] in ("VALID", "INVALID")
    assert r["metrics"]["samples_per_second"] > 1.0
    assert set(r["metrics"]["latency_ns"]) >= {"min", "max", "mean", "p50", "p90", "p99"}
    assert r["performance"]["scenario"] == "Offline"
    # params, inputs (basenames only), system, loadgen
    assert r["params"]["round"] == "v6.0" and r["params"]["loadgen"] == "official"
    assert r["inputs"]["model"] == "yolox_nano.onnx" and "/" not in "".join(r["inputs"].values())
    assert r["system"]["cpu_count"] >= 1 and "onnxruntime" in r["system"]["libraries"]
    assert r["system"]["loadgen"]["loadgen_version"].startswith("6.0.17")
    assert r["model"]["input"] == {"name": "images", "shape": [1, 3, 416, 416], "type": "tensor(float)"}
    assert r["loadgen_errors"] == {"accuracy": [], "performance": []}
    raw = (out / "result.json").read_text()
    assert raw == json.dumps(r, sort_keys=True, indent=2) + "\n"
    assert str(out) not in raw


def test_round_seeds_are_logged(both_run):
    v = logs.detail_values(logs.parse_detail(both_run / "performance" / "mlperf_log_detail.txt"))
    assert v["effective_qsl_rng_seed"] == 2465351861681999779
    assert v["effective_sample_index_rng_seed"] == 14276810075590677512
    assert v["effective_schedule_rng_seed"] == 3936089224930324775
    assert v["effective_scenario"] == "Offline" and v["qsl_reported_total_count"] == 16


def test_accuracy_log_records(both_run):
    entries = json.loads((both_run / "accuracy" / "mlperf_log_accuracy.json").read_text())
    assert sorted(e["qsl_idx"] for e in entries) == list(range(16))
    rec = np.frombuffer(bytes.fromhex(entries[0]["data"]), dtype=np.float32).reshape(-1, 7)
    assert np.all(rec[:, 0] == entries[0]["qsl_idx"])
    assert np.all((rec[:, 1:5] >= 0) & (rec[:, 1:5] <= 1))
    assert np.all(rec[:, 1] <= rec[:, 3]) and np.all(rec[:, 2] <= rec[:, 4])
    assert set(rec[:, 6].astype(int)) <= set(range(1, 91))


def test_report_and_summary(both_run):
    html = (both_run / "report.html").read_text()
    assert html.count("<svg") >= 4  # 2 phases x (histogram + completions) + AP bars
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    r = summary.load_result(both_run)
    text = summary.format_summary(r)
    assert "mAP" in text and "Samples per second" in text and "Offline" in text
    k = summary.key_figures(r)
    assert k["scenario"] == "Offline" and k["mode"] == "both" and k["loadgen"] == "official"
    assert k["map"] == r["metrics"]["mAP"]


def test_accuracy_output_is_deterministic(tmp_path, letterboxed16, coco_ann, both_run):
    out = _run(tmp_path, "acc", letterboxed16, coco_ann, mode="accuracy", **FAST)
    assert (out / "accuracy.txt").read_bytes() == (both_run / "accuracy.txt").read_bytes()
    a = json.loads((out / "result.json").read_text())["accuracy"]
    b = json.loads((both_run / "result.json").read_text())["accuracy"]
    assert a == b
    assert not (out / "performance").exists() and (out / "mlperf_log_accuracy.json").is_file()


@pytest.mark.parametrize(
    "scenario, extra",
    [
        ("SingleStream", {"min_query_count": 20, "target_qps": 100.0}),
        ("Server", {"min_query_count": 20, "target_qps": 20.0, "target_latency_ms": 2000.0}),
        ("MultiStream", {"min_query_count": 3, "samples_per_query": 4, "target_qps": 10.0}),
    ],
)
def test_other_scenarios_performance(tmp_path, letterboxed16, coco_ann, scenario, extra):
    out = _run(
        tmp_path, scenario, letterboxed16, coco_ann, mode="performance", scenario=scenario, min_duration_ms=0, **extra
    )
    r = json.loads((out / "result.json").read_text())
    assert r["performance"]["scenario"] == scenario
    assert r["metrics"]["latency_ns"]["p50"] > 0
    assert r["loadgen_errors"]["performance"] == []
    if scenario != "MultiStream":
        assert r["metrics"]["samples_per_second"] > 0
    assert not (out / "accuracy.txt").exists() and r["metrics"]["mAP"] is None


def test_performance_sample_count_and_batch_param(tmp_path, letterboxed16, coco_ann):
    logs_: list[str] = []
    out = build(
        "mlperf-run",
        tmp_path / "p",
        inputs={"env": tmp_path, "model": YOLOX, "preprocessed": letterboxed16, "annotations": coco_ann},
        params={"mode": "performance", "performance_sample_count": 8, "batch_size": 4, **FAST},
        logs=logs_,
    )
    v = logs.detail_values(logs.parse_detail(out / "mlperf_log_detail.txt"))
    assert v["effective_performance_sample_count"] == 8
    assert any("batch_size=4 ignored" in m for m in logs_)


def test_model_dir_input(tmp_path, letterboxed16, coco_ann):
    d = tmp_path / "model"
    d.mkdir()
    (d / "yolox_nano.onnx").symlink_to(YOLOX)
    out = _run(tmp_path, "dir", letterboxed16, coco_ann, model=d, mode="accuracy", **FAST)
    assert (out / "accuracy.txt").is_file()
    (d / "other.onnx").symlink_to(YOLOX)
    with pytest.raises(InputError, match=r"model: the model input holds 2 `\.onnx` files"):
        _run(tmp_path, "dir2", letterboxed16, coco_ann, model=d, mode="accuracy", **FAST)


# --- bad inputs: all rejected before the LoadGen starts -------------------------------------


def _fake_pre(tmp_path: Path, n: int, size: int, src_meta: dict | None = None, nbytes: int | None = None) -> Path:
    pre = tmp_path / f"fake{n}x{size}"
    pre.mkdir()
    samples = (src_meta or {}).get("samples", [])[:n]
    meta = {
        "shape": [n, 3, size, size], "dtype": "float32", "layout": "NCHW", "samples": samples, "preprocess": "letterbox"
    }
    (pre / "meta.json").write_text(json.dumps(meta))
    with open(pre / "tensors.bin", "wb") as f:
        f.truncate(nbytes if nbytes is not None else n * 3 * size * size * 4)
    return pre


def _meta(pre: Path) -> dict:
    return json.loads((pre / "meta.json").read_text())


def test_model_input_shape_mismatch(tmp_path, letterboxed16, coco_ann):
    pre = _fake_pre(tmp_path, 2, 800, _meta(letterboxed16))
    want = r"yolox_nano\.onnx: input `images` wants \[1, 3, 416, 416\] float32 but tensors\.bin holds \[2,3,800,800\]"
    with pytest.raises(InputError, match=want):
        _run(tmp_path, "r", pre, coco_ann, **FAST)


def test_tensor_size_mismatch(tmp_path, letterboxed16, coco_ann):
    pre = _fake_pre(tmp_path, 2, 416, _meta(letterboxed16), nbytes=1000)
    with pytest.raises(InputError, match=r"tensors\.bin: size is 1000 bytes, expected 4153344"):
        _run(tmp_path, "r", pre, coco_ann, **FAST)


def test_empty_dataset(tmp_path, letterboxed16, coco_ann):
    pre = _fake_pre(tmp_path, 0, 416, _meta(letterboxed16))
    with pytest.raises(InputError, match=r"meta\.json: empty dataset"):
        _run(tmp_path, "r", pre, coco_ann, **FAST)


def test_sample_count_and_order_mismatch(tmp_path, letterboxed16, coco_ann):
    pre = tmp_path / "pre"
    shutil.copytree(letterboxed16, pre)
    meta = _meta(pre)
    meta["samples"] = meta["samples"][:15]
    (pre / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"meta\.json: `samples` has 15 entries but `shape` says 16"):
        _run(tmp_path, "r1", pre, coco_ann, **FAST)
    ann = tmp_path / "ann"
    ann.mkdir()
    doc = json.loads((coco_ann / "annotations.json").read_text())
    small = dict(doc, images=doc["images"][:10])
    small["annotations"] = [a for a in doc["annotations"] if a["image_id"] in {i["id"] for i in small["images"]}]
    (ann / "annotations.json").write_text(json.dumps(small))
    with pytest.raises(InputError, match=r"meta\.json: 16 samples but annotations\.json lists only 10 images"):
        _run(tmp_path, "r2", letterboxed16, ann, **FAST)
    swapped = dict(doc, images=[doc["images"][1], doc["images"][0], *doc["images"][2:]])
    (ann / "annotations.json").write_text(json.dumps(swapped))
    want = r"meta\.json: sample 0 is image 9 `images/train2017/000000000009\.jpg`, but annotations\.json has image 25"
    with pytest.raises(InputError, match=want):
        _run(tmp_path, "r3", letterboxed16, ann, **FAST)


def test_wrong_model_kind_and_params(tmp_path, letterboxed16, coco_ann):
    with pytest.raises(
        InputError, match=r"decoder `boxes-scores-labels` expects outputs `boxes`, `scores`, `labels`; missing"
    ):
        _run(tmp_path, "r1", letterboxed16, coco_ann, model_kind="retinanet", **FAST)
    with pytest.raises(InputError, match=r"param `scenario` must be one of"):
        _run(tmp_path, "r2", letterboxed16, coco_ann, scenario="offline")
    with pytest.raises(InputError, match=r"param `nms_iou` must be in 0\.\.1"):
        _run(tmp_path, "r3", letterboxed16, coco_ann, nms_iou=1.5)
    with pytest.raises(InputError, match=r"param `target_qps` must be >= 0"):
        _run(tmp_path, "r4", letterboxed16, coco_ann, target_qps=-1.0)


def test_missing_loadgen_module_is_a_run_error(tmp_path, letterboxed16, coco_ann, monkeypatch):
    from mlbuild.harness import sut

    monkeypatch.setitem(sut.LOADGEN_MODULES, "pyo3", "mlbuild_loadgen_that_does_not_exist")
    with pytest.raises(RunError, match=r"loadgen `pyo3`: cannot import `mlbuild_loadgen_that_does_not_exist`"):
        _run(tmp_path, "r", letterboxed16, coco_ann, loadgen="pyo3", **FAST)


def test_summary_from_logs_without_result_json(tmp_path, both_run):
    d = tmp_path / "logs_only"
    shutil.copytree(both_run / "performance", d / "performance")
    shutil.copy(both_run / "accuracy.txt", d / "accuracy.txt")
    r = summary.load_result(d)
    full = json.loads((both_run / "result.json").read_text())
    assert r["metrics"]["mAP"] == full["metrics"]["mAP"]
    assert r["metrics"]["samples_per_second"] == full["metrics"]["samples_per_second"]
    assert "Samples per second" in summary.format_summary(r)
    with pytest.raises(InputError, match=r"no `result\.json` and no LoadGen summary"):
        summary.load_result(tmp_path / "nothing_here")
