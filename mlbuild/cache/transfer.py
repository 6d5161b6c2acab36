"""Moving entries between a store and a binary cache: ``push`` (store -> cache) and ``pull``
(cache -> store), closure-aware, idempotent and verified.

Push: references before referrers; per entry the payload first (skipped when the cache already
holds a payload of the right size: an interrupted upload resumes at the first entry it did not
finish), the metadata last; an entry whose metadata is there (signed by this key, when signing)
is skipped.  Pull: every entry's metadata is checked (trusted signature, name derived from its
deriver or content) before anything is downloaded; each payload is checked (size, sha256),
unpacked into a temporary directory inside the store while its stream hash is computed, its
content hash compared, and only then committed through the store's normal atomic add.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CacheError, CacheFormatError, CacheTrustError
from ..reporter import NullReporter, Reporter, TransferMeter
from . import INFO_KEY, entry_key, nar, nar_key, trace_key
from .backends import Backend
from .meta import EntryMeta, Trace, parse_entry, parse_trace, verify_sigs

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from ..store import Store

ZSTD_LEVEL = 3


@dataclass
class TransferReport:
    """What a push or pull moved and what it skipped (the cache or store had it)."""

    moved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_moved: int = 0  # uncompressed stream bytes of the entries moved
    bytes_sent: int = 0  # compressed payload bytes written or read
    traces: int = 0
    seconds: float = 0.0

    def summary(self, verb: str) -> str:
        from ..reporter import human_bytes

        rate = self.bytes_moved / self.seconds if self.seconds > 0 else 0.0
        return (f"{verb} {len(self.moved)} entries ({human_bytes(self.bytes_moved)}, "
                f"{human_bytes(self.bytes_sent)} compressed) in {self.seconds:.1f} s ({human_bytes(rate)}/s); "
                f"skipped {len(self.skipped)} already there; {self.traces} build traces")


def closure_order(store: Store, names: Iterable[str]) -> list[str]:
    """The closure of ``names`` in the store, references before referrers (ties by name)."""
    todo = sorted(store.closure(names))
    refs: dict[str, set[str]] = {}
    for n in todo:
        info = store.info(n)
        refs[n] = set(info.references) - {n} if info is not None else set()
    done: set[str] = set()
    out: list[str] = []

    def visit(n: str, stack: set[str]) -> None:
        if n in done or n in stack:
            return
        stack.add(n)
        for r in sorted(refs.get(n, ())):
            visit(r, stack)
        stack.discard(n)
        done.add(n)
        out.append(n)

    for n in todo:
        visit(n, set())
    return out


def _tmp_dir(store: Store) -> str | None:
    d = store.meta / "tmp"
    return str(d) if not store.read_only and d.is_dir() else None


def _compress(store: Store, name: str, on_bytes: Callable[[int], None], *, known: str | None,
              where: str | None, size_hint: int) -> tuple[Path, int, str, int, str]:
    """Serialise and compress entry ``name`` into a temporary file (in ``where``, else the store's tmp).

    ``known``: the stream's sha256 when the store already records it (a directory's content hash:
    not hashed again; readers check it).  Returns (file, stream size, stream sha256, file size, file sha256)."""
    import zstandard

    fd, tmp = tempfile.mkstemp(prefix=".push-", suffix=".nar.zst", dir=where or _tmp_dir(store))
    stream = hashlib.sha256() if known is None else None
    size = 0
    pending: list[bytes] = []
    pending_n = 0
    try:
        with os.fdopen(fd, "wb") as f:
            out = _HashingFile(f)
            cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
            # the stream's size, known in advance, lets zstd pick its parameters (about twice as fast)
            with cctx.stream_writer(out, size=size_hint, closefd=False) as w:  # type: ignore[arg-type]
                for chunk in nar.serialise(store.path(name)):
                    pending.append(chunk)
                    pending_n += len(chunk)
                    if pending_n >= nar.CHUNK:  # headers and small files go to zstd in ~1 MiB blocks
                        block = b"".join(pending)
                        if stream is not None:
                            stream.update(block)
                        w.write(block)
                        size += pending_n
                        on_bytes(pending_n)
                        pending, pending_n = [], 0
                block = b"".join(pending)
                if stream is not None:
                    stream.update(block)
                w.write(block)
                size += pending_n
                on_bytes(pending_n)
    except zstandard.ZstdError as e:
        os.unlink(tmp)
        raise CacheError(f"`{name}` changed on disk since it was added (its stream is not the {size_hint} bytes the "
                         f"store recorded: {e}); not uploading it",
                         hints=["run `mlbuild store verify --repair`"]) from e
    except BaseException:
        os.unlink(tmp)
        raise
    digest = stream.hexdigest() if stream is not None else str(known)
    return Path(tmp), size, digest, out.size, out.sha256.hexdigest()


class _HashingFile:
    """A write-only file wrapper hashing and counting what passes (the compressed bytes)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return int(self.f.write(data))

    def flush(self) -> None:
        self.f.flush()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _existing(backend: Backend, name: str) -> EntryMeta | None:
    data = backend.get(entry_key(name))
    if data is None:
        return None
    try:
        return parse_entry(data, name, f"`{entry_key(name)}`")
    except CacheFormatError:
        return None  # unreadable metadata is rewritten


