"""The parameters of a benchmark run: ``mlperf-run`` (its parts) and ``mlperf-result`` (the
target's assembly, which receives them as the run's) share this table."""

from __future__ import annotations

from mlbuild.builders import Param

PARAMS = {
    "model_kind": Param(
        str, "yolox", "output decoding: YOLOX raw grid output or MLPerf RetinaNet boxes/scores/labels",
        ("yolox", "retinanet")),
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
}
