"""``mlbuild reproduce``: realize a peer's closure here and compare it, artifact by artifact.

Given the peer's lockfile (and their result.json, ideally exported with its attestation by
``mlbuild export``), the target is planned against the local manifests with the peer's run
parameters and realized into the local store.  Then every node of the closure is:

- ``identical``: the same entry (derivation), and the same content where the peer recorded it;
- ``different``: both entries (and content hashes), and why: the parameters, builder or inputs
  that differ (from the peer's attestation, or from their result.json for the run itself);
- ``unavailable``: it could not be realized here (the error says why);
- ``unknown``: the peer recorded nothing about it (only a lockfile was shared);
- ``measured``: a performance measurement, or made from one (a split run's assembly): its bytes
  hold timings, so it is never expected to be identical; its figures are shown, not judged.

Accuracy: the two mlperf_log_accuracy.json compared record by record (first differing qsl_idx),
or their digests, and the mAP delta; a different CPU means bit-identity is not expected.
Performance: both figures and both machines, never a verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import provenance as prov
from .errors import MlbuildError, NotReproducedError, StaleLockError, UsageError

if TYPE_CHECKING:
    from .graph import Graph
    from .manifest import Manifest
    from .store import Store


@dataclass
class ArtifactCheck:
    name: str
    status: str  # identical | different | unavailable | unknown | measured
    ours: str | None
    theirs: str | None
    ours_sha256: str | None = None
    theirs_sha256: str | None = None
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AccuracyCheck:
    status: str  # identical | different | unavailable | not run
    detail: str
    map_ours: float | None = None
    map_theirs: float | None = None
    first_differing_qsl_idx: int | None = None
    differing_samples: int | None = None
    bit_identity_expected: bool = True

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["map_delta"] = (self.map_ours - self.map_theirs
                          if self.map_ours is not None and self.map_theirs is not None else None)
        return d


@dataclass
class Report:
    target: str
    lock: str
    ours: str | None
    theirs: str | None
    artifacts: list[ArtifactCheck] = field(default_factory=list)
    accuracy: AccuracyCheck | None = None
    performance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        if any(a.status in ("different", "unavailable") for a in self.artifacts):
            return False
        return self.accuracy is None or self.accuracy.status in ("identical", "not run")

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "lock": self.lock, "ours": self.ours, "theirs": self.theirs,
                "ok": self.ok, "artifacts": [a.as_dict() for a in self.artifacts],
                "accuracy": self.accuracy.as_dict() if self.accuracy else None,
                "performance": self.performance, "notes": self.notes}

    def render(self) -> str:
        lines = [f"reproduce `{self.target}` from {self.lock}"]
        width = max((len(a.name) for a in self.artifacts), default=10)
        for a in self.artifacts:
            line = f"  {a.status:11s} {a.name:{width}s}"
            if a.status == "identical":
                line += f"  {a.ours}"
            elif a.status == "different":
                line += f"  ours {a.ours} ({(a.ours_sha256 or '?')[:12]}), theirs {a.theirs} " \
                        f"({(a.theirs_sha256 or '?')[:12]})"
            if a.why:
                line += f"  [{a.why}]"
            lines.append(line)
        if self.accuracy is not None:
            acc = self.accuracy
            lines.append(f"accuracy: {acc.status}: {acc.detail}")
        perf = self.performance
        if perf:
            lines.append("performance (measured; not expected to repeat):")
            for who in ("theirs", "ours"):
                p = perf.get(who) or {}
                m = p.get("machine") or {}
                lines.append(f"  {who:6s} {_fmt(p.get('samples_per_second'))} samples/s, "
                             f"{p.get('scenario') or '-'}, {p.get('validity') or '-'} on "
                             f"{m.get('cpu_model') or '?'} ({m.get('cpu_count') or '?'} cpus, {m.get('os') or '?'})")
        lines += [f"note: {n}" for n in self.notes]
        bad = sum(a.status in ("different", "unavailable") for a in self.artifacts)
        lines.append("result: " + ("reproduced: every deterministic artifact identical" + (
            " and the accuracy output identical" if self.accuracy and self.accuracy.status == "identical" else "")
            if self.ok else f"not reproduced ({bad} artifact(s) not identical"
            + (f", accuracy {self.accuracy.status}" if self.accuracy else "") + ")"))
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else "-"


@dataclass
class Peer:
    """What the peer shared: their result (maybe), their attestation's closure (maybe)."""

    result: dict[str, Any] | None = None
    ref: prov.ResultRef | None = None
    entries: dict[str, str | None] = field(default_factory=dict)  # entry -> sha256 (None: not recorded)
    derivers: dict[str, dict[str, Any]] = field(default_factory=dict)
    keyed: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # input/part name -> entry, sha256
    lock_sha256: str | None = None  # of the lockfile (from the attestation)


