"""The sweep's parts that need no benchmark: axes and constraints, feasibility, the best point,
the Pareto front, the report, the `[sweep.NAME]` manifest kind, and shipping store entries
between stores (what a Ray node sends home) with their content hashes checked."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest

from mlbuild import manifest as manifestmod
from mlbuild import sweep, sweepreport
from mlbuild.errors import ManifestError, StoreError, UsageError
from mlbuild.rayexec import export_entries, import_entries
from mlbuild.store import Store

REPO = Path(__file__).resolve().parents[2]


def test_axes_are_typed_and_ordered_and_bad_ones_refused() -> None:
    axes = sweep.parse_axes(["sessions=1,2", "intra-op-threads=1", "scenario=Offline,Server", "x=0.5,1e3"])
    assert axes == {"sessions": (1, 2), "intra_op_threads": (1,), "scenario": ("Offline", "Server"),
                    "x": (0.5, 1000.0)}
    for bad in (["sessions"], ["sessions=1,,2"], ["sessions=1", "sessions=2"], ["sessions=1,1"]):
        with pytest.raises(UsageError):
            sweep.parse_axes(bad)


def test_constraints_parse_and_judge() -> None:
    c = sweep.parse_constraint("latency_p99_ms<=100")
    assert (c.metric, c.op, c.value) == ("latency_p99_ms", "<=", 100.0)
    assert c.holds({"latency_p99_ms": 99.5}) and not c.holds({"latency_p99_ms": 100.5})
    assert not c.holds({}), "a missing figure never satisfies a constraint"
    for bad in ("p99<=100", "latency_p99_ms=<100", "latency_p99_ms<=abc", "latency_p99_ms<=inf"):
        with pytest.raises(UsageError):
            sweep.parse_constraint(bad)


def _spec(**kw: object) -> sweep.SweepSpec:
    return sweep.make_spec("t", "t", {"sessions": (1, 2, 3, 4)}, **kw)  # type: ignore[arg-type]


def _pt(sps: float | None, p99: float | None, validity: str | None = "VALID", error: str | None = None
        ) -> sweep.Point:
    p = sweep.Point({"sessions": 1}, {"sessions": 1}, error=error, validity=validity,
                    metrics={"samples_per_second": sps, "latency_p99_ms": p99, "mAP": 33.0})
    return p


def test_best_is_the_fastest_valid_point_that_meets_the_constraints() -> None:
    spec = _spec(constraints=["latency_p99_ms<=100"])
    pts = [_pt(100, 90), _pt(150, 120), _pt(200, 50, validity="INVALID"), _pt(None, None, error="boom"),
           _pt(120, 80)]
    for p in pts:
        sweep.judge(spec, p)
    assert [p.feasible for p in pts] == [True, False, False, False, True]
    assert "latency_p99_ms<=100 (got 120)" in pts[1].violations[0]
    assert pts[2].violations == ["LoadGen result INVALID"]
    assert sweep.best(spec, pts) == 4
    assert sweep.best(sweep.make_spec("t", "t", {"a": (1, 2)}, objective="latency_p99_ms"), pts) == 4
    # ties: the earlier point
    tie = [_pt(100, 10), _pt(100, 10)]
    for p in tie:
        sweep.judge(_spec(), p)
    assert sweep.best(_spec(), tie) == 0
    assert sweep.best(_spec(), [_pt(1, 1, error="x")]) is None


def test_pareto_front_keeps_only_undominated_valid_points() -> None:
    pts = [_pt(100, 90), _pt(150, 120), _pt(90, 95), _pt(200, 50, validity="INVALID"), _pt(160, 200),
           _pt(100, 90)]
    # 2 is dominated by 0; 3 is not VALID; 5 ties 0 exactly (neither dominates the other)
    assert sweep.pareto(pts) == [0, 5, 1, 4]


def test_points_are_the_cartesian_product_with_fixed_settings() -> None:
    spec = sweep.make_spec("s", "t", {"sessions": (1, 2), "batch_size": (1, 4)}, base={"min_duration_ms": 100})
    assert spec.points() == [{"min_duration_ms": 100, "sessions": s, "batch_size": b} for s in (1, 2) for b in (1, 4)]
    assert list(spec.points()[0]) == ["min_duration_ms", "sessions", "batch_size"]
    with pytest.raises(UsageError, match="both an axis and a fixed setting"):
        sweep.make_spec("s", "t", {"sessions": (1, 2)}, base={"sessions": 1})
    with pytest.raises(UsageError, match="unknown objective"):
        sweep.make_spec("s", "t", {"sessions": (1, 2)}, objective="speed")


def test_report_is_self_contained_and_escapes_settings() -> None:
    spec = sweep.make_spec("s", "t", {"scenario": ("<b>x</b>", "Offline")})
    pts = [_pt(100, 90), _pt(None, None, error="failed <here>")]
    pts[0].settings = {"scenario": "<b>x</b>"}
    pts[1].settings = {"scenario": "Offline"}
    for p in pts:
        sweep.judge(spec, p)
    res = sweep.SweepResult(spec, pts, sweep.best(spec, pts), sweep.pareto(pts))
    html = sweepreport.render(res.document())
    assert html.count("<svg") == 2 and "<script" not in html
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html and "failed &lt;here&gt;" in html
    assert "<circle" in html and "<rect x=" in html
    table = sweep.format_table(res)
    assert "best: scenario=<b>x</b>" in table and "FAILED: failed <here>" in table and "1 of 2 point(s) failed" in table


def _manifests(tmp_path: Path, sweep_toml: str) -> Path:
    d = tmp_path / "manifests"
    shutil.copytree(REPO / "manifests", d)
    (d / "sweeps.toml").write_text(sweep_toml)
    return d


def test_sweep_manifest_kind(tmp_path: Path) -> None:
    d = _manifests(tmp_path, """
