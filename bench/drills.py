#!/usr/bin/env python3
"""Drills: hostile inputs and faults against `mlbuild`, each in a small throw-away project.

Each drill lays out a temp project (tests/core/project.py: the stdlib `concat` builder over
files served by a loopback HTTP server), injects one fault, runs `mlbuild` as a user would (a
subprocess) and checks the *expected* behaviour. After every drill, whatever its outcome:

* `mlbuild store verify` on the project's store is clean (exit 0), when there is a store;
* the sentinel files outside the store (one per drill, plus the drill's own "secrets") were
  neither read (their atime was set days back, so any read moves it under relatime), changed,
  nor removed.

The run ends with `N passed, N failed` (and `N not run` when a drill's mechanism is missing),
exit status 1 if any failed. On demand only (not part of the test suite):

    python bench/drills.py [-k SUBSTRING] [--list] [-v]

The whole run happens in a private network namespace (`unshare -rn`, loopback only) when that
works, so a drill that makes mlbuild follow a redirect to the link-local metadata address cannot
send a packet off the machine; without one, that drill is not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.core.project import Project, make_tar_gz  # noqa: E402
from tests.httpserver import Behaviour, Hang, LoopbackServer, Redirect, Serve, Status  # noqa: E402

NETNS_ENV = "MLBUILD_DRILLS_NETNS"
DAY_NS = 86_400 * 10**9


class DrillFailed(AssertionError):
    pass


class NotRun(Exception):
    pass


def expect(cond: object, what: str) -> None:
    if not cond:
        raise DrillFailed(what)


@dataclass
class Watched:
    path: Path
    data: bytes
    mtime_ns: int
    atime_ns: int


@dataclass
class Ctx:
    tmp: Path
    p: Project
    watched: list[Watched] = field(default_factory=list)
    started: list[int] = field(default_factory=list)  # pids of builders we may have to clean up

    @property
    def store(self) -> Path:
        return self.p.store_dir

    def watch(self, path: Path, data: bytes) -> Path:
        """A file outside the store that no drill may read, change or remove."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        st = path.stat()
        old = st.st_mtime_ns - 3 * DAY_NS
        os.utime(path, ns=(old, st.st_mtime_ns))
        self.watched.append(Watched(path, data, st.st_mtime_ns, old))
        return path

    def mlb(self, *argv: str, store: Path | None = None, env: dict[str, str] | None = None,
            wrap: list[str] | None = None, timeout: float = 120) -> Run:
        """`python -m mlbuild ARGV` (project manifests, lock and store) as a subprocess."""
        full_env = self.p.env()
        full_env["TMPDIR"] = str(self.tmp / "tmpdir")
        full_env.update(env or {})
        cmd = [*(wrap or []), sys.executable, "-m", "mlbuild", *self.p.args(argv, store)]
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=self.p.root, env=full_env, capture_output=True, text=True, timeout=timeout)
        return Run(r.returncode, r.stdout, r.stderr, time.monotonic() - t0)

    def lock_text(self) -> str:
        return self.p.lock_path.read_text() if self.p.lock_path.exists() else ""


@dataclass
class Run:
    code: int
    out: str
    err: str
    wall: float

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stderr\n{self.err[-1500:]}\n--- stdout\n{self.out[-500:]}"

    def ok(self) -> Run:
        expect(self.code == 0, f"expected success, got {self}")
        return self

    def clear_error(self, *words: str, code: int | None = None) -> Run:
        """Failed with an `error:` line (no traceback) that mentions each of ``words`` (case-insensitive)."""
        expect(self.code != 0, f"expected a failure, got {self}")
        expect("Traceback" not in self.err, f"a traceback instead of an error:\n{self.err[-1500:]}")
        expect("error:" in self.err, f"no `error:` line:\n{self}")
        if code is not None:
            expect(self.code == code, f"expected exit {code}, got {self}")
        for w in words:
            expect(w.lower() in self.err.lower(), f"the error does not mention {w!r}:\n{self.err[-1500:]}")
        return self


DRILLS: list[tuple[str, str, Callable[[Ctx], None]]] = []


Drill = Callable[[Ctx], None]


