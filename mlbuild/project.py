"""Projects: where mlbuild finds its manifests, lock and store, and `mlbuild init`.

A project is a directory holding ``manifests/``; its lock is ``lock/mlbuild.lock`` and its store
``store/`` beside them (or ``$MLBUILD_STORE``).  The root is ``-C DIR`` (searched from ``DIR``), else the
nearest ancestor of the working directory holding ``manifests/`` (as git finds ``.git``).  mlbuild's
own checkout is a project too.

The benchmarks that ship with mlbuild (``manifests/*.toml`` and ``lock/mlbuild.lock`` beside the
package; the wheel includes them) are usable from any project by name: a project's manifest is its
own declarations plus the shipped declarations they (or the command line's targets) reach and do not
declare themselves.  A project's own declaration of a shipped name takes precedence.  Shipped
declarations the project takes over unchanged keep their shipped pins (`mlbuild lock` copies them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ManifestError, UsageError

if TYPE_CHECKING:
    from .lock import Lock
    from .manifest import Decl, Manifest

MANIFESTS = "manifests"
LOCK = Path("lock") / "mlbuild.lock"
STORE = "store"
SHIPPED_PREFIX = "mlbuild:"  # display and source-key prefix of the shipped manifests


def shipped_root() -> Path:
    """The directory holding mlbuild's shipped ``manifests/`` and ``lock/`` (the checkout, or the
    installation's data beside the package)."""
    return Path(__file__).resolve().parent.parent


def shipped_manifests() -> Path | None:
    d = shipped_root() / MANIFESTS
    return d if d.is_dir() else None


def find_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that holds ``manifests/``."""
    from .fastpath import find_root as find  # one search, shared with the no-op realize

    found = find(str(start))
    return Path(found) if found is not None else None


def apply_defaults(args: Any, cwd: Path | None = None, environ: Any = None) -> Path | None:
    """Fill ``args.manifests``, ``args.lock`` and ``args.store`` where the command line left them unset,
    from the project root (returned; None outside any project).  Paths stay relative when the root is
    the working directory, so messages read as they always did."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    start = cwd
    chdir = getattr(args, "chdir", None)
    if chdir:
        start = cwd / chdir
        if not start.is_dir():
            raise UsageError(f"`-C {chdir}`: expected a directory, found {'a file' if start.exists() else 'nothing'}",
                             hints=["give the project's directory (the one holding `manifests/`)"])
    root = find_root(start)
    base = start.resolve() if root is None else root
    rel = Path(".") if base == cwd.resolve() else base

    def under(p: Path | str) -> str:
        return str(rel / p) if rel != Path(".") else str(p)

    if getattr(args, "manifests", "-") is None:
        args.manifests = environ.get("MLBUILD_MANIFESTS") or under(MANIFESTS)
    if getattr(args, "lock", "-") is None and getattr(args, "project_lock", True):
        args.lock = under(LOCK)
    if getattr(args, "store", "-") is None and not environ.get("MLBUILD_STORE") and (root is not None or chdir):
        args.store = under(STORE)
    return root


def no_project_error(start: Path) -> ManifestError:
    return ManifestError(
        f"no mlbuild project here: neither `{start}` nor any directory above it holds `{MANIFESTS}/`",
        hints=["create one with `mlbuild init` (or `mlbuild init DIR`), or pass `-C DIR` for a project elsewhere"])


# --------------------------------------------------------------------------- manifests


def _is_shipped(directory: Path) -> bool:
    shipped = shipped_manifests()
    try:
        return shipped is not None and directory.resolve() == shipped.resolve()
    except OSError:
        return False


def _references(d: Decl) -> list[str]:
    from .manifest import BuildDecl, FetchDecl

    if isinstance(d, BuildDecl):
        return [*d.inputs.values(), *d.envs.values()]
    if isinstance(d, FetchDecl) and d.files_from is not None:
        return [str(d.files_from["artifact"])]
    return []


def load_manifest(directory: Path, targets: Iterable[str] = ()) -> Manifest:
    """The project's manifest: its own declarations plus the shipped ones they or ``targets`` reach."""
    from .manifest import Manifest, load, load_decls, validate

    if not directory.is_dir() and not os.environ.get("MLBUILD_MANIFESTS"):
        probe = directory.parent if directory.name == MANIFESTS else directory
        if find_root(probe) is None:
            raise no_project_error(probe.resolve())
    shipped = shipped_manifests()
    if shipped is None or _is_shipped(directory):
        return load(directory)
    own, sources, sweeps = load_decls(directory)
    wanted = [n for d in own.values() for n in _references(d)] + [t for t in targets if t not in own]
    wanted += [sw.target for sw in sweeps.values()]
    if not any(n not in own for n in wanted):
        manifest = Manifest(dict(sorted(own.items())), sources, dict(sorted(sweeps.items())))
        validate(manifest)
        return manifest
    extra, extra_sources, _ = load_decls(shipped, display_prefix=SHIPPED_PREFIX, source_prefix=SHIPPED_PREFIX)
    decls = dict(own)
    todo = [n for n in wanted if n not in own]
    used_files: set[str] = set()
    while todo:
        n = todo.pop()
        if n in decls or n not in extra:
            continue
        decls[n] = extra[n]
        used_files.add(extra[n].where.file.rsplit("/", 1)[-1])
        todo.extend(_references(extra[n]))
    sources = dict(sources)
    sources.update({k: v for k, v in extra_sources.items() if k[len(SHIPPED_PREFIX):] in used_files})
    manifest = Manifest(dict(sorted(decls.items())), sources, dict(sorted(sweeps.items())))
    validate(manifest)
    return manifest


