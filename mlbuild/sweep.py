"""Sweeps: every combination of run parameters as an ordinary run, then the best valid point
and the Pareto front of throughput against latency.

A sweep is a run target, fixed overrides (``base``) and axes (``param -> values``); each point
is the target realized with ``base`` plus one value per axis, so it has the identity any
``mlbuild realize TARGET --set ...`` with those settings has, and a point already in the store
is reused (``rerun`` measures performance again, as ``realize --rerun``). Points run one at a
time on this machine (a run is ``EXCLUSIVE``: its accuracy pass and its measurement never share
the cores); an executor (``rayexec``) may run them on other machines. A point that fails is
recorded with its error and the sweep goes on.

The sweep's result is a store entry of its own (kind ``sweep``): ``sweep.json`` (the spec, every
point's settings, entry, metrics and accuracy-log digest, the best point and the Pareto front)
and ``report.html`` (``sweepreport``), named from the digest of ``sweep.json``.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MlbuildError, UsageError

SWEEP_FORMAT = 1
OBJECTIVES = {
    # name -> True when larger is better
    "samples_per_second": True,
    "latency_p50_ms": False,
    "latency_p90_ms": False,
    "latency_p99_ms": False,
    "latency_mean_ms": False,
    "mAP": True,
}
METRICS = tuple(OBJECTIVES)
OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
}
MAX_POINTS = 1000
CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: str
    value: float

    def text(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def holds(self, metrics: Mapping[str, Any]) -> bool:
        v = metrics.get(self.metric)
        return isinstance(v, (int, float)) and OPS[self.op](float(v), self.value)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    target: str
    axes: Mapping[str, tuple[Any, ...]]  # param -> values, in the order given
    base: Mapping[str, Any] = field(default_factory=dict)  # overrides every point shares
    objective: str = "samples_per_second"
    constraints: tuple[Constraint, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "axes": {k: list(v) for k, v in self.axes.items()},
                "base": dict(sorted(self.base.items())), "objective": self.objective,
                "constraints": [c.text() for c in self.constraints]}

    def points(self) -> list[dict[str, Any]]:
        """Every combination (the first axis varies slowest), each as the overrides of one run."""
        keys = list(self.axes)
        out = []
        for combo in itertools.product(*(self.axes[k] for k in keys)):
            out.append(dict(self.base, **dict(zip(keys, combo, strict=True))))
        return out


# --------------------------------------------------------------------------- parsing


def typed_value(raw: str) -> Any:
    """A command-line value as the manifest would type it: bool, int, float, else string."""
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            pass
    return raw


def parse_axes(pairs: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """``--set K=V1,V2`` strings to ``{K: (V1, V2)}`` (a repeated K is an error)."""
    axes: dict[str, tuple[Any, ...]] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"`--set {pair}`: expected KEY=VALUE[,VALUE...]",
                             hints=["e.g. `--set sessions=1,2 --set intra_op_threads=1,2`"])
        key, raw = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        values = [typed_value(v.strip()) for v in raw.split(",")]
        if not key or any(v == "" for v in values):
            raise UsageError(f"`--set {pair}`: a key and non-empty values are needed",
                             hints=["e.g. `--set sessions=1,2`"])
        if key in axes:
            raise UsageError(f"`--set {key}=...` is given twice", hints=["list every value in one `--set K=V1,V2`"])
        if len(set(map(repr, values))) != len(values):
            raise UsageError(f"`--set {pair}`: a value is listed twice")
        axes[key] = tuple(values)
    return axes


def parse_constraint(text: str) -> Constraint:
    m = CONSTRAINT_RE.match(text)
    if not m or m.group(1) not in METRICS:
        raise UsageError(
            f"constraint `{text}`: expected METRIC OP NUMBER with METRIC one of {', '.join(METRICS)} "
            f"and OP one of {', '.join(OPS)}",
            hints=["e.g. `--constraint 'latency_p99_ms<=100'`"],
        )
    try:
        value = float(m.group(3))
    except ValueError:
        raise UsageError(f"constraint `{text}`: `{m.group(3)}` is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"constraint `{text}`: the bound must be finite")
    return Constraint(m.group(1), m.group(2), value)


def make_spec(name: str, target: str, axes: Mapping[str, Sequence[Any]], *, base: Mapping[str, Any] | None = None,
              objective: str = "samples_per_second", constraints: Iterable[str] = ()) -> SweepSpec:
    """A checked spec: at least one axis, no axis also fixed in ``base``, a known objective."""
    if not axes:
        raise UsageError(f"sweep `{name}`: no axis to sweep", hints=["add `--set K=V1,V2`"])
    if objective not in OBJECTIVES:
        raise UsageError(f"sweep `{name}`: unknown objective `{objective}`",
                         hints=[f"one of: {', '.join(METRICS)}"])
    base = dict(base or {})
    both = sorted(set(axes) & set(base))
    if both:
        raise UsageError(f"sweep `{name}`: `{both[0]}` is both an axis and a fixed setting")
    n = math.prod(len(v) for v in axes.values())
    if n > MAX_POINTS:
        raise UsageError(f"sweep `{name}`: {n} points; at most {MAX_POINTS}", hints=["sweep fewer values"])
    return SweepSpec(name, target, {k: tuple(v) for k, v in axes.items()}, base, objective,
                     tuple(parse_constraint(c) for c in constraints))


# --------------------------------------------------------------------------- points


@dataclass
class Point:
    settings: dict[str, Any]  # the axes' values of this point
    overrides: dict[str, Any]  # everything passed to the run (base + settings)
    entry: str | None = None
    drv: str | None = None  # the run's derivation: its identity before anything is measured
    parts: dict[str, str] = field(default_factory=dict)  # accuracy/performance -> entry
    reused: bool = False
    error: str | None = None
    where: str = "local"
    metrics: dict[str, Any] = field(default_factory=dict)
    validity: str | None = None
    accuracy_sha256: str | None = None
    feasible: bool = False
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "entry": self.entry, "drv": self.drv, "parts": self.parts,
                "error": self.error,
                "metrics": self.metrics, "validity": self.validity, "accuracy_sha256": self.accuracy_sha256,
                "feasible": self.feasible, "violations": self.violations}


def read_point(path: Path) -> tuple[dict[str, Any], str | None, str | None, dict[str, str]]:
    """(metrics, validity, sha256 of the accuracy log, part -> entry) of a realized run target's entry."""
    import hashlib

    result = json.loads((path / "result.json").read_text(encoding="utf-8"))
    m = result.get("metrics") or {}
    perf = result.get("performance") or {}
    lat = perf.get("latency_ns") or m.get("latency_ns") or {}
    metrics: dict[str, Any] = {"samples_per_second": m.get("samples_per_second"), "mAP": m.get("mAP")}
    for key, label in (("p50", "latency_p50_ms"), ("p90", "latency_p90_ms"), ("p99", "latency_p99_ms"),
                       ("mean", "latency_mean_ms")):
        v = lat.get(key)
        metrics[label] = round(v / 1e6, 3) if isinstance(v, (int, float)) else None
    acc = None
    for rel in ("accuracy/mlperf_log_accuracy.json", "mlperf_log_accuracy.json"):
        f = path / rel
        if f.is_file():
            acc = hashlib.sha256(f.read_bytes()).hexdigest()
            break
    validity = m.get("validity")
    parts = {k: str(v.get("entry")) for k, v in sorted(((result.get("provenance") or {}).get("parts") or {}).items())
             if isinstance(v, dict) and v.get("entry")}
    return metrics, validity if isinstance(validity, str) else None, acc, parts