def _traces_of(store: Store, name: str) -> list[str]:
    side = store.read_sidecar(name) or {}
    drvs = [d for d in side.get("realisations", []) if isinstance(d, str)]
    info = store.info(name)
    if info is not None and isinstance(info.deriver.get("drv"), str):
        drvs.append(info.deriver["drv"])
    return sorted({d for d in drvs if (store.realisation(d) or ("",))[0] == name})


def push(store: Store, backend: Backend, names: Iterable[str], *, key: Ed25519PrivateKey | None = None,
         closure: bool = True, reporter: Reporter | None = None) -> TransferReport:
    """Upload ``names`` (and, with ``closure``, everything they reference) to the cache."""
    from ..provenance import keyid

    rep = reporter or NullReporter()
    kid = keyid(key.public_key()) if key is not None else None
    order = closure_order(store, names) if closure else sorted(set(names))
    report = TransferReport()
    start = time.monotonic()
    if backend.size(INFO_KEY) is None:
        from ..hashing import canonical_json
        from . import FORMAT

        backend.put_bytes(INFO_KEY, canonical_json({"format": FORMAT}) + b"\n")
    todo: list[tuple[str, EntryMeta | None]] = []
    for n in order:
        if store.info(n) is None:
            raise CacheError(f"`{n}` is not a valid entry of the store `{store.root}`; nothing to upload",
                             hints=["realize it first"])
        have = _existing(backend, n)
        info = store.info(n)
        assert info is not None
        if have is not None and (have.sha256, have.method) != (info.hash.sha256, info.hash.method):
            have = None  # metadata for other content under this name: replaced
        payload_ok = have is not None and backend.size(nar_key(have.nar_sha256)) == have.file_size
        if have is not None and payload_ok and (kid is None or have.signed_by(kid)):
            report.skipped.append(n)
        else:
            todo.append((n, have if payload_ok else None))
    total = 0
    for n, _ in todo:
        info = store.info(n)
        total += info.hash.size if info is not None else 0
    meter = TransferMeter(total)
    task = f"copy:{backend.url}"
    rep.on_task_start(task, f"copy to {backend.url}", total)

    def advance(n: int) -> None:
        meter.add(n)
        rep.on_task_progress(task, n)

    for n, have in todo:
        info = store.info(n)
        assert info is not None
        if have is not None:
            meta = have  # signing what is there: the payload stays
            advance(info.hash.size)
        else:
            scratch = getattr(backend, "scratch", None)
            tmp, nar_size, nar_sha, file_size, file_sha = _compress(
                store, n, advance, known=info.hash.sha256 if info.hash.method == "tree" else None,
                where=str(scratch()) if scratch is not None else None,
                size_hint=info.hash.size if info.hash.method == "tree" else len(nar.MAGIC) + 10 + info.hash.size)
            try:
                if info.hash.method == "tree" and nar_size != info.hash.size:
                    raise CacheError(f"`{n}` changed on disk since it was added (its stream has {nar_size} bytes, "
                                     f"the store recorded {info.hash.size}); not uploading it",
                                     hints=["run `mlbuild store verify --repair`"])
                if backend.size(nar_key(nar_sha)) != file_size:
                    if scratch is not None:
                        backend.move_in(nar_key(nar_sha), tmp)  # type: ignore[attr-defined]
                    else:
                        backend.put_file(nar_key(nar_sha), tmp)
                report.bytes_sent += file_size
            finally:
                tmp.unlink(missing_ok=True)
            meta = EntryMeta(name=n, kind=info.kind, method=info.hash.method, size=info.hash.size,
                             sha256=info.hash.sha256, blake3=info.hash.blake3, nar_sha256=nar_sha, nar_size=nar_size,
                             file_sha256=file_sha, file_size=file_size, references=tuple(sorted(info.references)),
                             deriver=info.deriver, sandbox=info.sandbox, sigs=())
            report.bytes_moved += info.hash.size
        if key is not None:
            meta = meta.signed(key)
        backend.put_bytes(entry_key(n), meta.to_json())  # metadata last: readers see only complete entries
        report.moved.append(n)
        rep.on_message(f"copy: {meter.line()}")
    for n in order:
        for drv in _traces_of(store, n):
            info = store.info(n)
            assert info is not None
            t = Trace(drv, n, info.hash.sha256, ())
            data = backend.get(trace_key(drv))
            if data is not None:
                with contextlib.suppress(CacheFormatError):
                    old = parse_trace(data, drv, trace_key(drv))
                    same = old.entry == n and old.sha256 == t.sha256
                    if same and (kid is None or any(k == kid for k, _ in old.sigs)):
                        continue
                    if same:
                        t = Trace(drv, n, t.sha256, old.sigs)
            backend.put_bytes(trace_key(drv), (t.signed(key) if key is not None else t).to_json())
            report.traces += 1
    report.seconds = time.monotonic() - start
    rep.on_task_done(task, "")
    return report