def shipped_lock() -> Lock | None:
    """mlbuild's own lock (the pins of the shipped declarations), if it ships one."""
    from . import lock as lockmod

    path = shipped_root() / LOCK
    if not path.is_file():
        return None
    try:
        return lockmod.read(path)
    except Exception:  # a damaged shipped lock only means nothing can be taken from it
        return None


def with_shipped_pins(previous: Lock | None, manifest: Manifest, lock_path: Path) -> Lock | None:
    """``previous`` plus the shipped lock's pins of the shipped declarations ``manifest`` holds unchanged
    (so `mlbuild lock` in a project reuses them, as it reuses its own pins)."""
    from dataclasses import replace

    from .lock import Lock, decl_digest, lockable

    shipped_path = shipped_root() / LOCK
    if lock_path.exists() and shipped_path.exists() and lock_path.resolve() == shipped_path.resolve():
        return previous
    shipped = shipped_lock()
    if shipped is None:
        return previous
    taken = {}
    for name, d in lockable(manifest).items():
        if not d.where.file.startswith(SHIPPED_PREFIX):
            continue
        for key, art in shipped.artifacts.items():
            same = (key == name or key.startswith(name + "@")) and art.decl == decl_digest(d)
            if same and (previous is None or key not in previous.artifacts):
                taken[key] = art
    if not taken:
        return previous
    if previous is None:
        return Lock(shipped.manifests, shipped.platform, shipped.python, dict(sorted(taken.items())), {},
                    dict(shipped.toolchain))
    arts = dict(previous.artifacts)
    arts.update(taken)
    toolchain = {**shipped.toolchain, **previous.toolchain}
    return replace(previous, artifacts=dict(sorted(arts.items())), toolchain=toolchain)


def plan_lock(lock: Lock | None, manifest: Manifest, lock_path: Path) -> Lock | None:
    """The lock a plan reads: the project's, plus the shipped pins of shipped declarations it lacks
    (a shipped target named on the command line is usable without re-locking)."""
    if lock is None:
        return None
    merged = with_shipped_pins(lock, manifest, lock_path)
    if merged is None or merged is lock:
        return lock
    shipped = shipped_lock()
    if shipped is not None:
        from dataclasses import replace

        unpinned = dict(lock.unpinned)
        for name, u in shipped.unpinned.items():
            d = manifest.decls.get(name)
            if d is not None and d.where.file.startswith(SHIPPED_PREFIX) and name not in lock.artifacts:
                unpinned.setdefault(name, u)
        merged = replace(merged, unpinned=unpinned)
    return merged


# --------------------------------------------------------------------------- init

EXAMPLE_MANIFEST = '''\
# {name}: an mlbuild project.  Each table declares one thing; `mlbuild lock` pins inputs into
# lock/mlbuild.lock, `mlbuild realize TARGET` builds into store/ and prints the result.
#
# The benchmarks that ship with mlbuild are usable here by name, without copying them:
# `yolox-nano-onnx` (a COCO-trained YOLOX-nano), `env-run-pyo3` / `env-run-official` (the run
# environments), `yolox-coco128-offline` (the reference run).  Try: `mlbuild realize yolox-coco128-offline`.
#
# Add your own with `mlbuild add` (it edits this file and keeps your comments):
#   mlbuild add path my-model model.onnx                  # a local file or directory, hashed by content
#   mlbuild add path my-annotations data/instances.json   # a COCO JSON ground truth
#   mlbuild add path my-images data/images                # the images it names
#   mlbuild add fetch my-weights https://example.org/model.onnx
#   mlbuild add run my-run --model my-model --annotations my-annotations --images my-images
#
# A `path` input by hand (relative to this file):
# [path.my-annotations]
# description = "my ground truth"
# path = "../data/instances.json"
'''

GITIGNORE = "# mlbuild's content-addressed store (rebuilt from manifests/ and lock/)\n/store/\n"


def init(directory: Path) -> list[Path]:
    """Create a project in ``directory`` (made if missing); return what was written.  An existing
    project is left alone (an error says so)."""
    directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"`{directory}` exists and is not a directory")
    manifests = directory / MANIFESTS
    if manifests.is_dir() and any(manifests.glob("*.toml")):
        raise UsageError(f"`{directory}` is already an mlbuild project (`{MANIFESTS}/` holds manifests)",
                         hints=["`mlbuild add ...` adds declarations to it"])
    name = project_name(directory)
    manifests.mkdir(parents=True, exist_ok=True)
    written = []
    path = manifests / f"{name}.toml"
    path.write_text(EXAMPLE_MANIFEST.format(name=name))
    written.append(path)
    gi = directory / ".gitignore"
    if not gi.exists():
        gi.write_text(GITIGNORE)
        written.append(gi)
    elif "/store/" not in gi.read_text().split():
        with open(gi, "a") as f:
            f.write(("\n" if not gi.read_text().endswith("\n") else "") + GITIGNORE)
        written.append(gi)
    return written


def project_name(directory: Path) -> str:
    """A manifest file name for the project in ``directory``: its name, lowercased, made a valid name."""
    import re

    base = re.sub(r"[^a-z0-9._+-]+", "-", directory.resolve().name.lower()).strip("-._+")
    return base or "project"
