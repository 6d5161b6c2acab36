"""The lockfile: canonical text, no needless rewrites, --check, --update, unpinned, round trips."""

from __future__ import annotations

import os
import re
import shutil
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlbuild import lock as lockmod
from mlbuild import manifest as manifestmod
from mlbuild.hashing import ContentHash
from mlbuild.lock import Lock, LockedArtifact, LockedFile, Unpinned
from tests.core.project import HELLO, Project
from tests.httpserver import Serve

GOLDEN = Path(__file__).parent / "golden" / "test.lock"


def normalise(text: str, port: int) -> str:
    """Make a lock host-independent: the loopback port, the port-dependent digests, the platform."""
    text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    text = re.sub(r'^decl = "[0-9a-f]{32}"$', 'decl = "<decl>"', text, flags=re.M)
    text = re.sub(r'^manifests = "[0-9a-f]{64}"$', 'manifests = "<manifests>"', text, flags=re.M)
    text = re.sub(r'^platform = ".*"$', 'platform = "<platform>"', text, flags=re.M)
    return re.sub(r'^python = ".*"$', 'python = "<python>"', text, flags=re.M)


def test_lock_matches_the_golden_file(locked: Project) -> None:
    p = locked
    text = p.lock_path.read_text()
    # The digests the normalisation hides are checked against the manifest directly.
    m = manifestmod.load(p.root / "manifests")
    lock = lockmod.loads(text)
    assert lock.manifests == lockmod.manifests_digest(m)
    for name, art in lock.artifacts.items():
        assert art.decl == lockmod.decl_digest(m.decls[name])
    got = normalise(text, p.server.port)
    if os.environ.get("MLBUILD_TEST_ACCEPT") == "1":
        GOLDEN.write_text(got)
    assert GOLDEN.exists(), "no golden lock: run with MLBUILD_TEST_ACCEPT=1 to create it"
    assert got == GOLDEN.read_text(), "lock text changed; if on purpose, regenerate with MLBUILD_TEST_ACCEPT=1"


def test_lock_is_deterministic_across_projects(locked: Project, tmp_path: Path) -> None:
    other = Project(tmp_path / "other", locked.server, locked.capsys)
    other.lock()
    assert other.lock_path.read_text() == locked.lock_path.read_text()


def test_unchanged_lock_is_not_rewritten(locked: Project) -> None:
    p = locked
    st1 = p.lock_path.stat()
    requests = p.server.total_requests()
    r = p.lock()
    assert "unchanged:" in r.err
    st2 = p.lock_path.stat()
    assert (st2.st_ino, st2.st_mtime_ns) == (st1.st_ino, st1.st_mtime_ns)
    assert p.server.total_requests() == requests  # every pin was current: nothing fetched
    assert not list(p.lock_path.parent.glob(".*.tmp"))


def test_lock_check_names_the_changed_entry(locked: Project) -> None:
    p = locked
    p.cli("lock", "--check")
    text = p.manifest_path.read_text().replace("strip_components = 1", "strip_components = 0")
    p.manifest_path.write_text(text)
    before = p.lock_path.read_bytes()
    r = p.cli("lock", "--check", expect=4)
    assert "error: the lock does not satisfy the manifests" in r.err
    line = next(i + 1 for i, t in enumerate(text.splitlines()) if t == "[fetch.archive]")
    assert f"  - `archive` (manifests/test.toml:{line}) changed since it was locked" in r.err
    assert "hello" not in r.err
    assert p.lock_path.read_bytes() == before
    # realize refuses the stale pin too, naming it
    r = p.cli("realize", "archive", expect=4)
    assert "`archive`" in r.err
    # a removed declaration is named as well
    p.manifest_path.write_text(text.split("[fetch.archive]")[0])
    r = p.cli("lock", "--check", expect=4)
    assert "`archive` is locked but no manifest declares it any more" in r.err


