"""Build tools: maturin from the lock, host tools recorded in [toolchain] and checked, and
environments whose bytes do not depend on the store, the checkout or the interpreter.

The host tools are stand-ins on PATH (`c++`, `cc`, `rustc`, `cargo` scripts printing a version),
so the tests hold on any host and can "upgrade a compiler in place"."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mlbuild.manifest import BuildDecl, Manifest, PypiDecl
from tests.core.project import REPO, Project

V1 = {"c++": "c++ (Stand-in 12.2.0-14) 12.2.0", "cc": "cc (Stand-in 12.2.0-14) 12.2.0",
      "rustc": "rustc 1.95.0 (59807616e 2026-04-14)", "cargo": "cargo 1.95.0 (f2d3ce0bd 2026-03-21)"}
CXX_V2 = "c++ (Stand-in 12.2.0-15) 12.2.0"

# `hello` stands in for the LoadGen sources and the tools env: the tests never compile.
WHEEL_BUILD = """
[build.wheel]
builder = "loadgen-wheel"
inputs = {{ source = "hello", tools = "hello" }}
"""


def write_tool(d: Path, name: str, version: str) -> None:
    """A stand-in tool; replaced the way a package manager upgrades a binary (new file, rename)."""
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{name}.new"
    tmp.write_text(f"#!/bin/sh\necho '{version}'\n")
    tmp.chmod(0o755)
    os.replace(tmp, d / name)


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "hosttools"
    for name, version in V1.items():
        write_tool(d, name, version)
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("RUSTUP_TOOLCHAIN", raising=False)
    return d


@pytest.fixture
def wheel_project(project: Project, tools: Path) -> Project:
    project.append_manifest(WHEEL_BUILD)
    project.lock()
    return project


def toolchain_of(p: Project) -> dict[str, str]:
    from mlbuild import lock as lockmod

    return dict(lockmod.read(p.lock_path).toolchain)


def test_lock_records_the_exact_host_tool_versions(wheel_project: Project) -> None:
    tc = toolchain_of(wheel_project)
    assert {k: tc[k] for k in ("cxx", "cc", "rustc", "cargo")} == \
        {"cxx": V1["c++"], "cc": V1["cc"], "rustc": V1["rustc"], "cargo": V1["cargo"]}
    assert tc["cargo-lock-sha256"] == hashlib.sha256((REPO / "Cargo.lock").read_bytes()).hexdigest()
    wheel_project.cli("lock", "--check")


def test_a_lock_without_host_built_targets_records_no_toolchain(project: Project, tools: Path) -> None:
    project.lock()
    assert toolchain_of(project) == {}
    write_tool(tools, "c++", CXX_V2)
    project.cli("lock", "--check")  # nothing builds with the compiler: nothing to compare


def test_another_compiler_is_refused_by_lock_check_and_realize_until_accepted(
        wheel_project: Project, tools: Path) -> None:
    p = wheel_project
    before = p.lock_path.read_text()
    write_tool(tools, "c++", CXX_V2)  # an in-place compiler upgrade

    r = p.cli("lock", "--check", expect=4)
    assert r.error == (f"error: the lock's [toolchain] does not match this host: `c++`: the lock records "
                       f"`{V1['c++']}`, this host has `{CXX_V2}`")
    assert "mlbuild lock --accept-toolchain" in r.err

    r = p.cli("realize", "wheel", expect=4)
    assert r.error.startswith("error: `wheel` builds with the host's `c++`"), r.err
    assert f"records `{V1['c++']}`, this host has `{CXX_V2}`" in r.error
    assert "--accept-toolchain" in r.err
    assert p.registered() == set(), "a refused realize builds and fetches nothing"
    assert p.lock_path.read_text() == before

    # a target whose closure does not build with the host tools is not affected
    p.cli("realize", "greeting")

    # a plain `mlbuild lock` does not accept a new compiler behind the user's back
    p.lock()
    assert p.lock_path.read_text() == before
    p.cli("lock", "--check", expect=4)

    r = p.cli("lock", "--accept-toolchain")
    assert f"`{V1['c++']}` -> `{CXX_V2}`" in r.err
    after = p.lock_path.read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [(f'cxx = "{V1["c++"]}"', f'cxx = "{CXX_V2}"')], "only the [toolchain] line changes"
    p.cli("lock", "--check")
    r = p.cli("realize", "wheel", expect=7)  # past the check: the builder itself refuses the stand-in source
    assert "not an unpacked mlcommons-loadgen source" in r.err


def test_lock_check_names_a_changed_cargo_lock_and_a_vanished_wheel_build(wheel_project: Project) -> None:
    from mlbuild import lock as lockmod
    from mlbuild import toolchain

    lock = lockmod.read(wheel_project.lock_path)
    host = toolchain.expected(project_manifest(wheel_project))
    assert lockmod.toolchain_reasons(lock, host) == ([], [])
    moved = {**host, "cargo-lock-sha256": "0" * 64}
    stale, tools = lockmod.toolchain_reasons(lock, moved)
    assert stale == ["`Cargo.lock` changed since the lock recorded it (`[toolchain] cargo-lock-sha256`)"]
    assert tools == []
    stale, tools = lockmod.toolchain_reasons(lock, {})  # no manifest builds the wheel any more
    assert stale == ["the lock's [toolchain] records host tools, but no manifest builds with them any more"]


def project_manifest(p: Project) -> Manifest:
    from mlbuild import manifest as manifestmod

    return manifestmod.load(p.root / "manifests")


def test_realize_names_every_differing_tool(wheel_project: Project, tools: Path) -> None:
    write_tool(tools, "c++", CXX_V2)
    write_tool(tools, "rustc", "rustc 1.96.0 (0000000aa 2026-06-01)")
    r = wheel_project.cli("realize", "wheel", expect=4)
    assert "(and 1 more tool(s), listed below)" in r.error
    assert "  - `rustc`: the lock records `rustc 1.95.0 (59807616e 2026-04-14)`, this host has " \
           "`rustc 1.96.0 (0000000aa 2026-06-01)`" in r.err


def test_a_tool_missing_from_the_host_is_named_and_never_recorded(wheel_project: Project, tools: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    p = wheel_project
    before = p.lock_path.read_text()
    (tools / "rustc").unlink()
    monkeypatch.setenv("PATH", str(tools))  # the stand-ins only: no rustc anywhere
    r = p.cli("realize", "wheel", expect=4)
    assert r.error == (f"error: `wheel` builds with the host's `rustc`: the lock's [toolchain] records "
                       f"`{V1['rustc']}`, this host has no `rustc` on PATH")
    r = p.cli("lock", "--accept-toolchain")
    assert f"no `rustc` on PATH; kept `{V1['rustc']}`" in r.err
    assert p.lock_path.read_text() == before
    p.cli("lock", "--check", expect=4)


def test_plan_cache_key_follows_the_host_tools(wheel_project: Project, tools: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mlbuild import plancache

    rustup = tmp_path / "rustup"
    (rustup / "toolchains" / "1.95.0-x86_64" / "bin").mkdir(parents=True)
    write_tool(rustup / "toolchains" / "1.95.0-x86_64" / "bin", "rustc", "rustc 1.95.0")
    monkeypatch.setenv("RUSTUP_HOME", str(rustup))
    p = wheel_project

    def key() -> str:
        k = plancache.key(p.root / "manifests", p.lock_path, ["wheel"], {})
        assert k is not None
        return k

    k0 = key()
    assert key() == k0, "the key is stable while nothing changes"
    keys = {k0}
    write_tool(tools, "c++", CXX_V2)  # in-place compiler upgrade
    keys.add(key())
    write_tool(rustup / "toolchains" / "1.95.0-x86_64" / "bin", "rustc", "rustc 1.95.1")  # `rustup update`
    keys.add(key())
    monkeypatch.setenv("RUSTUP_TOOLCHAIN", "nightly")
    keys.add(key())
    # maturin is locked: another maturin is another lock, which the key covers
    p.lock_path.write_text(p.lock_path.read_text().replace("revision = 1", "revision = 1\n# maturin 1.16.1"))
    keys.add(key())
    assert len(keys) == 5


def test_the_shipped_wheel_build_runs_the_locked_maturin() -> None:
    """loadgen-pyo3 takes its maturin from a locked wheel set, pinned to one exact version."""
    from mlbuild import graph
    from mlbuild import lock as lockmod
    from mlbuild import manifest as manifestmod

    m = manifestmod.load(REPO / "manifests")
    lock = lockmod.read(REPO / "lock" / "mlbuild.lock")
    g = graph.plan(m, lock, ["loadgen-pyo3"])
    tools_env = g.nodes[g.nodes["loadgen-pyo3"].inputs["tools"]]
    assert tools_env.builder == "python-env"
    tools_set = tools_env.inputs["packages"]
    locked = g.nodes[tools_set].artifact
    assert locked is not None and [f.package for f in locked.files] == ["maturin"]
    decl = m.decls[tools_set]
    assert isinstance(decl, PypiDecl)
    assert any(r.startswith("maturin==") for r in decl.requirements), "maturin is pinned, not a range"
    assert "maturin" not in str(g.nodes["loadgen-pyo3"].fingerprint.get("extra", {})), \
        "the host's maturin plays no part in the wheel's identity"
    assert set(lock.toolchain) >= {"cxx", "cc", "rustc", "cargo"}
    # every environment is installed by the locked pip, not the host's
    envs = [d for d in m.decls.values() if isinstance(d, BuildDecl) and d.builder == "python-env"]
    assert envs and all(d.inputs.get("installer") == "installer" for d in envs)
    installer = m.decls["installer"]
    assert isinstance(installer, PypiDecl) and list(installer.requirements) == ["pip==23.2.1"]


def test_loadgen_builder_runs_maturin_from_its_tools_input(tmp_path: Path) -> None:
    from mlbuild.builders import BuildContext, loadgen_wheel
    from mlbuild.errors import BuildError

    src = tmp_path / "src"
    src.mkdir()
    (src / "loadgen.cc").write_text("// stand-in\n")
    tools_env = tmp_path / "tools"
    bin_dir = tools_env / "site-packages" / "bin"
    bin_dir.mkdir(parents=True)
    called = tmp_path / "called.txt"
    (bin_dir / "maturin").write_text(
        "#!/bin/sh\n"
        f"echo \"$@\" > {called}\n"
        "while [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then out=$2; fi; shift; done\n"
        "echo wheel > \"$out/mlbuild_loadgen-0.1.0-cp311-abi3-linux_x86_64.whl\"\n")
    (bin_dir / "maturin").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    ctx = BuildContext({"source": src, "tools": tools_env}, {"profile": "release"}, out, tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    loadgen_wheel.build(ctx)
    args = called.read_text().split()
    assert args[:2] == ["build", "--locked"] and "--release" in args
    assert [w.name for w in out.iterdir()] == ["mlbuild_loadgen-0.1.0-cp311-abi3-linux_x86_64.whl"]

    empty = tmp_path / "empty-env"
    empty.mkdir()
    with pytest.raises(BuildError, match=r"holds no `site-packages/bin/maturin`"):
        loadgen_wheel.build(BuildContext({"source": src, "tools": empty}, {}, tmp_path / "out2", tmp_path / "tmp2"))


# --------------------------------------------------------------------------- environments


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(dest: Path) -> Path:
    """A real wheel with what pip rewrites: a console script, a `#!python` script and a binary script."""
    name, ver = "demo_tool", "1.0"
    di, data = f"{name}-{ver}.dist-info", f"{name}-{ver}.data"
    files = {
        f"{name}/__init__.py": b"def main() -> None:\n    print('demo')\n",
        f"{data}/scripts/demo-py": b"#!python\nprint('a script with a rewritten shebang')\n",
        f"{data}/scripts/demo-bin": b"\x7fELF stand-in binary bytes, kept as they are\n",
        f"{di}/METADATA": f"Metadata-Version: 2.1\nName: demo-tool\nVersion: {ver}\n".encode(),
        f"{di}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{di}/entry_points.txt": b"[console_scripts]\ndemo = demo_tool:main\n",
    }
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for path, body in files.items():
        w.writerow([path, _record_hash(body), len(body)])
    w.writerow([f"{di}/RECORD", "", ""])
    files[f"{di}/RECORD"] = buf.getvalue().encode()
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"{name}-{ver}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, body in files.items():
            info = zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if "/scripts/" in path else 0o100644) << 16
            z.writestr(info, body)
    return wheel


def other_interpreter(where: Path) -> str:
    """This interpreter (with its pip) reachable under another absolute path."""
    bin_dir = where / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    if sys.prefix != sys.base_prefix:  # a venv: the same one, seen from elsewhere
        shutil.copy(Path(sys.prefix) / "pyvenv.cfg", where / "pyvenv.cfg")
        lib = where / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        lib.mkdir(parents=True)
        (lib / "site-packages").symlink_to(site.getsitepackages()[0])
    r = subprocess.run([str(bin_dir / "python"), "-m", "pip", "--version"], check=False, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return str(bin_dir / "python")


def build_env(base: Path, wheel: Path, python: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    from mlbuild.builders import BuildContext, python_env

    inputs = base / "store" / "0123-wheels"
    inputs.mkdir(parents=True)
    shutil.copy(wheel, inputs / wheel.name)
    out, tmp = base / "out", base / "tmp"
    out.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("MLBUILD_PYTHON", python)
    python_env.build(BuildContext({"packages": inputs}, {}, out, tmp))
    return out


def test_environment_bytes_do_not_depend_on_paths_or_interpreter(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mlbuild.hashing import hash_path

    wheel = make_wheel(tmp_path / "dist")
    a = build_env(tmp_path / "a", wheel, sys.executable, monkeypatch)
    b = build_env(tmp_path / "somewhere" / "much" / "deeper" / "b", wheel,
                  other_interpreter(tmp_path / "other-python"), monkeypatch)
    assert hash_path(a, "tree") == hash_path(b, "tree")

    sp = a / "site-packages"
    assert sorted(p.name for p in (sp / "bin").iterdir()) == ["demo-bin"], \
        "scripts whose shebang names the interpreter are removed, binaries kept"
    assert (sp / "bin" / "demo-bin").read_bytes().startswith(b"\x7fELF") and os.access(sp / "bin" / "demo-bin", os.X_OK)
    record = (sp / "demo_tool-1.0.dist-info" / "RECORD").read_text()
    rows = list(csv.reader(io.StringIO(record)))
    listed = {r[0] for r in rows}
    on_disk = {p.relative_to(sp).as_posix() for p in sp.rglob("*") if p.is_file()}
    assert listed == on_disk, "RECORD lists exactly the installed files"
    for path, digest, size in rows:
        if path.endswith("/RECORD"):
            assert (digest, size) == ("", "")
            continue
        data = (sp / path).read_bytes()
        assert digest == _record_hash(data) and int(size) == len(data), path
    assert not any(n in record for n in ("direct_url.json", "REQUESTED", "..", str(tmp_path)))
    assert [r[0] for r in rows[:-1]] == sorted(r[0] for r in rows[:-1])


def test_two_projects_and_stores_realize_identical_environments(tmp_path: Path, project: Project) -> None:
    """Through the CLI: the same manifest in two checkouts, two stores, same names and bytes."""
    from mlbuild.hashing import hash_path
    from tests.httpserver import Serve

    wheel = make_wheel(tmp_path / "dist")
    project.route("/wheels/" + wheel.name, Serve(wheel.read_bytes()))
    project.append_manifest(f"""
