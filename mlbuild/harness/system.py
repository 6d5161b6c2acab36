"""What a run ran on: CPU, cores, memory, OS, Python and the libraries' versions.

Two identities are derived here (standard library only, cheap: the graph and the plan cache
call them):

- :func:`cpu_isa_features`: the instruction-set extensions ONNX Runtime's CPU kernels
  dispatch on (``avx2``, ``avx512*``, ``fma``, ``amx*``, ``neon``/``asimd``...).  They can change
  an accuracy result's bits, so they are part of the accuracy derivation's identity.
- :func:`machine_id`: what a performance measurement depends on - CPU model, cores, memory,
  OS and kernel, architecture; never the host name.  Part of a measurement's identity, so a
  shared store never serves one machine's samples/s to another.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs more than the no-op realize's whole check (this module is on its path)
    from typing import Any

DISTRIBUTIONS = ("numpy", "onnxruntime", "pillow", "pycocotools", "mlcommons-loadgen", "mlbuild-loadgen")


def _cpu_model() -> str | None:
    model = _cpuinfo_first("model name")
    if model:
        return model
    import platform

    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        for line in _read("/proc/meminfo").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _os_release() -> str | None:
    try:
        for line in _read("/etc/os-release").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def describe(loadgen_module: Any = None, loadgen_detail: dict[str, Any] | None = None) -> dict[str, Any]:
    import platform
    from importlib import metadata

    libs: dict[str, str] = {}
    for dist in DISTRIBUTIONS:
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import onnxruntime

        libs.setdefault("onnxruntime", onnxruntime.__version__)
    except ImportError:
        pass
    try:
        import numpy

        libs.setdefault("numpy", numpy.__version__)
    except ImportError:
        pass
    affinity = None
    if hasattr(os, "sched_getaffinity"):
        affinity = len(os.sched_getaffinity(0))
    loadgen: dict[str, Any] = {}
    if loadgen_module is not None:
        loadgen["module"] = getattr(loadgen_module, "__name__", None)
        version = getattr(loadgen_module, "__version__", None)
        if version:
            loadgen["module_version"] = str(version)
    for key in (
        "loadgen_version",
        "loadgen_build_date_utc",
        "loadgen_git_commit_date",
        "loadgen_git_status_message",
        "loadgen_file_sha1",
    ):
        if loadgen_detail and key in loadgen_detail:
            loadgen[key] = loadgen_detail[key]
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": affinity,
        "memory_bytes": _memory_bytes(),
        "machine": platform.machine(),
        "os": _os_release() or platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "libraries": libs,
        "loadgen": loadgen,
        "byteorder": sys.byteorder,
    }


# ISA extensions ONNX Runtime's MLAS kernels (and numpy's SIMD paths) choose code paths by.
_ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "ssse3", "neon", "asimd", "sve", "bf16", "i8mm", "dotprod",
                 "fphp", "asimdhp", "asimddp", "vnni")


_CPUINFO: list[str] = []


def _read(path: str, errors: str = "strict") -> str:
    with open(path, encoding="utf-8", errors=errors) as f:
        return f.read()


def _cpuinfo() -> str:
    """/proc/cpuinfo, read once a process (the model and the ISA flags both come from it)."""
    if not _CPUINFO:
        try:
            _CPUINFO.append(_read("/proc/cpuinfo", errors="replace"))
        except OSError:
            _CPUINFO.append("")
    return _CPUINFO[0]


def _cpuinfo_first(*keys: str) -> str:
    for line in _cpuinfo().splitlines():
        k, _, v = line.partition(":")
        if k.strip().lower() in keys:
            return v.strip()
    return ""


def cpu_isa_features() -> list[str]:
    """The CPU's kernel-relevant ISA extensions, sorted (x86 ``flags`` / Arm ``Features``)."""
    flags = _cpuinfo_first("flags", "features").split()
    return sorted({f for f in flags if f.startswith(_ISA_PREFIXES)})


def machine_id() -> dict[str, Any]:
    """The machine a performance measurement ran on (sorted keys; no host name, no uptime)."""
    mem = _memory_bytes()
    return {
        # os.uname() gives what platform.machine()/system()/release() do, without importing platform
        # (the no-op realize computes this for its plan cache key)
        "arch": os.uname().machine,
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_mib": mem // (1024 * 1024) if mem else None,
        "os": _os_release() or os.uname().sysname,
        "kernel": os.uname().release,
    }