def judge(spec: SweepSpec, point: Point) -> None:
    """Feasible: ran, VALID when it measured performance, and every constraint holds."""
    point.violations = []
    if point.error is not None:
        point.feasible = False
        return
    if point.validity is not None and point.validity != "VALID":
        point.violations.append(f"LoadGen result {point.validity}")
    for c in spec.constraints:
        if not c.holds(point.metrics):
            got = point.metrics.get(c.metric)
            point.violations.append(f"{c.text()} (got {got if got is not None else 'none'})")
    if point.metrics.get(spec.objective) is None:
        point.violations.append(f"no {spec.objective}")
    point.feasible = not point.violations


def best(spec: SweepSpec, points: Sequence[Point]) -> int | None:
    """Index of the best feasible point by the objective (ties: the earlier point)."""
    larger = OBJECTIVES[spec.objective]
    cands = [(i, float(p.metrics[spec.objective])) for i, p in enumerate(points) if p.feasible]
    if not cands:
        return None
    return max(cands, key=lambda c: (c[1] if larger else -c[1], -c[0]))[0]


def pareto(points: Sequence[Point], latency: str = "latency_p99_ms") -> list[int]:
    """Indices of the points no other point beats on both throughput (higher) and ``latency``
    (lower), among the points that ran VALID with both figures; sorted by latency."""
    ok = [(i, float(p.metrics["samples_per_second"]), float(p.metrics[latency])) for i, p in enumerate(points)
          if p.error is None and p.validity in (None, "VALID")
          and isinstance(p.metrics.get("samples_per_second"), (int, float))
          and isinstance(p.metrics.get(latency), (int, float))]
    front = []
    for i, t, lat in ok:
        dominated = any((t2 >= t and l2 <= lat) and (t2 > t or l2 < lat) for _, t2, l2 in ok)
        if not dominated:
            front.append((lat, -t, i))
    return [i for _, _, i in sorted(front)]


