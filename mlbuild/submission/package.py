"""Build a submission package entry from result entries in a store, and check packages.

Used by ``mlbuild submission``.  The package is an input-addressed store entry: its derivation is
the ``mlperf-submission`` builder (name, version, code identity), its parameters and its inputs'
content hashes, exactly as the realizer names a ``[build]`` of that builder, so the same results
give the same entry and the same ``<division>.tar.gz`` bytes in any store.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbuild.errors import UsageError
from mlbuild.submission import checker

BUILDER = "mlperf-submission"
LABEL = "mlperf-submission"


@dataclass(frozen=True)
class Package:
    entry: str
    path: Path
    summary: dict[str, Any]

    @property
    def tarball(self) -> Path:
        return self.path / str(self.summary["tarball"]["file"])

    @property
    def tarball_sha256(self) -> str:
        return str(self.summary["tarball"]["sha256"])


def read_package(path: Path) -> Package:
    try:
        doc = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"`{path}` is not a submission package (no readable summary.json: {e})") from None
    return Package(path.name, path, doc)


def pinned_loadgen_src(store: Any, manifest: Any, lock: Any) -> tuple[str, str] | None:
    """The locked LoadGen sdist tree (`loadgen-src`) when the store holds it: (entry, sha256)."""
    if manifest is None or lock is None or "loadgen-src" not in manifest.decls:
        return None
    from mlbuild.graph import plan

    try:
        node = plan(manifest, lock, ["loadgen-src"]).nodes["loadgen-src"]
    except Exception:  # not locked here: the package is built without the comparison
        return None
    if node.entry is None or not store.is_valid(node.entry):
        return None
    info = store.info(node.entry)
    return (node.entry, info.hash.sha256) if info is not None else None


def build(store: Any, results: Sequence[str], params: Mapping[str, Any], *,
          loadgen_src: tuple[str, str] | None = None, on_line: Callable[[str], None] = lambda _l: None) -> Package:
    """Build (or find) the package entry of ``results`` (entry names, prefixes or paths) in ``store``."""
    from mlbuild import builders, sandbox
    from mlbuild.graph import Node, builder_code, host_platform, resolved_entry, resolved_fingerprint
    from mlbuild.hashing import store_digest
    from mlbuild.manifest import check_params

    mod = builders.load(BUILDER)
    if not results:
        raise UsageError("`mlbuild submission` needs at least one RESULT", hints=["`mlbuild results` lists them"])
    if len(results) > mod.MAX_RESULTS:
        raise UsageError(f"{len(results)} results given; a package takes at most {mod.MAX_RESULTS}")
    inputs: dict[str, tuple[str, str]] = {}
    for i, text in enumerate(results, 1):
        entry = store.resolve(text)
        info = store.info(entry)
        if info is None or not store.is_valid(entry):
            raise UsageError(f"`{text}` is not a valid store entry", hints=["`mlbuild store verify --repair`"])
        inputs[f"result-{i}"] = (entry, info.hash.sha256)
    if loadgen_src is not None:
        inputs["loadgen-src"] = loadgen_src

    def err(msg: str, key: str) -> UsageError:
        return UsageError(f"submission: {msg}")

    checked = check_params(BUILDER, mod.PARAMS, dict(params), err)
    fp = {"type": "built", "builder": BUILDER, "builder_version": mod.VERSION,
          "code": builder_code(BUILDER).fingerprint(), "params": checked,
          "inputs": {k: e for k, (e, _) in sorted(inputs.items())}, "platform": host_platform(), "network": False,
          "extra": mod.fingerprint_extra()}
    node = Node(LABEL, "build", f"{store_digest(fp)}-{LABEL}", None, "tree", fp, {k: k for k in inputs},
                builder=BUILDER, params=checked)
    entry = resolved_entry(node, inputs)
    deriver = {**resolved_fingerprint(node, inputs), "drv": node.drv}
    with store.session():
        if not store.is_valid(entry):
            with store.entry_lock(entry):
                if not store.is_valid(entry):
                    with store.staging(entry) as staging:
                        out = staging / "out"
                        sb = sandbox.run_builder(
                            builder=BUILDER, module=mod, inputs={k: store.path(e).resolve() for k, (e, _) in
                                                                  inputs.items()},
                            params=checked, out=out, jobs=1, log_path=store.log_path(entry), entry=entry,
                            fingerprint=deriver, input_hashes={k: sha for k, (_, sha) in inputs.items()},
                            on_line=on_line)
                        store.commit(out, entry, kind="built", method="tree", deriver=deriver,
                                     references=sorted(e for e, _ in inputs.values()), sandbox=sb)
                    store.record_completion(entry)
        if store.realisation(node.drv) is None:
            store.add_realisation(node.drv, entry)
    return read_package(store.path(entry))


def copy_out(pkg: Package, dest: Path) -> Path:
    """A writable copy of the package (tree, tarball, summaries) in ``dest`` (must not exist or be empty)."""
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"--out `{dest}` exists and is not empty", hints=["give a new directory"])
    shutil.copytree(pkg.path, dest, dirs_exist_ok=True)
    for p in [dest, *dest.rglob("*")]:
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


def check(path: Path) -> checker.Report:
    return checker.check(path)


def system_overrides(toml_path: Path | None) -> str:
    """The ``system`` parameter from ``--system-toml F``: canonical JSON of its top-level keys."""
    if toml_path is None:
        return "{}"
    import tomllib

    try:
        doc = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"--system-toml `{toml_path}`: {e}",
                         hints=["a TOML file of systems/<system>.json fields, e.g. host_storage_type = \"NVMe SSD\""]
                         ) from None
    bad = [k for k, v in doc.items() if isinstance(v, (dict, list))]
    if bad:
        raise UsageError(f"--system-toml `{toml_path}`: fields must be plain values; {', '.join(bad)} are not")
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