def read_peer(ref: prov.ResultRef | None) -> Peer:
    if ref is None:
        return Peer()
    result = ref.load()
    peer = Peer(result or None, ref)
    run = prov.run_entry(result)
    if run:
        peer.entries[run] = None
    peer.keyed = {**prov.run_inputs(result), **prov.run_parts(result)}
    for entry, sha in peer.keyed.values():
        peer.entries[entry] = sha
    if ref.attestation is not None:
        # the statement's closure (its signature is `mlbuild verify`'s business)
        st = prov.read_statement_unverified(ref.attestation)
        pred = st.get("predicate") or {}
        deps = (pred.get("buildDefinition") or {}).get("resolvedDependencies") or []
        for d in deps:
            sha = (d.get("digest") or {}).get("sha256")
            ann = d.get("annotations") or {}
            if ann.get("role") == "lock":
                peer.lock_sha256 = sha
                continue
            name = d.get("name")
            if isinstance(name, str):
                peer.entries[name] = peer.entries.get(name) or sha
                if isinstance(ann.get("deriver"), dict):
                    peer.derivers[name] = ann["deriver"]
        derivation = (pred.get("buildDefinition") or {}).get("internalParameters", {}).get("derivation")
        if isinstance(derivation, dict):
            peer.derivers[ref.entry] = derivation
        for b in (pred.get("runDetails") or {}).get("byproducts") or []:
            if b.get("name") == ref.entry and not result:
                peer.entries[ref.entry] = (b.get("digest") or {}).get("sha256")
        peer.entries.setdefault(ref.entry, None)
    return peer


def plan_for(manifest: Manifest, lock_path: Path, target: str, peer: Peer) -> tuple[Graph, list[str]]:
    from . import builders
    from . import lock as lockmod
    from .graph import plan
    from .manifest import BuildDecl

    notes = []
    lock = lockmod.read(lock_path)
    local = lockmod.manifests_digest(manifest)
    if local != lock.manifests:
        notes.append(f"the lock was made from other manifests (lock's digest {lock.manifests[:16]}, the local "
                     f"manifests' {local[:16]}); declarations it does not pin may differ")
    try:
        decl = manifest.get(target)
    except MlbuildError as e:
        raise UsageError(f"the peer's target `{target}` is not in the local manifests: {e.message}",
                         hints=["pass `--manifests DIR` with the manifests the peer used"]) from e
    overrides: dict[str, Any] = {}
    given: dict[str, Any] | None = None
    if peer.result is not None:
        given = prov.run_params(peer.result)
    elif peer.ref is not None and isinstance(peer.derivers.get(peer.ref.entry, {}).get("params"), dict):
        given = dict(peer.derivers[peer.ref.entry]["params"])
    if given is not None and isinstance(decl, BuildDecl):
        known = builders.load(decl.builder).PARAMS
        overrides = {k: v for k, v in given.items() if k in known}
        unknown = sorted(set(given) - set(known))
        if unknown:
            notes.append(f"the peer's run has parameters this mlbuild does not know: {', '.join(unknown)}")
    try:
        graph = plan(manifest, lock, [target], overrides)
    except StaleLockError as e:
        raise StaleLockError(f"the lock `{lock_path}` does not fit the local manifests: {e.message}",
                             reasons=e.reasons, hints=["pass `--manifests DIR` with the manifests the lock "
                                                       "was made from (their digest must match the lock's "
                                                       "`manifests`)"]) from e
    return graph, notes


def realize_all(store: Store, graph: Graph, make_realizer: Callable[[Graph], Any]) -> tuple[Graph, dict[str, str]]:
    """Realize the graph; when that fails, node by node, so that each failure has its reason.

    Returns the graph resolved to this store's entries, and node name -> why it is unavailable."""
    from .graph import Graph as G

    failed: dict[str, str] = {}
    try:
        make_realizer(graph).run()
    except MlbuildError:
        for name in graph.order():
            done = graph.resolve(store.realisation).nodes[name].entry
            if done is not None and store.is_valid(done):
                continue
            blocked = sorted(d for d in graph.nodes[name].inputs.values() if d in failed)
            if blocked:
                failed[name] = f"needs `{blocked[0]}`, which is unavailable"
                continue
            try:
                make_realizer(G(graph.nodes, (name,))).run()
            except MlbuildError as e:
                failed[name] = e.message
    return graph.resolve(store.realisation), failed


