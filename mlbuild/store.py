"""The content-addressed store: immutable entries ``<digest>-<name>`` plus a SQLite registry.

Layout under the root (``./store`` by default, ``--store``/``MLBUILD_STORE``)::

    <digest>-<name>           an entry: a file or a directory, read-only
    .mlbuild/store.json       the marker: format version and a random store id
    .mlbuild/db.sqlite        registry: entries, references, GC roots, realisations (records the same id)
    .mlbuild/meta/<entry>.json a sidecar per entry (kind, hashes, deriver, references, realisations):
                              what `store verify --repair` rebuilds a lost registry from
    .mlbuild/roots/<key>.json GC roots, mirrored as files (they survive a lost registry too)
    .mlbuild/tmp/             entries being written (never visible as entries)
    .mlbuild/locks/           one lock file per entry being realized, plus gc.lock
    .mlbuild/logs/<entry>.log builder logs
    .mlbuild/side/<entry>/    a build's side outputs (BuildContext.side: timestamped logs), never entry content
    .mlbuild/quarantine/      entries `--repair` could not vouch for (moved here, never deleted)

A directory is a store when it has the marker and a registry that agree (the
same store id); opening a non-empty directory that is not a store is an error,
so a mistyped ``--store`` never turns someone's folder into a store.

Writes are crash-safe, in the order Nix's local store uses: write into a
temporary directory inside the store, hash, make read-only, fsync, write the
sidecar, rename into place, and only then register the entry, its references
and its deriver in one SQLite transaction.  An entry on disk that the registry
doesn't know (a crash between rename and register) is invalid: realize
replaces it, `store verify --repair` re-hashes and registers it.  Per-entry
file locks make two processes realizing the same entry cooperate: one does the
work, the other waits and finds it valid.  A running realize (and `lock`)
holds ``gc.lock`` shared; ``gc`` takes it exclusive.  ``gc`` only ever deletes
registered, unreachable entries: what it cannot account for is left alone.

A store on a read-only file system opens read-only (SQLite ``immutable``):
what only reads (a realize whose entries are all valid, ``store verify``)
works; whatever must write says the store is read-only.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import CorruptEntryError, StoreError
from .fastpath import read_only
from .locks import LockBusy, file_lock

if TYPE_CHECKING:
    from .hashing import ContentHash, Method

SCHEMA_VERSION = 1
MARKER_FORMAT = 1
SIDECAR_FORMAT = 1
# An entry name must leave room for ".lock"/".json"/".log" and staging suffixes under NAME_MAX (255).
MAX_ENTRY_NAME = 240
REPAIR_HINT = ("run `mlbuild store verify --repair`: it moves a damaged registry aside (never deleting it) "
               "and rebuilds it from the entries on disk")
ENTRY_RE = re.compile(r"^[0-9a-f]{32}-.+$")
# Names at a store root that are the store's own: a new store may be made in a directory holding
# only these (the project's `store/` keeps a README.md), and gc never lists or touches them.
OWN_NAMES = (".mlbuild", "CACHEDIR.TAG", "README.md")
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
    root TEXT NOT NULL,          -- "lock:<abs path of the lockfile>" or "result:<entry>"
    entry TEXT NOT NULL,
    PRIMARY KEY (root, entry)
);
CREATE TABLE IF NOT EXISTS realisations (
    drv TEXT PRIMARY KEY,        -- a derivation's digest (over its inputs' derivation digests)
    entry TEXT NOT NULL,         -- the entry its build produced (named over inputs' content)
    sha256 TEXT NOT NULL         -- that entry's content hash
);
CREATE TABLE IF NOT EXISTS completions (
    entry TEXT PRIMARY KEY,      -- a result entry
    completed_at REAL NOT NULL   -- when its realize completed (seconds since the epoch); never hashed
);
"""


class EntryInfo(NamedTuple):
    name: str
    kind: str
    hash: ContentHash
    deriver: dict[str, Any]
    sandbox: str
    references: tuple[str, ...]


