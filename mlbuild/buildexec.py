"""Entry point of a builder subprocess: ``python -S -E -B buildexec.py SPEC.json``.

Runs inside the sandbox with only the standard library, the mlbuild package
and (for builders that need one) a locked environment's ``site-packages`` on
``sys.path`` - never the host's site-packages.  Reads the build spec, calls the
builder, and reports a failure as JSON in ``SPEC.json.error`` so the parent can
re-raise the same error class with its message and hints.
"""

import json
import sys
import traceback


def _watch_lifeline(fd: int) -> None:
    """Fork a watcher into this builder's process group that kills the whole group (the builder, its
    children, itself) once mlbuild, which holds the pipe's write end, closes it: when the build is over,
    or when mlbuild died (even by kill -9, after which a parent-death signal may already have killed
    this process, but not the children it started)."""
    import os
    import signal

    if os.fork() == 0:  # still single-threaded here
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for std in (0, 1, 2):  # don't hold the log pipe open: mlbuild reads it to its end
                os.dup2(devnull, std)
            while True:
                try:
                    if not os.read(fd, 1):
                        break
                except InterruptedError:
                    continue
            os.killpg(0, signal.SIGKILL)
        finally:
            os._exit(0)
    os.close(fd)


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    if spec.get("lifeline_fd") is not None:
        _watch_lifeline(int(spec["lifeline_fd"]))
    sys.path[:0] = [p for p in [spec["package_parent"], spec.get("env_site")] if p]
    from pathlib import Path

    from mlbuild import builders
    from mlbuild.errors import MlbuildError

    def log(msg: str) -> None:
        sys.stderr.write(msg.rstrip("\n") + "\n")
        sys.stderr.flush()

    ctx = builders.BuildContext(
        inputs={k: Path(v) for k, v in spec["inputs"].items()},
        params=spec["params"],
        out=Path(spec["out"]),
        tmp=Path(spec["tmp"]),
        jobs=int(spec["jobs"]),
        log=log,
        entry=spec.get("entry", ""),
        fingerprint=spec.get("fingerprint") or {},
        input_hashes=spec.get("input_hashes") or {},
        side=Path(spec["side"]) if spec.get("side") else None,
        input_sides={k: Path(v) for k, v in (spec.get("input_sides") or {}).items()},
    )
    if spec.get("builder_file"):  # a builder registered by file (`mlbuild.builders.register`)
        builders.register(spec["builder"], Path(spec["builder_file"]))
    try:
        builders.load(spec["builder"]).build(ctx)
    except MlbuildError as e:
        with open(spec_path + ".error", "w") as f:
            json.dump({"class": type(e).__name__, "message": e.message, "hints": list(e.hints)}, f)
        return 3
    except BaseException as e:  # a builder bug: keep the traceback in the log
        traceback.print_exc()
        with open(spec_path + ".error", "w") as f:
            json.dump({"class": "BuildError", "message": f"builder `{spec['builder']}` crashed: "
                       f"{type(e).__name__}: {e}", "hints": ["the traceback is in the build log (`mlbuild log`)"]}, f)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