# --------------------------------------------------------------------------- pull


@dataclass(frozen=True)
class Policy:
    """What a reader requires: signatures by one of ``trusted`` (unless ``require_sigs`` is off)."""

    trusted: Mapping[str, Ed25519PublicKey]
    require_sigs: bool = True


def read_meta(backend: Backend, name: str, policy: Policy) -> EntryMeta | None:
    """The verified metadata of ``name`` in the cache (None: the cache does not have it)."""
    data = backend.get(entry_key(name))
    if data is None:
        return None
    m = parse_entry(data, name, f"the metadata of `{name}` in `{backend.url}`")
    if policy.require_sigs:
        verify_sigs(m.fingerprint(), m.sigs, policy.trusted, f"`{name}`", backend.url)
    return m


def read_trace(backend: Backend, drv: str, policy: Policy) -> Trace | None:
    data = backend.get(trace_key(drv))
    if data is None:
        return None
    t = parse_trace(data, drv, f"the build trace of `{drv}` in `{backend.url}`")
    if policy.require_sigs:
        verify_sigs(t.fingerprint(), t.sigs, policy.trusted, f"the build trace of `{drv}`", backend.url)
    return t


def plan_pull(store: Store, backend: Backend, names: Iterable[str], policy: Policy,
              first: Mapping[str, EntryMeta] | None = None) -> list[EntryMeta]:
    """Metadata of every entry of the closure of ``names`` the store lacks, references first.

    Everything is verified before anything is downloaded; a reference the cache lacks is an error."""
    metas: dict[str, EntryMeta] = dict(first or {})
    out: list[EntryMeta] = []
    done: set[str] = set()

    def visit(n: str, stack: tuple[str, ...]) -> None:
        if n in done or store.is_valid(n):
            return
        if n in stack:
            raise CacheFormatError(f"`{n}` references itself through {' -> '.join(stack)} in `{backend.url}`")
        m = metas.get(n) or read_meta(backend, n, policy)
        if m is None:
            via = f" (needed by `{stack[-1]}`)" if stack else ""
            raise CacheError(f"`{n}`{via} is not in the cache `{backend.url}`", url=backend.url,
                             hints=["push the whole closure (`mlbuild copy --to` copies closures by default)"])
        for r in m.references:
            visit(r, (*stack, n))
        done.add(n)
        out.append(m)

    for n in names:
        visit(n, ())
    return out


def _unpack(payload: Path, m: EntryMeta, out: Path, on_bytes: Callable[[int], None]) -> None:
    import zstandard

    from . import nar

    with open(payload, "rb") as f:
        reader = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
        try:
            sha, size = nar.deserialise(reader, out, limit=m.nar_size, on_bytes=on_bytes)
        except zstandard.ZstdError as e:
            raise CacheFormatError(f"the payload of `{m.name}` does not decompress: {e}") from e
    if sha != m.nar_sha256 or size != m.nar_size:
        raise CacheFormatError(f"the payload of `{m.name}` unpacks to a stream with sha256 {sha} ({size} bytes); "
                               f"its metadata gives {m.nar_sha256} ({m.nar_size} bytes)")


@contextlib.contextmanager
def _locked(store: Store, name: str, held: str | None) -> Iterator[None]:
    if name == held:
        yield
    else:
        with store.entry_lock(name):
            yield


