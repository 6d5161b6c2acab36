"""`concat`: the smallest useful builder - concatenate one or two inputs into ``out/result.txt``.

A worked example of the builder interface (see ``mlbuild/builders/__init__.py``) and
the builder the core tests drive: standard library only, no locked environment.

Inputs: ``a`` (required) and ``b`` (optional), each a store path.  A file contributes
its bytes; a directory contributes its regular files' bytes in sorted relative-path
order (symlinks are skipped).  ``result.txt`` is ``a`` + ``sep`` + ``b`` (just ``a``
without ``b``).

Parameters for exercising the build machinery:

- ``sleep``: seconds to sleep after writing a first part of the output (lets a test
  kill a build half-way and check that nothing half-written becomes an entry);
- ``fail``: raise :class:`~mlbuild.errors.InputError` instead of building;
- ``nondeterministic``: also write ``noise.bin`` with random bytes (for ``realize --check``);
- ``env_report``: also write ``env.json``: the sorted environment variable names the
  builder sees, its ``HOME``, ``TMPDIR`` and working directory (shows the sandbox).

Deterministic unless ``nondeterministic`` or ``env_report`` is set.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError

NAME = "concat"
VERSION = 1
INPUTS = {"a": "a file or directory: its bytes come first"}
OPTIONAL_INPUTS = {"b": "a file or directory: its bytes come after `sep`"}
PARAMS = {
    "sep": Param(str, "\n", "separator written between `a` and `b`"),
    "sleep": Param(float, 0.0, "seconds to sleep half-way through writing the output (tests)", min=0.0, max=3600.0),
    "fail": Param(bool, False, "fail with an input error instead of building (tests)"),
    "nondeterministic": Param(bool, False, "also write random bytes to noise.bin (tests of --check)"),
    "env_report": Param(bool, False, "also write env.json: environment names, HOME, TMPDIR, cwd (tests)"),
}
NEEDS_ENV = False
NEEDS_NETWORK = False


def _content(path: Path) -> bytes:
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return b"".join(p.read_bytes() for p in sorted(files, key=lambda p: p.relative_to(path).as_posix()))
    raise InputError(f"input `{path}` is neither a file nor a directory")


def build(ctx: BuildContext) -> None:
    if ctx.params["fail"]:
        raise InputError("concat was asked to fail (`fail = true`)", hints=["set `fail = false`"])
    a = _content(ctx.inputs["a"])
    b = _content(ctx.inputs["b"]) if "b" in ctx.inputs else None
    result = ctx.out / "result.txt"
    with open(result, "wb") as f:
        f.write(a)
        f.flush()
        if ctx.params["sleep"] > 0:
            ctx.log(f"sleeping {ctx.params['sleep']} s")
            time.sleep(ctx.params["sleep"])
        if b is not None:
            f.write(ctx.params["sep"].encode() + b)
    if ctx.params["nondeterministic"]:
        (ctx.out / "noise.bin").write_bytes(os.urandom(16))
    if ctx.params["env_report"]:
        report = {"keys": sorted(os.environ), "HOME": os.environ.get("HOME"),
                  "TMPDIR": os.environ.get("TMPDIR"), "cwd": os.getcwd()}
        (ctx.out / "env.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    ctx.log(f"wrote {result.stat().st_size} bytes")
