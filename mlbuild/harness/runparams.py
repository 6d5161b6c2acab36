"""The parameters of a benchmark run: ``mlperf-run`` (its parts) and ``mlperf-result`` (the
target's assembly, which receives them as the run's) share this table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlbuild.builders import Param

PARAMS = {
    "decoder": Param(
        str, "", "output decoding (harness/decoders.py): `yolox` grid [N,A,5+C], `boxes-scores-labels` "
        "(RetinaNet/SSD post-processed; alias `retinanet`), `ultralytics` YOLOv8/11 head [N,4+C,A]; "
        "empty = `model_kind`'s, else yolox",
        ("", "yolox", "boxes-scores-labels", "ultralytics", "retinanet")),
    "model_kind": Param(
        str, "", "deprecated, replaced by `decoder` (`yolox`; `retinanet` = decoder `boxes-scores-labels`)",
        ("", "yolox", "retinanet")),
    "scenario": Param(str, "Offline", "LoadGen scenario", ("Offline", "SingleStream", "Server", "MultiStream")),
    "mode": Param(
        str, "both", "accuracy run, performance run, or both (accuracy first)", ("accuracy", "performance", "both")),
    "loadgen": Param(
        str, "official", "LoadGen module: `mlperf_loadgen` (official) or `mlbuild_loadgen` (pyo3)",
        ("official", "pyo3")),
    "round": Param(str, "v6.0", "MLPerf round whose qsl/sample-index/schedule seeds are set", ("v5.1", "v6.0", "v6.1")),
    "performance_sample_count": Param(
        int, 0, "samples loaded for a performance run (0 = mlperf.conf's override for the model, else all)"),
    "min_duration_ms": Param(int, -1, "minimum test duration in ms (negative = mlperf.conf, 600000)"),
    "max_duration_ms": Param(int, 0, "maximum test duration in ms (0 = no limit)"),
    "min_query_count": Param(
        int, -1, "minimum queries; in Offline the minimum samples in the query (negative = mlperf.conf)"),
    "max_query_count": Param(int, 0, "maximum queries (0 = no limit)"),
    "target_qps": Param(
        float, 0.0,
        "Offline expected QPS / Server target QPS / Single- and MultiStream 1/expected latency (0 = mlperf.conf)"),
    "target_latency_ms": Param(float, 0.0, "Server latency bound in ms (0 = mlperf.conf)"),
    "samples_per_query": Param(int, 0, "MultiStream samples per query (0 = mlperf.conf, 8)"),
    "intra_op_threads": Param(
        int, 0, "ONNX Runtime intra-op threads of each session (0 = its default, all cores)", min=0, max=1024),
    "inter_op_threads": Param(int, 0, "ONNX Runtime inter-op threads (0 = its default)", min=0, max=1024),
    "sessions": Param(
        int, 1, "ONNX Runtime sessions fed from the LoadGen's queue, one worker thread each (each session has "
        "intra_op_threads threads)", min=1, max=64),
    "graph_optimization_level": Param(
        str, "all", "ONNX Runtime graph optimisations", ("all", "extended", "basic", "disable")),
    "batch_size": Param(
        int, 0, "samples per session.run (0 = the model's fixed batch, else 1; a fixed batch wins)", min=0, max=4096),
    "score_threshold": Param(
        float, -1.0, "drop detections below this score (negative = model default: YOLOX 0.001, RetinaNet 0.05)"),
    "nms_iou": Param(float, 0.65, "YOLOX per-class NMS IoU threshold"),
    "max_detections": Param(int, 0, "keep at most this many detections per image (0 = all)"),
    "label_map": Param(
        str, "id",
        "model labels -> ground-truth categories: \"id\", \"name\" or a table \"MODEL=GT, ...\" (harness.categories)"),
}

# Params only some model kinds read: for the other kinds they are out of the run's identity and
# result (a run is not another run because of a setting nothing in it reads).
KIND_PARAMS: dict[str, tuple[str, ...]] = {"nms_iou": ("yolox", "ultralytics")}
# decoders.ALIASES (this module stays light: planning reads it)
_DECODER_ALIASES = {"retinanet": "boxes-scores-labels"}


def kind_of(params: Mapping[str, Any]) -> str:
    """The decoder a run's params name (``decoder``, else the older ``model_kind``, else ``yolox``)."""
    name = str(params.get("decoder") or params.get("model_kind") or "yolox")
    return _DECODER_ALIASES.get(name, name)


def applies(name: str, model_kind: str) -> bool:
    kinds = KIND_PARAMS.get(name)
    return kinds is None or model_kind in kinds


def for_kind(params: Mapping[str, Any], err: Callable[[str, str], Exception] | None = None) -> dict[str, Any]:
    """``params`` without those its decoder does not read. With ``err``, such a param set
    to another value than its default is refused (``err(message, key)`` is raised)."""
    kind = kind_of(params)
    out: dict[str, Any] = {}
    for k, v in params.items():
        if applies(k, kind):
            out[k] = v
        elif err is not None and k in PARAMS and v != PARAMS[k].default:
            raise err(f"parameter `{k}` applies to decoder {', '.join(KIND_PARAMS[k])}, not `{kind}`", k)
    return out
