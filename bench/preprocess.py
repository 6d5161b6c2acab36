"""Letterbox preprocessing throughput: both cores (``jobs`` worker processes) vs one process.

ours:      images/s of the ``letterbox`` builder with ``--jobs`` workers (default: all cores);
reference: images/s of the same builder with jobs=1 (a single-process loop, same code).

Runs are interleaved (ours, reference, ours, ...) over ``--repeats`` rounds on coco128 from
the mirror; medians are reported. Every run's bytes are checked to be identical.

    python bench/preprocess.py [--json] [--repeats 5] [--jobs 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASET = (
    ROOT.parent / "shared" / "mirror" / "raw.githubusercontent.com"
    / "mujianyu/yolov8/27366dec6832ac0fb6c2738d9d800d5e1f7a3a87/datasets/coco128"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=DATASET)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    from mlbuild.builders import BuildContext, load

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ann = tmp / "ann"
        ann.mkdir()
        load("coco128-to-coco").build(BuildContext(inputs={"dataset": args.dataset}, params={}, out=ann, tmp=tmp))
        n = len(json.loads((ann / "annotations.json").read_text())["images"])

        def once(jobs: int) -> tuple[float, str]:
            out = tmp / f"pre{jobs}"
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            t0 = time.perf_counter()
            load("letterbox").build(
                BuildContext(inputs={"dataset": args.dataset, "annotations": ann}, params={}, out=out, tmp=tmp,
                             jobs=jobs)
            )
            dt = time.perf_counter() - t0
            digest = hashlib.sha256((out / "tensors.bin").read_bytes()).hexdigest()
            return n / dt, digest

        ours: list[float] = []
        ref: list[float] = []
        digests: set[str] = set()
        for i in range(args.repeats):  # interleaved, the side that goes first alternating
            for side in (("ours", "ref") if i % 2 == 0 else ("ref", "ours")):
                v, d = once(args.jobs if side == "ours" else 1)
                (ours if side == "ours" else ref).append(v)
                digests.add(d)
            if not args.json:
                print(f"round {i + 1}: jobs={args.jobs} {ours[-1]:.1f} images/s, jobs=1 {ref[-1]:.1f} images/s",
                      file=sys.stderr)
    if len(digests) != 1:
        print(f"error: outputs differ between runs: {sorted(digests)}", file=sys.stderr)
        return 1
    fig = {
        "name": "letterbox_images_per_second",
        "unit": "images/s",
        "higher_is_better": True,
        "ours": round(statistics.median(ours), 2),
        "reference": round(statistics.median(ref), 2),
        "reference_name": "same letterbox builder in a single process (jobs=1)",
        "jobs": args.jobs,
        "images": n,
        "repeats": args.repeats,
        "ours_all": [round(v, 2) for v in ours],
        "reference_all": [round(v, 2) for v in ref],
    }
    if args.json:
        print(json.dumps({"figures": [fig]}, sort_keys=True))
    else:
        print(f"letterbox: {fig['ours']} images/s with {args.jobs} jobs vs {fig['reference']} images/s single-process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
