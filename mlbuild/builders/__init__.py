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
- ``identity_params(params, err) -> params`` (optional): the typed params without those the
  others make unread (they leave the derivation's identity); ``err(message, key)`` makes the
  error to raise for such a param set to a non-default value;
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
    "coco-dataset": "coco_dataset",  # a COCO JSON + its images; openimages-to-coco is its MLPerf-layout case
    "letterbox": "letterbox",
    "openimages-to-coco": "openimages_to_coco",
    "openimages-layout": "openimages_layout",
    "retinanet-preprocess": "retinanet_preprocess",
    "preprocess": "preprocess",  # image preprocessing as parameters (letterbox/retinanet-preprocess are presets)
    "python-env": "python_env",
    "loadgen-wheel": "loadgen_wheel",
    "mlperf-run": "mlperf_run",
    "mlperf-result": "mlperf_result",  # a run target's output, assembled from its parts (graph.split_runs)
    "mlperf-submission": "mlperf_submission",  # an MLPerf submission package from run results
    "concat": "concat",  # a minimal example builder (standard library only); the core tests use it
}


@dataclass(frozen=True)
class Param:
    type: type
    default: Any = None
    doc: str = ""
    choices: tuple[Any, ...] = ()
    required: bool = False
    # The range of an int or float parameter (inclusive); None: the default range of
    # `mlbuild.manifest.param_range` (floats finite within +-1e9, ints within a signed 32-bit int).
    min: float | None = None
    max: float | None = None


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
    # Side outputs: files the store keeps beside the entry (`.mlbuild/side/<entry>/`), never in it nor in
    # its hash (a LoadGen accuracy pass's timestamped logs).  None when they are not kept (`--check`).
    side: Path | None = None
    # input name -> that input's side outputs (read-only), for the inputs that have any
    input_sides: Mapping[str, Path] = field(default_factory=dict)


# Builders registered from a file outside the package (`register`): name -> absolute path.
# Kept apart from REGISTRY so that REGISTRY stays a literal table: code identities follow
# `load`'s dispatch through it statically (mlbuild.codeid).
_FILES: dict[str, Path] = {}


def register(name: str, path: Path) -> None:
    """Register the builder module file ``path`` (an absolute path to a ``.py`` file following the
    protocol above) as ``name``, for this process: a builder that lives outside mlbuild (a plugin,
    or a probe in a test).  The sandbox hands the file to the builder subprocess, read-only; its
    code identity is the file plus the whole mlbuild package (it may import any of it)."""
    path = Path(path).resolve()
    if not path.is_file() or path.suffix != ".py":
        raise ValueError(f"a builder module must be an existing .py file, not {path}")
    _FILES[name] = path


def names() -> list[str]:
    """Every builder name this process knows: the package's and those registered from files."""
    return sorted([*REGISTRY, *_FILES])


def registered_file(name: str) -> Path | None:
    """The file a builder registered with `register` lives in (None for the package's builders)."""
    return _FILES.get(name)


def load(name: str) -> ModuleType:
    """Import the builder module registered as ``name``."""
    from .. import errors

    file = _FILES.get(name)
    if file is not None:
        import sys
        from importlib import util as importlib_util

        mod_name = f"mlbuild_builder_{name.replace('-', '_')}"
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib_util.spec_from_file_location(mod_name, file)
        assert spec is not None and spec.loader is not None
        mod = importlib_util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
        return mod
    try:
        module = REGISTRY[name]
    except KeyError:
        raise errors.ManifestError(
            f"unknown builder `{name}`",
            hints=[f"known builders: {', '.join(names())}"],
        ) from None
    return importlib.import_module(f"{__name__}.{module}")


def source_file(name: str) -> Path:
    file = _FILES.get(name)
    if file is not None:
        return file
    return Path(__file__).with_name(REGISTRY[name] + ".py")
