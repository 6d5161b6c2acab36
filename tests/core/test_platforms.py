"""Python packages locked for several platforms: each gets its own exact wheel set, and
`realize` picks the set of the machine it runs on.  pip resolves from a local find-links
directory of small wheels (no index), exactly as it would from any configured index."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mlbuild import graph as graphmod
from mlbuild import lock as lockmod
from mlbuild import manifest as manifestmod
from mlbuild.cli import main
from mlbuild.errors import LockError


def _wheel(d: Path, platform_tag: str) -> Path:
    name = f"tinypkg-1.0-py3-none-{platform_tag}.whl"
    with zipfile.ZipFile(d / name, "w") as z:
        z.writestr("tinypkg/__init__.py", f"PLATFORM = {platform_tag!r}\n")
        z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        z.writestr("tinypkg-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: mlbuild-tests\nRoot-Is-Purelib: false\n"
                   f"Tag: py3-none-{platform_tag}\n")
        z.writestr("tinypkg-1.0.dist-info/RECORD", "")
    return d / name


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "manylinux_2_28_x86_64")
    _wheel(wheels, "manylinux_2_28_aarch64")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("MLBUILD_NO_PROGRESS", "1")
    root = tmp_path / "project"
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "py.toml").write_text(
        '[pypi.tiny]\nrequirements = ["tinypkg==1.0"]\nplatforms = ["aarch64-linux", "x86_64-linux"]\n')
    monkeypatch.chdir(root)
    return root


def test_each_platform_gets_its_own_wheels_and_realize_picks_the_host_set(project: Path, capsys, monkeypatch) -> None:
    host = graphmod.host_platform()
    if host["system"] not in ("x86_64-linux", "aarch64-linux"):
        raise AssertionError(f"this test expects a Linux x86_64 or aarch64 host, found {host['system']}")
    other = "aarch64-linux" if host["system"] == "x86_64-linux" else "x86_64-linux"
    assert main(["lock", "--store", "store"]) == 0
    lock = lockmod.read(project / "lock" / "mlbuild.lock")
    assert lock.platform == host["system"]
    mine, theirs = lock.artifacts["tiny"], lock.artifacts[f"tiny@{other}"]
    assert [f.path for f in mine.files] == [f"tinypkg-1.0-py3-none-manylinux_2_28_{host['system'].split('-')[0]}.whl"]
    assert [f.path for f in theirs.files] == [f"tinypkg-1.0-py3-none-manylinux_2_28_{other.split('-')[0]}.whl"]
    assert mine.hash.sha256 != theirs.hash.sha256
    assert main(["lock", "--check"]) == 0

    manifest = manifestmod.load(project / "manifests")
    assert graphmod.plan(manifest, lock, ["tiny"]).nodes["tiny"].artifact == mine
    # the same lock, read on a machine of the other platform, uses that platform's wheels
    monkeypatch.setattr(graphmod, "host_platform", lambda: {"system": other, "python": host["python"]})
    assert graphmod.plan(manifest, lock, ["tiny"]).nodes["tiny"].artifact == theirs

    # without the other platform declared, the lock says the extra set is no longer wanted
    (project / "manifests" / "py.toml").write_text('[pypi.tiny]\nrequirements = ["tinypkg==1.0"]\n')
    capsys.readouterr()
    assert main(["lock", "--check"]) != 0
    assert f"`tiny@{other}` is locked but no manifest declares it" in capsys.readouterr().err
    # re-locked that way, a machine of the other platform is told what to do
    assert main(["lock", "--store", "store"]) == 0
    relocked = lockmod.read(project / "lock" / "mlbuild.lock")
    assert set(relocked.artifacts) == {"tiny"}
    manifest = manifestmod.load(project / "manifests")
    with pytest.raises(LockError, match=f"locked to wheels for `{host['system']}`, but this machine is `{other}`"):
        graphmod.plan(manifest, relocked, ["tiny"])


def test_an_unknown_platform_is_a_manifest_error(project: Path, capsys) -> None:
    (project / "manifests" / "py.toml").write_text(
        '[pypi.tiny]\nrequirements = ["tinypkg"]\nplatforms = ["sparc-solaris"]\n'
    )
    assert main(["lock"]) == 3
    err = capsys.readouterr().err
    assert "manifests/py.toml:3: `pypi.tiny.platforms`: unknown platform 'sparc-solaris'" in err
    assert "known platforms: aarch64-linux, x86_64-linux" in err
    assert not (project / "lock").exists()


def test_mirror_export_hands_another_platform_its_wheels(project: Path, capsys) -> None:
    host = graphmod.host_platform()["system"]
    other = "aarch64-linux" if host == "x86_64-linux" else "x86_64-linux"
    assert main(["lock", "--store", "store"]) == 0
    lock = lockmod.read(project / "lock" / "mlbuild.lock")
    assert main(["realize", "tiny", "--store", "store"]) == 0
    assert main(["mirror", "export", "tiny", "cas", "--store", "store", "--platform", other]) == 0
    exported = {p.name for p in (project / "cas" / "sha256").iterdir()}
    assert exported == {lock.artifacts["tiny"].files[0].sha256, lock.artifacts[f"tiny@{other}"].files[0].sha256}
    capsys.readouterr()
    assert main(["mirror", "export", "tiny", "cas2", "--store", "store", "--platform", "riscv-nowhere"]) != 0
    assert "`tiny` has no wheels locked for `riscv-nowhere`" in capsys.readouterr().err
