"""The builder sandbox, with real processes: no network (never skipped), bubblewrap's file system
view (no home, read-only inputs), and builders that die with `mlbuild realize` (kill -9, SIGTERM,
SIGINT of realize alone)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlbuild import builders, sandbox
from tests.core.project import HELLO, Project, wait_for
from tests.httpserver import Serve

PROBE = Path(__file__).with_name("sandbox_probe.py")


@pytest.fixture
def probe(locked: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """A locked project where the test-only builder `sandbox-probe` is registered (in-process realizes)."""
    monkeypatch.setattr(builders, "_FILES", dict(builders._FILES))
    builders.register("sandbox-probe", PROBE)
    yield locked


def add_probe(p: Project, name: str, params: str, a: str = "hello") -> None:
    p.append_manifest(f'[build.{name}]\nbuilder = "sandbox-probe"\ninputs = {{{{ a = "{a}" }}}}\n'
                      f"params = {{{{ {params} }}}}\n")


def recorded_sandbox(p: Project, target: str) -> str:
    return str(json.loads(p.cli("show", target, "--json").out)["sandbox"])


def require_bwrap() -> None:
    if sandbox.mechanism() != "bwrap":
        pytest.skip("bubblewrap is not installed or cannot create namespaces here (`apt-get install bubblewrap`)")


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize("choice", ["auto", "bwrap", "unshare"])
def test_a_builder_cannot_reach_a_loopback_server(probe: Project, monkeypatch: pytest.MonkeyPatch,
                                                  choice: str) -> None:
    p = probe
    monkeypatch.setenv("MLBUILD_SANDBOX", choice)
    if choice == "bwrap" and (sandbox._bwrap() is None):
        pytest.skip("bubblewrap is not installed or cannot create namespaces here")
    if choice == "unshare" and sandbox.network_isolation() is None:
        pytest.skip("`unshare -n` does not work here")
    # never skipped with the default choice: a host without any isolation fails here
    assert sandbox.sandbox_name(False) in ("bwrap", "unshare-net"), \
        "no network isolation works on this host: builders could reach the network"
    p.route("/probe", Serve(b"the loopback server answered\n"))
    port = p.server.base.rsplit(":", 1)[1].split("/")[0]
    # the server is reachable from outside the sandbox ...
    assert urllib.request.urlopen(f"{p.server.base}/probe", timeout=5).read() == b"the loopback server answered\n"
    # ... and the probe works when it tries nothing forbidden (so its failure below is the sandbox's doing)
    add_probe(p, "harmless", 'read = ""')
    out = Path(p.cli("realize", "harmless").out.strip())
    assert json.loads((out / "leaks.json").read_text()) == {}
    assert recorded_sandbox(p, "harmless") == {"auto": sandbox.sandbox_name(False), "bwrap": "bwrap",
                                               "unshare": "unshare-net"}[choice]
    before = p.server.count("/probe")
    add_probe(p, "netprobe", f'connect = "127.0.0.1:{port}"')
    r = p.cli("realize", "netprobe", expect=7)
    assert f"probe: cannot connect to 127.0.0.1:{port}" in r.error
    assert "hint: build log: " in r.err
    assert f"hint: it ran in the `{recorded_sandbox(p, 'harmless')}` sandbox: no network" in r.err
    assert p.server.count("/probe") == before  # no request arrived
    assert not [n for n in p.registered() if n.endswith("-netprobe")]


# --------------------------------------------------------------------------- bubblewrap's file system


def test_bwrap_builder_sees_no_home(probe: Project) -> None:
    require_bwrap()
    p = probe
    home = Path(os.path.expanduser("~"))
    with tempfile.NamedTemporaryFile("w", dir=home, prefix=".mlbuild-sandbox-test-", suffix=".txt") as secret:
        secret.write("a secret in the user's home\n")
        secret.flush()
        assert Path(secret.name).read_text() == "a secret in the user's home\n"
        add_probe(p, "homeprobe", f'read = "{secret.name}"')
        r = p.cli("realize", "homeprobe", expect=7)
        assert f"probe: cannot read {secret.name}: [Errno 2] No such file or directory" in r.error
        assert "hint: it ran in the `bwrap` sandbox: no network, inputs read-only, only its output and build " \
               "directory writable, no access to your home" in r.err
    # while its own input is readable (a positive control: reading works in the sandbox)
    hello = p.store_dir / p.entry("hello.txt")
    add_probe(p, "inputprobe", f'read = "{hello.resolve()}"')
    out = Path(p.cli("realize", "inputprobe").out.strip())
    assert json.loads((out / "leaks.json").read_text()) == {"read": HELLO.decode()}
    assert recorded_sandbox(p, "inputprobe") == "bwrap"


def test_bwrap_inputs_are_read_only_even_for_root(probe: Project) -> None:
    require_bwrap()
    p = probe
    p.cli("realize", "fileset")
    fileset = p.store_dir / p.entry("fileset")
    before = sorted(str(x.relative_to(fileset)) for x in fileset.rglob("*"))
    add_probe(p, "writeprobe", "write_input = true", a="fileset")
    r = p.cli("realize", "writeprobe", expect=7)
    assert f"probe: cannot write {fileset.resolve()}/written-by-a-builder: [Errno 30] Read-only file system" in r.error
    assert sorted(str(x.relative_to(fileset)) for x in fileset.rglob("*")) == before
    assert p.cli("store", "verify").code == 0


# --------------------------------------------------------------------------- builders die with realize


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            out.setdefault(ppid, []).append(int(d))
    return out


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for c in tree.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


SLOW = '[build.slowcat]\nbuilder = "concat"\ninputs = {{ a = "hello", b = "fileset" }}\nparams = {{ sleep = 6.0 }}\n'


def start_slow_build(p: Project) -> tuple[subprocess.Popen[str], set[int]]:
    """`mlbuild realize slowcat` in a subprocess, once its builder sleeps; with the builder's processes."""
    p.append_manifest(SLOW)
    assert p.run("realize", "hello", "fileset").code == 0
    proc = p.spawn("realize", "slowcat")
    logs = p.store_dir / ".mlbuild" / "logs"
    wait_for(lambda: any("sleeping" in f.read_text() for f in logs.glob("*-slowcat.log")),
             what="the builder to start sleeping")
    builder = descendants(proc.pid)
    assert builder, "the builder runs as a child of realize"
    return proc, builder


