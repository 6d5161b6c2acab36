"""A store never loses data: it knows it is a store, gc only collects what it registered,
a lost or damaged registry is rebuilt from the entries on disk, a read-only store still reads."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild.errors import CorruptEntryError
from mlbuild.hashing import ContentHash, hash_bytes
from mlbuild.store import Store
from tests.core.project import Project


def user_files(d: Path) -> dict[str, bytes]:
    """A user's things: a note, a docs folder, photos."""
    files = {"notes.txt": b"my notes\n", "docs/index.md": b"# docs\n", "photos/cat.jpg": b"\xff\xd8 not really\n"}
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return files


def still_there(d: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (d / rel).read_bytes() == data, rel


def contents(p: Project) -> dict[str, tuple[int, int]]:
    """The project's snapshot less the registry's own files (SQLite opens make and drop -wal/-shm)."""
    return {k: v for k, v in p.snapshot().items()
            if not k.endswith("/.mlbuild") and "/.mlbuild/db.sqlite" not in k}


def registry(p: Project) -> Path:
    return p.store_dir / ".mlbuild" / "db.sqlite"


def drop_registry(p: Project) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{registry(p)}{suffix}").unlink(missing_ok=True)


def test_store_pointed_at_a_users_folder_is_refused_and_nothing_is_touched(locked: Project, tmp_path: Path) -> None:
    p = locked
    home = tmp_path / "home"
    files = user_files(home)
    for argv in (("gc",), ("gc", "--dry-run"), ("store", "verify"), ("realize", "hello")):
        r = p.cli(*argv, store=home, expect=5)
        assert r.error == f"error: `{home}` is not empty and is not an mlbuild store (no `.mlbuild/store.json`)"
        assert "hint: pass `--store DIR`" in r.err
    still_there(home, files)
    assert sorted(os.listdir(home)) == ["docs", "notes.txt", "photos"]
    # an empty directory becomes a store
    empty = tmp_path / "empty"
    empty.mkdir()
    p.cli("realize", "hello", store=empty)
    assert (empty / ".mlbuild" / "store.json").is_file()


def test_gc_leaves_what_is_not_mlbuilds_alone_and_the_dry_run_shows_everything(locked: Project) -> None:
    p = locked
    p.cli("realize", "bundle")
    rooted = p.registered()
    files = user_files(p.store_dir)
    stale = p.store_dir / ".mlbuild" / "tmp" / "x-killed.123.abcd"
    stale.mkdir(parents=True)
    (stale / "half").write_bytes(b"12345")
    r = p.cli("gc", "--dry-run")
    assert r.out.splitlines() == ["would remove stale temporary .mlbuild/tmp/x-killed.123.abcd (5 bytes)"]
    for name in ("docs", "notes.txt", "photos"):
        assert f"left alone (not mlbuild's): {name}" in r.err
    assert stale.exists()
    r = p.cli("gc")
    assert r.out.splitlines() == ["removed stale temporary .mlbuild/tmp/x-killed.123.abcd (5 bytes)"]
    assert "left alone (not mlbuild's): notes.txt" in r.err
    still_there(p.store_dir, files)
    assert not stale.exists()
    assert p.registered() == rooted
    p.cli("store", "verify")


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_registry_stops_verify_and_gc_and_repair_rebuilds_it(locked: Project, how: str) -> None:
    p = locked
    p.cli("realize", "bundle")
    before = p.registered()
    (p.store_dir / "notes.txt").write_bytes(b"mine\n")
    if how == "deleted":
        drop_registry(p)
    else:
        con = sqlite3.connect(registry(p))
        con.executescript("DELETE FROM refs; DELETE FROM roots; DELETE FROM realisations; DELETE FROM entries;")
        con.close()
    snapshot = contents(p)
    r = p.cli("store", "verify", expect=5)
    if how == "deleted":
        assert r.error == f"error: the store registry `{registry(p)}` is missing"
    else:
        assert r.error == "error: 6 entries on disk are missing from the registry (0 registered entries verified)"
        assert sum(line.startswith("not registered: ") for line in r.err.splitlines()) == 6
    assert "store verify --repair" in r.err
    r = p.cli("gc", expect=5)
    assert "nothing was collected" in r.error and "store verify --repair" in r.err
    assert contents(p) == snapshot  # neither refused command touched anything
    r = p.cli("store", "verify", "--repair")
    assert "registered 6 entries from disk" in r.err
    assert p.registered() == before
    p.cli("store", "verify")
    # references and roots came back too: gc keeps the whole closure, and the note
    assert p.cli("gc").out == ""
    assert p.registered() == before and p.on_disk() == before | {"notes.txt"}
    # and the rebuilt registry is used: realize has nothing to do
    n = p.server.total_requests()
    p.cli("realize", "bundle")
    assert p.server.total_requests() == n


@pytest.mark.parametrize("damage", ["header", "pages"])
def test_a_damaged_registry_is_a_clear_error_and_repair_keeps_it_aside(locked: Project, damage: str) -> None:
    p = locked
    p.cli("realize", "greeting")
    before = p.registered()
    Store(p.store_dir).close()  # checkpoint the WAL into the file
    data = bytearray(registry(p).read_bytes())
    assert len(data) >= 4096 * 3
    if damage == "header":
        data[:100] = b"\x5a" * 100
    else:
        for i in range(4096, len(data)):
            data[i] = (i * 7) & 0xFF
    registry(p).write_bytes(bytes(data))
    for argv in (("store", "verify"), ("gc",), ("gc", "--dry-run"), ("realize", "greeting")):
        r = p.cli(*argv, expect=5)
        assert r.error.startswith(f"error: the store registry `{registry(p)}` is damaged"), (argv, r.err)
        assert "hint: run `mlbuild store verify --repair`" in r.err and "Traceback" not in r.err
    r = p.cli("store", "verify", "--repair")
    aside = Path(f"{registry(p)}.damaged-1")
    assert f"moved the damaged registry aside: {aside}" in r.err
    assert aside.read_bytes() == bytes(data)  # kept, never deleted
    assert p.registered() == before
    p.cli("store", "verify")


def test_marker_and_registry_of_different_stores_disagree(locked: Project, tmp_path: Path) -> None:
    p = locked
    p.cli("realize", "hello")
    other = tmp_path / "other"
    p.cli("realize", "fileset", store=other)
    Store(other).close()
    drop_registry(p)
    shutil.copyfile(other / ".mlbuild" / "db.sqlite", registry(p))
    for argv in (("store", "verify"), ("gc",)):
        r = p.cli(*argv, expect=5)
        assert "does not belong to this store" in r.error and "store verify --repair" in r.err
    p.cli("store", "verify", "--repair")
    assert {n.split("-", 1)[1] for n in p.registered()} == {"hello.txt"}


def test_repair_quarantines_what_it_cannot_vouch_for_and_never_deletes(locked: Project) -> None:
    p = locked
    p.cli("realize", "greeting")
    greeting = p.entry("greeting")
    hello = p.entry("hello.txt")
    drop_registry(p)
    # the built entry's bytes changed while the registry was gone; a stray entry-like dir has no metadata
    out = p.store_dir / greeting / "result.txt"
    os.chmod(out.parent, 0o755)
    os.chmod(out, 0o644)
    out.write_bytes(b"tampered\n")
    stray = p.store_dir / ("0" * 32 + "-stray")
    stray.mkdir()
    (stray / "f").write_bytes(b"x")
    r = p.cli("store", "verify", "--repair")
    assert f"quarantined: {greeting}: content changed" in r.err
    assert f"quarantined: {'0' * 32}-stray: no metadata vouches for it" in r.err
    q = p.store_dir / ".mlbuild" / "quarantine"
    assert (q / greeting / "result.txt").read_bytes() == b"tampered\n"
    assert (q / stray.name / "f").read_bytes() == b"x"
    assert hello in p.registered() and greeting not in p.registered()
    # realize builds it again next to the quarantined copy
    p.cli("realize", "greeting")
    p.cli("store", "verify")


def test_a_crash_between_rename_and_register_is_registered_by_repair(locked: Project) -> None:
    """An entry renamed into place whose registration never happened (kill -9) is re-hashed, not lost."""
    p = locked
    p.cli("realize", "hello")
    hello = p.entry("hello.txt")
    con = sqlite3.connect(registry(p))
    con.executescript(f"DELETE FROM roots; DELETE FROM entries WHERE name='{hello}';")
    con.close()
    assert "gc cannot tell what they need" in p.cli("gc", expect=5).error
    p.cli("store", "verify", "--repair")
    assert p.registered() == {hello}


def _ro_mlbuild(p: Project, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``mlbuild ARGV`` with the project's store bind-mounted read-only (a private mount namespace)."""
    import shlex

    store = shlex.quote(str(p.store_dir))
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "mlbuild", *p.args(tuple(argv), None)])
    script = f"mount --bind {store} {store} && mount -o remount,ro,bind {store} && exec {cmd}"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=p.root, env=p.env(), capture_output=True,
                          text=True, timeout=120, check=False)