# --------------------------------------------------------------------------- running


@dataclass
class SweepResult:
    spec: SweepSpec
    points: list[Point]
    best: int | None
    front: list[int]
    entry: str | None = None
    path: Path | None = None

    def document(self) -> dict[str, Any]:
        return {"format": SWEEP_FORMAT, "spec": self.spec.as_dict(),
                "points": [p.as_dict() for p in self.points], "best": self.best, "pareto": self.front}


# An executor realizes a batch of points: it fills entry/error/reused/where of each and
# returns the path of each realized entry in the driver's store (None for a failed point).
Executor = Callable[[SweepSpec, list[Point], bool, Callable[[str], None]], list[Path | None]]


def run_sweep(spec: SweepSpec, executor: Executor, *, rerun: bool = False,
              log: Callable[[str], None] = lambda _m: None) -> SweepResult:
    points = [Point({k: ov[k] for k in spec.axes}, ov) for ov in spec.points()]
    paths = executor(spec, points, rerun, log)
    for p, path in zip(points, paths, strict=True):
        if p.error is None and path is not None:
            try:
                p.metrics, p.validity, p.accuracy_sha256, p.parts = read_point(path)
            except (OSError, ValueError) as e:
                p.error = f"cannot read the point's result.json: {e}"
        judge(spec, p)
    return SweepResult(spec, points, best(spec, points), pareto(points))


def describe_error(e: BaseException) -> str:
    if isinstance(e, MlbuildError):
        text = str(e.args[0]) if e.args else type(e).__name__
        hints = getattr(e, "hints", None) or []
        return text + "".join(f" (hint: {h})" for h in hints[:1])
    return f"{type(e).__name__}: {e}"


