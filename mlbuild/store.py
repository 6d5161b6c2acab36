"""The content-addressed store: immutable entries ``<digest>-<name>`` plus a SQLite registry.

Layout under the root (``./store`` by default, ``--store``/``MLBUILD_STORE``)::

    <digest>-<name>           an entry: a file or a directory, read-only
    .mlbuild/db.sqlite        registry: entries, references, GC roots
    .mlbuild/tmp/             entries being written (never visible as entries)
    .mlbuild/locks/           one lock file per entry being realized, plus gc.lock
    .mlbuild/logs/<entry>.log builder logs

Writes are crash-safe, in the order Nix's local store uses: write into a
temporary directory inside the store, hash, make read-only, fsync, rename into
place, and only then register the entry, its references and its deriver in one
SQLite transaction.  An entry on disk that the registry doesn't know (a crash
between rename and register) is invalid and is replaced on the next realize.
Per-entry file locks make two processes realizing the same entry cooperate:
one does the work, the other waits and finds it valid.  A running realize
holds ``gc.lock`` shared; ``gc`` takes it exclusive.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import CorruptEntryError, StoreError

if TYPE_CHECKING:
    from .hashing import ContentHash, Method

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,          -- fixed | built | run
    method TEXT NOT NULL,        -- flat | tree
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    blake3 TEXT NOT NULL,
    deriver TEXT NOT NULL,       -- canonical JSON of what produced it
    sandbox TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    referrer TEXT NOT NULL REFERENCES entries(name) ON DELETE CASCADE,
    reference TEXT NOT NULL REFERENCES entries(name) ON DELETE RESTRICT,
    PRIMARY KEY (referrer, reference)
);
CREATE TABLE IF NOT EXISTS roots (
    root TEXT NOT NULL,          -- "lock:<abs path>:<sha256 of the lock>" or "result:<entry>"
    entry TEXT NOT NULL,
    PRIMARY KEY (root, entry)
);
CREATE TABLE IF NOT EXISTS realisations (
    drv TEXT PRIMARY KEY,        -- a derivation's digest (over its inputs' derivation digests)
    entry TEXT NOT NULL,         -- the entry its build produced (named over inputs' content)
    sha256 TEXT NOT NULL         -- that entry's content hash
);
"""


class EntryInfo(NamedTuple):
    name: str
    kind: str
    hash: ContentHash
    deriver: dict[str, Any]
    sandbox: str
    references: tuple[str, ...]


class LockBusy(Exception):
    """A non-waiting :func:`file_lock` found the lock held by another process."""