def test_update_repins_only_the_named_artifact(locked: Project) -> None:
    p = locked
    old = lockmod.read(p.lock_path)
    p.route("/files/hello.txt", Serve(HELLO + b"v2\n"))
    p.lock()
    assert lockmod.read(p.lock_path) == old  # pins are current: upstream not consulted
    counts = {u: p.server.count(u) for u in ("/files/hello.txt", "/set/a.txt", "/arch/data.tar.gz")}
    r = p.lock("--update", "hello")
    assert "wrote" in r.err
    new = lockmod.read(p.lock_path)
    assert new.artifacts["hello"].hash.size == len(HELLO) + 3
    assert new.artifacts["hello"] != old.artifacts["hello"]
    assert {k: v for k, v in new.artifacts.items() if k != "hello"} == \
        {k: v for k, v in old.artifacts.items() if k != "hello"}
    assert p.server.count("/files/hello.txt") == counts["/files/hello.txt"] + 1
    assert p.server.count("/set/a.txt") == counts["/set/a.txt"]
    assert p.server.count("/arch/data.tar.gz") == counts["/arch/data.tar.gz"]
    r = p.lock("--update", "nosuch", expect=2)
    assert "`--update nosuch`" in r.err


def test_offline_lock_lists_unreachable_as_unpinned_and_writes_the_rest(project: Project, tmp_path: Path) -> None:
    p = project
    # a URL-layout mirror holding everything but `ghost`
    mirror = tmp_path / "mirror"
    host = f"127.0.0.1:{p.server.port}"
    from tests.core.project import ARCHIVE, SET_A, SET_B

    for rel, data in (("files/hello.txt", HELLO), ("set/a.txt", SET_A), ("set/sub/b.txt", SET_B),
                      ("arch/data.tar.gz", ARCHIVE)):
        (mirror / host / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / host / rel).write_bytes(data)
    p.append_manifest('[fetch.ghost]\nurl = "{base}/files/ghost.bin"\n')
    r = p.cli("lock", "--offline", "--mirror", str(mirror))
    assert "unpinned: `ghost`" in r.err
    assert p.server.total_requests() == 0
    text = p.lock_path.read_text()
    assert "[[unpinned]]" in text
    lock = lockmod.read(p.lock_path)
    assert set(lock.artifacts) == {"hello", "fileset", "archive"}
    assert set(lock.unpinned) == {"ghost"}
    assert "no mirror holds it" in lock.unpinned["ghost"].reason
    assert f'reason = "{lock.unpinned["ghost"].reason}"' in text
    # lock --check accepts the unpinned entry (it is listed), realize names why it can't
    p.cli("lock", "--check")
    r = p.cli("realize", "ghost", expect=4)
    assert "`ghost` is not pinned in the lock" in r.err
    # online again: upstream answers 404 for ghost, which is an error (not "needs network"); the lock stays
    shutil.rmtree(mirror)
    before = p.lock_path.read_bytes()
    r = p.cli("lock", expect=6)
    assert "ghost" in r.error and "HTTP 404" in r.err
    assert p.lock_path.read_bytes() == before


# --------------------------------------------------------------------------- property tests

HEX = "0123456789abcdef"
hexes = st.text(HEX, min_size=64, max_size=64)
# Any text TOML can hold (no surrogates); control characters included, they must be escaped.
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
names = st.text(string.ascii_lowercase + string.digits + "._+-", min_size=1, max_size=12).filter(
    lambda s: s[0].isalnum())


# The lock is input and its reader is as strict as the manifest reader (tests/test_fetch_hardening.py):
# file paths are relative without `.`/`..`/empty parts (one part for Python packages), URLs pass
# mlbuild.urls.check_url, package/version are printable.  Anything printable within those rules.
printable = st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn"))
segments = st.text(printable.filter(lambda c: c not in "/\\"), min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and s.isprintable())
url_chars = st.text(printable.filter(lambda c: c not in "/\\?#%"), min_size=1, max_size=8).filter(
    lambda s: s not in (".", ".."))
hosts = st.lists(st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6), min_size=1,
                 max_size=3).map(".".join).filter(lambda h: h.rsplit(".", 1)[-1][0].isalpha())  # not IPv4-like
urls = st.builds(lambda scheme, host, parts: f"{scheme}://{host}/" + "/".join(parts),
                 st.sampled_from(["http", "https"]), hosts, st.lists(url_chars, min_size=1, max_size=3))
strings = st.text(printable, min_size=1, max_size=20).filter(str.isprintable)


