"""``mlbuild diff A B``: two results, two lockfiles or two store entries.

What differs in the inputs, and how each difference propagated to what was rebuilt:

- results: the run's parameters and input entries (and the lock when the results record it); a
  run's outputs split into ``timing`` fields (measured: expected to differ between any two runs),
  ``machine`` fields (the host) and the rest (which a changed input may change);
- entries: their derivers (builder, version, source, params, platform, inputs), recursing into
  every input that differs, so each rebuilt entry names the change that caused it;
- lockfiles: artifacts added, removed or changed (files, versions, hashes), then, through the
  manifests' declarations, every build and run that uses a changed artifact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import provenance as prov
from .errors import UsageError

if TYPE_CHECKING:
    from .lock import Lock
    from .manifest import Manifest
    from .store import Store

# Result fields that are measurements: two runs of the same derivation differ in them.
TIMING_SECTIONS = ("performance",)
TIMING_KEYS = ("samples_per_second", "latency_ns", "validity", "latency", "duration", "qps", "time", "_ns",
               "timeline", "early_stopping", "min_duration_met", "min_queries_met")
# Result fields that describe the machine, not the run.
MACHINE_SECTIONS = ("system", "machine")
# Result fields compared on their own (params, input entries) or that follow from the identity.
INPUT_SECTIONS = ("params", "inputs", "run", "logs")


@dataclass
class Change:
    path: str
    a: Any
    b: Any

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "a": self.a, "b": self.b}

    def render(self) -> str:
        if self.a is None and self.b is None:  # a statement, not a value change
            return self.path
        return f"{self.path}: {_short(self.a)} -> {_short(self.b)}"


@dataclass
class Rebuilt:
    """One node whose entry differs, with the direct causes and the inputs that propagated."""

    name: str
    a: str | None
    b: str | None
    causes: list[Change] = field(default_factory=list)
    via: list[Rebuilt] = field(default_factory=list)
    input: str = ""  # the input name its referrer knows it by

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "input": self.input, "a": self.a, "b": self.b,
                "causes": [c.as_dict() for c in self.causes], "via": [v.as_dict() for v in self.via]}


@dataclass
class DiffReport:
    kind: str  # results | entries | locks
    a: str
    b: str
    inputs: list[Change] = field(default_factory=list)
    rebuilt: list[Rebuilt] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    outputs: list[Change] = field(default_factory=list)
    timing: list[Change] = field(default_factory=list)
    machine: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def same_inputs(self) -> bool:
        return not self.inputs

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "a": self.a, "b": self.b,
            "inputs": [c.as_dict() for c in self.inputs],
            "rebuilt": [r.as_dict() for r in self.rebuilt],
            "reused": self.reused,
            "outputs": [c.as_dict() for c in self.outputs],
            "timing_expected_to_differ": [c.as_dict() for c in self.timing],
            "machine": [c.as_dict() for c in self.machine],
            "notes": self.notes,
        }

    def render(self) -> str:
        lines = [f"{self.kind}: A = {self.a}", f"{' ' * len(self.kind)}  B = {self.b}"]
        if self.inputs:
            lines.append("inputs that differ:")
            lines += [f"  {c.render()}" for c in self.inputs]
        else:
            lines.append("inputs: identical")
        if self.rebuilt:
            lines.append("rebuilt because of them:")
            for r in self.rebuilt:
                lines += _render_rebuilt(r, 1)
        if self.reused:
            lines.append(f"reused unchanged: {', '.join(self.reused)}")
        if self.outputs:
            lines.append("outputs that differ:")
            lines += [f"  {c.render()}" for c in self.outputs]
        if self.timing:
            lines.append(f"timing fields (measured; expected to differ): {', '.join(c.path for c in self.timing)}")
        if self.machine:
            lines.append("machines differ: " + "; ".join(c.render() for c in self.machine))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _render_rebuilt(r: Rebuilt, depth: int) -> list[str]:
    pad = "  " * depth
    why = ", ".join(c.render() for c in r.causes)
    via = ", ".join(f"input `{v.input or v.name}`" for v in r.via)
    because = "; ".join(x for x in (why, via) if x) or "a different derivation"
    entries = f" {_entry_short(r.a)} -> {_entry_short(r.b)}" if r.a or r.b else ""
    out = [f"{pad}{r.name}:{entries} rebuilt because {because}"]
    for v in r.via:
        out += _render_rebuilt(v, depth + 1)
    return out


def _entry_short(e: str | None) -> str:
    if e is None:
        return "(none)"
    digest, _, rest = e.partition("-")
    return f"{digest[:12]}-{rest}" if rest else e[:12]


def _short(v: Any) -> str:
    text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
    return text if len(text) <= 80 else text[:77] + "..."


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of a JSON value by dotted path (lists as one leaf each)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def changes(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[Change]:
    fa, fb = flatten(a, prefix), flatten(b, prefix)
    return [Change(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


# --------------------------------------------------------------------------- entries


# deriver keys that are digests over the rest (a change shows up in what they digest)
DIGEST_KEYS = ("inputs", "drv", "type")


def _deriver_causes(da: Mapping[str, Any], db: Mapping[str, Any]) -> list[Change]:
    """What differs between two derivers apart from their inputs."""
    a = {k: v for k, v in da.items() if k not in DIGEST_KEYS}
    b = {k: v for k, v in db.items() if k not in DIGEST_KEYS}
    return changes(a, b)


def input_entry(store: Store, ref: Any) -> str | None:
    """The entry a deriver's input names: an entry name, or (resolved derivers) its content
    hash and label, looked up among the store's entries."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, Mapping) and isinstance(ref.get("sha256"), str):
        label = str(ref.get("label", ""))
        rows = store.db.execute("SELECT name FROM entries WHERE sha256=? ORDER BY name", (ref["sha256"],))
        names = [r[0] for r in rows if not label or r[0].split("-", 1)[-1] == label]
        return names[0] if names else None
    return None


