"""Running a builder hermetically.

A builder runs as a subprocess of the host interpreter with ``-S -E`` (no host
site-packages, no PYTHON* variables), in a fresh directory fixed per derivation,
with a scrubbed environment: only the variables below plus those a builder declares.
The entry records which sandbox it had (``mlbuild show``):

- ``bwrap`` (bubblewrap installed and able to make namespaces): no network, its own
  PID/IPC/UTS namespaces, and a file system of its own: the system directories
  (``/usr``, ``/lib*``, ``/bin``, a few ``/etc`` files), the interpreter and mlbuild's
  package read-only, its inputs read-only, only its output and build directory writable,
  a private ``/tmp``; never the user's home.
- ``unshare-net`` (``unshare -n``, or ``-rn`` with unprivileged user namespaces): no
  network and its own PID namespace; the host's file system as the user sees it.
- ``env-scrubbed``: neither works here; only the environment is scrubbed.

``MLBUILD_SANDBOX=bwrap|unshare|none`` picks one (default ``auto``: the first that works).
Builders that declare ``NEEDS_NETWORK`` (the Rust crates of the LoadGen wheel) run with the
network and the host's file system (``env-scrubbed+network``).

Builders die with mlbuild: bwrap's ``--die-with-parent`` (its PID namespace goes with it), else
``setpriv --pdeathsig KILL`` (or ``prctl(PR_SET_PDEATHSIG)``), ``unshare --kill-child``, and a
watcher that buildexec forks into the builder's process group, which kills the group when the
lifeline pipe mlbuild holds closes (the builder's own children too).  Each builder is its own
process group, which :func:`interrupt` kills on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
    from .locks import LockBusy, file_lock

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


SANDBOXES = ("bwrap", "unshare", "none")  # values of MLBUILD_SANDBOX besides "auto"
# The host directories a bwrap sandbox sees (read-only; symlinks such as merged-/usr `/bin` are kept as
# symlinks), and the few /etc files programs read: the dynamic loader's cache, alternatives, TLS roots,
# user/group names, time zone.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates",
             "passwd", "group", "nsswitch.conf", "hosts", "localtime", "mime.types")

_live: dict[int, subprocess.Popen[str]] = {}  # pid -> builder process (each its own process group)
_live_lock = threading.RLock()  # reentrant: `interrupt` runs in a signal handler of the main thread
_stopping = threading.Event()


def interrupt() -> None:
    """Kill every running builder of this process (each whole process group) and start no new one.

    Called by the CLI's SIGINT/SIGTERM handler; safe in a signal handler."""
    with _live_lock:
        _stopping.set()
        procs = list(_live.values())
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def reset_interrupt() -> None:
    """Allow builds again after :func:`interrupt` (an in-process caller that goes on)."""
    _stopping.clear()


def _choice() -> str:
    value = os.environ.get("MLBUILD_SANDBOX", "auto").strip().lower() or "auto"
    if value != "auto" and value not in SANDBOXES:
        raise errors.UsageError(f"MLBUILD_SANDBOX={value!r}: expected auto, {', '.join(SANDBOXES)}",
                                hints=["unset it to use the best sandbox that works here"])
    return value


