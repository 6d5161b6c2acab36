"""Checking a store and repairing it (``mlbuild store verify [--repair]``).

``verify`` re-hashes every registered entry and lists what the registry cannot
account for.  ``repair``, as Nix's ``--verify --repair``:

1. a registry that is missing, damaged or another store's is moved aside (never
   deleted) and a fresh one is made for the marker's store id;
2. every entry on disk the registry doesn't list is re-hashed against its
   sidecar (``.mlbuild/meta/<entry>.json``) and registered, with its
   references, realisations and roots (from ``.mlbuild/roots/``); a fixed
   entry without a sidecar is registered when its name is derived from its
   bytes; anything else named like an entry is moved to
   ``.mlbuild/quarantine/`` and reported, never deleted; files that are not
   mlbuild's are left alone;
3. corrupt or missing registered entries are refetched or rebuilt (by the
   caller's ``rebuild``, which knows the manifests);
4. registered entries without a sidecar get one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CorruptEntryError, StoreError
from .store import (
    ENTRY_RE,
    MARKER_FORMAT,
    REPAIR_HINT,
    LockBusy,
    Store,
    basename_problem,
    file_lock,
    write_json_atomic,
)


@dataclass
class VerifyReport:
    checked: int = 0
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # registered, bytes wrong or missing
    unregistered: list[str] = field(default_factory=list)  # mlbuild's entries the registry lost
    foreign: list[str] = field(default_factory=list)  # not mlbuild's: left alone
    no_sidecar: list[str] = field(default_factory=list)  # registered, valid, without metadata file
    busy: bool = False  # a realize or lock was running: unregistered entries were not looked for


@dataclass
class RepairReport:
    moved_aside: list[Path] = field(default_factory=list)  # the damaged registry files, kept
    adopted: list[str] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    sidecars_written: int = 0
    foreign: list[str] = field(default_factory=list)


def verify(store: Store) -> VerifyReport:
    """Re-hash every registered entry; raise if the registry itself cannot be trusted."""
    problem = store.registry_problem()
    if problem is not None:
        raise StoreError(problem, hints=[REPAIR_HINT])
    rep = VerifyReport()
    for name in store.entries():
        rep.checked += 1
        ok, why = store.verify_entry(name)
        if not ok:
            rep.corrupt.append((name, why))
        elif not store.sidecar_path(name).exists():
            rep.no_sidecar.append(name)
    try:  # entries a running realize is committing are not lost ones: look only while none runs
        with file_lock(store.meta / "locks" / "gc.lock", wait=False):
            rep.unregistered, rep.foreign = store.unregistered()
    except LockBusy:
        rep.busy = True
        store.write_root_files()
    rep.foreign = store.unregistered()[1]
    return rep


def repair(store: Store, rebuild: Callable[[list[str]], None]) -> RepairReport:
    """Make the store whole again (see the module docstring); ``rebuild(names)`` refetches or
    rebuilds registered entries whose bytes are wrong or gone."""
    store.require_writable("repair it")
    rep = RepairReport()
    try:
        with file_lock(store.meta / "locks" / "gc.lock", wait=False):
            problem = store.registry_problem()
            if problem is not None:
                rep.moved_aside = rebuild_registry(store)
            adopt(store, rep)
    except LockBusy:
        raise StoreError("a `realize`, `lock` or `gc` is running on this store; nothing was repaired",
                         hints=["run `mlbuild store verify --repair` again when it has finished"]) from None
    bad = [n for n in store.entries() if not store.verify_entry(n)[0]]
    if bad:
        rebuild(bad)
        still = [n for n in bad if not store.verify_entry(n)[0]]
        if still:
            raise CorruptEntryError(f"{len(still)} entries could not be repaired: {', '.join(still)}")
        rep.repaired = bad
    for name in store.entries():
        if not store.sidecar_path(name).exists() and store.verify_entry(name)[0]:
            store.write_sidecar(name)
            rep.sidecars_written += 1
    store.write_root_files()
    rep.foreign = store.unregistered()[1]
    return rep


def rebuild_registry(store: Store) -> list[Path]:
    """Move the registry aside (all of its files) and start an empty one with the marker's id."""
    store.close()
    try:
        store_id = store.marker_id()
    except StoreError:
        store_id = None
    moved: list[Path] = []
    n = 1
    while any(Path(f"{store.registry_path}.damaged-{n}{s}").exists() for s in ("", "-wal", "-shm", "-marker")):
        n += 1
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{store.registry_path}{suffix}")
        if src.exists():
            dest = Path(f"{store.registry_path}.damaged-{n}{suffix}")
            os.replace(src, dest)
            moved.append(dest)
    if store_id is None:
        if store.marker_path.exists():
            dest = Path(f"{store.registry_path}.damaged-{n}-marker")
            os.replace(store.marker_path, dest)
            moved.append(dest)
        store_id = os.urandom(16).hex()
        write_json_atomic(store.marker_path, {"format": MARKER_FORMAT, "store_id": store_id})
    store._init_registry(store_id)
    return moved


def _quarantine(store: Store, name: str) -> None:
    store.bump_generation()
    q = store.meta / "quarantine"
    q.mkdir(parents=True, exist_ok=True)
    dest = q / name
    n = 1
    while os.path.lexists(dest):
        dest = q / f"{name}.{n}"
        n += 1
    os.replace(store.path(name), dest)
    side = store.sidecar_path(name)
    if side.exists():
        os.replace(side, dest.with_name(dest.name + ".json"))