def explain_entries(store: Store, name: str, a: str, b: str, depth: int = 0, input: str = "") -> Rebuilt:
    """Why entry ``a`` and entry ``b`` (of the same node ``name``) differ, recursively."""
    r = Rebuilt(name, a, b, input=input)
    ia, ib = store.info(a), store.info(b)
    if ia is None or ib is None:
        r.causes.append(Change("store", "(not in this store)" if ia is None else "in store",
                               "(not in this store)" if ib is None else "in store"))
        return r
    r.causes = _deriver_causes(ia.deriver, ib.deriver)
    ins_a = ia.deriver.get("inputs") or {}
    ins_b = ib.deriver.get("inputs") or {}
    for k in sorted(set(ins_a) | set(ins_b)):
        if ins_a.get(k) == ins_b.get(k):
            continue
        ea, eb = input_entry(store, ins_a.get(k)), input_entry(store, ins_b.get(k))
        if ea is None or eb is None or depth > 20:
            r.causes.append(Change(f"inputs.{k}", ea or ins_a.get(k), eb or ins_b.get(k)))
            continue
        r.via.append(explain_entries(store, _node_name(eb), ea, eb, depth + 1, input=k))
    return r


def _node_name(entry: str) -> str:
    return entry.split("-", 1)[-1]


def diff_entries(store: Store, a: str, b: str) -> DiffReport:
    rep = DiffReport("entries", a, b)
    ia, ib = store.info(a), store.info(b)
    if ia is None or ib is None:
        raise UsageError(f"`{a if ia is None else b}` is not a valid store entry")
    top = explain_entries(store, _node_name(b), a, b)
    rep.inputs = _root_causes(top)
    if a != b:
        rep.rebuilt = [top]
    if ia.hash.sha256 != ib.hash.sha256 and a != b:
        rep.outputs.append(Change("content.sha256", ia.hash.sha256, ib.hash.sha256))
    ins_a, ins_b = ia.deriver.get("inputs") or {}, ib.deriver.get("inputs") or {}
    rep.reused = sorted(k for k in ins_a if ins_a.get(k) == ins_b.get(k))
    return rep


def _root_causes(r: Rebuilt, prefix: str = "") -> list[Change]:
    """The differences at the leaves, each path prefixed by the nodes it went through."""
    out = [Change(f"{prefix}{c.path}", c.a, c.b) for c in r.causes]
    for v in r.via:
        out += _root_causes(v, f"{prefix}{v.name}.")
    return out


# --------------------------------------------------------------------------- results


def _classify(path: str) -> str:
    """input | machine | timing | output | skip (compared elsewhere) for a result.json field."""
    head, _, rest = path.partition(".")
    second = rest.split(".", 1)[0]
    if head == "provenance":
        if second in ("machine", "cpu_isa"):
            return "machine"
        if second in ("inputs", "parts"):
            return "skip"
        if second == "accuracy_log":
            return "output"
        return "input"  # lock, mlbuild (version, code), runtime, loadgen_files, repeat
    if head in MACHINE_SECTIONS:
        return "machine"
    if head in INPUT_SECTIONS:
        return "skip"
    if head in ("builder", "schema"):
        return "input"
    if head in TIMING_SECTIONS:
        return "timing"
    if head == "metrics" and any(t in rest for t in TIMING_KEYS):
        return "timing"
    return "output"


