"""An MLPerf LoadGen run of an object-detection ONNX model on preprocessed tensors.

Inputs: ``env`` (the locked environment, already on ``sys.path``), ``model`` (the ``.onnx``
file, or a directory holding exactly one), ``preprocessed`` (``tensors.bin`` + ``meta.json``
from ``letterbox`` / ``retinanet-preprocess``) and ``annotations`` (``annotations.json``; the
preprocessed samples must be its first images, in order).

Before the LoadGen starts, the model's input (type, channels, height, width), its outputs
(for the ``decoder``), the tensor file's size and the sample lists are checked; any mismatch
is an ``InputError`` naming the file.

LoadGen settings start from the LoadGen's embedded ``mlperf.conf`` for (the decoder's
``mlperf_model``, MLPerf's model name: ``yolo`` for the YOLOX and Ultralytics heads, ``retinanet``;
scenario); the round's three seeds are then set explicitly, and every param that is not at its
"keep" value (negative, or 0 where noted) overrides its setting.

Output (``ctx.out``): the LoadGen logs (``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``,
``mlperf_log_accuracy.json``; with mode ``both`` under ``accuracy/`` and ``performance/``),
``accuracy.txt`` (``mAP=NN.NNN%``) when accuracy ran, ``result.json`` and ``report.html``.
An accuracy part keeps its LoadGen detail/summary logs (wall-clock times) as side outputs
(``ctx.side``: store metadata beside the entry), so the entry stays a function of its identity.
"""

from __future__ import annotations

from mlbuild.builders import BuildContext
from mlbuild.harness import params as hparams
from mlbuild.harness import runparams
from mlbuild.harness.runparams import PARAMS as RUN_PARAMS

NAME = "mlperf-run"
VERSION = 1
INPUTS = {
    "env": "locked Python environment (numpy, onnxruntime, pycocotools, a LoadGen module)",
    "model": "the .onnx model file, or a directory holding exactly one",
    "preprocessed": "directory with tensors.bin and meta.json",
    "annotations": "directory with annotations.json (COCO format)",
}
OPTIONAL_INPUTS: dict[str, str] = {}
PARAMS = RUN_PARAMS  # the table lives in harness.runparams: the assembly (`mlperf-result`) shares it
NEEDS_ENV = True
NEEDS_NETWORK = False
# A run measures the machine: the realizer starts it only when nothing else runs, and nothing
# beside it (its accuracy and performance parts run one after the other, as one process did).
EXCLUSIVE = True
# params a run's model_kind does not read (nms_iou for RetinaNet) are out of its identity
identity_params = runparams.for_kind


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
            "sessions": hparams.positive,
            "score_threshold": lambda v: (
                None if v < 0 or v <= 1.0 else "must be <= 1 (or negative for the model default)"
            ),
            "nms_iou": _unit_interval,
            "max_detections": nn,
        },
    )
    run.run(ctx, p, VERSION)