@functools.cache
def _setpriv() -> list[str] | None:
    """``setpriv --pdeathsig KILL``: the command after it dies with its parent (None: not here)."""
    exe = shutil.which("setpriv")
    if exe is None:
        return None
    args = [exe, "--pdeathsig", "KILL"]
    try:
        ok = subprocess.run([*args, "true"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return args if ok else None


@functools.cache
def network_isolation() -> list[str] | None:
    """The ``unshare`` prefix that cuts a builder off the network (and, where it can, gives it a PID
    namespace that dies with it), or None when none works here."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    for args in ([exe, "-n", "-p", "-f", "--kill-child"], [exe, "-rn", "-p", "-f", "--kill-child"],
                 [exe, "-n"], [exe, "-rn"]):
        try:
            r = subprocess.run([*args, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return args
    return None


def _under(path: str, dirs: Sequence[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def bwrap_args(exe: str, *, ro: Sequence[str], rw: Sequence[str], workdir: str) -> list[str]:
    """The bubblewrap command prefix: namespaces, the system directories, ``ro`` read-only and ``rw``
    writable (absolute, resolved paths, bound at the same place), cwd ``workdir``."""
    args = [exe, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "mlbuild",
            "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm",
            "--tmpfs", "/tmp"]
    visible: list[str] = []
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
            visible.append(d)
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    if os.path.isdir("/sys"):
        args += ["--ro-bind", "/sys", "/sys"]  # CPU topology for the runtimes' thread pools
    binds: dict[str, str] = {}
    for p in sorted(set(ro), key=lambda p: (p.count("/"), p)):
        if not _under(p, visible) and not _under(p, list(binds)):
            binds[p] = "--ro-bind"
    for p in rw:
        binds[p] = "--bind"
    for p in sorted(binds, key=lambda p: (p.count("/"), p)):  # parents before children
        args += [binds[p], p, p]
    return [*args, "--chdir", workdir]


def _interpreter_dirs() -> list[str]:
    """What the host interpreter needs: its prefix (stdlib), its venv (pip for `python-env`), its binary."""
    dirs = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
            os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(os.path.abspath(sys.executable))}
    return sorted(dirs)


@functools.cache
def _bwrap() -> str | None:
    """The bwrap executable when it can make its sandbox here (probed once), else None."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None
    cmd = [*bwrap_args(exe, ro=_interpreter_dirs(), rw=[], workdir="/"), sys.executable, "-S", "-E", "-c", "pass"]
    try:
        ok = subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return exe if ok else None


def mechanism(needs_network: bool = False) -> str:
    """The sandbox a builder gets here: ``bwrap``, ``unshare`` or ``none`` (network builders: ``none``)."""
    choice = _choice()
    if needs_network:
        return "none"
    if choice in ("auto", "bwrap") and _bwrap() is not None:
        return "bwrap"
    if choice == "bwrap":
        raise errors.BuildError(
            "MLBUILD_SANDBOX=bwrap, but bubblewrap " + ("is not installed" if shutil.which("bwrap") is None
                                                        else "cannot create its namespaces here"),
            hints=["install it (Debian/Ubuntu: `apt-get install bubblewrap`), or unset MLBUILD_SANDBOX"])
    if choice in ("auto", "unshare") and network_isolation() is not None:
        return "unshare"
    if choice == "unshare":
        raise errors.BuildError("MLBUILD_SANDBOX=unshare, but `unshare -n` does not work here (needs root or "
                                "unprivileged user namespaces)", hints=["unset MLBUILD_SANDBOX"])
    return "none"


def sandbox_name(needs_network: bool) -> str:
    """The name an entry records for its sandbox."""
    if needs_network:
        return "env-scrubbed+network"
    return {"bwrap": "bwrap", "unshare": "unshare-net", "none": "env-scrubbed"}[mechanism(needs_network)]


# What a failed builder could not do, as a hint beside its error (a builder that wants the network or the
# home fails with whatever error its library raises; this says why).
_LIMITS = {
    "bwrap": "it ran in the `bwrap` sandbox: no network, inputs read-only, only its output and build directory "
             "writable, no access to your home",
    "unshare-net": "it ran in the `unshare-net` sandbox: no network",
}


def _die_with_parent() -> None:  # a preexec_fn, only where setpriv is missing
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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
    side_out: Path | None = None,
    input_sides: Mapping[str, Path] | None = None,
) -> str:
    """Run ``builder`` into ``out`` (created empty); return the sandbox used.

    ``side_out``: where the builder's side outputs (``ctx.side``) are kept when it succeeds (replacing
    what was there; nothing is kept when it wrote none); ``input_sides``: inputs' side outputs, read-only."""
    from . import builders

    needs_network = bool(getattr(module, "NEEDS_NETWORK", False))
    tools: Sequence[str] = getattr(module, "TOOLS", ())
    env_site = None
    if getattr(module, "NEEDS_ENV", False):
        env_dir = inputs.get("env")
        if env_dir is None or not (env_dir / "site-packages").is_dir():
            raise errors.BuildError(f"builder `{builder}` needs an `env` input holding `site-packages`")
        env_site = str(env_dir / "site-packages")
    package_dir = Path(__file__).resolve().parent
    registered = builders.registered_file(builder)
    builder_file = str(registered) if registered is not None else None
    kind = mechanism(needs_network)
    sandbox = sandbox_name(needs_network)
    with _build_dir(entry) as tmp:
        tmp = tmp.resolve()
        (tmp / "home").mkdir()
        (tmp / "tmp").mkdir()
        (tmp / "pkg").mkdir()
        # Only the mlbuild package itself is importable, never its neighbours.
        (tmp / "pkg" / "mlbuild").symlink_to(package_dir)
        (tmp / "work").mkdir()
        (tmp / "side").mkdir()
        sides = {k: Path(v).resolve() for k, v in (input_sides or {}).items()}
        out.mkdir(parents=True, exist_ok=True)
        out = out.resolve()
        spec = {
            "builder": builder, "inputs": {k: str(v) for k, v in inputs.items()}, "params": dict(params),
            "out": str(out), "tmp": str(tmp / "tmp"), "jobs": jobs,
            "package_parent": str(tmp / "pkg"), "env_site": env_site, "entry": entry,
            "fingerprint": dict(fingerprint or {}), "input_hashes": dict(input_hashes or {}),
            "side": str(tmp / "side") if side_out is not None else None,
            "input_sides": {k: str(v) for k, v in sorted(sides.items())},
        }
        if builder_file is not None:
            spec["builder_file"] = builder_file
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
        env["PATH"] = os.pathsep.join(dict.fromkeys([*path_dirs, "/usr/local/bin", "/usr/bin", "/bin"]))
        env["MLBUILD_PYTHON"] = sys.executable
        prefix: list[str] = []
        preexec: Callable[[], None] | None = None
        if kind == "bwrap":
            exe = _bwrap()
            assert exe is not None
            ro = [*_interpreter_dirs(), str(package_dir), *(str(Path(v).resolve()) for v in inputs.values()),
                  *(str(v) for v in sides.values()),
                  *(os.path.realpath(d) for d in path_dirs), *([builder_file] if builder_file else [])]
            prefix = bwrap_args(exe, ro=ro, rw=[str(tmp), str(out)], workdir=str(tmp / "work"))
            env_exe = shutil.which("env", path="/usr/bin:/bin")
            if env_exe is not None:  # bwrap exports PWD; the environment stays exactly the scrubbed one
                prefix += [env_exe, "-u", "PWD"]
        else:
            death = _setpriv()
            if death is None:
                preexec = _die_with_parent
            prefix = [*(death or []), *((network_isolation() or []) if kind == "unshare" else [])]
        cmd = [*prefix, sys.executable, "-S", "-E", "-B", str(package_dir / "buildexec.py"), str(spec_path)]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            log.write(f"# builder {builder}, sandbox {sandbox}\n")
            log.flush()
            # Without bwrap's PID namespace, the builder's lifeline: buildexec kills its own process group
            # (the builder's children too, which no parent-death signal reaches) when this pipe's write end
            # closes, i.e. when this process dies.
            lifeline_r, lifeline_w = os.pipe()
            if kind != "bwrap":
                spec["lifeline_fd"] = lifeline_r
                spec_path.write_text(json.dumps(spec, sort_keys=True))
            with _live_lock:
                if _stopping.is_set():
                    os.close(lifeline_r)
                    os.close(lifeline_w)
                    raise errors.BuildError(f"builder `{builder}` not started: mlbuild is being interrupted")
                try:
                    proc = subprocess.Popen(cmd, cwd=tmp / "work", env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                            start_new_session=True, pass_fds=(lifeline_r,) if kind != "bwrap" else (),
                                            preexec_fn=preexec)
                except BaseException:
                    os.close(lifeline_w)
                    raise
                finally:
                    os.close(lifeline_r)
                _live[proc.pid] = proc
            try:
                assert proc.stdout is not None
                tail: list[str] = []
                for line in proc.stdout:
                    log.write(line)
                    log.flush()
                    tail = [*tail, line.rstrip()][-20:]
                    on_line(line.rstrip())
                rc = proc.wait()
            finally:
                if proc.poll() is None:  # this thread was interrupted: the builder goes too
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                with _live_lock:
                    _live.pop(proc.pid, None)
                os.close(lifeline_w)
        if rc != 0 and _stopping.is_set():
            raise errors.BuildError(f"builder `{builder}` was stopped: mlbuild was interrupted")
        if rc != 0:
            err_file = Path(str(spec_path) + ".error")
            if err_file.exists():
                info = json.loads(err_file.read_text())
                cls = getattr(errors, info["class"], errors.BuildError)
                known = isinstance(cls, type) and issubclass(cls, errors.MlbuildError)
                if not known or cls is errors.HashMismatchError:
                    cls = errors.BuildError
                hints = [*info["hints"], *([_LIMITS[sandbox]] if sandbox in _LIMITS else []), f"build log: {log_path}"]
                try:
                    raise cls(info["message"], hints=hints)
                except TypeError:
                    raise errors.BuildError(info["message"], hints=hints) from None
            last = "\n".join(tail[-5:])
            limits = [_LIMITS[sandbox]] if sandbox in _LIMITS else []
            raise errors.BuildError(f"builder `{builder}` exited with status {rc}:\n{last}",
                                    hints=[*limits, f"full log: {log_path}"])
        if side_out is not None:
            _keep_side(tmp / "side", side_out)
        return sandbox


def _keep_side(src: Path, dest: Path) -> None:
    """Replace ``dest`` by a copy of the side outputs in ``src`` (removed when there are none)."""
    staged = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.rmtree(staged, ignore_errors=True)
    if any(src.iterdir()):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, staged, symlinks=True)
    shutil.rmtree(dest, ignore_errors=True)
    if staged.exists():
        os.replace(staged, dest)