def _fixed_without_sidecar(store: Store, name: str) -> dict[str, Any] | None:
    """Metadata for a fixed entry whose name is derived from its own bytes (no sidecar needed)."""
    from .hashing import hash_path, store_digest

    digest, base = name.split("-", 1)
    path = store.path(name)
    method = "tree" if path.is_dir() and not path.is_symlink() else "flat"
    h = hash_path(path, method)  # type: ignore[arg-type]
    if store_digest({"type": "fixed", "method": method, "sha256": h.sha256, "name": base}) != digest:
        return None
    return {"kind": "fixed", "method": method, "size": h.size, "sha256": h.sha256, "blake3": h.blake3,
            "deriver": {"type": "fixed", "artifact": base, "kind": "recovered"}, "sandbox": "none",
            "references": [], "realisations": []}


def adopt(store: Store, rep: RepairReport) -> None:
    """Register what is on disk but not in the registry, when its bytes can be vouched for."""
    from .hashing import hash_path

    ours, foreign = store.unregistered()
    candidates: dict[str, dict[str, Any]] = {}
    for name in foreign:
        if not ENTRY_RE.match(name) or basename_problem(name.split("-", 1)[1]) is not None:
            continue  # not mlbuild's: left alone
        meta = _fixed_without_sidecar(store, name)
        if meta is None:
            rep.quarantined.append((name, "no metadata vouches for it"))
            _quarantine(store, name)
        else:
            candidates[name] = meta
    for name in ours:
        side = store.read_sidecar(name)
        if side is None:
            rep.quarantined.append((name, "its metadata file is unreadable"))
            _quarantine(store, name)
            continue
        try:
            got = hash_path(store.path(name), side["method"])
        except (OSError, KeyError, ValueError) as e:
            rep.quarantined.append((name, f"cannot hash it: {e}"))
            _quarantine(store, name)
            continue
        if got.sha256 != side.get("sha256") or got.size != side.get("size"):
            why = f"content changed: its metadata says sha256 {side.get('sha256')}, found {got.sha256}"
            rep.quarantined.append((name, why))
            _quarantine(store, name)
            continue
        candidates[name] = side
    registered = set(store.entries())
    progress = True
    while candidates and progress:  # references before their referrers
        progress = False
        for name in sorted(candidates):
            meta = candidates[name]
            refs = [str(r) for r in meta.get("references", [])]
            if not all(r in registered for r in refs):
                continue
            _register(store, name, meta, refs)
            registered.add(name)
            rep.adopted.append(name)
            del candidates[name]
            progress = True
    for name in sorted(candidates):
        missing = [r for r in candidates[name].get("references", []) if r not in registered]
        rep.quarantined.append((name, f"it references {', '.join(missing)}, which is not in the store"))
        _quarantine(store, name)
    _restore_roots(store, registered)


def _register(store: Store, name: str, meta: dict[str, Any], refs: Sequence[str]) -> None:
    with store._tx() as db:
        db.execute("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?)",
                   (name, str(meta["kind"]), str(meta["method"]), int(meta["size"]), str(meta["sha256"]),
                    str(meta["blake3"]), json.dumps(meta.get("deriver", {}), sort_keys=True),
                    str(meta.get("sandbox", "none"))))
        db.executemany("INSERT OR IGNORE INTO refs VALUES (?,?)", [(name, r) for r in refs])
        db.executemany("INSERT OR IGNORE INTO realisations VALUES (?,?,?)",
                       [(str(d), name, str(meta["sha256"])) for d in meta.get("realisations", [])])
    if not store.sidecar_path(name).exists():
        store.write_sidecar(name)


def _restore_roots(store: Store, registered: set[str]) -> None:
    rows = [(doc["root"], str(e)) for doc in store.root_files() for e in doc["entries"] if str(e) in registered]
    if rows:
        with store._tx() as db:
            db.executemany("INSERT OR IGNORE INTO roots VALUES (?,?)", rows)


def refetch_or_rebuild(store: Store, manifest: Any, lock: Any, entries: list[str], *,
                       fetcher_factory: Callable[[], Any], reporter: Any, jobs: int) -> None:
    """Refetch or rebuild corrupt entries: find which target of the manifests produces each."""
    from . import artifacts
    from .graph import archive_file, file_entry, plan
    from .realize import Realizer
    from .store import remove_path

    wanted = set(entries)
    targets: list[str] = []
    produced: set[str] = set()
    for name in manifest.decls:
        try:
            g = plan(manifest, lock, [name]).resolve(store.realisation)
        except Exception:
            continue
        for n, node in g.nodes.items():
            if node.entry in wanted and n not in targets:
                targets.append(n)
                produced.add(node.entry)
    archives = {}
    if lock is not None:
        for a in lock.artifacts.values():
            arch = archive_file(a)
            if arch is not None and file_entry(arch) in wanted:
                archives[file_entry(arch)] = (a, arch)
    unknown = wanted - produced - set(archives)
    if unknown:
        raise CorruptEntryError(f"no manifest target produces {', '.join(sorted(unknown))}; cannot repair it",
                                hints=["delete it with `mlbuild gc` after dropping its roots, or re-add it"])
    with store.session():
        for entry, (a, arch) in archives.items():
            with store.entry_lock(entry):
                with contextlib.suppress(sqlite3.Error):
                    store._x("DELETE FROM refs WHERE referrer=?", (entry,))
                remove_path(store.path(entry))
            artifacts.ensure_archive(store, a.name, arch, a.kind, fetcher_factory(), offline=False)
        if targets:
            graph = plan(manifest, lock, targets)
            Realizer(store, graph, fetcher_factory=fetcher_factory, reporter=reporter, jobs=jobs,
                     force=wanted).run()
