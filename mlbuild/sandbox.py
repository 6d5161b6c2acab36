"""Running a builder hermetically.

A builder runs as a subprocess of the host interpreter with ``-S -E`` (no host
site-packages, no PYTHON* variables), in a fresh temporary directory, with a
scrubbed environment: only the variables below plus those a builder declares.
Without network where ``unshare -n`` works (root, or unprivileged user
namespaces via ``unshare -rn``); the entry records which sandbox it had.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import errors

FIXED_ENV = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "SOURCE_DATE_EPOCH": "315532800",  # 1980-01-01: the earliest date zip archives (wheels) can hold
    "TZ": "UTC",
}
# Passed through when set: they work around CPU-specific faults of older OpenBLAS
# builds on some hosts and never change results.
HOST_PASSTHROUGH = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@contextlib.contextmanager
def _build_dir(entry: str) -> Iterator[Path]:
    """The builder's scratch directory: ``$TMPDIR/mlbuild-build/<entry>``, the same path on
    every machine for the same derivation (as Nix's ``/build``), so paths that tools record
    (SBOMs, debug info) don't make outputs differ.  Falls back to a random directory when
    another process is building the same entry from another store."""
    from .store import LockBusy, file_lock

    base = Path(tempfile.gettempdir()) / "mlbuild-build"
    base.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        tmp: Path | None = None
        if entry:
            try:
                stack.enter_context(file_lock(base / f"{entry}.lock", wait=False))
                tmp = base / entry
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
                stack.callback(shutil.rmtree, tmp, ignore_errors=True)  # runs before the lock is released
            except LockBusy:
                tmp = None
        if tmp is None:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlbuild-build-")))
        yield tmp


@functools.cache
def network_isolation() -> list[str] | None:
    """The command prefix that cuts a builder off the network, or None when none works here."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    for args in ([exe, "-n"], [exe, "-rn"]):
        try:
            r = subprocess.run([*args, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return args
    return None


def sandbox_name(needs_network: bool) -> str:
    if needs_network:
        return "env-scrubbed+network"
    return "unshare-net" if network_isolation() else "env-scrubbed"


def run_builder(
    *,
    builder: str,
    module: Any,
    inputs: Mapping[str, Path],
    params: Mapping[str, Any],
    out: Path,
    jobs: int,
    log_path: Path,
    on_line: Callable[[str], None],
    entry: str = "",
    fingerprint: Mapping[str, Any] | None = None,
    input_hashes: Mapping[str, str] | None = None,
) -> str:
    """Run ``builder`` into ``out`` (created empty); return the sandbox used."""
    needs_network = bool(getattr(module, "NEEDS_NETWORK", False))
    tools: Sequence[str] = getattr(module, "TOOLS", ())
    env_site = None
    if getattr(module, "NEEDS_ENV", False):
        env_dir = inputs.get("env")
        if env_dir is None or not (env_dir / "site-packages").is_dir():
            raise errors.BuildError(f"builder `{builder}` needs an `env` input holding `site-packages`")
        env_site = str(env_dir / "site-packages")
    package_dir = Path(__file__).resolve().parent
    with _build_dir(entry) as tmp:
        (tmp / "home").mkdir()
        (tmp / "tmp").mkdir()
        (tmp / "pkg").mkdir()
        # Only the mlbuild package itself is importable, never its neighbours.
        (tmp / "pkg" / "mlbuild").symlink_to(package_dir)
        (tmp / "work").mkdir()
        out.mkdir(parents=True, exist_ok=True)
        spec = {
            "builder": builder, "inputs": {k: str(v) for k, v in inputs.items()}, "params": dict(params),
            "out": str(out), "tmp": str(tmp / "tmp"), "jobs": jobs,
            "package_parent": str(tmp / "pkg"), "env_site": env_site, "entry": entry,
            "fingerprint": dict(fingerprint or {}), "input_hashes": dict(input_hashes or {}),
        }
        spec_path = tmp / "spec.json"
        spec_path.write_text(json.dumps(spec, sort_keys=True))
        path_dirs = [os.path.dirname(w) for t in tools if (w := shutil.which(t))]
        env = dict(FIXED_ENV)
        env.update({k: os.environ[k] for k in HOST_PASSTHROUGH if k in os.environ})
        env.update({k: os.environ[k] for k in getattr(module, "PASS_ENV", ()) if k in os.environ})
        extra_env = getattr(module, "extra_env", None)
        if extra_env is not None:
            env.update(extra_env())
        env["HOME"] = str(tmp / "home")
        env["TMPDIR"] = str(tmp / "tmp")
        env["PATH"] = os.pathsep.join(dict.fromkeys(path_dirs + ["/usr/local/bin", "/usr/bin", "/bin"]))
        env["MLBUILD_PYTHON"] = sys.executable
        prefix: list[str] = []
        if not needs_network:
            prefix = network_isolation() or []
        sandbox = sandbox_name(needs_network)
        cmd = [*prefix, sys.executable, "-S", "-E", "-B", str(package_dir / "buildexec.py"), str(spec_path)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            log.write(f"# builder {builder}, sandbox {sandbox}\n")
            log.flush()
            proc = subprocess.Popen(cmd, cwd=tmp / "work", env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            assert proc.stdout is not None
            tail: list[str] = []
            for line in proc.stdout:
                log.write(line)
                log.flush()
                tail = (tail + [line.rstrip()])[-20:]
                on_line(line.rstrip())
            rc = proc.wait()
        if rc != 0:
            err_file = Path(str(spec_path) + ".error")
            if err_file.exists():
                info = json.loads(err_file.read_text())
                cls = getattr(errors, info["class"], errors.BuildError)
                if not (isinstance(cls, type) and issubclass(cls, errors.MlbuildError)) or cls is errors.HashMismatchError:
                    cls = errors.BuildError
                try:
                    raise cls(info["message"], hints=[*info["hints"], f"build log: {log_path}"])
                except TypeError:
                    raise errors.BuildError(info["message"], hints=[*info["hints"], f"build log: {log_path}"]) from None
            last = "\n".join(tail[-5:])
            raise errors.BuildError(f"builder `{builder}` exited with status {rc}:\n{last}",
                                    hints=[f"full log: {log_path}"])
        return sandbox