def _can_unshare() -> bool:
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / /mnt 2>/dev/null || mount -t tmpfs t /mnt"],
                       capture_output=True, check=False) if shutil.which("unshare") else None
    return r is not None and r.returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -m` and bind mounts (root in a private namespace)")
@pytest.mark.parametrize("plan_cache", [True, False])
def test_a_read_only_store_still_reads(locked: Project, plan_cache: bool) -> None:
    p = locked
    want = p.cli("realize", "greeting").out
    p.cli("realize", "hello")  # a second lock root row, nothing new
    if not plan_cache:
        shutil.rmtree(p.store_dir / ".mlbuild" / "plans")
    snapshot = p.snapshot()
    r = _ro_mlbuild(p, ["realize", "greeting"])
    assert r.returncode == 0 and r.stdout == want, r.stderr
    r = _ro_mlbuild(p, ["store", "verify"])
    assert r.returncode == 0 and "3 entries verified" in r.stderr, r.stderr
    for argv, what in ((["gc"], "collect garbage"), (["realize", "bundle"], "write")):
        r = _ro_mlbuild(p, argv)
        assert r.returncode == 5, r.stderr
        assert f"error: the store `{p.store_dir}` is read-only; cannot {what}" in r.stderr
        assert "Traceback" not in r.stderr
    r = _ro_mlbuild(p, ["gc", "--dry-run"])
    assert r.returncode == 0, r.stderr
    assert p.snapshot() == snapshot


def test_store_add_refuses_names_that_are_not_a_plain_file_name(locked: Project, tmp_path: Path) -> None:
    p = locked
    src = tmp_path / "f.bin"
    src.write_bytes(b"data\n")
    p.cli("store", "add", str(src))
    snapshot = p.snapshot()
    for name, why in (("../../evil", "path separator"), ("a/b", "path separator"), (".hidden", "starts with `.`"),
                      ("..", "starts with `.`"), ("x" * 300, "300 bytes long")):
        r = p.cli("store", "add", str(src), "--name", name, expect=2)
        assert r.error.startswith(f"error: `--name {name}` cannot name a store entry: ") and why in r.error
        assert "Traceback" not in r.err
    assert p.snapshot() == snapshot
    assert not list(tmp_path.rglob("evil"))


def test_commit_checks_the_blake3_it_is_given(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    data = b"some bytes\n"
    h = hash_bytes(data)
    staged = tmp_path / "staged"
    staged.write_bytes(data)
    wrong = ContentHash("flat", h.size, h.sha256, "f" * 64)
    with pytest.raises(CorruptEntryError, match=f"expected blake3 {'f' * 64}, got {h.blake3}"):
        store.commit(staged, "0" * 32 + "-x", kind="fixed", method="flat", deriver={}, expected=wrong)
    assert store.entries() == [] and not (tmp_path / "s" / ("0" * 32 + "-x")).exists()
    store.commit(staged, "0" * 32 + "-x", kind="fixed", method="flat", deriver={}, expected=h)
    assert store.entries() == ["0" * 32 + "-x"]
    store.close()


def test_a_store_made_before_markers_and_sidecars_is_adopted(locked: Project) -> None:
    """An older store (no marker, no store id, no sidecars, roots keyed by the lock's hash) keeps working."""
    import hashlib

    p = locked
    p.cli("realize", "bundle")
    everything = p.registered()
    meta = p.store_dir / ".mlbuild"
    (meta / "store.json").unlink()
    shutil.rmtree(meta / "meta")
    shutil.rmtree(meta / "roots")
    con = sqlite3.connect(registry(p))
    old_root = f"lock:{p.lock_path.resolve()}:{hashlib.sha256(p.lock_path.read_bytes()).hexdigest()}"
    con.executescript(f"DELETE FROM meta WHERE key='store_id'; UPDATE roots SET root='{old_root}';")
    con.close()
    p.cli("store", "verify")
    assert (meta / "store.json").is_file()
    # relocked after an unrelated addition: the old root still holds by the lock's path
    p.append_manifest('[fetch.unrelated]\nurl = "{base}/files/hello.txt"\n')
    p.lock()
    assert p.cli("gc").out == "" and p.registered() == everything
    r = p.cli("store", "verify", "--repair")
    assert f"wrote {len(everything)} metadata files" in r.err
    # now the registry can be lost and rebuilt
    drop_registry(p)
    p.cli("store", "verify", "--repair")
    assert p.registered() == everything
    assert p.cli("gc").out == "" and p.registered() == everything  # its roots came back too


def test_the_projects_default_store_directory_becomes_a_store(locked: Project, tmp_path: Path) -> None:
    """The repository keeps `store/README.md`; the default store is made there and gc leaves it be."""
    p = locked
    store = tmp_path / "store"
    store.mkdir()
    readme = (Path(__file__).resolve().parents[2] / "store" / "README.md").read_bytes()
    (store / "README.md").write_bytes(readme)
    p.cli("realize", "hello", store=store)
    r = p.cli("gc", store=store)
    assert "README.md" not in r.err + r.out
    assert (store / "README.md").read_bytes() == readme


def test_concurrent_creation_of_a_new_store_gives_one_store(tmp_path: Path) -> None:
    """Two realizes started at once in an empty directory both create the store: they must end with
    one registry and one marker that agree (this raced: "database is locked", or two store ids)."""
    import subprocess
    import sys

    root = tmp_path / "store"
    code = ("import sys; from pathlib import Path; from mlbuild.store import Store; "
            "s = Store(Path(sys.argv[1])); print(s.marker_id(), len(s.entries()))")
    for _ in range(5):
        if root.exists():
            import shutil

            shutil.rmtree(root)
        procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
        ids = {out.split()[0] for out, _ in outs}
        assert len(ids) == 1 and Store(root).marker_id() in ids
