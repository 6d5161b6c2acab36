"""`python-env`: a Python environment assembled from locked wheels.

Installs every wheel found in its inputs (a locked `pypi` set, a built LoadGen
wheel, ...) into ``out/site-packages`` with pip, offline (``--no-index``), without
dependency resolution (the lock already resolved), without byte-compiling, and
strips what pip records about the host (``direct_url.json`` holds the wheel's
absolute path; console scripts hold the interpreter's).  Builders and runs put
that directory on ``sys.path`` instead of the host's site-packages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import BuildError

NAME = "python-env"
VERSION = 1
INPUTS: dict[str, str] = {}
OPTIONAL_INPUTS = {
    "packages": "a locked `pypi` set (directory of wheels)",
    "loadgen": "a LoadGen wheel: the locked official one or the `loadgen-wheel` build",
    "extra": "more wheels",
}
PARAMS: dict[str, Param] = {}
NEEDS_ENV = False


def _wheels(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.name.endswith(".whl") else []
    return sorted(p for p in root.rglob("*.whl") if p.is_file())


def build(ctx: BuildContext) -> None:
    by_name: dict[str, Path] = {}
    for input_name in sorted(ctx.inputs):
        for w in _wheels(ctx.inputs[input_name]):
            dist = re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower()
            other = by_name.get(dist)
            if other is not None and other.name != w.name:
                raise BuildError(
                    f"two different wheels of `{dist}` in the environment's inputs: `{other.name}` and `{w.name}`",
                    hints=["lock both sets together, or drop the package from one of them"],
                )
            by_name[dist] = w
    if not by_name:
        raise BuildError("no wheels in the environment's inputs", hints=["give it a `packages` input (a `pypi` set)"])
    site = ctx.out / "site-packages"
    python = os.environ.get("MLBUILD_PYTHON", sys.executable)
    cmd = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-warn-script-location",
           "--disable-pip-version-check", "--target", str(site), *[str(by_name[k]) for k in sorted(by_name)]]
    ctx.log(f"installing {len(by_name)} wheels")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError("pip could not install the locked wheels:\n" + (r.stderr or r.stdout)[-2000:])
    for p in list(site.rglob("direct_url.json")) + list(site.rglob("REQUESTED")):
        p.unlink()
    bin_dir = site / "bin"
    if bin_dir.is_dir():  # console scripts embed the interpreter's absolute path
        for p in sorted(bin_dir.iterdir(), reverse=True):
            p.unlink()
        bin_dir.rmdir()
    packages = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M)
        version = re.search(r"^Version: (.+)$", meta, re.M)
        if name and version:
            packages[name.group(1).strip()] = version.group(1).strip()
    (ctx.out / "env.json").write_text(json.dumps(
        {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "packages": dict(sorted(packages.items()))},
        indent=2, sort_keys=True) + "\n")
    ctx.log("installed: " + ", ".join(f"{k}=={v}" for k, v in sorted(packages.items())))
