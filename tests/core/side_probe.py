"""`side-probe`: a test-only builder (registered by tests/core/test_side_outputs.py) with a side
output: ``out/out.txt`` is a function of its input, ``ctx.side/log.txt`` is not (random bytes, as a
timestamped log is); it also copies its input's side log, when the input has one, into ``out/``."""

from __future__ import annotations

import os

from mlbuild.builders import BuildContext

NAME = "side-probe"
VERSION = 1
INPUTS = {"a": "any input"}
PARAMS: dict[str, object] = {}
NEEDS_ENV = False
NEEDS_NETWORK = False


def build(ctx: BuildContext) -> None:
    a = ctx.inputs["a"]
    (ctx.out / "out.txt").write_text(f"built from {a.name}\n")
    if ctx.side is not None:
        (ctx.side / "log.txt").write_text(os.urandom(8).hex() + "\n")
    side = ctx.input_sides.get("a")
    if side is not None:
        (ctx.out / "input-side-log.txt").write_text((side / "log.txt").read_text())