@st.composite
def locked_files(draw: st.DrawFn, kind: str) -> tuple[LockedFile, ...]:
    one_part = segments if kind != "fetch" else st.lists(segments, min_size=1, max_size=3).map("/".join)
    paths = draw(st.lists(one_part if kind != "fetch" else st.just("") | one_part, min_size=1, max_size=4,
                          unique=True))
    return tuple(sorted((
        LockedFile(path, draw(st.integers(0, 2**53)), draw(hexes), draw(hexes),
                   tuple(draw(st.lists(urls, max_size=3))),
                   draw(st.none() | st.text(HEX, min_size=32, max_size=32)),
                   draw(st.none() | strings), draw(st.none() | strings))
        for path in paths), key=lambda f: f.path))


@st.composite
def artifacts(draw: st.DrawFn, name: str) -> LockedArtifact:
    kind = draw(st.sampled_from(["fetch", "pypi", "sdist"]))
    return LockedArtifact(
        name, kind, draw(st.text(HEX, min_size=32, max_size=32)),
        ContentHash(draw(st.sampled_from(["flat", "tree"])), draw(st.integers(0, 2**53)), draw(hexes), draw(hexes)),
        draw(locked_files(kind)), draw(st.none() | st.sampled_from(["tar", "tar.gz", "zip"])), draw(st.integers(0, 5)),
    )


@st.composite
def locks(draw: st.DrawFn) -> Lock:
    art_names = draw(st.lists(names, max_size=4, unique=True))
    unp_names = draw(st.lists(names.filter(lambda n: n not in art_names), max_size=3, unique=True))
    return Lock(
        draw(hexes), draw(texts), draw(texts),
        {n: draw(artifacts(n)) for n in art_names},
        {n: Unpinned(n, draw(st.sampled_from(["fetch", "pypi"])), draw(texts), draw(texts)) for n in unp_names},
        draw(st.dictionaries(texts, texts, max_size=3)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(locks())
def test_lock_text_round_trips(lock: Lock) -> None:
    text = lockmod.dumps(lock)
    assert lockmod.loads(text) == lock
    assert lockmod.dumps(lockmod.loads(text)) == text  # dumps is a fixed point


@settings(max_examples=100, deadline=None)
@given(locks())
def test_lock_text_is_independent_of_insertion_order(lock: Lock) -> None:
    shuffled = Lock(lock.manifests, lock.platform, lock.python,
                    dict(reversed(list(lock.artifacts.items()))), dict(reversed(list(lock.unpinned.items()))),
                    dict(reversed(list(lock.toolchain.items()))))
    assert lockmod.dumps(shuffled) == lockmod.dumps(lock)


def test_python_packages_locked_for_another_platform_are_refused(tmp_path):
    """A lock's wheels fit the platform it was made on; elsewhere realize says so, by name."""
    import pytest

    from mlbuild import graph
    from mlbuild import lock as lockmod
    from mlbuild import manifest as manifestmod
    from mlbuild.errors import LockError
    from mlbuild.hashing import ContentHash

    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "py.toml").write_text('[pypi.deps]\nrequirements = ["numpy"]\n')
    m = manifestmod.load(mdir)
    d = m.decls["deps"]
    h = ContentHash("tree", 1, "0" * 64, "1" * 64)
    art = lockmod.LockedArtifact("deps", "pypi", lockmod.decl_digest(d), h,
                                 (lockmod.LockedFile("numpy-2.0-cp311-cp311-foo.whl", 1, "2" * 64, "3" * 64,
                                                     package="numpy", version="2.0"),))
    plat = graph.host_platform()
    other = "riscv64-plan9" if plat["system"] != "riscv64-plan9" else "x86_64-linux"
    mine = lockmod.Lock(lockmod.manifests_digest(m), plat["system"], plat["python"], {"deps": art})
    assert graph.plan(m, mine, ["deps"]).nodes["deps"].fixed
    theirs = lockmod.Lock(lockmod.manifests_digest(m), other, plat["python"], {"deps": art})
    with pytest.raises(LockError, match=f"locked to wheels for `{other}`"):
        graph.plan(m, theirs, ["deps"])
