"""`sandbox-probe`: a test-only builder (registered by tests/core/test_sandbox.py with
``mlbuild.builders.register``) that tries what a sandboxed builder must not be able to do.

Each attempt that succeeds is written to ``out/leaks.json`` and the build succeeds; each one
that fails raises :class:`~mlbuild.errors.InputError` naming it (``probe: cannot ...``), so a
test sees either a leak in the output or a clear build error.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import InputError

NAME = "sandbox-probe"
VERSION = 1
INPUTS = {"a": "any input: its path is what `write_input` writes into"}
PARAMS = {
    "connect": Param(str, "", "HOST:PORT to send an HTTP GET to"),
    "read": Param(str, "", "an absolute path to read (a file) or list (a directory)"),
    "write_input": Param(bool, False, "try to create a file inside input `a`"),
    "child_sleep": Param(float, 0.0, "start a `sleep` child process for this long and wait for it", min=0.0),
}
NEEDS_ENV = False
NEEDS_NETWORK = False


def build(ctx: BuildContext) -> None:
    leaks: dict[str, str] = {}
    if ctx.params["connect"]:
        host, port = ctx.params["connect"].rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=3) as s:
                s.sendall(b"GET /probe HTTP/1.0\r\nHost: probe\r\n\r\n")
                leaks["connect"] = s.recv(200).decode(errors="replace")
        except OSError as e:
            raise InputError(f"probe: cannot connect to {ctx.params['connect']}: {e}") from None
    if ctx.params["read"]:
        path = ctx.params["read"]
        try:
            if os.path.isdir(path):
                leaks["read"] = repr(sorted(os.listdir(path)))
            else:
                with open(path) as f:
                    leaks["read"] = f.read()
        except OSError as e:
            raise InputError(f"probe: cannot read {path}: {e}") from None
    if ctx.params["write_input"]:
        target = ctx.inputs["a"] / "written-by-a-builder" if ctx.inputs["a"].is_dir() else ctx.inputs["a"]
        try:
            with open(target, "a") as f:
                f.write("tampered\n")
            leaks["write_input"] = str(target)
        except OSError as e:
            raise InputError(f"probe: cannot write {target}: {e}") from None
    if ctx.params["child_sleep"]:
        child = subprocess.Popen(["sleep", str(ctx.params["child_sleep"])])
        ctx.log(f"started child {child.pid}")
        child.wait()
    (ctx.out / "leaks.json").write_text(json.dumps(leaks, sort_keys=True) + "\n")
    ctx.log(f"leaks: {sorted(leaks)}")