def _measured(graph: Graph) -> set[str]:
    """Nodes that hold a performance measurement, or are made from one: never bit-identical."""
    out: set[str] = set()
    for name in graph.order():
        node = graph.nodes[name]
        if node.fingerprint.get("part") == "performance" or any(d in out for d in node.inputs.values()):
            out.add(name)
    return out


def compare(store: Store, graph: Graph, peer: Peer, failed: Mapping[str, str]) -> list[ArtifactCheck]:
    """Each node of the (resolved) graph against what the peer recorded about it."""
    target = graph.targets[0]
    measured = _measured(graph)
    # the peer's entry for each node: the run itself, then by input name down the graph
    # (its result records the run's parts and the parts' inputs, by input name)
    theirs_of: dict[str, str] = {}
    if peer.ref is not None:
        theirs_of[target] = peer.ref.entry
    described = [target, *graph.nodes[target].inputs.values()]
    for name in described:
        for k, child in graph.nodes[name].inputs.items():
            if child not in theirs_of and k in peer.keyed:
                theirs_of[child] = peer.keyed[k][0]
    by_label: dict[str, list[str]] = {}
    for e in peer.entries:
        by_label.setdefault(e.split("-", 1)[-1], []).append(e)
    # entry names are transitive (over their inputs' content): an entry the peer has under the
    # same name means its whole closure is the peer's too
    same_closure: set[str] = set()
    for name in graph.order():
        if graph.nodes[name].entry in peer.entries:
            same_closure |= graph.closure(name)
    out: list[ArtifactCheck] = []
    for name in graph.order():
        node = graph.nodes[name]
        ours = node.entry
        info = store.info(ours) if ours is not None else None
        ours_sha = info.hash.sha256 if info is not None else None
        theirs: str | None = theirs_of.get(name)
        if theirs is None and ours is not None and ours in peer.entries:
            theirs = ours
        if theirs is None and ours is not None and len(by_label.get(ours.split("-", 1)[-1], [])) == 1:
            theirs = by_label[ours.split("-", 1)[-1]][0]
        theirs_sha = peer.entries.get(theirs) if theirs else None
        c = ArtifactCheck(name, "identical", ours, theirs, ours_sha, theirs_sha)
        if name in failed or info is None or ours is None:
            c.status, c.why = "unavailable", failed.get(name, "not in the store after realizing")
        elif name in measured:
            c.status = "measured"
            c.why = ("a performance measurement: its timings differ by nature (figures below)"
                     if node.fingerprint.get("part") == "performance" else
                     "holds the performance measurement: not expected to be bit-identical")
        elif theirs is None:
            if node.fixed:
                c.theirs, c.why = ours, "bytes pinned by the lock, checked on fetch"
            elif name in same_closure:
                c.theirs, c.why = ours, "same entry (in the closure of an entry the peer names)"
            else:
                c.status = "unknown"
                c.why = "the peer recorded nothing about it" if peer.ref is None else \
                    "the peer's result does not name it"
        elif theirs == ours:
            if theirs_sha is not None and ours_sha != theirs_sha:
                c.status = "different"
                c.why = "same entry, different bytes: its build is not deterministic"
            elif node.kind == "run" and theirs_sha is None and name == target:
                c.why = "same run entry"
        elif theirs_sha is not None and theirs_sha == ours_sha:
            c.why = "same bytes under another entry name: " + _why(graph, name, ours, theirs, peer, store)
        else:
            c.status = "different"
            c.why = _why(graph, name, ours, theirs, peer, store)
        out.append(c)
    return out