def _known(store: Store | None, *entries: str | None) -> bool:
    return store is not None and all(e is not None and store.info(e) is not None for e in entries)


def diff_results(ra: prov.ResultRef, rb: prov.ResultRef, store: Store | None) -> DiffReport:
    a, b = ra.load(), rb.load()
    rep = DiffReport("results", ra.entry, rb.entry)
    fa, fb = flatten(a), flatten(b)
    classes = {k: _classify(k) for k in set(fa) | set(fb)}
    # inputs: parameters, then what the result records about its code, lock and runtime
    rep.inputs += changes(prov.run_params(a), prov.run_params(b), "params")
    rep.inputs += [Change(k, fa.get(k), fb.get(k)) for k in sorted(classes)
                   if classes[k] == "input" and fa.get(k) != fb.get(k)]
    target = ra.entry.split("-", 1)[-1]
    top = Rebuilt(target, ra.entry, rb.entry, causes=list(rep.inputs))
    # the entries it was made from: the parts of a split run (rebuilt by the changes above) and
    # the inputs (env, model, data: whose own changes are traced to their roots)
    for group, pa, pb in (("parts", prov.run_parts(a), prov.run_parts(b)),
                          ("inputs", prov.run_inputs(a), prov.run_inputs(b))):
        for k in sorted(set(pa) | set(pb)):
            (ea, sa), (eb, sb) = pa.get(k, (None, None)), pb.get(k, (None, None))
            if ea == eb and sa == sb:
                rep.reused.append(k)
                continue
            if _known(store, ea, eb):
                assert store is not None and ea is not None and eb is not None
                sub = explain_entries(store, _node_name(eb), ea, eb, input=k)
            else:
                sub = Rebuilt(_node_name(eb or ea or k), ea, eb, input=k)
                if group == "inputs":
                    rep.notes.append(f"input `{k}`: its derivations are not both in this store, so why it "
                                     "differs is not known beyond the entries")
            top.via.append(sub)
            if group == "inputs":
                causes = _root_causes(sub, f"inputs.{k}.")
                rep.inputs += causes or [Change(f"inputs.{k}", ea, eb)]
    if ra.entry != rb.entry:
        rep.rebuilt.append(top)
    elif rep.inputs:
        rep.notes.append("the inputs differ but the run entries are the same")
    # outputs
    for k in sorted(classes):
        if fa.get(k) == fb.get(k) or classes[k] in ("input", "skip"):
            continue
        c = Change(k, fa.get(k), fb.get(k))
        {"machine": rep.machine, "timing": rep.timing}.get(classes[k], rep.outputs).append(c)
    return rep


# --------------------------------------------------------------------------- lockfiles


def _artifact_view(lock: Lock, name: str) -> dict[str, Any]:
    art = lock.artifacts[name]
    files = {}
    for f in art.files:
        key = f.path or (f.urls[0].rsplit("/", 1)[-1] if f.urls else name)
        files[key] = {"sha256": f.sha256, "size": f.size, **({"version": f.version} if f.version else {})}
    return {"kind": art.kind, "sha256": art.hash.sha256, "decl": art.decl, "unpack": art.unpack,
            "files": files}


def diff_locks(la: Lock, lb: Lock, a: str, b: str, manifest: Manifest | None) -> DiffReport:
    rep = DiffReport("locks", a, b)
    for attr in ("manifests", "platform", "python"):
        va, vb = getattr(la, attr), getattr(lb, attr)
        if va != vb:
            rep.inputs.append(Change(attr, va, vb))
    rep.inputs += changes(dict(la.toolchain), dict(lb.toolchain), "toolchain")
    changed: set[str] = set()
    for name in sorted(set(la.artifacts) | set(lb.artifacts)):
        if name not in la.artifacts or name not in lb.artifacts:
            rep.inputs.append(Change(f"artifacts.{name}", "present" if name in la.artifacts else None,
                                     "present" if name in lb.artifacts else None))
            changed.add(name.split("@", 1)[0])
            continue
        va, vb = _artifact_view(la, name), _artifact_view(lb, name)
        if va != vb:
            changed.add(name.split("@", 1)[0])
            cs = changes(va, vb, f"artifacts.{name}")
            # a file's sha256 and size change together: keep the sha256 line
            rep.inputs += [c for c in cs if not (c.path.endswith(".size") and any(
                d.path == c.path[:-5] + ".sha256" for d in cs))]
    for name in sorted(set(la.unpinned) | set(lb.unpinned)):
        ra = la.unpinned.get(name)
        rb = lb.unpinned.get(name)
        if (ra and ra.reason) != (rb and rb.reason):
            rep.inputs.append(Change(f"unpinned.{name}", ra.reason if ra else None, rb.reason if rb else None))
    if manifest is not None and changed:
        rep.rebuilt = _dependents(manifest, changed)
        used = {n for r in rep.rebuilt for n in _names(r)}
        rep.reused = sorted(n for n in manifest.decls if n not in used and n not in changed)
    elif changed:
        rep.notes.append("no manifests to trace the builds that use the changed artifacts (`--manifests DIR`)")
    return rep


