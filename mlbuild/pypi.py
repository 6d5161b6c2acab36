"""Python packages through pip: resolve requirements to exact files, fetch them by name.

pip is the client: it finds files through whatever index the user has
configured (``pip config``, ``PIP_INDEX_URL``, ``--find-links``), so the lock
records only names, versions, file names and hashes, never an index URL.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import FetchError, HashMismatchError
from .hashing import ContentHash, hash_file

_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")
_SDIST_RE = re.compile(r"^(?P<name>.+)-(?P<version>[^-]+)\.(tar\.gz|zip)$")


# mlbuild's platform names -> the wheel platform tags pip may pick for them, best first.
PLATFORM_TAGS: dict[str, tuple[str, ...]] = {
    "x86_64-linux": (
        *(f"manylinux_2_{v}_x86_64" for v in range(39, 16, -1)), "manylinux2014_x86_64", "linux_x86_64",
    ),
    "aarch64-linux": (
        *(f"manylinux_2_{v}_aarch64" for v in range(39, 16, -1)), "manylinux2014_aarch64", "linux_aarch64",
    ),
}


def variant_name(name: str, platform: str) -> str:
    """The lock's name for a `pypi` set's wheels on a platform other than the lock's own."""
    return f"{name}@{platform}"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_filename(filename: str) -> tuple[str, str]:
    """(normalized name, version) of a wheel or sdist file name."""
    m = _WHEEL_RE.match(filename) or _SDIST_RE.match(filename)
    if not m:
        raise FetchError(f"`{filename}` is not a wheel or sdist file name")
    return normalize(m.group("name")), m.group("version")


def _pip(args: Sequence[str], what: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "-q", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-6:])
        raise FetchError(
            f"pip could not download {what}:\n{tail}",
            hints=["check that pip reaches a package index (`pip config list`), or pass a `--mirror` "
                   "made by `mlbuild mirror export`"],
        )


def resolve_wheels(requirements: Sequence[str], dest: Path, *, platform: str | None = None,
                   python: str | None = None) -> list[Path]:
    """Resolve ``requirements`` (with dependencies) into wheels in ``dest``: for this machine,
    or for ``platform`` (a key of PLATFORM_TAGS) and CPython ``python`` ("3.11")."""
    dest.mkdir(parents=True, exist_ok=True)
    target: list[str] = []
    if platform is not None:
        assert python is not None
        abi = "cp" + python.replace(".", "")
        for tag in PLATFORM_TAGS[platform]:
            target += ["--platform", tag]
        target += ["--python-version", python, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                   "--abi", "none"]
    what = ", ".join(requirements) + (f" for {platform}" if platform else "")
    _pip(["--only-binary", ":all:", *target, "--dest", str(dest), *requirements], what)
    return sorted(dest.iterdir())


def resolve_sdist(package: str, specifier: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    _pip(["--no-deps", "--no-binary", ":all:", "--dest", str(dest), f"{package}{specifier}"],
         f"the source distribution of {package}{specifier}")
    files = sorted(dest.iterdir())
    if len(files) != 1:
        raise FetchError(f"expected one source distribution of `{package}`, pip produced {[f.name for f in files]}")
    return files[0]


def download_exact(files: Sequence[tuple[str, str, str, str, int]], dest: Path, *, sdist: bool = False) -> None:
    """Fetch exact files (filename, package, version, sha256, size) into ``dest``; check each hash."""
    if not files:
        return
    dest.mkdir(parents=True, exist_ok=True)
    scratch = dest.parent / (dest.name + ".pip")
    scratch.mkdir(exist_ok=True)
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    _pip(["--no-deps", *kind, "--dest", str(scratch), *[f"{pkg}=={ver}" for _, pkg, ver, _, _ in files]],
         ", ".join(f"{pkg}=={ver}" for _, pkg, ver, _, _ in files))
    for filename, pkg, ver, sha, size in files:
        got_path = scratch / filename
        if not got_path.exists():
            found = ", ".join(sorted(p.name for p in scratch.iterdir()))
            raise FetchError(
                f"pip did not deliver `{filename}` for {pkg}=={ver} (it delivered: {found})",
                hints=["the configured index may not carry that file for this platform; "
                       "lock on this platform with `mlbuild lock --update NAME`"],
            )
        got: ContentHash = hash_file(got_path)
        if got.sha256 != sha:
            raise HashMismatchError(artifact=f"{pkg}=={ver}", url=f"pip index file `{filename}`",
                                    expected=f"sha256:{sha}", got=f"sha256:{got.sha256}",
                                    expected_size=size, got_size=got.size,
                                    hints=["the index served other bytes under the same file name"])
        got_path.rename(dest / filename)
    for p in scratch.iterdir():
        p.unlink()
    scratch.rmdir()