def _why(graph: Graph, name: str, ours: str, theirs: str, peer: Peer, store: Store) -> str:
    from .diffing import DIGEST_KEYS, changes

    node = graph.nodes[name]
    if node.fixed:
        return "the lock pins other bytes (a different lockfile)"
    info = store.info(ours)
    ours_fp = dict(info.deriver) if info is not None else dict(node.fingerprint)
    theirs_fp = peer.derivers.get(theirs)
    if theirs_fp is None:
        other = store.info(theirs)  # the peer's entry may be in this store too
        theirs_fp = dict(other.deriver) if other is not None else None
    if theirs_fp is not None:
        cs = changes({k: v for k, v in theirs_fp.items() if k not in DIGEST_KEYS},
                     {k: v for k, v in ours_fp.items() if k not in DIGEST_KEYS})
        ins_t, ins_o = theirs_fp.get("inputs") or {}, ours_fp.get("inputs") or {}
        diff_inputs = sorted(k for k in set(ins_t) | set(ins_o) if ins_t.get(k) != ins_o.get(k))
        parts = [f"{c.path}: theirs {_brief(c.a)}, ours {_brief(c.b)}" for c in cs]
        parts += [f"input `{k}` differs" for k in diff_inputs]
        return "; ".join(parts) or "derivations differ"
    if peer.result is not None and name in (graph.targets[0], *graph.nodes[graph.targets[0]].inputs.values()):
        params = prov.run_params(peer.result)
        part = node.fingerprint.get("part")
        from .graph import PERFORMANCE_ONLY_PARAMS

        # a part's own params: `mode` is the part's; an accuracy part keeps the performance-only
        # settings at their defaults, whatever the run asked for
        ignored = {"mode"} if part else set()
        if part == "accuracy":
            ignored |= set(PERFORMANCE_ONLY_PARAMS)
        why = [f"param {k}: theirs {params.get(k)!r}, ours {v!r}" for k, v in sorted(node.params.items())
               if k in params and params[k] != v and k not in ignored]
        isa_t, isa_o = prov.cpu_isa(peer.result), node.fingerprint.get("cpu_isa")
        if part == "accuracy" and isa_t is not None and isa_o is not None and isa_t != isa_o:
            why.append("the CPUs' ISA features differ (accuracy is keyed by them: bit-identity is not expected)")
        why += [f"input `{k}` differs" for k, n in sorted(node.inputs.items())
                if k in peer.keyed and peer.keyed[k][0] != graph.nodes[n].entry]
        return "; ".join(why) or "the builder, its code or its platform differs (same params and inputs)"
    return "the peer did not share how it was built (export the result with its attestation)"


