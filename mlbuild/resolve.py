"""The resolver: pin every floating input of the manifests to exact bytes.

For each ``fetch``/``pypi``/``sdist`` declaration not already pinned by the
previous lock (or named by ``--update``), fetch the bytes (the store first when
a sha256 is declared, then mirrors, then upstream), hash them, put them in the
store (so the next realize has nothing to fetch) and record them.  Only lack of
network is forgiven: an existing pin that cannot be re-resolved is kept (and
said so); a new artifact whose bytes can't be reached is listed as unpinned
with the reason, and the rest is still locked.  Anything else (an HTTP 404,
wrong bytes, an unsafe archive, a name the store cannot hold) is an error and
the lock is left as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import artifacts
from . import lock as lockmod
from .errors import FetchError, MlbuildError, OfflineError, UsageError
from .graph import fixed_entry, host_platform
from .hashing import ContentHash, hash_path
from .lock import Lock, LockedArtifact, Unpinned
from .manifest import Decl, FetchDecl, Manifest, PathDecl, PypiDecl, SdistDecl
from .pypi import variant_name
from .reporter import NullReporter, Reporter
from .store import Store


def _toolchain(manifest: Manifest, previous: Lock | None) -> dict[str, str]:
    """The lock's [toolchain]: recorded host tool versions are kept (see mlbuild.toolchain)."""
    from . import toolchain

    return toolchain.for_lock(manifest, previous.toolchain if previous is not None else None)