[sweep.sessions]
description = "sessions x threads"
target = "yolox-coco128-offline"
axes = { sessions = [1, 2], intra_op_threads = [1, 2] }
params = { min_duration_ms = 1000 }
constraints = ["latency_p99_ms<=5000"]
""")
    m = manifestmod.load(d)
    assert "sessions" not in m.decls and m.sweeps["sessions"].axes == {"sessions": (1, 2), "intra_op_threads": (1, 2)}
    spec = sweep.spec_for(m, "sessions", ["intra_op_threads=2", "max_query_count=5"], scenario="Offline")
    assert spec.target == "yolox-coco128-offline" and dict(spec.axes) == {"sessions": (1, 2)}
    assert dict(spec.base) == {"min_duration_ms": 1000, "intra_op_threads": 2, "max_query_count": 5,
                               "scenario": "Offline"}
    assert [c.text() for c in spec.constraints] == ["latency_p99_ms<=5000"]
    with pytest.raises(UsageError, match="no parameter has more than one value"):
        sweep.spec_for(m, "yolox-coco128-offline", ["sessions=2"])
    with pytest.raises(UsageError, match="unknown target"):
        sweep.spec_for(m, "nope", ["sessions=1,2"])


@pytest.mark.parametrize("body,msg", [
    ('target = "coco128-letterbox"\naxes = { size = [1, 2] }', "not a run declaration"),
    ('target = "yolox-coco128-offline"\naxes = { sessions = 2 }', "non-empty list"),
    ('target = "yolox-coco128-offline"\naxes = {}', "non-empty table"),
    ('target = "yolox-coco128-offline"\naxes = { sessions = [1] }\nspeed = 1', "speed"),
])
def test_bad_sweep_declarations_name_the_problem(tmp_path: Path, body: str, msg: str) -> None:
    d = _manifests(tmp_path, f"[sweep.bad]\n{body}\n")
    with pytest.raises(ManifestError) as e:
        manifestmod.load(d)
    assert msg in str(e.value) + " ".join(map(str, e.value.args))


def _commit(store: Store, name: str, files: dict[str, bytes], refs: tuple[str, ...] = ()) -> None:
    with store.entry_lock(name), store.staging(name) as tmp:
        out = tmp / "out"
        out.mkdir()
        for rel, data in files.items():
            (out / rel).write_bytes(data)
        store.commit(out, name, kind="built", method="tree", deriver={"type": "built", "test": name},
                     references=refs)
    store.add_realisation(f"{'d' * 32}-{name.split('-', 1)[1]}", name)


def test_entries_ship_between_stores_hash_checked(tmp_path: Path) -> None:
    a, b = Store(tmp_path / "a"), Store(tmp_path / "b")
    dep, top = f"{'1' * 32}-dep", f"{'2' * 32}-top"
    _commit(a, dep, {"x.txt": b"dependency"})
    _commit(a, top, {"y.txt": b"result", "z.bin": bytes(range(256))}, refs=(dep,))
    buf = io.BytesIO()
    records = export_entries(a, [top, dep], {top, dep}, buf)  # any order: references go first
    raw = buf.getvalue()

    # a bundle whose bytes changed on the way is refused; the store is left as it was
    bad = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as src, tarfile.open(fileobj=bad, mode="w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if data is not None and m.name.endswith("y.txt"):
                data = b"RESULT"
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    bad.seek(0)
    with pytest.raises(StoreError, match="does not match"):
        import_entries(b, records, bad)
    assert not b.is_valid(top) and not (tmp_path / "b" / top).exists()

    added = import_entries(b, records, io.BytesIO(raw))
    assert added == [top] or sorted(added) == sorted([dep, top])
    for name in (dep, top):
        assert b.is_valid(name) and b.info(name).hash == a.info(name).hash  # type: ignore[union-attr]
        assert b.realisation(f"{'d' * 32}-{name.split('-', 1)[1]}") == a.realisation(
            f"{'d' * 32}-{name.split('-', 1)[1]}")
    assert b.info(top).references == a.info(top).references  # type: ignore[union-attr]
    # shipping again adds nothing; an entry held with other bytes under the same name is refused
    assert import_entries(b, records, io.BytesIO(raw)) == []
    forged = [dict(r, sha256="0" * 64) if r["name"] == top else r for r in records]
    with pytest.raises(StoreError, match="came back from a Ray node"):
        import_entries(b, forged, io.BytesIO(raw))
    a.close()
    b.close()


def test_nothing_of_ray_is_imported_without_ray() -> None:
    import subprocess
    import sys

    code = ("import sys, mlbuild.cli as c, mlbuild.sweep, mlbuild.sweepreport; "
            "c.build_parser('sweep').parse_args(['sweep', 'x', '--set', 'sessions=1,2']); "
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