def pull_one(store: Store, backend: Backend, m: EntryMeta, *, held: str | None = None,
             on_bytes: Callable[[int], None] = lambda n: None) -> int:
    """Download, verify and add one entry whose references are valid; the compressed bytes read.

    Nothing enters the store unless every check passes."""
    from ..hashing import hash_path

    with _locked(store, m.name, held):
        if store.is_valid(m.name):
            return 0
        with store.staging(m.name) as staging:
            payload = staging / "payload.nar.zst"
            where = f"`{nar_key(m.nar_sha256)}` in `{backend.url}`"
            got_bytes = [0]

            def bounded(n: int) -> None:  # a server that sends more than the metadata says is cut off
                got_bytes[0] += n
                if got_bytes[0] > m.file_size:
                    raise CacheFormatError(f"the payload of `{m.name}` ({where}) is larger than the {m.file_size} "
                                           f"bytes its metadata gives (tampered or damaged)")

            if not backend.download(nar_key(m.nar_sha256), payload, bounded):
                raise CacheFormatError(f"the payload of `{m.name}` ({where}) is missing",
                                       hints=["push the entry again: `mlbuild copy --to`"])
            got_size = payload.stat().st_size
            if got_size != m.file_size:
                raise CacheFormatError(
                    f"the payload of `{m.name}` ({where}) has {got_size} bytes, its metadata gives {m.file_size}"
                    + (" (a truncated upload)" if got_size < m.file_size else " (tampered or damaged)"),
                    hints=["push the entry again: `mlbuild copy --to` re-uploads what does not match"])
            file_sha = _file_sha256(payload)
            if file_sha != m.file_sha256:
                raise CacheFormatError(f"the payload of `{m.name}` ({where}) has sha256 {file_sha}, its metadata "
                                       f"gives {m.file_sha256} (tampered or damaged)")
            out = staging / "out"
            try:
                _unpack(payload, m, out, on_bytes)
                payload.unlink()
            except OSError as e:
                from ..errors import StoreError

                raise StoreError(f"cannot unpack `{m.name}` into `{staging}`: {e.strerror or e}",
                                 hints=["check free space and permissions of the store"]) from e
            if m.method == "flat" and (out.is_symlink() or not out.is_file()):
                raise CacheFormatError(f"`{m.name}` from `{backend.url}` is a flat entry, but its payload is not "
                                       f"a single file")
            got = hash_path(out, m.method)  # type: ignore[arg-type]
            if (got.sha256, got.size, got.blake3) != (m.sha256, m.size, m.blake3):
                raise CacheFormatError(f"`{m.name}` from `{backend.url}` has content sha256 {got.sha256} "
                                       f"({got.size} bytes); its metadata gives {m.sha256} ({m.size} bytes)")
            store.commit(out, m.name, kind=m.kind, method=m.method,  # type: ignore[arg-type]
                         deriver=dict(m.deriver), references=m.references, sandbox=m.sandbox, known=got)
        return got_size


def import_trace(store: Store, backend: Backend, m: EntryMeta, policy: Policy) -> bool:
    """Record the cache's build trace of ``m``'s derivation as a realisation (when it agrees)."""
    drv = m.deriver.get("drv")
    if not isinstance(drv, str):
        return False
    try:
        t = read_trace(backend, drv, policy)
    except (CacheFormatError, CacheTrustError):
        return False
    if t is None or t.entry != m.name or t.sha256 != m.sha256:
        return False
    if store.realisation(drv) != (m.name, m.sha256):
        store.add_realisation(drv, m.name)
    return True


def pull(store: Store, backend: Backend, names: Iterable[str], policy: Policy, *, closure: bool = True,
         reporter: Reporter | None = None, held: str | None = None,
         first: Mapping[str, EntryMeta] | None = None) -> TransferReport:
    """Download ``names`` (with their closure: references must be valid to add an entry) into the store."""
    rep = reporter or NullReporter()
    names = list(names)
    report = TransferReport()
    start = time.monotonic()
    if closure:
        todo = plan_pull(store, backend, names, policy, first)
    else:
        todo = []
        for n in names:
            if store.is_valid(n):
                continue
            m = (first or {}).get(n) or read_meta(backend, n, policy)
            if m is None:
                raise CacheError(f"`{n}` is not in the cache `{backend.url}`", url=backend.url)
            todo.append(m)
    report.skipped = [n for n in names if n not in {m.name for m in todo}]
    meter = TransferMeter(sum(m.nar_size for m in todo))
    task = f"copy:{backend.url}"
    rep.on_task_start(task, f"copy from {backend.url}", meter.total)

    def advance(n: int) -> None:
        meter.add(n)
        rep.on_task_progress(task, n)

    try:
        for m in todo:
            sent = pull_one(store, backend, m, held=held, on_bytes=advance)
            if sent:
                report.moved.append(m.name)
                report.bytes_moved += m.nar_size
                report.bytes_sent += sent
            else:
                report.skipped.append(m.name)
            if import_trace(store, backend, m, policy):
                report.traces += 1
            rep.on_message(f"copy: {meter.line()}")
    finally:
        rep.on_task_done(task, "")
    report.seconds = time.monotonic() - start
    return report
