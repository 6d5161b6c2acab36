"""The ``provenance`` block of a ``result.json``: what the result can prove about itself.

Everything here is derived, never guessed: the closure lock digest, mlbuild's version and
the builder's source digest come from the derivation's fingerprint (computed by the graph);
each input's entry and content hash from the realizer; the LoadGen's file hashes from the
module the run imported; the accuracy log's digest from its bytes.  Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TIMELINE_FILE = "timeline.json"  # a performance part's SUT-side timeline, for the assembled report
# system keys that are a function of the run environment (and so of an accuracy identity)
PURE_SYSTEM_KEYS = ("libraries", "loadgen", "python", "python_implementation", "machine", "byteorder")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def loadgen_files(module: Any) -> dict[str, str]:
    """``file name -> sha256`` of the LoadGen module the run imported: the extension module
    itself, or every file of its package directory (``__init__.py`` plus the ``.so``)."""
    where = getattr(module, "__file__", None)
    if not where:
        return {}
    path = Path(where)
    if path.name != "__init__.py":
        return {path.name: file_sha256(path)}
    return {f"{path.parent.name}/{f.name}": file_sha256(f) for f in sorted(path.parent.iterdir())
            if f.is_file() and not f.name.endswith(".pyc")}


def pure_system(system: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``system.describe()`` an accuracy result may carry: no CPU model, core
    count, memory or kernel (those are in no accuracy identity)."""
    return {k: system[k] for k in PURE_SYSTEM_KEYS if k in system}


def describe(
    *,
    fingerprint: Mapping[str, Any],
    inputs: Mapping[str, str],
    input_hashes: Mapping[str, str],
    loadgen_module: Any,
    accuracy_log: Path | None,
    out: Path,
) -> dict[str, Any]:
    import mlbuild

    fp = dict(fingerprint)
    machine = fp.get("machine")
    if machine is None and fp.get("part") != "accuracy" and (fp.get("params") or {}).get("mode") != "accuracy":
        from mlbuild.harness import system

        machine = system.machine_id()  # not a split run: describe where the measurement ran
    acc: dict[str, Any] | None = None
    if accuracy_log is not None:
        acc = {"path": accuracy_log.relative_to(out).as_posix(), "sha256": file_sha256(accuracy_log)}
    source = fp.get("builder_source")
    if source is None and isinstance(fp.get("code"), dict):  # the digest graph.builder_source_digest gives
        canon = json.dumps(fp["code"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        source = hashlib.sha256(canon).hexdigest()[:32]
    return {
        "mlbuild": {"version": fp.get("mlbuild_version", mlbuild.__version__), "builder_source": source,
                    "builder": fp.get("builder"), "builder_version": fp.get("builder_version")},
        "lock": fp.get("lock"),
        "inputs": {k: {"entry": inputs[k], "sha256": input_hashes.get(k)} for k in sorted(inputs)},
        "loadgen_files": loadgen_files(loadgen_module),
        "accuracy_log": acc,
        "machine": machine,
        "cpu_isa": fp.get("cpu_isa"),
        "runtime": fp.get("runtime"),
        "repeat": fp.get("repeat"),
    }