[fetch.wheels]
base_url = "{{base}}/wheels/"
files = ["{wheel.name}"]

[build.env-demo]
builder = "python-env"
inputs = {{{{ packages = "wheels" }}}}
""")
    project.lock()
    other = Project(tmp_path / "elsewhere" / "clone", project.server, project.capsys)
    shutil.copytree(project.root / "manifests", other.root / "manifests", dirs_exist_ok=True)
    shutil.copy(project.lock_path, other.lock_path)
    paths = []
    for p, store in ((project, project.store_dir), (other, tmp_path / "a" / "different" / "store")):
        paths.append(Path(p.cli("realize", "env-demo", store=store).out.strip()))
    assert paths[0].name == paths[1].name and paths[0].parent != paths[1].parent
    assert hash_path(paths[0], "tree") == hash_path(paths[1], "tree")
    sp = paths[0] / "site-packages"
    assert not list(sp.glob("*.dist-info/direct_url.json"))
    assert sorted(p.name for p in (sp / "bin").iterdir()) == ["demo-bin"]


def test_environment_is_installed_by_the_locked_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `installer` input's pip runs (here a stand-in that hands over to the real pip after
    noting its arguments), and is not installed into the environment itself."""
    from mlbuild.builders import BuildContext, python_env

    marker = tmp_path / "installer-ran.txt"
    stand_in = tmp_path / "installer" / "pip-99.0-py3-none-any.whl"
    stand_in.parent.mkdir()
    with zipfile.ZipFile(stand_in, "w") as z:
        z.writestr("pip/__init__.py", "")
        z.writestr("pip/__main__.py", (
            "import os, runpy, sys\n"
            "open(os.environ['DEMO_PIP_MARKER'], 'w').write(' '.join(sys.argv[1:]))\n"
            "sys.path[:] = [p for p in sys.path if 'pip-99.0' not in p]\n"
            "for m in [m for m in sys.modules if m == 'pip' or m.startswith('pip.')]:\n"
            "    del sys.modules[m]\n"
            "runpy.run_module('pip', run_name='__main__', alter_sys=True)\n"))
    monkeypatch.setenv("DEMO_PIP_MARKER", str(marker))
    monkeypatch.setenv("MLBUILD_PYTHON", sys.executable)
    wheels = make_wheel(tmp_path / "wheels").parent
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "tmp").mkdir()
    python_env.build(BuildContext({"packages": wheels, "installer": stand_in.parent}, {}, out, tmp_path / "tmp"))
    assert marker.read_text().startswith("install --no-index --no-deps")
    assert sorted(p.name for p in (out / "site-packages").glob("*.dist-info")) == ["demo_tool-1.0.dist-info"]