class LocalExecutor:
    """Realizes points one after the other in this process, into ``store``."""

    def __init__(self, *, store: Any, manifest: Any, lock: Any, lock_path: Path | None,
                 fetcher_factory: Callable[[], Any], reporter: Any = None, jobs: int = 1) -> None:
        self.store, self.manifest, self.lock, self.lock_path = store, manifest, lock, lock_path
        self.fetcher_factory, self.reporter, self.jobs = fetcher_factory, reporter, jobs

    def plan(self, target: str, overrides: Mapping[str, Any], rerun: bool) -> Any:
        from .graph import plan
        from .graph import rerun as rerun_graph

        graph = plan(self.manifest, self.lock, [target], dict(overrides))
        if graph.nodes[target].kind != "run":
            raise UsageError(f"`{target}` is not a run target; a sweep varies a run's parameters",
                             hints=["`mlbuild show --list` lists the targets"])
        if rerun:
            graph = rerun_graph(graph, self.store.realisation, self.store.is_valid)
        return graph

    def __call__(self, spec: SweepSpec, points: list[Point], rerun: bool,
                 log: Callable[[str], None]) -> list[Path | None]:
        out: list[Path | None] = []
        for k, p in enumerate(points, 1):
            label = ", ".join(f"{a}={v}" for a, v in p.settings.items())
            try:
                graph = self.plan(spec.target, p.overrides, rerun)
                p.drv = graph.nodes[spec.target].drv
                resolved = graph.resolve(self.store.realisation).nodes[spec.target].entry
                p.reused = resolved is not None and self.store.is_valid(resolved)
                log(f"point {k}/{len(points)}: {label}: {'reused' if p.reused else 'running'}")
                path = realize_graph(self.store, graph, lock_path=self.lock_path,
                                     fetcher_factory=self.fetcher_factory, reporter=self.reporter, jobs=self.jobs)
                p.entry = path.name
                out.append(path)
            except (MlbuildError, OSError) as e:
                p.error = describe_error(e)
                log(f"point {k}/{len(points)}: {label}: failed: {p.error}")
                out.append(None)
        return out


def realize_graph(store: Any, graph: Any, *, lock_path: Path | None, fetcher_factory: Callable[[], Any],
                  reporter: Any = None, jobs: int = 1) -> Path:
    """Realize a one-target run graph as `mlbuild realize` does (attestation, lock roots); its path."""
    from .provenance import attest_result
    from .realize import Realizer
    from .substitute import from_cli

    (target,) = graph.targets
    subs = from_cli([], reporter)  # $MLBUILD_SUBSTITUTERS, as `mlbuild realize` asks them
    with store.session():
        r = Realizer(store, graph, fetcher_factory=fetcher_factory, reporter=reporter, jobs=jobs, offline=False,
                     substituter=subs)
        paths = r.run()
        if not store.read_only:
            lock_file = lock_path if lock_path is not None and lock_path.exists() else None
            attest_result(store, r.entry(target), lock_file)
            if lock_file is not None:
                store.add_lock_roots(lock_file, store.closure([r.entry(target)]))
    return Path(paths[target])


# --------------------------------------------------------------------------- storing


def sweep_entry_name(doc: Mapping[str, Any]) -> str:
    from .hashing import canonical_json, sha256_hex

    return f"{sha256_hex(canonical_json(doc))[:32]}-sweep-{doc['spec']['name']}"


