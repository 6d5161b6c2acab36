"""An MLPerf LoadGen run of an object-detection ONNX model on preprocessed tensors.

Inputs: ``env`` (the locked environment, already on ``sys.path``), ``model`` (the ``.onnx``
file, or a directory holding exactly one), ``preprocessed`` (``tensors.bin`` + ``meta.json``
from ``letterbox`` / ``retinanet-preprocess``) and ``annotations`` (``annotations.json``; the
preprocessed samples must be its first images, in order).

Before the LoadGen starts, the model's input (type, channels, height, width), its outputs
(for ``model_kind``), the tensor file's size and the sample lists are checked; any mismatch
is an ``InputError`` naming the file.

LoadGen settings start from the LoadGen's embedded ``mlperf.conf`` for (``retinanet`` or
``yolox``, scenario); the round's three seeds are then set explicitly, and every param that
is not at its "keep" value (negative, or 0 where noted) overrides its setting.

Output (``ctx.out``): the LoadGen logs (``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``,
``mlperf_log_accuracy.json``; with mode ``both`` under ``accuracy/`` and ``performance/``),
``accuracy.txt`` (``mAP=NN.NNN%``) when accuracy ran, ``result.json`` and ``report.html``.
"""

from __future__ import annotations

from mlbuild.builders import BuildContext, Param
from mlbuild.harness import params as hparams

NAME = "mlperf-run"
VERSION = 1
INPUTS = {
    "env": "locked Python environment (numpy, onnxruntime, pycocotools, a LoadGen module)",
    "model": "the .onnx model file, or a directory holding exactly one",
    "preprocessed": "directory with tensors.bin and meta.json",
    "annotations": "directory with annotations.json (COCO format)",
}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = {
    "model_kind": Param(str, "yolox", "output decoding: YOLOX raw grid output or MLPerf RetinaNet boxes/scores/labels", ("yolox", "retinanet")),
    "scenario": Param(str, "Offline", "LoadGen scenario", ("Offline", "SingleStream", "Server", "MultiStream")),
    "mode": Param(str, "both", "accuracy run, performance run, or both (accuracy first)", ("accuracy", "performance", "both")),
    "loadgen": Param(str, "official", "LoadGen module: `mlperf_loadgen` (official) or `mlbuild_loadgen` (pyo3)", ("official", "pyo3")),
    "round": Param(str, "v6.0", "MLPerf round whose qsl/sample-index/schedule seeds are set", ("v5.1", "v6.0", "v6.1")),
    "performance_sample_count": Param(int, 0, "samples loaded for a performance run (0 = mlperf.conf's override for the model, else all)"),
    "min_duration_ms": Param(int, -1, "minimum test duration in ms (negative = mlperf.conf, 600000)"),
    "max_duration_ms": Param(int, 0, "maximum test duration in ms (0 = no limit)"),
    "min_query_count": Param(int, -1, "minimum queries; in Offline the minimum samples in the query (negative = mlperf.conf)"),
    "max_query_count": Param(int, 0, "maximum queries (0 = no limit)"),
    "target_qps": Param(float, 0.0, "Offline expected QPS / Server target QPS / Single- and MultiStream 1/expected latency (0 = mlperf.conf)"),
    "target_latency_ms": Param(float, 0.0, "Server latency bound in ms (0 = mlperf.conf)"),
    "samples_per_query": Param(int, 0, "MultiStream samples per query (0 = mlperf.conf, 8)"),
    "intra_op_threads": Param(int, 0, "ONNX Runtime intra-op threads (0 = its default, all cores)"),
    "inter_op_threads": Param(int, 0, "ONNX Runtime inter-op threads (0 = its default)"),
    "graph_optimization_level": Param(str, "all", "ONNX Runtime graph optimisations", ("all", "extended", "basic", "disable")),
    "batch_size": Param(int, 0, "samples per session.run (0 = the model's fixed batch, else 1; a fixed batch wins)"),
    "score_threshold": Param(float, -1.0, "drop detections below this score (negative = model default: YOLOX 0.001, RetinaNet 0.05)"),
    "nms_iou": Param(float, 0.65, "YOLOX per-class NMS IoU threshold"),
    "max_detections": Param(int, 0, "keep at most this many detections per image (0 = all)"),
}
NEEDS_ENV = True
NEEDS_NETWORK = False


def _unit_interval(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be in 0..1"


def build(ctx: BuildContext) -> None:
    from mlbuild.harness import run

    nn = hparams.non_negative
    p = hparams.resolve(
        NAME,
        PARAMS,
        ctx.params,
        {
            "performance_sample_count": nn,
            "max_duration_ms": nn,
            "max_query_count": nn,
            "target_qps": nn,
            "target_latency_ms": nn,
            "samples_per_query": nn,
            "intra_op_threads": nn,
            "inter_op_threads": nn,
            "batch_size": nn,
            "score_threshold": lambda v: None if v < 0 or v <= 1.0 else "must be <= 1 (or negative for the model default)",
            "nms_iou": _unit_interval,
            "max_detections": nn,
        },
    )
    run.run(ctx, p, VERSION)