def _brief(v: Any) -> str:
    text = json.dumps(v, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- accuracy and performance


def _records(path: Path) -> dict[int, list[str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read `{path}`: {e}") from e
    out: dict[int, list[str]] = {}
    for rec in data:
        out.setdefault(int(rec["qsl_idx"]), []).append(str(rec.get("data", "")))
    return {k: sorted(v) for k, v in out.items()}


def _cpu(m: Mapping[str, Any]) -> tuple[Any, ...]:
    return (m.get("cpu_model"), m.get("machine"), (m.get("libraries") or {}).get("onnxruntime"))


def compare_accuracy(ours_dir: Path, ours: Mapping[str, Any], peer: Peer) -> AccuracyCheck:
    from .hashing import hash_file

    assert peer.result is not None and peer.ref is not None
    theirs = peer.result
    map_o = (ours.get("metrics") or {}).get("mAP")
    map_t = (theirs.get("metrics") or {}).get("mAP")
    if "accuracy" not in theirs and "accuracy" not in ours:
        return AccuracyCheck("not run", "neither run had an accuracy phase")
    if "accuracy" not in ours or "accuracy" not in theirs:
        return AccuracyCheck("unavailable", "only one of the runs had an accuracy phase", map_o, map_t)
    same_cpu = _cpu(prov.machine(ours)) == _cpu(prov.machine(theirs)) and prov.cpu_isa(ours) == prov.cpu_isa(theirs)
    acc = AccuracyCheck("identical", "", map_o, map_t, bit_identity_expected=same_cpu)
    log_o, log_t = prov.accuracy_log(ours_dir, ours), prov.accuracy_log(peer.ref.dir, theirs)
    how = ""
    if log_o is not None and log_t is not None:
        ro, rt = _records(log_o), _records(log_t)
        differing = sorted(k for k in set(ro) | set(rt) if ro.get(k) != rt.get(k))
        if differing:
            acc.status = "different"
            acc.first_differing_qsl_idx, acc.differing_samples = differing[0], len(differing)
        how = f"{len(ro)} accuracy records compared"
    else:
        dt = prov.accuracy_log_digest(theirs)
        if dt is not None and log_o is not None:
            if hash_file(log_o).sha256 != dt:
                acc.status = "different"
            how = "accuracy log digests compared"
        else:
            det_o = (ours.get("accuracy") or {}).get("detections")
            det_t = (theirs.get("accuracy") or {}).get("detections")
            if det_o != det_t:
                acc.status = "different"
            how = f"{det_o} vs {det_t} detections compared (the peer shared no mlperf_log_accuracy.json)"
    if map_o != map_t:
        acc.status = "different"
    if acc.status == "identical":
        acc.detail = f"mAP {_pct(map_o)} both; {how}"
    else:
        first = (f"first differing sample qsl_idx {acc.first_differing_qsl_idx} "
                 f"({acc.differing_samples} differ); " if acc.first_differing_qsl_idx is not None else "")
        delta = f"{map_o - map_t:+.4f}" if isinstance(map_o, (int, float)) and isinstance(map_t, (int, float)) else "?"
        acc.detail = f"{first}mAP ours {_pct(map_o)}, theirs {_pct(map_t)} (delta {delta}); {how}"
        if not same_cpu:
            mo, mt = prov.machine(ours), prov.machine(theirs)
            acc.detail += (f"; the CPUs differ (ours {mo.get('cpu_model')}, theirs {mt.get('cpu_model')}): "
                           "bit-identical detections are not expected across CPU features")
    return acc


def _pct(v: Any) -> str:
    return f"{v:.3f}%" if isinstance(v, (int, float)) else "-"


def _perf(result: Mapping[str, Any]) -> dict[str, Any]:
    m = result.get("metrics") or {}
    mach = prov.machine(result)
    return {"samples_per_second": m.get("samples_per_second"), "validity": m.get("validity"),
            "scenario": m.get("scenario"), "latency_ns": m.get("latency_ns"),
            "machine": {k: mach.get(k) for k in ("cpu_model", "cpu_count", "machine", "os", "memory_bytes")}}


# --------------------------------------------------------------------------- entry point


def reproduce(*, store: Store, manifest: Manifest, lock_path: Path, target: str | None,
              peer_ref: prov.ResultRef | None, make_realizer: Callable[[Graph], Any]) -> Report:
    from .hashing import hash_file

    peer = read_peer(peer_ref)
    if target is None:
        run = prov.run_entry(peer.result) if peer.result else (peer_ref.entry if peer_ref else None)
        if not run or "-" not in run:
            raise UsageError("which target? the result names no run entry", hints=["pass `--target TARGET`"])
        target = run.split("-", 1)[1]
    graph, notes = plan_for(manifest, lock_path, target, peer)
    lock_sha = hash_file(lock_path).sha256
    if peer.lock_sha256 is not None and peer.lock_sha256 != lock_sha:
        notes.append(f"`{lock_path}` (sha256 {lock_sha[:16]}) is not the lockfile the peer's attestation "
                     f"names ({peer.lock_sha256[:16]})")
    with store.session():
        graph, failed = realize_all(store, graph, make_realizer)
        done = [e for t in graph.targets if (e := graph.nodes[t].entry) is not None and store.is_valid(e)]
        if done:
            store.add_roots(f"lock:{lock_path.resolve()}:{lock_sha}", store.closure(done), replace=False)
    ours_entry = graph.nodes[target].entry
    rep = Report(target, str(lock_path), ours_entry, peer_ref.entry if peer_ref else None, notes=notes)
    rep.artifacts = compare(store, graph, peer, failed)
    node = graph.nodes[target]
    ours_dir = store.path(ours_entry) if ours_entry else None
    if node.kind == "run" and ours_dir is not None and (ours_dir / prov.RESULT_NAME).is_file():
        ours = prov.load_result_json(ours_dir / prov.RESULT_NAME)
        if peer.result is not None:
            rep.accuracy = compare_accuracy(ours_dir, ours, peer)
            rep.performance = {"theirs": _perf(peer.result), "ours": _perf(ours)}
            lt, lo = prov.closure_lock(peer.result), prov.closure_lock(ours)
            if lt is not None and lo is not None and lt.get("digest") != lo.get("digest"):
                at, ao = lt.get("artifacts") or {}, lo.get("artifacts") or {}
                names = sorted(k for k in set(at) | set(ao) if at.get(k) != ao.get(k))
                notes.append(f"the runs' closure locks differ in: {', '.join(names) or '(digest only)'}")
        else:
            rep.performance = {"ours": _perf(ours)}
    elif peer.result is not None and node.kind == "run":
        rep.accuracy = AccuracyCheck("unavailable", "the run could not be realized here")
    return rep


def require_reproduced(rep: Report) -> None:
    if rep.ok:
        return
    bad = [a for a in rep.artifacts if a.status in ("different", "unavailable")]
    parts = [f"`{a.name}` {a.status}" for a in bad[:5]]
    if rep.accuracy is not None and rep.accuracy.status not in ("identical", "not run"):
        parts.append(f"accuracy {rep.accuracy.status}")
    raise NotReproducedError(f"`{rep.target}` was not reproduced: " + ", ".join(parts),
                             hints=["each line above says why; `mlbuild diff` compares two results or "
                                    "lockfiles input by input"])