def store_sweep(store: Any, result: SweepResult) -> Path:
    """Store ``sweep.json`` + ``report.html`` as an entry referencing every point; rooted."""
    from . import sweepreport
    from .hashing import canonical_json

    doc = result.document()
    name = sweep_entry_name(doc)
    result.entry = name
    if store.is_valid(name):
        result.path = store.path(name)
        return result.path
    refs = sorted({p.entry for p in result.points if p.entry and store.is_valid(p.entry)})
    with store.session(), store.entry_lock(name), store.staging(name) as tmp:
        out = tmp / "out"
        out.mkdir()
        (out / "sweep.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (out / "report.html").write_text(sweepreport.render(doc), encoding="utf-8")
        deriver = {"type": "sweep", "spec": doc["spec"], "digest": name.split("-", 1)[0],
                   "points": canonical_json([p.entry for p in result.points]).decode()}
        store.commit(out, name, kind="sweep", method="tree", deriver=deriver, references=refs)
        store.add_roots(f"sweep:{name}", [name])
    result.path = store.path(name)
    return result.path


def format_table(result: SweepResult) -> str:
    """The plain-text table of every point, then the best point and the Pareto front."""
    spec = result.spec
    axes = list(spec.axes)
    head = [*axes, "validity", "samples/s", "p50 ms", "p90 ms", "p99 ms", "mAP %", "", "entry / error"]
    rows = []
    for i, p in enumerate(result.points):
        m = p.metrics

        def f(key: str, fmt: str = "{:.2f}", m: Mapping[str, Any] = m) -> str:
            v = m.get(key)
            return fmt.format(v) if isinstance(v, (int, float)) else "-"

        mark = ("best" if i == result.best else "") + (" pareto" if i in result.front else "")
        tail = p.entry or "" if p.error is None else f"FAILED: {p.error}"
        if p.error is None and p.violations:
            tail += f" (infeasible: {'; '.join(p.violations)})"
        if p.reused:
            tail += " (reused)"
        rows.append([*(str(p.settings[a]) for a in axes),
                     p.validity or ("-" if p.error is None else "FAILED"),
                     f("samples_per_second", "{:.1f}"), f("latency_p50_ms"), f("latency_p90_ms"),
                     f("latency_p99_ms"), f("mAP", "{:.3f}"), mark.strip(), tail])
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head) - 1)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
             for r in [head, *rows]]
    cons = ", ".join(c.text() for c in spec.constraints) or "none"
    lines.append(f"objective: {spec.objective} ({'max' if OBJECTIVES[spec.objective] else 'min'}); "
                 f"constraints: {cons}")
    if result.best is None:
        lines.append("best: no point is VALID and meets the constraints")
    else:
        b = result.points[result.best]
        lines.append(f"best: {', '.join(f'{k}={v}' for k, v in b.settings.items())} "
                     f"({spec.objective} {b.metrics.get(spec.objective)}) {b.entry}")
    front = "; ".join(", ".join(f"{k}={v}" for k, v in result.points[i].settings.items()) for i in result.front)
    lines.append(f"pareto front (samples/s vs p99 latency): {front or 'none'}")
    failed = sum(1 for p in result.points if p.error is not None)
    if failed:
        lines.append(f"{failed} of {len(result.points)} point(s) failed")
    return "\n".join(lines)


def spec_for(manifest: Any, name: str, set_pairs: Sequence[str], *, scenario: str | None = None,
             objective: str | None = None, constraints: Sequence[str] = ()) -> SweepSpec:
    """The sweep of ``mlbuild sweep NAME``: a ``[sweep.NAME]`` declaration, or a run target with
    ``--set`` axes. A ``--set K=V`` with one value fixes K for every point; ``--scenario`` too."""
    given = parse_axes(set_pairs)
    base = {k: v[0] for k, v in given.items() if len(v) == 1}
    axes = {k: v for k, v in given.items() if len(v) > 1}
    if scenario is not None:
        base["scenario"] = scenario
    decl = getattr(manifest, "sweeps", {}).get(name)
    if decl is not None:
        declared = dict(decl.axes)
        for k in given:  # the command line's values replace the declaration's
            declared.pop(k, None)
        declared.update(axes)
        base = {k: v for k, v in base.items() if k not in declared}
        return make_spec(decl.name, decl.target, declared, base={**decl.base, **base},
                         objective=objective or decl.objective, constraints=[*decl.constraints, *constraints])
    manifest.get(name)  # an unknown name: the usual error, with suggestions
    if not axes:
        raise UsageError(f"sweep of `{name}`: no parameter has more than one value",
                         hints=["e.g. `--set sessions=1,2 --set intra_op_threads=1,2`"])
    return make_spec(name, name, axes, base=base, objective=objective or "samples_per_second",
                     constraints=constraints)