def _names(r: Rebuilt) -> list[str]:
    return [r.name] + [n for v in r.via for n in _names(v)]


def _dependents(manifest: Manifest, changed: set[str]) -> list[Rebuilt]:
    """Every build/run that uses a changed artifact, directly or through another build."""
    from .manifest import BuildDecl

    builds = {n: d for n, d in manifest.decls.items() if isinstance(d, BuildDecl)}

    def inputs(d: BuildDecl) -> dict[str, str]:
        out = dict(d.inputs)
        for backend, env in d.envs.items():
            out[f"env[{backend}]"] = env
        return out

    memo: dict[str, Rebuilt | None] = {}

    def affected(n: str) -> Rebuilt | None:
        if n in memo:
            return memo[n]
        memo[n] = None
        d = builds.get(n)
        if d is None:
            return None
        r = Rebuilt(n, None, None)
        for key, src in sorted(inputs(d).items()):
            if src in changed:
                r.causes.append(Change(f"input `{key}` (`{src}`) changed in the lock", None, None))
            else:
                sub = affected(src)
                if sub is not None:
                    r.via.append(Rebuilt(sub.name, sub.a, sub.b, sub.causes, sub.via, input=key))
        memo[n] = r if (r.causes or r.via) else None
        return memo[n]

    hit = [r for n in sorted(builds) if (r := affected(n)) is not None]
    # show only the tops: what no other affected build uses
    used_by_other = {v.name for r in hit for v in r.via}
    return [r for r in hit if r.name not in used_by_other]


# --------------------------------------------------------------------------- dispatch


def _is_lock(path: Path) -> bool:
    if path.suffix == ".lock":
        return True
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:400]
    except OSError:
        return False
    return "mlbuild lock" in head


def diff(a: str, b: str, store: Store | None, manifest_loader: Any = None) -> DiffReport:
    """Dispatch on what A and B are: lockfiles, results (files, exported dirs, store entries) or entries."""
    from . import lock as lockmod

    pa, pb = Path(a), Path(b)
    if pa.is_file() and pb.is_file() and _is_lock(pa) and _is_lock(pb):
        manifest = None
        if manifest_loader is not None:
            try:
                manifest = manifest_loader()
            except Exception:
                manifest = None
        return diff_locks(lockmod.read(pa), lockmod.read(pb), a, b, manifest)
    kinds = [_kind(x, store) for x in (a, b)]
    if kinds[0][0] != kinds[1][0]:
        raise UsageError(f"`{a}` is {kinds[0][0]} and `{b}` is {kinds[1][0]}; diff compares two of a kind",
                         hints=["give two results, two lockfiles or two store entries"])
    if kinds[0][0] == "a result":
        return diff_results(prov.locate_result(a, store), prov.locate_result(b, store), store)
    assert store is not None
    return diff_entries(store, kinds[0][1], kinds[1][1])


def _kind(text: str, store: Store | None) -> tuple[str, str]:
    p = Path(text)
    if p.is_file() and _is_lock(p):
        return ("a lockfile", text)
    if p.is_file() or (p.is_dir() and (p / prov.RESULT_NAME).is_file()):
        return ("a result", text)
    if store is None:
        raise UsageError(f"`{text}` is not a result, a lockfile or a store entry")
    try:
        name = store.resolve(text)
    except Exception as e:  # StoreError: not an entry
        raise UsageError(f"`{text}` is neither a result.json, a lockfile nor a store entry",
                         hints=["give two results, two lockfiles or two store entries"]) from e
    if (store.path(name) / prov.RESULT_NAME).is_file():
        return ("a result", name)
    return ("a store entry", name)

