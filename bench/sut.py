"""Offline throughput of the whole SUT under the LoadGen vs a bare ``session.run`` loop.

ours:      samples/s reported by the LoadGen (``Samples per second``) for an Offline
           performance run of the harness SUT (memory-mapped QSL, worker thread, batching,
           YOLOX decode + NMS into accuracy records, ``QuerySamplesComplete``);
reference: samples/s of a plain loop of ``session.run`` over the same memory-mapped tensors,
           one sample at a time, with the same session options, no post-processing.

Both run in the same process with the same session, interleaved over ``--repeats`` rounds,
the one that goes first alternating (ours then reference, reference then ours, ...),
so neither side always inherits the other's warm caches or thermal state; medians are
reported. The tensors are made once with the
project's own builders (coco128-to-coco + letterbox) from the mirror, in a temp directory.

    python bench/sut.py [--json] [--repeats 5] [--samples 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIRROR = ROOT.parent / "shared" / "mirror" / "raw.githubusercontent.com"
DATASET = MIRROR / "mujianyu/yolov8/27366dec6832ac0fb6c2738d9d800d5e1f7a3a87/datasets/coco128"
MODEL = MIRROR / "Bigisland1729/object-detection-models/7f3f2fa34b351e3d2af150893458106ad3f3a84f/yolox_nano.onnx"


def prepare(dataset: Path, tmp: Path, jobs: int) -> tuple[Path, Path]:
    from mlbuild.builders import BuildContext, load

    ann, pre = tmp / "ann", tmp / "pre"
    ann.mkdir()
    pre.mkdir()
    load("coco128-to-coco").build(BuildContext(inputs={"dataset": dataset}, params={}, out=ann, tmp=tmp))
    load("letterbox").build(
        BuildContext(inputs={"dataset": dataset, "annotations": ann}, params={}, out=pre, tmp=tmp, jobs=jobs)
    )
    return ann, pre


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--dataset", type=Path, default=DATASET)
    ap.add_argument("--samples", type=int, default=256, help="samples per Offline query / per reference loop")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--intra-op-threads", type=int, default=0)
    ap.add_argument("--loadgen", choices=("official", "pyo3"), default="official")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    import numpy as np

    from mlbuild.builders import mlperf_run
    from mlbuild.harness import coco, images, logs, run, sut
    from mlbuild.harness import params as hparams

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ann, pre = prepare(args.dataset, tmp, 2)
        meta, tensors = images.read_meta(pre)
        annotations = coco.load_annotations(ann)
        p = hparams.resolve(
            "mlperf-run",
            mlperf_run.PARAMS,
            {
                "mode": "performance",
                "scenario": "Offline",
                "loadgen": args.loadgen,
                "min_duration_ms": 0,
                "min_query_count": args.samples,
                "intra_op_threads": args.intra_op_threads,
            },
        )
        run.check_inputs(meta=meta, annotations=annotations, model_kind="yolox")
        session = sut.make_session(args.model, intra_op_threads=p["intra_op_threads"], inter_op_threads=0,
                                   graph_optimization_level="all")
        info = sut.inspect_model(session, args.model.name)
        post = sut.Postprocessor("yolox", meta, list(info.outputs), score_threshold=0.001, nms_iou=0.65,
                                 max_detections=0)
        lg = sut.import_loadgen(p["loadgen"])
        n = meta["shape"][0]
        harness = sut.Harness(lg, session, info, tensors, meta, post, info.fixed_batch or 1, n, lambda _m: None)
        harness.warmup(3)
        data = np.memmap(tensors, dtype=np.float32, mode="r", shape=tuple(meta["shape"]))
        names = [next(iter(info.outputs))]

        def ours(i: int) -> float:
            out = tmp / f"ours{i}"
            harness.run(run._settings(lg, p, accuracy=False, n=n), out)
            s = logs.parse_summary(out / "mlperf_log_summary.txt")
            return float(s["Samples per second"])

        def reference() -> float:
            t0 = time.perf_counter()
            for k in range(args.samples):
                i = k % n
                session.run(names, {info.input_name: np.asarray(data[i : i + 1])})
            return args.samples / (time.perf_counter() - t0)

        o_vals: list[float] = []
        r_vals: list[float] = []
        for i in range(args.repeats):
            if i % 2 == 0:
                o_vals.append(ours(i))
                r_vals.append(reference())
            else:
                r_vals.append(reference())
                o_vals.append(ours(i))
            if not args.json:
                first = "ours" if i % 2 == 0 else "reference"
                print(f"round {i + 1} ({first} first): ours {o_vals[-1]:.1f} samples/s, "
                      f"reference {r_vals[-1]:.1f} samples/s", file=sys.stderr)
    fig = {
        "name": "offline_samples_per_second",
        "unit": "samples/s",
        "higher_is_better": True,
        "ours": round(statistics.median(o_vals), 2),
        "reference": round(statistics.median(r_vals), 2),
        "reference_name": "bare onnxruntime session.run loop over the same memory-mapped tensors, same session "
                          "options, no LoadGen, no post-processing",
        "samples": args.samples,
        "repeats": args.repeats,
        "ours_all": [round(v, 2) for v in o_vals],
        "reference_all": [round(v, 2) for v in r_vals],
    }
    if args.json:
        print(json.dumps({"figures": [fig]}, sort_keys=True))
    else:
        print(f"Offline: ours {fig['ours']} samples/s (LoadGen), reference {fig['reference']} samples/s (bare loop); "
              f"ratio {fig['ours'] / fig['reference']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
