"""`python-env`: a Python environment assembled from locked wheels.

Installs every wheel found in its inputs (a locked `pypi` set, a built LoadGen
wheel, ...) into ``out/site-packages`` with pip, offline (``--no-index``), without
dependency resolution (the lock already resolved) and without byte-compiling.
The pip that installs is a locked wheel too (input ``installer``, run as
``python pip-*.whl/pip``), so the host's pip plays no part; without that input the
host interpreter's pip is used.
Builders and runs put that directory on ``sys.path`` instead of the host's
site-packages.

The environment's bytes depend only on the wheels, never on where the store,
the wheels, the checkout or the interpreter live, nor on the time or the user.
What pip writes about the host is removed and every ``RECORD`` rewritten to list
exactly what is left, with paths relative to ``site-packages``:

- ``direct_url.json`` (the wheel's absolute ``file://`` URL) and ``REQUESTED``;
- console-script wrappers in ``bin/`` (their shebang is the interpreter's absolute
  path; environments are used through ``sys.path``, never through ``bin/``);
- any ``__pycache__``.

Binaries a wheel ships as scripts (``NAME.data/scripts``, e.g. maturin's) are kept
in ``site-packages/bin/`` as they were in the wheel; builders run them from there.
A last scan refuses an environment whose metadata or scripts still name a path of
this build.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import BuildError

NAME = "python-env"
VERSION = 2
INPUTS: dict[str, str] = {}
OPTIONAL_INPUTS = {
    "packages": "a locked `pypi` set (directory of wheels)",
    "loadgen": "a LoadGen wheel: the locked official one or the `loadgen-wheel` build",
    "extra": "more wheels",
    "installer": "a locked `pypi` set holding pip's wheel: the pip that installs (not installed itself)",
}
PARAMS: dict[str, Param] = {}
NEEDS_ENV = False

# pip's --target installs into a temporary `home` scheme (purelib `<home>/lib/python`) and then
# moves the purelib's and the home's items into the target; RECORD paths are relative to purelib.
_PURELIB = "lib/python"


def _wheels(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if root.name.endswith(".whl") else []
    return sorted(p for p in root.rglob("*.whl") if p.is_file())


def _site_relative(record_path: str) -> str:
    """A RECORD path (relative to pip's temporary purelib) as a path relative to site-packages."""
    joined = posixpath.normpath(posixpath.join(_PURELIB, record_path))
    if joined.startswith(_PURELIB + "/"):
        return joined[len(_PURELIB) + 1:]
    return joined


def _host_markers(ctx: BuildContext, python: str, site: Path) -> list[bytes]:
    """Byte strings that must not occur in a deterministic environment's metadata and scripts."""
    paths = {python, os.path.realpath(python), str(site), str(ctx.out), str(ctx.tmp)}
    paths.update(str(p) for p in ctx.inputs.values())
    paths.update(os.path.realpath(p) for p in ctx.inputs.values())
    return sorted({os.fsencode(p) for p in paths if len(p) > 1})


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _is_interpreter_script(path: Path, markers: list[bytes]) -> bool:
    """A script whose shebang pip rewrote to this interpreter (console scripts, `#!python` scripts)."""
    head = _head(path, 1024)
    if not head.startswith(b"#!"):
        return False
    first = b"\n".join(head.split(b"\n")[:3])  # pip's `#!/bin/sh` + `'''exec' PYTHON` form for long paths
    return any(m in first for m in markers)


def _rewrite_records(site: Path, removed: set[str]) -> int:
    """Rewrite every RECORD: drop what was removed, paths relative to site-packages, sorted."""
    dropped = 0
    for record in sorted(site.glob("*.dist-info/RECORD")):
        own = record.relative_to(site).as_posix()
        rows: dict[str, tuple[str, str]] = {}
        for row in csv.reader(io.StringIO(record.read_text(encoding="utf-8"))):
            if not row:
                continue
            rel = _site_relative(row[0])
            if rel == own:
                continue
            if rel in removed or "__pycache__/" in rel:
                dropped += 1
                continue
            if not (site / rel).is_file():
                raise BuildError(f"`{own}` lists `{row[0]}`, which pip did not install (looked for `{rel}`)",
                                 hints=["the wheel's RECORD is inconsistent; re-lock the package"])
            rows[rel] = (row[1] if len(row) > 1 else "", row[2] if len(row) > 2 else "")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for rel in sorted(rows):
            w.writerow([rel, *rows[rel]])
        w.writerow([own, "", ""])
        record.write_text(buf.getvalue(), encoding="utf-8")
    return dropped


def _scrub(ctx: BuildContext, python: str, site: Path) -> None:
    markers = _host_markers(ctx, python, site)
    removed: set[str] = set()
    for name in ("direct_url.json", "REQUESTED"):
        for p in sorted(site.glob(f"*.dist-info/{name}")):
            removed.add(p.relative_to(site).as_posix())
            p.unlink()
    bin_dir = site / "bin"
    if bin_dir.is_dir():
        for p in sorted(bin_dir.iterdir()):
            if p.is_file() and not p.is_symlink() and _is_interpreter_script(p, markers):
                removed.add(p.relative_to(site).as_posix())
                p.unlink()
        if not any(bin_dir.iterdir()):
            bin_dir.rmdir()
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
    _rewrite_records(site, removed)
    # Nothing pip wrote about the installation may still name a path of this build (the wheels'
    # own files are theirs, byte for byte; pip rewrites only RECORD, INSTALLER and shebangs).
    suspects = [p for n in ("RECORD", "INSTALLER") for p in sorted(site.glob(f"*.dist-info/{n}"))]
    if bin_dir.is_dir():
        suspects += [p for p in sorted(bin_dir.iterdir()) if p.is_file() and _head(p, 2) == b"#!"]
    for p in suspects:
        if p.is_file():
            data = p.read_bytes()
            for m in markers:
                if m in data:
                    raise BuildError(
                        f"`{p.relative_to(site)}` of the environment names the host path `{os.fsdecode(m)}`: "
                        "the environment would differ between stores and checkouts",
                        hints=[("report this wheel; mlbuild strips what pip records about the host, and this "
                                "file is not yet handled")])


def _pip(ctx: BuildContext) -> list[str]:
    """How to run pip: from the locked wheel of the `installer` input, else the interpreter's."""
    if "installer" not in ctx.inputs:
        return ["-m", "pip"]
    found = [w for w in _wheels(ctx.inputs["installer"]) if w.name.startswith("pip-")]
    if len(found) != 1:
        raise BuildError(f"the `installer` input holds {len(found)} pip wheels ({[w.name for w in found]}); "
                         "expected exactly one", hints=["lock a set with `requirements = [\"pip==VERSION\"]`"])
    return [str(found[0] / "pip")]


def build(ctx: BuildContext) -> None:
    by_name: dict[str, Path] = {}
    for input_name in sorted(ctx.inputs):
        if input_name == "installer":
            continue
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
    cmd = [python, *_pip(ctx), "install", "--no-index", "--no-deps", "--no-compile", "--no-warn-script-location",
           "--disable-pip-version-check", "--no-cache-dir", "--target", str(site),
           *[str(by_name[k]) for k in sorted(by_name)]]
    ctx.log(f"installing {len(by_name)} wheels")
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError("pip could not install the locked wheels:\n" + (r.stderr or r.stdout)[-2000:])
    _scrub(ctx, python, site)
    packages = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.MULTILINE)
        version = re.search(r"^Version: (.+)$", meta, re.MULTILINE)
        if name and version:
            packages[name.group(1).strip()] = version.group(1).strip()
    (ctx.out / "env.json").write_text(json.dumps(
        {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "packages": dict(sorted(packages.items()))},
        indent=2, sort_keys=True) + "\n")
    ctx.log("installed: " + ", ".join(f"{k}=={v}" for k, v in sorted(packages.items())))