class GcReport(NamedTuple):
    """What `gc` removed (or would remove): entries and stale temporaries, with sizes in bytes."""

    entries: list[tuple[str, int]]
    temporaries: list[tuple[str, int]]  # paths relative to the store root
    left_alone: list[str]  # names at the store root that are not mlbuild's


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def default_root(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("MLBUILD_STORE")
    return Path(env) if env else Path("store")


def basename_problem(name: str) -> str | None:
    """Why ``name`` cannot be the name part of a store entry (None: it can)."""
    if not name:
        return "it is empty"
    if "/" in name or "\\" in name:
        return "it contains a path separator; an entry name is a single file name"
    if name in (".", "..") or name.startswith("."):
        return "it starts with `.`"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "it contains control characters"
    n = len(name.encode("utf-8", "surrogateescape"))
    if n > MAX_ENTRY_NAME - 33:
        return f"it is {n} bytes long; the store allows at most {MAX_ENTRY_NAME - 33}"
    return None


def check_entry_name(name: str) -> None:
    """Raise a StoreError unless ``name`` (``<digest>-<basename>``) can be an entry of the store."""
    base = name.split("-", 1)[1] if ENTRY_RE.match(name) else name
    why = basename_problem(base)
    if why is not None or not ENTRY_RE.match(name):
        raise StoreError(f"`{name[:80]}{'...' if len(name) > 80 else ''}` cannot be a store entry name: "
                         f"{why or 'expected <32 hex digits>-<name>'}",
                         hints=["give the artifact (or its file) a shorter, plain file name"])


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write canonical JSON to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def path_size(path: Path) -> int:
    """Bytes under ``path`` (a file, link or directory), without following links."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if stat.S_ISDIR(st.st_mode):
        return sum(path_size(c) for c in path.iterdir())
    return st.st_size


def lock_root(lock_path: Path) -> str:
    """The GC root of a lockfile: its absolute path, not its bytes (it follows relocking)."""
    return f"lock:{Path(lock_path).resolve()}"


_OLD_LOCK_ROOT = re.compile(r"^(?P<path>.+):[0-9a-f]{64}$")


def _lock_root_path(root: str) -> str:
    """The lockfile path of a ``lock:`` root (an older form also carried the lock's sha256)."""
    body = root[len("lock:"):]
    m = _OLD_LOCK_ROOT.match(body)
    return m.group("path") if m else body


def _pinned_entries(lock_file: str) -> set[str] | None:
    """Every fixed entry a lockfile pins (all platforms, archives too), read now; None if unreadable."""
    from . import lock as lockmod
    from .errors import MlbuildError
    from .graph import lock_entries

    try:
        lk = lockmod.read(Path(lock_file))
    except (MlbuildError, OSError, ValueError):
        return None
    return set(lock_entries(lk))


class Store:
    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root.absolute()
        self.meta = self.root / ".mlbuild"
        self.registry_path = self.meta / "db.sqlite"
        self.marker_path = self.meta / "store.json"
        self._local = threading.local()  # one SQLite connection per thread
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        if not self.meta.is_dir():
            if self.root.exists() and not self.root.is_dir():
                raise StoreError(f"`{root}` is not a directory, so it cannot be a store",
                                 hints=["pass `--store DIR` naming a new or empty directory, or an mlbuild store"])
            if self.root.is_dir() and any(n not in OWN_NAMES for n in os.listdir(self.root)):
                raise StoreError(f"`{root}` is not empty and is not an mlbuild store (no `.mlbuild/store.json`)",
                                 hints=["pass `--store DIR` naming a new or empty directory, or an mlbuild store"])
            if not create:
                raise StoreError(f"`{root}` is not an mlbuild store",
                                 hints=["realize something first, or pass `--store DIR`"])
            self._create()
        elif not self.marker_path.exists():
            # Either a creation in progress in another process (wait for it: it holds the create
            # lock until registry and marker are written), a creation cut short before its registry
            # was written (nothing to lose: create), or a store made before markers (adopted when
            # the registry is opened).
            with file_lock(self.meta / "locks" / "create.lock"):
                if not self.marker_path.exists() and not self.registry_path.exists() and create \
                        and not self.on_disk() and not any((self.meta / "meta").glob("*.json")):
                    self._create_locked()
        self.read_only = read_only(self.meta)

    def _create(self) -> None:
        try:
            for sub in ("tmp", "locks", "logs", "meta", "roots"):
                (self.meta / sub).mkdir(parents=True, exist_ok=True)
            # Two processes may create the same new store at once (two realizes in an empty
            # directory): one makes the registry and the marker, the other then finds them.
            with file_lock(self.meta / "locks" / "create.lock"):
                if not (self.marker_path.exists() or self.registry_path.exists()):
                    self._create_locked()
        except OSError as e:
            raise StoreError(f"cannot create the store at `{self.root}`: {e.strerror or e}") from e

    def _create_locked(self) -> None:
        """Registry, marker and cache tag of a new store; the caller holds the create lock."""
        try:
            for sub in ("tmp", "locks", "logs", "meta", "roots"):
                (self.meta / sub).mkdir(parents=True, exist_ok=True)
            store_id = os.urandom(16).hex()
            self._init_registry(store_id)
            write_json_atomic(self.marker_path, {"format": MARKER_FORMAT, "store_id": store_id})
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n"
                               "# mlbuild store: contents are rebuilt or refetched on demand\n")
        except OSError as e:
            raise StoreError(f"cannot create the store at `{self.root}`: {e.strerror or e}") from e

    def _init_registry(self, store_id: str) -> None:
        """A fresh, empty registry recording ``store_id`` (the caller made sure none is there)."""
        self.bump_generation()
        db = sqlite3.connect(self.registry_path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('store_id', ?)", (store_id,))
        finally:
            db.close()

    # ------------------------------------------------------------------ marker and registry
    # ------------------------------------------------------------------ the no-op realize's stamp

    @property
    def generation_path(self) -> Path:
        return self.meta / "generation"

    def generation(self) -> int:
        """A counter bumped whenever an entry may stop being valid (gc, repair, a new registry).

        The no-op realize (``mlbuild.fastpath``) trusts a saved plan only while the store's
        stamp (store id, registry inode, generation) is the one it was saved under, and every
        entry of the closure is on disk; so it needs no SQLite."""
        try:
            return int(self.generation_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            return -1

    def bump_generation(self) -> None:
        """Invalidate every saved plan (call *before* an entry is deleted or unregistered)."""
        if getattr(self, "read_only", False):
            return
        tmp = self.generation_path.with_name(f".generation.{os.getpid()}")
        tmp.write_text(f"{max(self.generation(), 0) + 1}\n")
        os.replace(tmp, self.generation_path)

    def plan_stamp(self) -> tuple[str, int, int]:
        """(store id, registry inode, generation): what a saved plan is valid under."""
        try:
            ino = os.stat(self.registry_path).st_ino
        except OSError:
            ino = -1
        return (self.marker_id() or "", ino, self.generation())

    def marker_id(self) -> str | None:
        """The store id the marker records (None: no marker); a damaged marker is an error."""
        try:
            doc = json.loads(self.marker_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StoreError(f"the store marker `{self.marker_path}` is unreadable: {e}", hints=[REPAIR_HINT]) from e
        if not isinstance(doc, dict) or not isinstance(doc.get("store_id"), str) or doc.get("format") != MARKER_FORMAT:
            raise StoreError(f"the store marker `{self.marker_path}` is not an mlbuild store marker "
                             f"(expected format {MARKER_FORMAT} with a store id)", hints=[REPAIR_HINT])
        return str(doc["store_id"])

    def db_error(self, e: sqlite3.Error) -> StoreError:
        """The StoreError an SQLite failure on the registry means."""
        code = getattr(e, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == 8:  # SQLITE_READONLY
            return StoreError(f"the store `{self.root}` is read-only: cannot write its registry ({e})",
                              hints=["use a writable store (`--store DIR`), or make this one writable"])
        if primary in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
            return StoreError(f"the store registry `{self.registry_path}` is busy: {e}",
                              hints=["another mlbuild is writing to it; try again when it has finished"])
        if primary in (10, 13):  # SQLITE_IOERR, SQLITE_FULL
            return StoreError(f"cannot read or write the store registry `{self.registry_path}`: {e}",
                              hints=["check free space and the file system of the store"])
        if primary == 19:  # SQLITE_CONSTRAINT: e.g. a reference to an entry another process just removed
            return StoreError(f"the store registry `{self.registry_path}` refused an update: {e}",
                              hints=["run the command again; if it persists, `mlbuild store verify`"])
        return StoreError(f"the store registry `{self.registry_path}` is damaged: {e}", hints=[REPAIR_HINT])

    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._open_registry()
            self._local.db = db
            with self._conns_lock:
                self._conns.append(db)
        return db

    def _open_registry(self) -> sqlite3.Connection:
        marker = self.marker_id()
        if not self.registry_path.exists():
            raise StoreError(f"the store registry `{self.registry_path}` is missing", hints=[REPAIR_HINT])
        try:
            if self.read_only:
                import urllib.parse  # only for a read-only store: off the no-op path

                uri = "file:" + urllib.parse.quote(str(self.registry_path)) + "?mode=ro&immutable=1"
                db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                db = sqlite3.connect(self.registry_path, timeout=60, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise self.db_error(e) from e
        try:
            if not self.read_only:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            if not _has_table(db, "meta") or not _has_table(db, "entries"):
                raise StoreError(f"the store registry `{self.registry_path}` has no mlbuild tables",
                                 hints=[REPAIR_HINT])
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("schema_version")
            if version != str(SCHEMA_VERSION):
                raise StoreError(f"store `{self.root}` has registry schema {version}, this mlbuild reads "
                                 f"{SCHEMA_VERSION}", hints=["use the mlbuild that made this store, or a new store"])
            if not (_has_table(db, "realisations") and _has_table(db, "completions")) and not self.read_only:
                db.executescript(SCHEMA)  # idempotent: every statement is IF NOT EXISTS
            registry_id = meta.get("store_id")
            if marker is None and registry_id is None and not self.read_only:
                # a store made before markers existed: adopt it
                db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (os.urandom(16).hex(),))
                registry_id = db.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0]
            if marker is None and registry_id is not None and not self.read_only:
                write_json_atomic(self.marker_path, {"format": MARKER_FORMAT, "store_id": registry_id})
                marker = registry_id
            if marker is not None and registry_id != marker:
                raise StoreError(
                    f"the store registry `{self.registry_path}` does not belong to this store: it records store id "
                    f"{registry_id or '(none)'}, the marker `{self.marker_path}` says {marker}",
                    hints=[REPAIR_HINT])
        except sqlite3.Error as e:
            db.close()
            raise self.db_error(e) from e
        except BaseException:
            db.close()
            raise
        return db

    def registry_problem(self) -> str | None:
        """Why the registry cannot be trusted (missing, damaged, another store's), or None."""
        try:
            rows = self._x("PRAGMA quick_check")  # opening checks the marker, schema and store id
        except StoreError as e:
            return e.message
        if rows != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:3])
            return f"the store registry `{self.registry_path}` is damaged: {detail}"
        return None

    def _x(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        """Run one statement on the registry; every SQLite failure becomes a StoreError."""
        try:
            return self.db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            raise self.db_error(e) from e

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite failures become StoreErrors, anything raised rolls back."""
        self.require_writable("update its registry")
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self.db_error(e) from e
        try:
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise self.db_error(e) from e
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def require_writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"the store `{self.root}` is read-only; cannot {what}",
                             hints=["use a writable store (`--store DIR`), or make this one writable"])

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
        row = self._x("SELECT 1 FROM entries WHERE name=?", (name,))
        return bool(row) and os.path.lexists(self.root / name)

    def all_valid(self, names: list[str]) -> bool:
        if not names:
            return False
        marks = ",".join("?" * len(names))
        ((count,),) = self._x(f"SELECT count(*) FROM entries WHERE name IN ({marks})", names)
        return bool(count == len(set(names)) and all(os.path.lexists(self.root / n) for n in names))

    def info(self, name: str) -> EntryInfo | None:
        from .hashing import ContentHash

        rows = self._x("SELECT kind, method, size, sha256, blake3, deriver, sandbox FROM entries WHERE name=?", (name,))
        if not rows:
            return None
        row = rows[0]
        refs = tuple(r[0] for r in self._x("SELECT reference FROM refs WHERE referrer=? ORDER BY reference", (name,)))
        try:
            deriver = json.loads(row[5])
        except ValueError as e:
            raise StoreError(f"the store registry `{self.registry_path}` is damaged: the deriver of `{name}` "
                             f"is not JSON", hints=[REPAIR_HINT]) from e
        return EntryInfo(name, row[0], ContentHash(row[1], row[2], row[3], row[4]), deriver, row[6], refs)

    def entries(self) -> list[str]:
        return [r[0] for r in self._x("SELECT name FROM entries ORDER BY name")]

    def find_by_sha256(self, sha256: str, method: str | None = None) -> str | None:
        if method is None:
            rows = self._x("SELECT name FROM entries WHERE sha256=? ORDER BY name", (sha256,))
        else:
            rows = self._x("SELECT name FROM entries WHERE sha256=? AND method=? ORDER BY name", (sha256, method))
        for (name,) in rows:
            if os.path.lexists(self.root / name):
                return str(name)
        return None

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
            todo.extend(r[0] for r in self._x("SELECT reference FROM refs WHERE referrer=?", (n,)))
        return seen

    def log_path(self, name: str) -> Path:
        return self.meta / "logs" / f"{name}.log"

    def side_path(self, name: str) -> Path:
        """An entry's side outputs (``BuildContext.side``): metadata beside it, never part of it."""
        return self.meta / "side" / name

    def sidecar_path(self, name: str) -> Path:
        return self.meta / "meta" / f"{name}.json"

    def read_sidecar(self, name: str) -> dict[str, Any] | None:
        """The sidecar of ``name`` (None: none, or not a readable sidecar)."""
        try:
            doc = json.loads(self.sidecar_path(name).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT or doc.get("name") != name:
            return None
        return doc

    def on_disk(self) -> list[str]:
        """Every name at the store root except the store's own (:data:`OWN_NAMES`)."""
        try:
            names = os.listdir(self.root)
        except OSError as e:
            raise StoreError(f"cannot list the store `{self.root}`: {e.strerror or e}") from e
        return sorted(n for n in names if n not in OWN_NAMES)

    def unregistered(self) -> tuple[list[str], list[str]]:
        """Names at the root the registry doesn't list: (mlbuild's: an entry with a sidecar, others)."""
        registered = set(self.entries())
        ours: list[str] = []
        foreign: list[str] = []
        for n in self.on_disk():
            if n in registered:
                continue
            (ours if ENTRY_RE.match(n) and self.sidecar_path(n).exists() else foreign).append(n)
        return ours, foreign

    # ------------------------------------------------------------------ locking
    def session(self, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """Held by every realize and lock: keeps `gc` from deleting what it is about to use."""
        return file_lock(self.meta / "locks" / "gc.lock", shared=True, wait=wait)

    def entry_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        check_entry_name(name)
        return file_lock(self.meta / "locks" / f"{name}.lock")

    @contextlib.contextmanager
    def staging(self, name: str) -> Iterator[Path]:
        """A fresh temporary directory inside the store for building ``name``.

        The caller holds the entry lock, so leftovers of earlier (killed)
        attempts at the same entry are removed first.  Removed on exit unless
        committed (commit renames its ``out`` away).
        """
        self.require_writable(f"write `{name}` into it")
        tmp_root = self.meta / "tmp"
        key = name[:MAX_ENTRY_NAME - 40]
        if "/" in key or key.startswith("."):
            raise StoreError(f"`{name}` cannot name a staging directory", hints=["use a plain file name"])
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
            for stale in tmp_root.glob(f"{glob.escape(key)}.*"):
                remove_path(stale)
            tmp = tmp_root / f"{key}.{os.getpid()}.{os.urandom(4).hex()}"
            tmp.mkdir()
        except OSError as e:
            raise StoreError(f"cannot make a staging directory for `{name}` in `{tmp_root}`: {e.strerror or e}",
                             hints=["check free space and permissions of the store"]) from e
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

        ``expected``: the hash the bytes must have (fixed-output: sha256, size, and blake3
        when given); a mismatch raises and nothing enters the store.  ``known``: a hash the
        caller just computed while writing (skips re-hashing).
        """
        check_entry_name(name)
        self.require_writable(f"add `{name}`")
        if not os.path.lexists(staged):
            raise StoreError(f"builder produced no output for `{name}`")
        from .hashing import hash_path

        _make_readonly(staged)
        got = known if known is not None else hash_path(staged, method)
        if expected is not None and (got.sha256 != expected.sha256 or got.size != expected.size
                                     or (expected.blake3 and got.blake3 != expected.blake3)):
            what = (f"sha256 {expected.sha256} ({expected.size} bytes)" if got.sha256 != expected.sha256
                    or got.size != expected.size else f"blake3 {expected.blake3}")
            found = (f"{got.sha256} ({got.size} bytes)" if got.sha256 != expected.sha256 or got.size != expected.size
                     else got.blake3)
            raise CorruptEntryError(
                f"content of `{name}` does not match the lock: expected {what}, got {found}",
                hints=["if upstream changed on purpose, run `mlbuild lock --update` for it"],
            )
        refs = sorted(set(references) - {name})
        for r in refs:
            if not self._x("SELECT 1 FROM entries WHERE name=?", (r,)):
                raise StoreError(f"`{name}` references `{r}`, which is not a valid entry")
        deriver_json = json.dumps(deriver, sort_keys=True)
        _fsync_tree(staged)
        final = self.root / name
        old = self.read_sidecar(name)
        drvs = sorted(old.get("realisations", [])) if old and old.get("sha256") == got.sha256 else []
        sidecar = {"format": SIDECAR_FORMAT, "name": name, "kind": kind, "method": method, "size": got.size,
                   "sha256": got.sha256, "blake3": got.blake3, "deriver": deriver, "sandbox": sandbox,
                   "references": refs, "realisations": drvs}
        try:
            write_json_atomic(self.sidecar_path(name), sidecar)
            if os.path.lexists(final):  # left by a crash between rename and register
                remove_path(final)
            os.rename(staged, final)
            _fsync_dir(self.root)
        except OSError as e:
            raise StoreError(f"cannot move `{name}` into the store `{self.root}`: {e.strerror or e}",
                             hints=["check free space and permissions of the store"]) from e
        with self._tx() as db:
            db.execute("DELETE FROM refs WHERE referrer=?", (name,))
            db.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                "kind=excluded.kind, method=excluded.method, size=excluded.size, sha256=excluded.sha256, "
                "blake3=excluded.blake3, deriver=excluded.deriver, sandbox=excluded.sandbox",
                (name, kind, method, got.size, got.sha256, got.blake3, deriver_json, sandbox),
            )
            db.executemany("INSERT INTO refs VALUES (?,?)", [(name, r) for r in refs])
        return got

    def write_sidecar(self, name: str, realisations: Iterable[str] = ()) -> None:
        """(Re)write the sidecar of registered entry ``name`` from the registry."""
        info = self.info(name)
        if info is None:
            raise StoreError(f"`{name}` is not a registered entry; it has no metadata to write")
        drvs = set(realisations) | {r[0] for r in self._x("SELECT drv FROM realisations WHERE entry=?", (name,))}
        write_json_atomic(self.sidecar_path(name), {
            "format": SIDECAR_FORMAT, "name": name, "kind": info.kind, "method": info.hash.method,
            "size": info.hash.size, "sha256": info.hash.sha256, "blake3": info.hash.blake3,
            "deriver": info.deriver, "sandbox": info.sandbox, "references": list(info.references),
            "realisations": sorted(drvs)})

    # ------------------------------------------------------------------ realisations
    def add_realisation(self, drv: str, entry: str) -> None:
        """Record that derivation ``drv`` was built into ``entry`` (which must be valid)."""
        info = self.info(entry)
        if info is None:
            raise StoreError(f"cannot record a realisation of `{drv}`: `{entry}` is not a valid entry")
        with self._tx() as db:
            db.execute("INSERT INTO realisations VALUES (?,?,?) ON CONFLICT(drv) DO UPDATE SET "
                       "entry=excluded.entry, sha256=excluded.sha256", (drv, entry, info.hash.sha256))
        try:
            self.write_sidecar(entry, [drv])
        except OSError as e:
            raise StoreError(f"cannot write the metadata of `{entry}`: {e.strerror or e}") from e

    def realisation(self, drv: str) -> tuple[str, str] | None:
        """``(entry, sha256)`` that ``drv`` was last built into, or None."""
        rows = self._x("SELECT entry, sha256 FROM realisations WHERE drv=?", (drv,))
        return (rows[0][0], rows[0][1]) if rows else None

    # ------------------------------------------------------------------ roots
    def _roots_file(self, root: str) -> Path:
        return self.meta / "roots" / f"{hashlib.sha256(root.encode()).hexdigest()[:32]}.json"

    def add_roots(self, root: str, names: Iterable[str], *, replace: bool = True) -> None:
        """Root ``names`` under ``root``.  A read-only store is left as it is (nothing can collect it)."""
        if self.read_only:
            return
        names = list(names)
        with self._tx() as db:
            if replace:
                db.execute("DELETE FROM roots WHERE root=?", (root,))
            db.executemany("INSERT OR IGNORE INTO roots VALUES (?,?)", [(root, n) for n in names])
            rows = [r[0] for r in db.execute("SELECT entry FROM roots WHERE root=? ORDER BY entry", (root,))]
        try:
            write_json_atomic(self._roots_file(root), {"root": root, "entries": rows})
        except OSError as e:
            raise StoreError(f"cannot record the GC root {root}: {e.strerror or e}") from e

    def add_lock_roots(self, lock_path: Path, names: Iterable[str]) -> None:
        """Root ``names`` for as long as the lockfile at ``lock_path`` exists (whatever it holds then)."""
        self.add_roots(lock_root(lock_path), names, replace=False)

    def write_root_files(self) -> int:
        """Mirror every root of the registry as a file (a store made before root files had none)."""
        rows: dict[str, list[str]] = {}
        for root, entry in self._x("SELECT root, entry FROM roots ORDER BY root, entry"):
            rows.setdefault(root, []).append(entry)
        written = 0
        for root, entries in rows.items():
            path = self._roots_file(root)
            try:
                current = json.loads(path.read_text()) if path.exists() else None
            except (OSError, ValueError):
                current = None
            if current != {"root": root, "entries": entries}:
                write_json_atomic(path, {"root": root, "entries": entries})
                written += 1
        return written

    def root_files(self) -> list[dict[str, Any]]:
        """The roots mirrored as files (what a rebuilt registry gets its roots from)."""
        out = []
        for p in sorted((self.meta / "roots").glob("*.json")):
            try:
                doc = json.loads(p.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and isinstance(doc.get("root"), str) and isinstance(doc.get("entries"), list):
                out.append(doc)
        return out

    # ------------------------------------------------------------------ completion times
    # When an entry was completed is metadata about this store, never part of an entry:
    # `mlbuild results` orders by it (entries' mtimes are normalised to 1).
    def record_completion(self, name: str, when: float | None = None) -> None:
        """Record when result ``name`` was completed (metadata beside the entry, never inside it)."""
        import time

        with self._tx() as db:
            db.execute("INSERT INTO completions VALUES (?,?) ON CONFLICT(entry) DO UPDATE SET "
                       "completed_at=excluded.completed_at", (name, time.time() if when is None else when))

    def completed_at(self, names: Iterable[str]) -> dict[str, float]:
        """Entry -> when it was completed (seconds since the epoch), for those recorded."""
        want = set(names)
        if not _has_table(self.db, "completions"):  # an older (or read-only) registry without the table
            return {}
        return {e: t for e, t in self._x("SELECT entry, completed_at FROM completions") if e in want}

    # ------------------------------------------------------------------ gc / verify
    def live(self) -> set[str]:
        """Everything reachable from a root whose owner still exists, plus every run result.

        A lockfile root holds while a file is at its path; what it keeps is read from that
        file now (every entry it pins, on every platform) plus what was realized for it."""
        roots: set[str] = set()
        stale: set[str] = set()
        lock_files: dict[str, bool] = {}
        for root, entry in self._x("SELECT root, entry FROM roots"):
            if root.startswith("lock:"):
                path = _lock_root_path(root)
                if path not in lock_files:
                    lock_files[path] = os.path.exists(path)
                if not lock_files[path]:
                    stale.add(root)
                    continue
            roots.add(entry)
        registered = set(self.entries())
        for path, exists in lock_files.items():
            if exists:
                roots.update((_pinned_entries(path) or set()) & registered)
        roots.update(r[0] for r in self._x("SELECT name FROM entries WHERE kind='run'"))
        roots &= registered
        if stale and not self.read_only:
            with self._tx() as db:
                db.executemany("DELETE FROM roots WHERE root=?", [(s,) for s in sorted(stale)])
            for s in stale:
                with contextlib.suppress(OSError):
                    self._roots_file(s).unlink()
        return self.closure(roots)

    def gc(self, *, dry_run: bool) -> GcReport:
        if not dry_run:
            self.require_writable("collect garbage")
        try:
            with file_lock(self.meta / "locks" / "gc.lock", wait=False):
                problem = self.registry_problem()
                if problem is not None:
                    raise StoreError(f"{problem}; nothing was collected", hints=[REPAIR_HINT])
                ours, _ = self.unregistered()
                if ours:
                    raise StoreError(
                        f"{len(ours)} entries on disk are not in the registry ({', '.join(ours[:3])}"
                        f"{', ...' if len(ours) > 3 else ''}): gc cannot tell what they need; nothing was collected",
                        hints=["run `mlbuild store verify --repair` to register them (it re-hashes each one)"])
                return self._collect(dry_run)
        except LockBusy:
            raise StoreError("a `realize` is running on this store (or a `lock`); nothing was collected",
                             hints=["run `mlbuild gc` again when it has finished"]) from None

    def _collect(self, dry_run: bool) -> GcReport:
        live = self.live()
        dead = [n for n in self.entries() if n not in live]
        # delete referrers before what they reference
        order: list[str] = []
        remaining = set(dead)
        while remaining:
            batch = [n for n in remaining if not any(
                r[0] in remaining for r in self._x("SELECT referrer FROM refs WHERE reference=?", (n,)))]
            if not batch:
                batch = sorted(remaining)
            order.extend(sorted(batch))
            remaining -= set(batch)
        freed: list[tuple[str, int]] = []
        if order and not dry_run:
            self.bump_generation()
        for name in order:
            info = self.info(name)
            freed.append((name, info.hash.size if info else 0))
            if not dry_run:
                with self._tx() as db:
                    db.execute("DELETE FROM roots WHERE entry=?", (name,))
                    db.execute("DELETE FROM realisations WHERE entry=?", (name,))
                    db.execute("DELETE FROM entries WHERE name=?", (name,))
                remove_path(self.root / name)
                for extra in (self.sidecar_path(name), self.log_path(name)):
                    with contextlib.suppress(FileNotFoundError):
                        extra.unlink()
                remove_path(self.side_path(name))
        temporaries: list[tuple[str, int]] = []
        tmp_root = self.meta / "tmp"
        if tmp_root.is_dir():
            for p in sorted(tmp_root.iterdir()):
                temporaries.append((str(p.relative_to(self.root)), path_size(p)))
                if not dry_run:
                    remove_path(p)
        _, foreign = self.unregistered()
        return GcReport(freed, temporaries, foreign)

    def verify_entry(self, name: str) -> tuple[bool, str]:
        info = self.info(name)
        if info is None:
            return False, "not registered"
        path = self.root / name
        if not os.path.lexists(path):
            return False, "missing from disk"
        from .hashing import hash_path

        try:
            got = hash_path(path, info.hash.method)
        except OSError as e:
            return False, f"unreadable: {e}"
        if got.sha256 != info.hash.sha256:
            return False, f"content changed: expected sha256 {info.hash.sha256}, found {got.sha256}"
        if info.hash.blake3 and got.blake3 != info.hash.blake3:
            return False, f"content changed: expected blake3 {info.hash.blake3}, found {got.blake3}"
        return True, "ok"
