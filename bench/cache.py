#!/usr/bin/env python3
"""Benchmark: binary caches.  In one run:

1. `mlbuild realize TARGET --mirror MIRROR` into an empty store (fetch + every build + the run):
   the cost a cache saves;
2. `mlbuild copy --to file://CACHE TARGET` (the whole closure, zstd, signed when a key exists),
   against `tar -cf - ENTRIES | zstd -3 -T0` of the same directories (the same bytes compressed
   at the same level with the same threads; no hashing, no signing);
3. `mlbuild copy --from file://CACHE TARGET` into an empty store at another path (download,
   verify signature and hashes, unpack, register the whole closure): the substitution of
   everything step 1 made, against step 1's time (goal: at least 5x faster);
4. `mlbuild realize TARGET --substituter file://CACHE` into another empty store: what a second
   machine does (every build substituted; the performance part is measured again, by design).

Each `copy`/`tar` measurement is repeated --runs times (median); the realizes run once (they take
minutes).  With --realized STORE, step 1 is skipped and that store's TARGET is used.

    python bench/cache.py [--target yolox-coco128-offline] [--mirror ../shared/mirror] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def children_cpu() -> float:
    """User + system seconds of every child process waited for so far."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def mlbuild(*args: str, env: dict[str, str] | None = None) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mlbuild", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "MLBUILD_NO_PROGRESS": "1", **(env or {})})
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"`mlbuild {' '.join(args)}` failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return dt, r.stdout, r.stderr


def closure(store: Path, entry: str) -> list[str]:
    con = sqlite3.connect(f"file:{store / '.mlbuild' / 'db.sqlite'}?mode=ro", uri=True)
    try:
        refs: dict[str, list[str]] = {}
        for a, b in con.execute("SELECT referrer, reference FROM refs"):
            refs.setdefault(a, []).append(b)
    finally:
        con.close()
    seen: set[str] = set()
    todo = [entry]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(refs.get(n, []))
    return sorted(seen)


def du(store: Path, names: list[str]) -> int:
    total = 0
    for n in names:
        p = store / n
        if p.is_file() or p.is_symlink():
            total += p.lstat().st_size
        else:
            total += sum(f.lstat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="yolox-coco128-offline")
    ap.add_argument("--mirror", default=str(ROOT.parent / "shared" / "mirror"))
    ap.add_argument("--realized", metavar="STORE", help="use this store's realized TARGET (skips step 1)")
    ap.add_argument("--runs", type=int, default=3, help="repeats of each copy / tar measurement (median)")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object {figures: [...]}")
    args = ap.parse_args()
    log = sys.stderr if args.json else sys.stdout
    zstd = shutil.which("zstd")
    figures = []
    with tempfile.TemporaryDirectory(prefix="mlbuild-bench-cache-", dir=args.tmpdir) as d:
        work = Path(d)
        keys = work / "keys"
        env = {"MLBUILD_KEYS": str(keys), "MLBUILD_TRUSTED_KEYS": str(keys / "mlbuild-ed25519.pub")}
        mlbuild("key", "generate", env=env)
        rebuild = None
        if args.realized:
            store = Path(args.realized).absolute()
        else:
            store = work / "built"
            print(f"realizing {args.target} from the mirror into an empty store ...", file=log, flush=True)
            rebuild, _, _ = mlbuild("realize", args.target, "--mirror", args.mirror, "--store", str(store), "-q",
                                    env=env)
            print(f"  {rebuild:.1f} s", file=log, flush=True)
        _, out, _ = mlbuild("realize", args.target, "--store", str(store), "--offline", "-q", env=env)
        entry = Path(out.strip().splitlines()[-1]).name
        names = closure(store, entry)
        size = du(store, names)
        print(f"closure: {len(names)} entries, {size / MiB:.1f} MiB", file=log, flush=True)

        copy_t, tar_t, pull_t = [], [], []
        copy_cpu, tar_cpu = [], []
        for i in range(max(1, args.runs)):
            cache = work / f"cache{i}"
            c0 = children_cpu()
            dt, _, _ = mlbuild("copy", "--to", f"file://{cache}", entry, "--store", str(store), env=env)
            copy_t.append(dt)
            copy_cpu.append(children_cpu() - c0)
            if zstd:
                t0, c0 = time.perf_counter(), children_cpu()
                subprocess.run(f"tar -C {store} -cf - {' '.join(names)} | {zstd} -q -3 -T0 -o {work}/ref.tar.zst",
                               shell=True, check=True)
                tar_t.append(time.perf_counter() - t0)
                tar_cpu.append(children_cpu() - c0)
                os.unlink(work / "ref.tar.zst")
            other = work / f"pulled{i}"
            dt, _, _ = mlbuild("copy", "--from", f"file://{cache}", entry, "--store", str(other), env=env)
            pull_t.append(dt)
            if i < args.runs - 1:
                shutil.rmtree(other, ignore_errors=True)
            print(f"  run {i + 1}: copy --to {copy_t[-1]:.2f} s, tar|zstd {tar_t[-1] if tar_t else 0:.2f} s, "
                  f"copy --from {pull_t[-1]:.2f} s", file=log, flush=True)
        cache_bytes = sum(f.stat().st_size for f in (work / "cache0").rglob("*") if f.is_file())
        print("realizing with the cache as substituter into an empty store ...", file=log, flush=True)
        subst, _, serr = mlbuild("realize", args.target, "--store", str(work / "substituted"),
                                 "--substituter", f"file://{work / 'cache0'}", env=env)
        built = [ln for ln in serr.splitlines() if ln.startswith(("built ", "ran ", "fetched "))]

    copy_med, pull_med = statistics.median(copy_t), statistics.median(pull_t)
    figures.append({"name": f"copy --to file:// throughput ({args.target} closure, {size / MiB:.0f} MiB)",
                    "unit": "MiB/s", "higher_is_better": True, "ours": round(size / MiB / copy_med, 1),
                    "reference": round(size / MiB / statistics.median(tar_t), 1) if tar_t else None,
                    "reference_name": "tar -cf - ENTRIES | zstd -3 -T0 (same directories, level, threads)"})
    if tar_cpu:
        figures.append({"name": "copy --to CPU time (user + system, whole process incl. start-up)", "unit": "s",
                        "higher_is_better": False, "ours": round(statistics.median(copy_cpu), 2),
                        "reference": round(statistics.median(tar_cpu), 2),
                        "reference_name": "tar | zstd -3 -T0 CPU time (both processes)"})
    if rebuild is not None:
        figures.append({"name": f"substitute the whole {args.target} closure from file:// into an empty store",
                        "unit": "s", "higher_is_better": False, "ours": round(pull_med, 2),
                        "reference": round(rebuild, 2),
                        "reference_name": "mlbuild realize from the mirror into an empty store (fetch + builds + run)"})
        figures.append({"name": f"realize {args.target} with a file:// substituter into an empty store "
                                f"(performance part measured again)",
                        "unit": "s", "higher_is_better": False, "ours": round(subst, 2),
                        "reference": round(rebuild, 2), "reference_name": "realize from the mirror (no cache)"})
    figures.append({"name": "compressed cache size of the closure", "unit": "MiB", "higher_is_better": False,
                    "ours": round(cache_bytes / MiB, 1), "reference": round(size / MiB, 1),
                    "reference_name": "the closure's bytes in the store"})
    if args.json:
        print(json.dumps({"figures": figures}))
        return 0
    for f in figures:
        print(f"{f['name']}: {f['ours']} {f['unit']} (reference {f['reference']} {f['unit']}: {f['reference_name']})")
    print(f"steps the substituting realize ran: {built or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
