"""Helpers of the project / path-input / `mlbuild add` tests: mlbuild in-process, in a directory of
one's own outside the checkout, with the defaults a user gets (no --manifests/--lock/--store)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Ran:
    code: int
    out: str
    err: str


def mb(capsys: pytest.CaptureFixture[str], *argv: str, expect: int | None = 0) -> Ran:
    """``mlbuild ARGV`` in-process (the working directory is the caller's), output captured."""
    from mlbuild.cli import main

    capsys.readouterr()
    code = main(list(argv))
    cap = capsys.readouterr()
    if expect is not None:
        assert code == expect, f"mlbuild {' '.join(argv)} exited {code}, expected {expect}\n{cap.out}\n{cap.err}"
    return Ran(code, cap.out, cap.err)


def new_project(root: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """`mlbuild init ROOT`; returns the manifest it wrote."""
    mb(capsys, "init", str(root))
    (manifest,) = sorted((root / "manifests").glob("*.toml"))
    return manifest