def _listed_files(d: FetchDecl, pinned: dict[str, LockedArtifact], store: Store) -> list[artifacts.FileReq]:
    """Expand ``files_from``: names read from a JSON file of another pinned artifact."""
    import json

    spec = d.files_from
    assert spec is not None and d.base_url is not None
    dep = pinned.get(spec["artifact"])
    if dep is None:
        raise FetchError(f"its file list comes from `{spec['artifact']}`, which is not pinned")
    path = store.path(fixed_entry(dep))
    source = path if dep.hash.method == "flat" else path / spec["json"]
    try:
        doc = json.loads(source.read_text())
        entries = doc[spec["key"]]
        names = [str(e[spec["field"]]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MlbuildError(
            f"`{d.name}`: cannot read the file list `{spec['key']}[].{spec['field']}` from `{spec['json']}` "
            f"of `{spec['artifact']}`: {type(e).__name__}: {e}",
            hints=["check `files_from` in the manifest against the artifact's contents"]) from None
    if spec["limit"]:
        names = names[: spec["limit"]]
    reqs = []
    for n in names:
        if n.startswith("/") or ".." in n.split("/"):
            raise MlbuildError(f"`{d.name}`: unsafe file name {n!r} in `{spec['json']}` of `{spec['artifact']}`")
        reqs.append(artifacts.FileReq(spec["dest"] + n, (d.base_url + n,)))
    return reqs


class StoreFirst:
    """A fetcher that takes a file whose sha256 is declared from the store when a flat entry has
    those bytes (so `--offline` pins what the store holds), else asks the wrapped fetcher."""

    def __init__(self, fetcher: Any, store: Store) -> None:
        self.fetcher = fetcher
        self.store = store

    def fetch(self, spec: Any, dest: Path) -> Any:
        from .fetch import Fetched
        from .hashing import hash_file

        if spec.sha256:
            entry = self.store.find_by_sha256(spec.sha256.lower(), "flat")
            if entry is not None:
                shutil.copyfile(self.store.path(entry), dest)
                h = hash_file(dest)
                if h.sha256 == spec.sha256.lower() and (spec.size is None or spec.size == h.size):
                    return Fetched(size=h.size, sha256=h.sha256, blake3=h.blake3, source=f"store {entry}")
                Path(dest).unlink(missing_ok=True)
        return self.fetcher.fetch(spec, dest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fetcher, name)


def _pin(d: Decl, store: Store, fetcher_factory: Callable[[], Any], offline: bool,
         pinned: dict[str, LockedArtifact]) -> LockedArtifact:
    digest = lockmod.decl_digest(d)
    with store.staging(f"lock-{d.name}") as staging:
        out = staging / "out"
        unpack: str | None = None
        strip = 0
        archive: tuple[Path, Any] | None = None
        if isinstance(d, FetchDecl):
            reqs = [artifacts.FileReq(f.path, f.urls, f.sha256, None, f.md5) for f in d.files]
            if d.files_from is not None:
                reqs = sorted(reqs + _listed_files(d, pinned, store), key=lambda r: r.path)
            unpack, strip = d.unpack, d.strip_components
            if unpack:
                files = artifacts.fetch_files(d.name, reqs, staging / "archive", fetcher_factory())
                archive = (staging / "archive", files[0])
            else:
                files = artifacts.fetch_files(d.name, reqs, out, fetcher_factory())
            method = d.method
        elif isinstance(d, PypiDecl):
            if offline:
                raise FetchError("resolving Python requirements needs a package index (`--offline` was given)")
            files = artifacts.lock_python(d.name, d.requirements, out)
            method = "tree"
        elif isinstance(d, SdistDecl):
            if offline:
                raise FetchError("resolving a source distribution needs a package index (`--offline` was given)")
            path, lf = artifacts.lock_sdist(d.package, d.version, staging / "dl")
            files = [lf]
            unpack, strip = ("tar.gz" if path.name.endswith(".tar.gz") else "zip"), 1
            archive = (path, lf)
            method = "tree"
        else:
            raise TypeError(d)
        refs: list[str] = []
        if archive is not None:
            kept = artifacts.ensure_archive(store, d.name, archive[1], d.kind, None, offline=offline, have=archive[0])
            refs.append(kept.name)
            artifacts.unpack_into(kept, out, unpack or "tar.gz", strip)
        h: ContentHash = hash_path(out, method)  # type: ignore[arg-type]
        art = LockedArtifact(d.name, d.kind, digest, h, tuple(sorted(files, key=lambda f: f.path)), unpack, strip)
        _keep(store, out, art, references=refs)
        return art


def _keep(store: Store, out: Path, art: LockedArtifact, references: list[str] | None = None) -> None:
    """Put what was just pinned into the store under its fixed-output entry (unless there)."""
    entry = fixed_entry(art)
    with store.entry_lock(entry):
        if not store.is_valid(entry):
            store.commit(out, entry, kind="fixed", method=art.hash.method,
                         known=art.hash, references=references or [],
                         deriver={"type": "fixed", "artifact": art.name, "kind": art.kind})


def _pin_wheels_for(d: PypiDecl, lock_name: str, platform: str, python: str, store: Store,
                    offline: bool) -> LockedArtifact:
    """Resolve a `pypi` set for another platform (pip's --platform); keep the wheels in the store
    too, so `mirror export` can hand them to a machine of that platform."""
    if offline:
        raise FetchError(f"resolving Python requirements for {platform} needs a package index (`--offline` was given)")
    with store.staging(f"lock-{lock_name}") as staging:
        out = staging / "out"
        files = artifacts.lock_python(lock_name, d.requirements, out, platform=platform, python=python)
        h = hash_path(out, "tree")
        art = LockedArtifact(lock_name, "pypi", lockmod.decl_digest(d), h, tuple(sorted(files, key=lambda f: f.path)))
        _keep(store, out, art)
        return art


def _reason(d: Decl, e: FetchError) -> str:
    """Why an artifact stays unpinned, without host-specific paths (the lock is portable)."""
    first = e.message.splitlines()[0]
    if isinstance(e, OfflineError) and isinstance(d, FetchDecl):
        urls = sorted({u for f in d.files for u in f.urls})
        return ("needs network (`--offline` was given): no mirror holds it and the store does not have it ("
                + ", ".join(urls[:3]) + (", ..." if len(urls) > 3 else "") + ")")
    if isinstance(d, FetchDecl) and d.files_from is None and not first.startswith("its file list"):
        urls = sorted({u for f in d.files for u in f.urls})
        return ("needs network: no mirror holds it and its upstream could not be reached (" + ", ".join(urls[:3])
                + (", ..." if len(urls) > 3 else "") + ")")
    return first.rstrip(":")


_NETWORK_REASONS = ("cannot connect", "timed out", "connection broken", "HTTP 5")


def lack_of_network(e: FetchError) -> bool:
    """True when ``e`` says only that the bytes could not be reached (offline, connection refused,
    timeouts, server errors, mirrors without the file), not that something is wrong (an HTTP 404,
    wrong bytes, an unsafe archive, an unsafe URL, a download too large)."""
    from . import errors

    if isinstance(e, OfflineError):
        return True
    unreachable = getattr(errors, "UnreachableError", None)  # the fetcher's own word for it, where it has one
    if unreachable is not None and isinstance(e, unreachable):
        return True
    status = getattr(e, "status", None)
    if isinstance(status, int) and status >= 500:
        return True
    if type(e) is not FetchError:  # HashMismatchError, UnsafeArchiveError, a 404, ...: something is wrong
        return False
    attempts = getattr(e, "attempts", None)
    if attempts is None:  # pip: it cannot tell us which; treat it as unreachable, as before
        return e.message.startswith(("pip could not download", "resolving"))
    if any(getattr(a, "wrong_bytes", False) for a in attempts):
        return False
    upstream = [a for a in attempts if "://" in a.source]
    return all(str(a.reason).startswith(_NETWORK_REASONS) for a in upstream)




def resolve(
    manifest: Manifest,
    previous: Lock | None,
    *,
    store: Store,
    fetcher_factory: Callable[[], Any],
    offline: bool,
    update: Iterable[str] = (),
    reporter: Reporter | None = None,
    project_root: Path = Path("."),
    kept: dict[str, str] | None = None,
) -> Lock:
    """Pin what is not pinned yet.  An existing pin whose declaration is unchanged is never dropped
    for lack of network: it is kept and ``kept[name]`` says why it could not be re-resolved.
    Anything else that goes wrong (an HTTP 404, wrong bytes, an unsafe archive, a bad name) raises."""
    reporter = reporter or NullReporter()
    kept = kept if kept is not None else {}

    def store_first() -> Any:
        return StoreFirst(fetcher_factory(), store)

    update = set(update)
    wanted = lockmod.lockable(manifest)
    for name in update:
        if name not in wanted:
            raise UsageError(f"`--update {name}`: no `fetch`, `pypi` or `sdist` declaration is named `{name}`",
                             hints=[f"lockable names: {', '.join(sorted(wanted))}"])
    pinned: dict[str, LockedArtifact] = {}
    unpinned: dict[str, Unpinned] = {}
    # declarations whose file list comes from another artifact go after it
    host = host_platform()
    same_platform = previous is not None and previous.platform == host["system"]
    ordered = sorted(wanted.items(), key=lambda kv: isinstance(kv[1], FetchDecl) and kv[1].files_from is not None)
    jobs: list[tuple[str, Decl, str | None]] = []
    for name, d in ordered:
        jobs.append((name, d, None))
        if isinstance(d, PypiDecl):
            jobs.extend((variant_name(name, p), d, p) for p in d.platforms if p != host["system"])
    for name, d, target in jobs:
        digest = lockmod.decl_digest(d)
        old = previous.artifacts.get(name) if previous else None
        # Python wheels fit the platform they were resolved for: a lock made elsewhere is redone here
        reusable = same_platform or not isinstance(d, PypiDecl)
        if isinstance(d, PathDecl):  # local files are re-hashed by every lock; an unchanged one keeps its pin
            from . import pathinput

            if (old is not None and old.decl == digest and name not in update
                    and not pathinput.changes(old, d)):
                pinned[name] = old
            else:
                pinned[name] = pathinput.pin(d, store)
            continue
        if old is not None and old.decl == digest and name not in update and d.name not in update and reusable:
            pinned[name] = old
            continue
        source = d.files_from["artifact"] if isinstance(d, FetchDecl) and d.files_from else None
        if source is not None and source in unpinned:  # its file list is in bytes nobody could reach
            if old is not None and old.decl == digest:
                pinned[name] = old
                kept[name] = f"its file list comes from `{source}`, which could not be pinned"
            else:
                unpinned[name] = Unpinned(name, d.kind, digest, f"its file list comes from `{source}`, which is "
                                          f"unpinned: {unpinned[source].reason}")
            continue
        key = f"lock:{name}"
        reporter.on_task_start(key, f"pin {name}", None)
        try:
            if target is None:
                pinned[name] = _pin(d, store, store_first, offline, pinned)
            else:
                assert isinstance(d, PypiDecl)  # only `pypi` sets have other platforms' variants
                pinned[name] = _pin_wheels_for(d, name, target, host["python"], store, offline)
            reporter.on_task_done(key, f"pinned {name}")
        except FetchError as e:
            if not lack_of_network(e):
                raise
            if old is not None and old.decl == digest and reusable:
                pinned[name] = old
                kept[name] = _reason(d, e)
                reporter.on_task_done(key, f"kept the existing pin of {name}")
            else:
                unpinned[name] = Unpinned(name, d.kind, digest, _reason(d, e))
                reporter.on_task_done(key, f"unpinned {name}")
    pinned = dict(sorted(pinned.items()))
    return Lock(lockmod.manifests_digest(manifest), host["system"], host["python"], pinned, unpinned,
                _toolchain(manifest, previous))