def gone_soon(pids: set[int], timeout: float = 2.0) -> set[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end and any(alive(x) for x in pids):
        time.sleep(0.02)
    return {x for x in pids if alive(x)}


def realize_again_succeeds(p: Project) -> None:
    r = p.run("realize", "slowcat")
    assert r.code == 0, r.err
    assert (Path(r.out.strip()) / "result.txt").read_bytes().startswith(HELLO)
    assert p.run("store", "verify").code == 0
    assert p.on_disk() == p.registered()
    assert not list((p.store_dir / ".mlbuild" / "tmp").iterdir())


@pytest.fixture
def own_tmpdir(locked: Project, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A TMPDIR of the test's own, so that build directories of other processes don't mix in."""
    tmp = locked.root / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    return tmp


def test_kill_9_of_realize_kills_its_builder(locked: Project, own_tmpdir: Path) -> None:
    p = locked
    proc, builder = start_slow_build(p)
    try:
        os.kill(proc.pid, signal.SIGKILL)  # realize alone, not its process group
        proc.communicate(timeout=10)
        assert gone_soon(builder) == set(), "the builder outlived `mlbuild realize` (re-parented)"
    finally:
        for x in builder:
            if alive(x):
                os.kill(x, signal.SIGKILL)
    assert not [n for n in p.registered() if n.endswith("-slowcat")]
    realize_again_succeeds(p)
    assert not list((own_tmpdir / "mlbuild-build").glob("*-slowcat"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_of_realize_stop_the_build_cleanly(locked: Project, own_tmpdir: Path,
                                                              signum: int) -> None:
    p = locked
    proc, builder = start_slow_build(p)
    try:
        started = time.monotonic()
        os.kill(proc.pid, signum)  # as `kill PID` or a Ctrl-C that reaches realize only
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 4, "realize waited for the builder instead of stopping it"
        assert proc.returncode == 128 + signum, err
        assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err
        assert gone_soon(builder) == set()
    finally:
        for x in builder:
            if alive(x):
                os.kill(x, signal.SIGKILL)
    # the staging directory and the build directory are cleaned up; nothing half-built is registered
    assert not list((p.store_dir / ".mlbuild" / "tmp").iterdir())
    assert not list((own_tmpdir / "mlbuild-build").glob("*-slowcat"))
    assert not [n for n in p.registered() if n.endswith("-slowcat")]
    assert p.on_disk() == p.registered()
    realize_again_succeeds(p)


# A realize process in which the probe builder is registered (as a plugin would register it).
RUNNER = """
import sys
from pathlib import Path
from mlbuild import builders
from mlbuild.cli import main
builders.register("sandbox-probe", Path(sys.argv[1]))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("choice", ["auto", "unshare", "none"])
def test_kill_9_of_realize_kills_the_builder_and_its_children(locked: Project, own_tmpdir: Path,
                                                             monkeypatch: pytest.MonkeyPatch, choice: str) -> None:
    p = locked
    if choice == "unshare" and sandbox.network_isolation() is None:
        pytest.skip("`unshare -n` does not work here")
    monkeypatch.setenv("MLBUILD_SANDBOX", choice)
    add_probe(p, "parent", "child_sleep = 30.0")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(PROBE), *p.args(("realize", "parent"), None)],
                            cwd=p.root, env=p.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    logs = p.store_dir / ".mlbuild" / "logs"
    try:
        wait_for(lambda: any("started child" in f.read_text() for f in logs.glob("*-parent.log")),
                 what="the builder to start its child")
        tree = descendants(proc.pid)
        assert any(Path(f"/proc/{x}/cmdline").read_bytes().startswith(b"sleep\0") for x in tree), tree
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        assert gone_soon(tree) == set(), "the builder or its child outlived `mlbuild realize`"
    finally:
        for x in descendants(proc.pid) | (tree if "tree" in locals() else set()):
            if alive(x):
                os.kill(x, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_an_unknown_sandbox_choice_is_a_usage_error(locked: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    p = locked
    monkeypatch.setenv("MLBUILD_SANDBOX", "chroot")
    r = p.cli("realize", "greeting", expect=2)
    assert r.error == "error: MLBUILD_SANDBOX='chroot': expected auto, bwrap, unshare, none"
    assert "hint: unset it to use the best sandbox that works here" in r.err
    assert not [n for n in p.registered() if n.endswith("-greeting")]