@contextlib.contextmanager
def file_lock(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the ``with`` block.

    ``wait=False`` raises :class:`LockBusy` at once instead of waiting for the holder."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(str(path)) from None
        yield
    finally:
        os.close(fd)


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def default_root(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("MLBUILD_STORE")
    return Path(env) if env else Path("store")


def _fsync_tree(path: Path) -> None:
    if path.is_symlink():
        return
    if path.is_dir():
        for child in path.iterdir():
            _fsync_tree(child)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    else:
        fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_readonly(path: Path) -> None:
    """Normalise an output: files 0444/0555, dirs 0555, mtime 1 (as Nix does)."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        os.utime(path, (1, 1), follow_symlinks=False)
        return
    if stat.S_ISDIR(st.st_mode):
        for child in path.iterdir():
            _make_readonly(child)
        os.chmod(path, 0o555)
    elif stat.S_ISREG(st.st_mode):
        os.chmod(path, 0o555 if st.st_mode & 0o111 else 0o444)
    else:
        raise StoreError(f"`{path}` is not a regular file, directory or symlink; store entries cannot hold it")
    os.utime(path, (1, 1))


def make_writable(path: Path) -> None:
    if path.is_symlink() or not path.exists():
        return
    if path.is_dir():
        os.chmod(path, 0o755)
        for child in path.iterdir():
            make_writable(child)
    else:
        os.chmod(path, stat.S_IMODE(path.stat().st_mode) | 0o200)


def remove_path(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        make_writable(path)
        shutil.rmtree(path)
    else:
        path.unlink()


def _lock_root_current(root: str) -> bool:
    """A ``lock:<path>:<sha256>`` root holds while that lockfile exists with those bytes."""
    path, _, digest = root[len("lock:"):].rpartition(":")
    if not path or len(digest) != 64:  # an older form: ``lock:<path>``
        path, digest = root[len("lock:"):], ""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    import hashlib

    return not digest or hashlib.sha256(data).hexdigest() == digest


class Store:
    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root.absolute()
        self.meta = self.root / ".mlbuild"
        if not self.meta.is_dir():
            if not create:
                raise StoreError(f"`{root}` is not an mlbuild store", hints=["realize something first, or pass `--store DIR`"])
            try:
                for sub in ("tmp", "locks", "logs"):
                    (self.meta / sub).mkdir(parents=True, exist_ok=True)
                tag = root / "CACHEDIR.TAG"
                if not tag.exists():
                    tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n# mlbuild store: contents are rebuilt or refetched on demand\n")
            except OSError as e:
                raise StoreError(f"cannot create the store at `{root}`: {e}") from e
        self._local = threading.local()  # one SQLite connection per thread
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    # ------------------------------------------------------------------ db
    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.meta / "db.sqlite", timeout=60, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            row = None
            try:
                row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            except sqlite3.OperationalError:
                pass
            if row is None or int(row[0]) == SCHEMA_VERSION and not _has_table(db, "realisations"):
                db.executescript(SCHEMA)  # idempotent: every statement is IF NOT EXISTS
                db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"store `{self.root}` has registry schema {row[0]}, this mlbuild reads {SCHEMA_VERSION}")
            self._local.db = db
            with self._conns_lock:
                self._conns.append(db)
        return db

    def close(self) -> None:
        with self._conns_lock:
            for db in self._conns:
                db.close()
            self._conns.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------ queries
    def path(self, name: str) -> Path:
        return self.root / name

    def is_valid(self, name: str) -> bool:
        row = self.db.execute("SELECT 1 FROM entries WHERE name=?", (name,)).fetchone()
        return row is not None and os.path.lexists(self.root / name)

    def all_valid(self, names: list[str]) -> bool:
        if not names:
            return False
        marks = ",".join("?" * len(names))
        (count,) = self.db.execute(f"SELECT count(*) FROM entries WHERE name IN ({marks})", names).fetchone()
        return bool(count == len(set(names)) and all(os.path.lexists(self.root / n) for n in names))

    def info(self, name: str) -> EntryInfo | None:
        from .hashing import ContentHash

        row = self.db.execute(
            "SELECT kind, method, size, sha256, blake3, deriver, sandbox FROM entries WHERE name=?", (name,)
        ).fetchone()
        if row is None:
            return None
        refs = tuple(r[0] for r in self.db.execute(
            "SELECT reference FROM refs WHERE referrer=? ORDER BY reference", (name,)))
        return EntryInfo(name, row[0], ContentHash(row[1], row[2], row[3], row[4]), json.loads(row[5]), row[6], refs)

    def entries(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM entries ORDER BY name")]

    def find_by_sha256(self, sha256: str) -> str | None:
        row = self.db.execute("SELECT name FROM entries WHERE sha256=? LIMIT 1", (sha256,)).fetchone()
        return row[0] if row else None

    def resolve(self, text: str) -> str:
        """Accept an entry name, a path to it, or a unique digest prefix."""
        candidate = Path(text).name if "/" in text else text
        if self.info(candidate) is not None:
            return candidate
        matches = [n for n in self.entries() if n.startswith(candidate)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise StoreError(f"`{text}` matches {len(matches)} store entries", hints=["give more of the digest"])
        raise StoreError(f"`{text}` is not a valid store entry in `{self.root}`",
                         hints=["`mlbuild realize TARGET` prints the entries it produced"])

    def closure(self, names: Iterable[str]) -> set[str]:
        seen: set[str] = set()
        todo = list(names)
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            todo.extend(r[0] for r in self.db.execute("SELECT reference FROM refs WHERE referrer=?", (n,)))
        return seen

    def log_path(self, name: str) -> Path:
        return self.meta / "logs" / f"{name}.log"

    # ------------------------------------------------------------------ locking
    def session(self) -> contextlib.AbstractContextManager[None]:
        """Held by every realize: keeps `gc` from deleting what it is about to use."""
        return file_lock(self.meta / "locks" / "gc.lock", shared=True)

    def entry_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.meta / "locks" / f"{name}.lock")

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh temporary directory inside the store for building ``name``.

        The caller holds the entry lock, so leftovers of earlier (killed)
        attempts at the same entry are removed first.  Removed on exit unless
        committed (commit renames its ``out`` away).
        """
        tmp_root = self.meta / "tmp"
        for stale in tmp_root.glob(f"{name}.*"):
            remove_path(stale)
        tmp = tmp_root / f"{name}.{os.getpid()}.{os.urandom(4).hex()}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
        finally:
            remove_path(tmp)

    # ------------------------------------------------------------------ writing
    def commit(
        self,
        staged: Path,
        name: str,
        *,
        kind: str,
        method: Method,
        deriver: dict[str, Any],
        references: Iterable[str] = (),
        sandbox: str = "none",
        expected: ContentHash | None = None,
        known: ContentHash | None = None,
    ) -> ContentHash:
        """Move ``staged`` (a file or directory) into place as ``name`` and register it.

        ``expected``: the hash the bytes must have (fixed-output); a mismatch
        raises and nothing enters the store.  ``known``: a hash the caller just
        computed while writing (skips re-hashing).
        """
        if not os.path.lexists(staged):
            raise StoreError(f"builder produced no output for `{name}`")
        from .hashing import hash_path

        _make_readonly(staged)
        got = known if known is not None else hash_path(staged, method)
        if expected is not None and (got.sha256 != expected.sha256 or got.size != expected.size):
            raise CorruptEntryError(
                f"content of `{name}` does not match the lock: expected sha256 {expected.sha256} "
                f"({expected.size} bytes), got {got.sha256} ({got.size} bytes)",
                hints=["if upstream changed on purpose, run `mlbuild lock --update` for it"],
            )
        _fsync_tree(staged)
        final = self.root / name
        if os.path.lexists(final):  # left by a crash between rename and register
            remove_path(final)
        os.rename(staged, final)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        refs = sorted(set(references) - {name})
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM refs WHERE referrer=?", (name,))
            db.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "kind=excluded.kind, method=excluded.method, size=excluded.size, sha256=excluded.sha256, "
                "blake3=excluded.blake3, deriver=excluded.deriver, sandbox=excluded.sandbox",
                (name, kind, method, got.size, got.sha256, got.blake3,
                 json.dumps(deriver, sort_keys=True), sandbox),
            )
            for r in refs:
                if db.execute("SELECT 1 FROM entries WHERE name=?", (r,)).fetchone() is None:
                    raise StoreError(f"`{name}` references `{r}`, which is not a valid entry")
                db.execute("INSERT INTO refs VALUES (?,?)", (name, r))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return got

    # ------------------------------------------------------------------ realisations
    def add_realisation(self, drv: str, entry: str) -> None:
        """Record that derivation ``drv`` was built into ``entry`` (which must be valid)."""
        info = self.info(entry)
        if info is None:
            raise StoreError(f"cannot record a realisation of `{drv}`: `{entry}` is not a valid entry")
        self.db.execute("INSERT INTO realisations VALUES (?,?,?) ON CONFLICT(drv) DO UPDATE SET "
                        "entry=excluded.entry, sha256=excluded.sha256", (drv, entry, info.hash.sha256))

    def realisation(self, drv: str) -> tuple[str, str] | None:
        """``(entry, sha256)`` that ``drv`` was last built into, or None."""
        row = self.db.execute("SELECT entry, sha256 FROM realisations WHERE drv=?", (drv,)).fetchone()
        return (row[0], row[1]) if row else None

    def add_roots(self, root: str, names: Iterable[str], *, replace: bool = True) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        if replace:
            db.execute("DELETE FROM roots WHERE root=?", (root,))
        db.executemany("INSERT OR IGNORE INTO roots VALUES (?,?)", [(root, n) for n in names])
        db.execute("COMMIT")

    # ------------------------------------------------------------------ completion times
    # When an entry was completed is metadata about this store, never part of an entry:
    # `mlbuild results` orders by it (entries' mtimes are normalised to 1).
    _COMPLETIONS = "CREATE TABLE IF NOT EXISTS completions (entry TEXT PRIMARY KEY, completed_at REAL NOT NULL)"

    def record_completion(self, name: str, when: float | None = None) -> None:
        import time

        self.db.execute(self._COMPLETIONS)
        self.db.execute("INSERT INTO completions VALUES (?,?) ON CONFLICT(entry) DO UPDATE SET "
                        "completed_at=excluded.completed_at", (name, time.time() if when is None else when))

    def completed_at(self, names: Iterable[str]) -> dict[str, float]:
        """Entry -> when it was completed (seconds since the epoch), for those recorded."""
        self.db.execute(self._COMPLETIONS)
        want = set(names)
        return {e: t for e, t in self.db.execute("SELECT entry, completed_at FROM completions") if e in want}

    # ------------------------------------------------------------------ gc / verify
    def live(self) -> set[str]:
        """Everything reachable from a root whose owner still exists, plus every run result."""
        roots: set[str] = set()
        stale: list[str] = []
        current: dict[str, bool] = {}
        for root, entry in self.db.execute("SELECT root, entry FROM roots"):
            if root.startswith("lock:"):
                if root not in current:
                    current[root] = _lock_root_current(root)
                if not current[root]:
                    stale.append(root)
                    continue
            roots.add(entry)
        roots.update(r[0] for r in self.db.execute("SELECT name FROM entries WHERE kind='run'"))
        if stale:
            self.db.executemany("DELETE FROM roots WHERE root=?", [(s,) for s in set(stale)])
        return self.closure(roots)

    def gc(self, *, dry_run: bool) -> list[tuple[str, int]]:
        try:
            with file_lock(self.meta / "locks" / "gc.lock", wait=False):
                return self._collect(dry_run)
        except LockBusy:
            raise StoreError("a `realize` is running on this store; nothing was collected",
                             hints=["run `mlbuild gc` again when it has finished"]) from None

    def _collect(self, dry_run: bool) -> list[tuple[str, int]]:
        live = self.live()
        dead = [n for n in self.entries() if n not in live]
        # delete referrers before what they reference
        order: list[str] = []
        remaining = set(dead)
        while remaining:
            batch = [n for n in remaining if not any(
                r[0] in remaining for r in self.db.execute("SELECT referrer FROM refs WHERE reference=?", (n,)))]
            if not batch:
                batch = sorted(remaining)
            order.extend(sorted(batch))
            remaining -= set(batch)
        freed: list[tuple[str, int]] = []
        for name in order:
            info = self.info(name)
            size = info.hash.size if info else 0
            freed.append((name, size))
            if not dry_run:
                self.db.execute("DELETE FROM roots WHERE entry=?", (name,))
                self.db.execute("DELETE FROM entries WHERE name=?", (name,))
                remove_path(self.root / name)
                with contextlib.suppress(FileNotFoundError):
                    self.log_path(name).unlink()
        if not dry_run:  # unregistered leftovers and stale temporaries
            for p in self.root.iterdir():
                if p.name.startswith(".") or p.name in ("CACHEDIR.TAG", "README.md"):
                    continue
                if self.info(p.name) is None:
                    remove_path(p)
            for p in (self.meta / "tmp").iterdir():
                remove_path(p)
        return freed

    def verify_entry(self, name: str) -> tuple[bool, str]:
        info = self.info(name)
        if info is None:
            return False, "not registered"
        path = self.root / name
        if not os.path.lexists(path):
            return False, "missing from disk"
        from .hashing import hash_path

        try:
            got = hash_path(path, info.hash.method)  # type: ignore[arg-type]
        except OSError as e:
            return False, f"unreadable: {e}"
        if got.sha256 != info.hash.sha256:
            return False, f"content changed: expected sha256 {info.hash.sha256}, found {got.sha256}"
        return True, "ok"
