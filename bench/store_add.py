#!/usr/bin/env python3
"""Benchmark: `mlbuild store add` of a large file, beside b3sum and sha256sum.

Generates a file of --size bytes in a temporary directory (a 16 MiB random block
repeated), then, interleaved, --runs times each: `mlbuild store add FILE` into a
fresh temporary store (reads, copies, hashes sha256 + blake3, fsyncs and registers),
`b3sum FILE` and `sha256sum FILE` (read and hash only), and `cp FILE COPY && sync COPY`
(the same copy and fsync the store does, without hashing: the reference that does the
same work).  The order of the commands alternates from run to run.  Figures are medians
of the throughput (MiB/s of the input file).  The file stays in the page cache, so all
three read it from memory.  Also measures the peak RSS of the mlbuild process
(ru_maxrss from wait4) at --size and at --small-size: it must stay flat, well under
100 MiB, whatever the size.

    python bench/store_add.py [--size 2G] [--small-size 256M] [--runs 5] [--json]

b3sum is Debian's `b3sum` package (the BLAKE3 team's Rust tool); when it is not
installed its figure is skipped and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().rstrip("IB")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


def mlbuild_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("mlbuild")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlbuild"]


def make_file(path: Path, size: int) -> None:
    block = os.urandom(16 * MiB)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode() if p.stderr else ""
    if p.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed ({p.returncode}):\n{err}")
    return dt, ru.ru_maxrss * 1024


def copy_sync_once(src: Path, work: Path) -> float:
    """`cp` + `sync` of the file: read, write a copy, fsync it (GNU sync with a file operand fsyncs it)."""
    dest = work / "copy.bin"
    dest.unlink(missing_ok=True)
    dt = run(["sh", "-c", 'cp -- "$1" "$2" && sync -- "$2"', "cp+sync", str(src), str(dest)])[0]
    dest.unlink()
    return dt


def add_once(src: Path, work: Path) -> tuple[float, int]:
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    dt, rss = run([*mlbuild_cmd(), "store", "add", str(src), "--store", str(store), "-q"])
    shutil.rmtree(store, ignore_errors=True)
    return dt, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G", help="file size (bytes, or with K/M/G); default 2G")
    ap.add_argument("--small-size", default="256M", help="second size for the flat-memory check; default 256M")
    ap.add_argument("--runs", type=int, default=5, help="measurements of each command (>= 5)")
    ap.add_argument("--tmpdir", default=None, help="where to put the file and the stores")
    ap.add_argument("--json", action="store_true", help="print one JSON object {figures: [...]}")
    args = ap.parse_args()
    size, small = parse_size(args.size), parse_size(args.small_size)
    runs = max(5, args.runs)
    log = sys.stderr if args.json else sys.stdout
    b3sum = shutil.which("b3sum")
    sha256sum = shutil.which("sha256sum")
    subprocess.run([sys.executable, "-m", "compileall", "-q", "mlbuild"], cwd=ROOT, check=True)

    with tempfile.TemporaryDirectory(prefix="mlbuild-bench-", dir=args.tmpdir) as d:
        work = Path(d)
        big, little = work / "big.bin", work / "small.bin"
        print(f"generating {size / MiB:.0f} MiB and {small / MiB:.0f} MiB files in {work}", file=log, flush=True)
        make_file(big, size)
        make_file(little, small)
        for f in (big, little):  # into the page cache
            subprocess.run(["cat", str(f)], stdout=subprocess.DEVNULL, check=True)

        times: dict[str, list[float]] = {"mlbuild": [], "b3sum": [], "sha256sum": [], "cp+sync": []}
        rss_big: list[int] = []
        rss_small: list[int] = []

        def measure(name: str) -> None:
            if name == "mlbuild":
                dt, rss = add_once(big, work)
                times["mlbuild"].append(dt)
                rss_big.append(rss)
                rss_small.append(add_once(little, work)[1])
            elif name == "cp+sync":
                times["cp+sync"].append(copy_sync_once(big, work))
            elif name == "b3sum" and b3sum:
                times["b3sum"].append(run([b3sum, str(big)])[0])
            elif name == "sha256sum" and sha256sum:
                times["sha256sum"].append(run([sha256sum, str(big)])[0])

        order = ["mlbuild", "cp+sync", "b3sum", "sha256sum"]
        for i in range(runs):
            for name in order if i % 2 == 0 else order[::-1]:
                measure(name)
            print(f"  run {i + 1}/{runs}: mlbuild {times['mlbuild'][-1]:.2f} s, cp+sync {times['cp+sync'][-1]:.2f} s",
                  file=log, flush=True)

    def mibs(name: str) -> float:
        return size / MiB / statistics.median(times[name])

    ours = mibs("mlbuild")
    figures = [{"name": f"store add throughput vs the same copy + fsync ({size / MiB:.0f} MiB file)",
                "unit": "MiB/s", "higher_is_better": True, "ours": round(ours, 1),
                "reference": round(mibs("cp+sync"), 1),
                "reference_name": "cp FILE COPY && sync COPY (coreutils: same copy and fsync, no hashing)"}]
    if b3sum:
        figures.append({"name": f"store add throughput ({size / MiB:.0f} MiB file)", "unit": "MiB/s",
                        "higher_is_better": True, "ours": round(ours, 1), "reference": round(mibs("b3sum"), 1),
                        "reference_name": "b3sum (Debian b3sum package)"})
    if sha256sum:
        figures.append({"name": f"store add throughput vs sha256 ({size / MiB:.0f} MiB file)", "unit": "MiB/s",
                        "higher_is_better": True, "ours": round(ours, 1), "reference": round(mibs("sha256sum"), 1),
                        "reference_name": "sha256sum (GNU coreutils)"})
    figures.append({"name": f"store add peak RSS ({size / MiB:.0f} MiB file)", "unit": "MiB",
                    "higher_is_better": False, "ours": round(statistics.median(rss_big) / MiB, 1),
                    "reference": round(statistics.median(rss_small) / MiB, 1),
                    "reference_name": f"mlbuild store add of a {small / MiB:.0f} MiB file"})
    if args.json:
        print(json.dumps({"figures": figures}))
        return 0
    print(f"\n{'command':40s} {'median s':>9s} {'MiB/s':>9s}   ({runs} runs each, interleaved; {size / MiB:.0f} MiB)")
    for name, label in (("mlbuild", "mlbuild store add (copy+sha256+blake3)"), ("cp+sync", "cp + sync (copy+fsync)"),
                        ("b3sum", "b3sum (read+hash)"), ("sha256sum", "sha256sum (read+hash)")):
        if times[name]:
            print(f"{label:40s} {statistics.median(times[name]):9.3f} {mibs(name):9.1f}")
        else:
            print(f"{label:40s} (not installed)")
    print(f"\npeak RSS of mlbuild: {statistics.median(rss_big) / MiB:.1f} MiB at {size / MiB:.0f} MiB, "
          f"{statistics.median(rss_small) / MiB:.1f} MiB at {small / MiB:.0f} MiB (goal: flat, well under 100 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