def drill(name: str, fault: str, *, off_machine: bool = False) -> Callable[[Drill], Drill]:
    """Register a drill. ``off_machine``: the fault names a host that is not loopback (a broken
    mlbuild might resolve or contact it), so the drill only runs in a private network namespace."""

    def register(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
        def guarded(c: Ctx) -> None:
            if off_machine and os.environ.get(NETNS_ENV) != "1":
                raise NotRun("needs a private network namespace (unshare -rn): the fault names a non-loopback host")
            fn(c)

        DRILLS.append((name, fault, guarded))
        return fn

    return register


# -- helpers -------------------------------------------------------------------------------------
def entries(c: Ctx) -> set[str]:
    return c.p.on_disk()


def pinned(lock_text: str) -> set[str]:
    """Names of the [[artifact]] tables of a lock (the pinned ones)."""
    out, cur = set(), None
    for line in lock_text.splitlines():
        if line.startswith("[["):
            cur = line.strip()
        elif cur == "[[artifact]]" and line.startswith("name = "):
            out.add(line.split("=", 1)[1].strip().strip('"'))
    return out


def lock_here(c: Ctx) -> Run:
    """`mlbuild lock` into the project's own store."""
    return c.mlb("lock").ok()


def artifact_block(lock_text: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the [[artifact]] table named ``name``."""
    m = re.search(rf'^\[\[artifact\]\]\nname = "{re.escape(name)}"\n', lock_text, re.M)
    assert m, name
    nxt = lock_text.find("\n[[", m.end())
    return m.start(), (len(lock_text) if nxt < 0 else nxt)


def edit_artifact(lock_text: str, name: str, fn: Callable[[str], str]) -> str:
    a, b = artifact_block(lock_text, name)
    return lock_text[:a] + fn(lock_text[a:b]) + lock_text[b:]


class Everything(dict):  # type: ignore[type-arg]
    """A routes table that answers every path with one behaviour."""

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__()
        self.behaviour = behaviour

    def get(self, key: object, default: object = None) -> Behaviour:  # type: ignore[override]
        return self.behaviour


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def ro_store_wrap(store: Path) -> list[str]:
    """Run the command with ``store`` bind-mounted read-only (a private mount namespace)."""
    s = str(store)
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, s]


def builder_pids(c: Ctx) -> list[int]:
    """Processes running a builder (buildexec) whose working directory is under this drill."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if "buildexec" in cmd and cwd.startswith(str(c.tmp)):
            pids.append(int(d.name))
    return pids


def wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


SLOW = '[build.slowcat]\nbuilder = "concat"\ninputs = {{ a = "hello", b = "fileset" }}\nparams = {{ sleep = 4.0 }}\n'


# -- the drills ----------------------------------------------------------------------------------
@drill("gc-unknown-files", "gc with files at the store root that are not mlbuild's")
def _(c: Ctx) -> None:
    lock_here(c)
    c.mlb("realize", "greeting").ok()
    notes = c.watch(c.store / "notes.txt", b"my notes\n")
    photo = c.watch(c.store / "photos" / "a.jpg", b"\xff\xd8 not really a photo")
    dry = c.mlb("gc", "--dry-run").ok()
    expect("notes.txt" in dry.out + dry.err and "photos" in dry.out + dry.err,
           f"gc --dry-run does not list what is not mlbuild's:\n{dry}")
    c.mlb("gc").ok()
    expect(notes.exists() and photo.exists(), "gc deleted files it does not own")


def _registry_loss(c: Ctx, damage: Callable[[Path], None]) -> None:
    lock_here(c)
    c.mlb("realize", "greeting").ok()
    before = entries(c)
    damage(c.store / ".mlbuild" / "db.sqlite")
    c.p.reset_counts()
    v = c.mlb("store", "verify")
    v.clear_error("--repair")
    c.mlb("gc").clear_error("--repair")
    expect(entries(c) == before, f"gc removed entries it could not account for: {sorted(before - entries(c))}")
    c.mlb("store", "verify", "--repair").ok()
    expect(entries(c) == before, "repair lost entries")
    c.mlb("realize", "greeting").ok()
    expect(c.p.server.total_requests() == 0, "the entries were fetched again instead of re-registered")


@drill("registry-deleted", "the registry (db.sqlite) is deleted")
def _(c: Ctx) -> None:
    _registry_loss(c, lambda db: db.unlink())


@drill("registry-emptied", "every row of the registry is deleted")
def _(c: Ctx) -> None:
    def empty(db: Path) -> None:
        con = sqlite3.connect(db)
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            con.execute(f'DELETE FROM "{t}"')
        con.commit()
        con.close()

    _registry_loss(c, empty)


@drill("registry-damaged", "the registry's header and pages are scribbled over")
def _(c: Ctx) -> None:
    def scribble(db: Path) -> None:
        data = bytearray(db.read_bytes())
        data[0:100] = b"garbage!" * 12 + b"xxxx"
        for off in range(4096, len(data), 4096):
            data[off:off + 64] = os.urandom(64)
        db.write_bytes(bytes(data))

    _registry_loss(c, scribble)
    aside = [p for p in (c.store / ".mlbuild").iterdir() if p.name.startswith("db.sqlite") and p.name != "db.sqlite"
             and not p.name.endswith(("-wal", "-shm", "-journal"))]
    expect(aside, "the damaged registry was not kept aside")


@drill("read-only-store", "the store is on a read-only filesystem")
def _(c: Ctx) -> None:
    lock_here(c)
    c.mlb("realize", "greeting").ok()
    wrap = ro_store_wrap(c.store)
    probe = c.mlb("store", "verify", wrap=wrap)
    if "mount" in probe.err and "permission denied" in probe.err.lower():
        raise NotRun("cannot make a read-only bind mount here")
    probe.ok()
    c.mlb("realize", "greeting", wrap=wrap).ok()
    c.mlb("realize", "bundle", wrap=wrap).clear_error("read-only")


@drill("lock-update-unreachable", "lock --update X while X's upstream is unreachable")
def _(c: Ctx) -> None:
    lock_here(c)
    before = c.lock_text()
    c.p.server.stop()
    c.mlb("lock", "--update", "hello")
    expect(c.lock_text() == before, "the lock changed: a good pin was dropped for lack of network")


@drill("lock-offline-keeps-pins", "lock --offline after adding an artifact")
def _(c: Ctx) -> None:
    lock_here(c)
    c.p.route("/files/new.txt", Serve(b"new\n"))
    c.p.append_manifest('[fetch.newfile]\nurl = "{base}/files/new.txt"\n')
    c.mlb("lock", "--offline")
    expect({"hello", "fileset", "archive"} <= pinned(c.lock_text()), f"pins dropped:\n{c.lock_text()}")


@drill("lock-server-down-keeps-pins", "lock with upstream down after adding an artifact")
def _(c: Ctx) -> None:
    lock_here(c)
    c.p.append_manifest('[fetch.newfile]\nurl = "{base}/files/new.txt"\n')
    c.p.server.stop()
    r = c.mlb("lock")
    expect({"hello", "fileset", "archive"} <= pinned(c.lock_text()), f"pins dropped:\n{c.lock_text()}")
    expect("newfile" not in pinned(c.lock_text()), "an unreachable artifact was pinned")
    expect("newfile" in r.err + r.out, f"the unpinned artifact is not named:\n{r}")


@drill("lock-roots-its-pins", "gc right after lock, and after relocking with one more artifact")
def _(c: Ctx) -> None:
    lock_here(c)
    pinned_entries = entries(c)
    expect(pinned_entries, "lock put nothing into the store")
    c.mlb("gc").ok()
    expect(entries(c) >= pinned_entries, f"gc removed just-pinned entries: {sorted(pinned_entries - entries(c))}")
    realized = Path(c.mlb("realize", "bundle").ok().out.strip().splitlines()[-1]).name
    c.p.route("/files/new.txt", Serve(b"new\n"))
    c.p.append_manifest('[fetch.newfile]\nurl = "{base}/files/new.txt"\n')
    lock_here(c)
    c.mlb("gc").ok()
    expect(realized in entries(c), "relocking with one more artifact let gc drop a realized entry")


def _mirror_secret(c: Ctx, url: str) -> None:
    mirror = c.tmp / "mirror"
    (mirror / "127.0.0.1").mkdir(parents=True)
    secret_bytes = b"the secret\n"
    c.watch(c.tmp / "k_secret.txt", secret_bytes)
    c.watch(c.tmp.parent / f"{c.tmp.name}-k_secret.txt", b"the secret too\n")
    c.p.write_manifest(f'[fetch.evil]\nurl = "{url.replace("TMPNAME", c.tmp.name)}"\n')
    r = c.mlb("lock", "--mirror", str(mirror))
    expect("Traceback" not in r.err, f"a traceback:\n{r.err[-1500:]}")
    expect(sha256(secret_bytes) not in c.lock_text(), "the lock pins the secret's bytes")
    expect("evil" not in pinned(c.lock_text()), f"a traversal URL was pinned:\n{r}")
    r.clear_error("evil")


@drill("mirror-traversal-dotdot", "a manifest URL http://../k_secret.txt with a URL-layout mirror", off_machine=True)
def _(c: Ctx) -> None:
    _mirror_secret(c, "http://../k_secret.txt")


@drill("mirror-traversal-pct2f", "a manifest URL with ..%2f segments and a URL-layout mirror", off_machine=True)
def _(c: Ctx) -> None:
    _mirror_secret(c, "http://..%2f..%2fTMPNAME/k_secret.txt")  # mirror/../../TMPNAME is the drill's dir


@drill("mirror-traversal-pct2f-path", "a manifest URL whose path climbs out with ..%2f")
def _(c: Ctx) -> None:
    _mirror_secret(c, "http://127.0.0.1/..%2f..%2fk_secret.txt")  # mirror/127.0.0.1/../../ is the drill's dir


@drill("file-url-in-lock", "the lock's URL edited to file:// of a file outside the store (hashes matching)")
def _(c: Ctx) -> None:
    lock_here(c)
    secret_bytes = b"shadow-like content\n"
    secret = c.watch(c.tmp / "outside" / "shadow", secret_bytes)
    from mlbuild.hashing import hash_bytes

    h = hash_bytes(secret_bytes)

    def to_file(block: str) -> str:
        block = re.sub(r'urls = \["[^"]*"\]', f'urls = ["file://{secret}"]', block)
        block = re.sub(r"size = \d+", f"size = {h.size}", block)
        block = re.sub(r'sha256 = "[0-9a-f]+"', f'sha256 = "{h.sha256}"', block)
        return re.sub(r'blake3 = "[0-9a-f]+"', f'blake3 = "{h.blake3}"', block)

    c.p.lock_path.write_text(edit_artifact(c.lock_text(), "hello", to_file))
    shutil.rmtree(c.store, ignore_errors=True)
    r = c.mlb("realize", "hello")
    r.clear_error("file")
    expect(str(len(secret_bytes)) + " bytes" not in r.err, "the error reveals the file's size")


@drill("redirect-link-local", "upstream redirects to the link-local metadata address", off_machine=True)
def _(c: Ctx) -> None:
    lock_here(c)
    shutil.rmtree(c.store, ignore_errors=True)
    c.p.route("/files/hello.txt", Redirect("http://169.254.169.254/latest/meta-data/iam"))
    c.mlb("realize", "hello").clear_error("169.254.169.254", "redirect")


@drill("credentials-in-url", "user:password@ in a manifest URL")
def _(c: Ctx) -> None:
    c.p.write_manifest('[fetch.hello]\nurl = "http://alice:hunter2pw@127.0.0.1:{port}/files/hello.txt"\n'
                       .replace("{port}", str(c.p.server.port)))
    r = c.mlb("lock")
    r.clear_error("netrc")
    expect("hunter2pw" not in r.err + r.out + c.lock_text(), "the password is echoed or written to the lock")


@drill("timeout-env-not-finite", "MLBUILD_READ_TIMEOUT=nan, inf, 1e999, -1")
def _(c: Ctx) -> None:
    lock_here(c)
    shutil.rmtree(c.store, ignore_errors=True)  # so that realize has to fetch
    for v in ("nan", "inf", "1e999", "-1"):
        c.mlb("realize", "hello", env={"MLBUILD_READ_TIMEOUT": v}).clear_error("MLBUILD_READ_TIMEOUT", code=2)


@drill("name-240-chars", "a 240-character artifact name")
def _(c: Ctx) -> None:
    lock_here(c)
    before = c.lock_text()
    c.p.append_manifest(f'[fetch.{"n" * 240}]\nurl = "{{base}}/files/hello.txt"\n')
    c.mlb("lock").clear_error(code=3)
    expect(c.lock_text() == before, "the lock changed")


@drill("control-char-in-url", "a control character in a manifest URL")
def _(c: Ctx) -> None:
    c.p.write_manifest('[fetch.hello]\nurl = "{base}/files/hel\\u0001lo.txt"\n')
    c.mlb("lock").clear_error("url", code=3)


@drill("store-add-name-traversal", "store add --name ../../evil and --name a/b")
def _(c: Ctx) -> None:
    src = c.tmp / "mine.bin"  # read by store add, so not a watched file
    src.write_bytes(b"my own bytes\n")
    c.mlb("store", "add", str(src), "--name", "ok.bin").ok()
    for name in ("../../evil", "a/b"):
        c.mlb("store", "add", str(src), "--name", name).clear_error(name)
    expect(not list(c.tmp.rglob("evil")) and not (c.tmp.parent / "evil").exists(), "an `evil` file was written")


@drill("params-extreme", "params 1e308, nan and a huge strip_components")
def _(c: Ctx) -> None:
    lock_here(c)
    before = c.lock_text()
    base = c.p.manifest_path.read_text()
    cases = [
        ('[build.big]\nbuilder = "concat"\ninputs = {{ a = "hello" }}\nparams = {{ sleep = 1e308 }}\n', "sleep"),
        ('[build.nan]\nbuilder = "concat"\ninputs = {{ a = "hello" }}\nparams = {{ sleep = nan }}\n', "sleep"),
        ('[fetch.arch2]\nurl = "{base}/arch/data.tar.gz"\nunpack = "tar.gz"\nstrip_components = 100000000000\n',
         "strip_components"),
    ]
    for text, param in cases:
        c.p.manifest_path.write_text(base)
        c.p.append_manifest(text)
        c.mlb("lock").clear_error(param, code=3)
    expect(c.lock_text() == before, "the lock changed")


@drill("mirror-never-answers", "an HTTP mirror that accepts and never answers, 20 files")
def _(c: Ctx) -> None:
    names = [f"f{i:02d}.txt" for i in range(20)]
    for n in names:
        c.p.route(f"/many/{n}", Serve(n.encode() * 10))
    c.p.append_manifest('[fetch.many]\nbase_url = "{base}/many/"\nfiles = [' + ", ".join(f'"{n}"' for n in names)
                        + "]\n")
    lock_here(c)
    shutil.rmtree(c.store, ignore_errors=True)
    hang = LoopbackServer()
    hang.routes = Everything(Hang(max_s=60))
    hang.start()
    try:
        r = c.mlb("realize", "many", "--mirror", f"url+{hang.base}", env={"MLBUILD_READ_TIMEOUT": "1"}, timeout=300)
    finally:
        hang.stop()
    r.ok()
    expect(r.wall < 15, f"20 files cost {r.wall:.1f} s with a 1 s read timeout: the dead mirror was retried")
    expect("skip" in r.err.lower() and str(hang.port) in r.err, f"the dead mirror is not reported as skipped:\n{r}")


@drill("mirror-wrong-bytes", "an HTTP mirror serving wrong bytes, upstream right")
def _(c: Ctx) -> None:
    lock_here(c)
    shutil.rmtree(c.store, ignore_errors=True)
    bad = LoopbackServer()
    bad.routes = Everything(Serve(b"not the bytes you locked\n"))
    bad.start()
    try:
        r = c.mlb("realize", "hello", "--mirror", f"url+{bad.base}")
    finally:
        bad.stop()
    r.ok()
    expect(str(bad.port) in r.err, f"the mirror that served wrong bytes is not mentioned:\n{r}")


@drill("lock-404-truthful", "lock with an artifact whose URL answers 404")
def _(c: Ctx) -> None:
    lock_here(c)
    before = c.lock_text()
    c.p.route("/files/gone.txt", Status(404, b"gone"))
    c.p.append_manifest('[fetch.gone]\nurl = "{base}/files/gone.txt"\n')
    r = c.mlb("lock")
    r.clear_error("404")
    expect("could not be reached" not in r.err, f"a 404 reported as a network problem:\n{r}")
    expect(c.lock_text() == before, "the lock changed")


@drill("lock-unsafe-archive-truthful", "lock with an archive holding ../evil")
def _(c: Ctx) -> None:
    lock_here(c)
    before = c.lock_text()
    bad = make_tar_gz([("data", "d", b"", 0o755), ("data/../../evil", "f", b"pwned\n", 0o644)])
    c.p.route("/arch/bad.tar.gz", Serve(bad))
    c.p.append_manifest('[fetch.badarch]\nurl = "{base}/arch/bad.tar.gz"\nunpack = "tar.gz"\n')
    r = c.mlb("lock")
    r.clear_error("badarch")
    expect("could not be reached" not in r.err, f"an unsafe archive reported as a network problem:\n{r}")
    expect(c.lock_text() == before, "the lock changed")
    expect(not list(c.tmp.rglob("evil")), "the archive wrote `evil`")


@drill("archive-bomb", "a 64 KiB tar.gz expanding to 256 MiB")
def _(c: Ctx) -> None:
    import gzip
    import io
    import tarfile

    class Zeros:
        """A file object of ``n`` zero bytes (tarfile reads it in chunks)."""

        def __init__(self, n: int) -> None:
            self.left = n

        def read(self, size: int = -1) -> bytes:
            n = self.left if size < 0 else min(size, self.left)
            self.left -= n
            return bytes(n)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        ti = tarfile.TarInfo("bomb/zeros")
        ti.size = 256 << 20
        tf.addfile(ti, Zeros(ti.size))  # type: ignore[arg-type]
    bomb = gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
    c.p.route("/arch/bomb.tar.gz", Serve(bomb))
    c.p.write_manifest('[fetch.bomb]\nurl = "{base}/arch/bomb.tar.gz"\nunpack = "tar.gz"\n')
    r = c.mlb("lock", timeout=300)
    r.clear_error("bomb")
    used = sum(f.stat().st_size for f in c.tmp.rglob("*") if f.is_file() and not f.is_symlink())
    expect(used < 64 << 20, f"{used >> 20} MiB written for a {len(bomb) >> 10} KiB archive")


def _interrupt_build(c: Ctx, sig: int) -> None:
    lock_here(c)
    c.mlb("realize", "hello", "fileset").ok()
    c.p.append_manifest(SLOW)
    env = c.p.env()
    env["TMPDIR"] = str(c.tmp / "tmpdir")
    proc = subprocess.Popen([sys.executable, "-m", "mlbuild", *c.p.args(("realize", "slowcat"), None)],
                            cwd=c.p.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        expect(wait_for(lambda: bool(builder_pids(c)), 30), "the builder did not start")
        c.started.extend(builder_pids(c))
        time.sleep(0.3)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    gone = wait_for(lambda: not builder_pids(c), 3)
    expect(gone, f"the builder outlived realize ({signal.Signals(sig).name}): pids {builder_pids(c)}")
    if sig == signal.SIGTERM:
        expect(proc.returncode in (130, 143), f"SIGTERM: exit {proc.returncode}, expected 130 or 143")
        expect("interrupted" in err.lower(), f"SIGTERM: no `interrupted` message:\n{err[-800:]}")
    expect(not [n for n in entries(c) if n.endswith("-slowcat")], "a half-built entry is visible")
    c.mlb("realize", "slowcat").ok()


@drill("kill-9-realize-builder-dies", "kill -9 of realize while a builder runs")
def _(c: Ctx) -> None:
    _interrupt_build(c, signal.SIGKILL)


@drill("sigterm-realize-builder-dies", "SIGTERM of realize while a builder runs")
def _(c: Ctx) -> None:
    _interrupt_build(c, signal.SIGTERM)


@drill("lock-blake3-mismatch", "the lock's blake3 of a file edited (sha256 still right)")
def _(c: Ctx) -> None:
    lock_here(c)

    def flip(block: str) -> str:
        return re.sub(r'(blake3 = ")([0-9a-f])', lambda m: m.group(1) + ("0" if m.group(2) != "0" else "1"), block)

    c.p.lock_path.write_text(edit_artifact(c.lock_text(), "hello", flip))
    shutil.rmtree(c.store, ignore_errors=True)
    c.mlb("realize", "hello").clear_error("blake3")
    expect(not [n for n in c.p.registered() if n.endswith("-hello.txt")], "an entry failing its blake3 is registered")


# -- running ---------------------------------------------------------------------------------------
def check_after(c: Ctx) -> list[str]:
    problems = []
    if (c.store / ".mlbuild").exists():
        try:
            v = c.mlb("store", "verify", timeout=120)
            if v.code != 0:
                problems.append(f"store verify is not clean after the drill: {v}")
        except subprocess.TimeoutExpired:
            problems.append("store verify did not finish in 120 s")
    for w in c.watched:
        if not w.path.exists():
            problems.append(f"{w.path} was removed")
            continue
        st = w.path.stat()
        if st.st_atime_ns != w.atime_ns:
            problems.append(f"{w.path} was read")
        if st.st_mtime_ns != w.mtime_ns or w.path.read_bytes() != w.data:
            problems.append(f"{w.path} was changed")
    return problems


def run_one(name: str, fn: Callable[[Ctx], None], verbose: bool) -> tuple[str, str]:
    tmp = Path(tempfile.mkdtemp(prefix=f"mlbuild-drill-{name}-"))
    server = LoopbackServer().start()
    c = Ctx(tmp, Project(tmp / "proj", server))
    (tmp / "tmpdir").mkdir()
    c.watch(tmp / "outside" / "sentinel.txt", b"outside the store: never read, changed or removed\n")
    outcome, why = "passed", ""
    try:
        fn(c)
    except NotRun as e:
        outcome, why = "not run", str(e)
    except DrillFailed as e:
        outcome, why = "failed", str(e)
    except subprocess.TimeoutExpired as e:
        outcome, why = "failed", f"timed out: {' '.join(map(str, e.cmd))[-200:]}"
    except Exception:
        outcome, why = "failed", "the drill itself crashed:\n" + traceback.format_exc(limit=3)
    finally:
        server.stop()
    problems = check_after(c)
    if problems and outcome != "not run":
        outcome = "failed"
        why = "\n".join(filter(None, [why, *problems]))
    for pid in c.started:  # a builder that outlived its realize (a failed drill): end it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["chmod", "-R", "u+w", str(tmp)], capture_output=True)
    shutil.rmtree(tmp, ignore_errors=True)
    if verbose and why:
        why = why + f"\n(temp project was {tmp})"
    return outcome, why


def reexec_in_netns() -> None:
    """Run this script again in a private user+network namespace with only loopback, if possible."""
    if os.environ.get(NETNS_ENV) is not None:
        return
    probe = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True)
    if probe.returncode != 0:
        os.environ[NETNS_ENV] = "0"
        return
    env = {**os.environ, NETNS_ENV: "1"}
    cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv]
    os.execvpe("unshare", cmd, env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", default="", help="run only drills whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the drills and exit")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    chosen = [(n, f, fn) for n, f, fn in DRILLS if a.k in n]
    if a.list:
        for n, f, _ in chosen:
            print(f"{n:32} {f}")
        return 0
    reexec_in_netns()
    counts = {"passed": 0, "failed": 0, "not run": 0}
    for name, fault, fn in chosen:
        t0 = time.monotonic()
        outcome, why = run_one(name, fn, a.verbose)
        counts[outcome] += 1
        print(f"{outcome.upper():8} {name} ({time.monotonic() - t0:.1f} s): {fault}", flush=True)
        if why:
            print("         " + why.replace("\n", "\n         "), flush=True)
    tail = f", {counts['not run']} not run" if counts["not run"] else ""
    print(f"\n{counts['passed']} passed, {counts['failed']} failed{tail}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
