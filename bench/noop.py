#!/usr/bin/env python3
"""Benchmark: wall time of a whole-process no-op `mlbuild realize TARGET -q`.

A no-op realize (every entry of TARGET's closure already valid) beside the bare
interpreter start-up (`python3 -c pass`, the same interpreter), measured in the
same run, interleaved, median of --runs.  Goal: under 2x the interpreter (the plain form is
answered by mlbuild.fastpath before the command line loads).  With --instructions, also both
commands' instruction counts under valgrind's callgrind: a figure that does not move when the
machine is busy (the 2 cores here are often shared).

Before measuring, the script byte-compiles the package (`python -m compileall -q
mlbuild`: this environment sets PYTHONDONTWRITEBYTECODE, so imports would
otherwise compile every module on every start) and realizes TARGET once, with
`--mirror ../shared/mirror` when that directory exists, so the store holds it.

    python bench/noop.py [--runs 11] [--target yolox-coco128-offline] [--instructions] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mlbuild_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("mlbuild")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlbuild"]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed ({r.returncode}):\n{r.stderr.decode()}")
    return dt


def instructions(cmd: list[str]) -> int:
    """Instructions ``cmd`` executes, counted by callgrind (deterministic for the same binary and inputs)."""
    import re
    import shutil

    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (Debian's package `valgrind`)")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd], cwd=ROOT,
                       capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", r.stderr) or re.search(r"I\s+refs:\s+([\d,]+)", r.stderr)
    if r.returncode != 0 or m is None:
        sys.exit(f"valgrind {' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=11, help="measurements of each command (>= 5)")
    ap.add_argument("--target", default="yolox-coco128-offline")
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "mirror"))
    ap.add_argument("--json", action="store_true", help="print one JSON object {figures: [...]}")
    ap.add_argument("--instructions", action="store_true",
                    help="also count both commands' instructions with valgrind (needs valgrind)")
    args = ap.parse_args()
    runs = max(5, args.runs)
    log = sys.stderr if args.json else sys.stdout

    subprocess.run([sys.executable, "-m", "compileall", "-q", "mlbuild"], cwd=ROOT, check=True)
    realize = [*mlbuild_cmd(), "realize", args.target, "-q"]
    first = realize + (["--mirror", args.mirror] if os.path.isdir(args.mirror) else [])
    print(f"preparing: {' '.join(first)}", file=log, flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(first, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"realize failed ({r.returncode}):\n{r.stderr}")
    print(f"  done in {time.perf_counter() - t0:.1f} s", file=log, flush=True)
    timed(realize)  # warm the page cache and the plan cache

    bare = [sys.executable, "-c", "pass"]
    ours: list[float] = []
    ref: list[float] = []
    for _ in range(runs):  # interleaved: both see the same machine state
        ours.append(timed(realize))
        ref.append(timed(bare))
    o, b = statistics.median(ours), statistics.median(ref)
    fig = {"name": f"no-op `mlbuild realize {args.target} -q` wall time", "unit": "s", "higher_is_better": False,
           "ours": round(o, 4), "reference": round(b, 4), "reference_name": "python3 -c pass"}
    figures = [fig]
    if args.instructions:
        figures.append({"name": f"no-op `mlbuild realize {args.target} -q` instructions", "unit": "instructions",
                        "higher_is_better": False, "ours": instructions(realize), "reference": instructions(bare),
                        "reference_name": "python3 -c pass"})
    if args.json:
        print(json.dumps({"figures": figures}))
        return 0
    print(f"\n{'command':50s} {'median s':>9s} {'min s':>8s} {'max s':>8s}   ({runs} runs each, interleaved)")
    print(f"{'mlbuild realize ' + args.target + ' -q':50s} {o:9.4f} {min(ours):8.4f} {max(ours):8.4f}")
    print(f"{'python3 -c pass':50s} {b:9.4f} {min(ref):8.4f} {max(ref):8.4f}")
    print(f"\nratio {o / b:.2f}x the bare interpreter (goal < 2x): {'meets' if o < 2 * b else 'misses'} it")
    for f in figures[1:]:
        print(f"instructions: {f['ours']:,} vs {f['reference']:,} ({f['ours'] / f['reference']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
