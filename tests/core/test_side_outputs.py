"""Side outputs (`BuildContext.side`): kept beside an entry in the store's metadata, never in the
entry or its hash; handed to dependents read-only; left alone by `realize --check`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlbuild import builders
from tests.core.project import Project

PROBE = Path(__file__).with_name("side_probe.py")


@pytest.fixture
def sides(locked: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.setattr(builders, "_FILES", dict(builders._FILES))
    builders.register("side-probe", PROBE)
    locked.append_manifest('[build.first]\nbuilder = "side-probe"\ninputs = {{ a = "hello" }}\n'
                           '[build.second]\nbuilder = "side-probe"\ninputs = {{ a = "first" }}\n')
    yield locked


def test_side_outputs_live_beside_the_entry_and_reach_dependents(sides: Project) -> None:
    p = sides
    p.cli("realize", "second")
    first, second = p.entry("first"), p.entry("second")
    side = p.store_dir / ".mlbuild" / "side" / first / "log.txt"
    log = side.read_text()
    assert len(log.strip()) == 16
    assert sorted(x.name for x in (p.store_dir / first).iterdir()) == ["out.txt"], "never inside the entry"
    assert (p.store_dir / second / "input-side-log.txt").read_text() == log
    # `--check` rebuilds `first` (its side log would differ): the entry is bit-identical, the kept log untouched
    r = p.cli("realize", "first", "--check")
    assert "bit-identical" in r.err
    assert side.read_text() == log
    assert (p.store_dir / ".mlbuild" / "side" / second / "log.txt").is_file()
