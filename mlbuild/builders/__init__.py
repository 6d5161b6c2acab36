"""mlbuild's builder registry: the programs that input-addressed derivations run.

A builder is a module in this package that defines, at top level and without
importing anything heavy (numpy, onnxruntime... are imported inside ``build``):

- ``NAME``: the registry name manifests use (``builder = "letterbox"``);
- ``VERSION``: an int, bumped when the output for the same inputs changes;
- ``INPUTS``: a mapping of input name -> short description (all required);
- ``OPTIONAL_INPUTS``: likewise, inputs that may be absent (default empty);
- ``PARAMS``: a mapping of parameter name -> :class:`Param` (type, default, doc);
- ``NEEDS_ENV``: True when it runs inside a locked Python environment (an input
  named ``env``, a store entry with a ``site-packages`` directory);
- ``NEEDS_NETWORK``: True only for builders that must reach a package registry
  (compiling Rust crates); everything else runs without network where possible;
- ``EXCLUSIVE``: True for builders that measure the machine (``mlperf-run``): the realizer
  runs them with nothing else running beside them (default False);
- ``build(ctx: BuildContext) -> None``: reads ``ctx.inputs`` (read-only store
  paths), writes its output into ``ctx.out`` (an empty directory that exists),
  logs through ``ctx.log`` and raises :class:`mlbuild.errors.InputError` (or
  another ``MlbuildError``) with a message naming the file and the mismatch.

The builder's source file digest and VERSION are part of every derivation's
identity, so editing a builder rebuilds what it built.  Builders must be
deterministic: same inputs and params, same bytes out (sorted JSON keys, no
timestamps, no absolute paths).  They run in a subprocess (``mlbuild.buildexec``)
with a scrubbed environment, cwd a fresh temporary directory.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# Registry name -> module (relative to this package).  Kept explicit so that
# listing builders imports nothing heavy and a typo is a clear error.
REGISTRY: dict[str, str] = {
    "coco128-to-coco": "coco128_to_coco",
    "letterbox": "letterbox",
    "openimages-to-coco": "openimages_to_coco",
    "openimages-layout": "openimages_layout",
    "retinanet-preprocess": "retinanet_preprocess",
    "python-env": "python_env",
    "loadgen-wheel": "loadgen_wheel",
    "mlperf-run": "mlperf_run",
    "mlperf-result": "mlperf_result",  # a run target's output, assembled from its parts (graph.split_runs)
    "concat": "concat",  # a minimal example builder (standard library only); the core tests use it
}


@dataclass(frozen=True)
class Param:
    type: type
    default: Any = None
    doc: str = ""
    choices: tuple[Any, ...] = ()
    required: bool = False


@dataclass(frozen=True)
class BuildContext:
    inputs: Mapping[str, Path]
    params: Mapping[str, Any]
    out: Path
    tmp: Path
    jobs: int = 1
    log: Callable[[str], None] = field(default=lambda _msg: None)
    entry: str = ""  # the store entry being built (`<digest>-<name>`): its identity
    fingerprint: Mapping[str, Any] = field(default_factory=dict)  # the derivation's canonical fingerprint
    input_hashes: Mapping[str, str] = field(default_factory=dict)  # input name -> its entry's content sha256


def load(name: str) -> ModuleType:
    """Import the builder module registered as ``name``."""
    from .. import errors

    try:
        module = REGISTRY[name]
    except KeyError:
        raise errors.ManifestError(
            f"unknown builder `{name}`",
            hints=[f"known builders: {', '.join(sorted(REGISTRY))}"],
        ) from None
    return importlib.import_module(f"{__name__}.{module}")


def source_file(name: str) -> Path:
    return Path(__file__).with_name(REGISTRY[name] + ".py")
