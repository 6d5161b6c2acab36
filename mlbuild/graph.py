"""The derivation graph: manifest + lock -> derivations, and their resolution to store entries.

A pure function of its inputs (no network, no store access).  Every locked
artifact becomes a fixed-output node, named by its content hash.  Every build
and run becomes a derivation with a digest ``drv`` over the builder (name,
version, the code it can run: :mod:`mlbuild.codeid`), its typed parameters, its
inputs' derivation digests (fixed inputs: their content-addressed entries) and
the platform: it changes whenever anything that can change the output changes.

A derivation's store entry is named at realize time from its *resolved*
fingerprint, where each input is replaced by the content hash of its output (as
Nix's content-addressed derivations and Bazel's action cache do).  An edit that
rebuilds an input bit for bit (a comment in a builder) changes nothing
downstream: downstream entries keep their names and are not rebuilt.  A
built node is resolved when every built input has a realisation (drv -> entry,
content hash; ``Store.realisation``); :meth:`Graph.resolve` fills in what is
known, the realizer resolves the rest as inputs complete.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from . import builders, codeid
from .errors import LockError, StaleLockError, UsageError
from .hashing import canonical_json, sha256_hex, store_digest
from .lock import Lock, LockedArtifact, LockedFile, decl_digest
from .manifest import BuildDecl, Manifest, PathDecl, check_params


@dataclass(frozen=True)
class Node:
    name: str
    kind: str  # fetch | pypi | sdist | build | run
    drv: str  # derivation digest `<32 hex>-<name>` (fixed nodes: their entry)
    entry: str | None  # the store entry; None for a built node not resolved yet
    method: str
    fingerprint: Mapping[str, Any]  # the derivation's (inputs by their drv digests)
    inputs: Mapping[str, str] = field(default_factory=dict)  # input name -> node name
    artifact: LockedArtifact | None = None
    builder: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None  # a `path` input's file or directory on this machine (never hashed)

    @property
    def fixed(self) -> bool:
        return self.artifact is not None


Realised = tuple[str, str]  # (entry, sha256 of its content)


@dataclass(frozen=True)
class Graph:
    nodes: Mapping[str, Node]
    targets: tuple[str, ...]

    def order(self) -> list[str]:
        """Topological order of everything the targets need (dependencies first)."""
        out: list[str] = []
        seen: set[str] = set()

        def visit(n: str) -> None:
            if n in seen:
                return
            seen.add(n)
            for dep in sorted(self.nodes[n].inputs.values()):
                visit(dep)
            out.append(n)

        for t in self.targets:
            visit(t)
        return out

    def closure(self, name: str) -> set[str]:
        """``name`` and every node it depends on."""
        return set(Graph(self.nodes, (name,)).order())

    def dependents(self) -> dict[str, set[str]]:
        rev: dict[str, set[str]] = {n: set() for n in self.nodes}
        for n, node in self.nodes.items():
            for dep in node.inputs.values():
                rev[dep].add(n)
        return rev

    def resolve(self, lookup: Callable[[str], Realised | None]) -> Graph:
        """The same graph with every built node's entry filled in where its inputs' outputs are known.

        ``lookup(drv)`` gives a derivation's realisation (``Store.realisation``); a built node is
        resolved when every built input has one.  Unresolved nodes keep ``entry=None``."""
        nodes = dict(self.nodes)
        for n in self.order_all():
            node = nodes[n]
            if node.fixed:
                continue
            known = {}
            for k, dep in node.inputs.items():
                got = realised_fixed(nodes[dep]) if nodes[dep].fixed else lookup(nodes[dep].drv)
                if got is None:
                    break
                known[k] = got
            else:
                nodes[n] = replace(node, entry=resolved_entry(node, known))
        return Graph(nodes, self.targets)

    def order_all(self) -> list[str]:
        """Topological order of every node (dependencies first)."""
        return Graph(self.nodes, tuple(sorted(self.nodes))).order()


def realised_fixed(node: Node) -> Realised:
    assert node.artifact is not None and node.entry is not None
    return node.entry, node.artifact.hash.sha256


def _entry_label(entry: str) -> str:
    return entry.split("-", 1)[1]


def resolved_fingerprint(node: Node, inputs: Mapping[str, Realised]) -> dict[str, Any]:
    """A built node's fingerprint with each input given by its output: content hash and entry label.

    ``inputs``: input name -> (entry, sha256) of what that input was realized into."""
    if set(inputs) != set(node.inputs):
        raise ValueError(f"`{node.name}`: resolving needs inputs {sorted(node.inputs)}, got {sorted(inputs)}")
    fp = dict(node.fingerprint)
    fp["inputs"] = {k: {"sha256": sha, "label": _entry_label(entry)} for k, (entry, sha) in sorted(inputs.items())}
    fp["type"] = "resolved"
    return fp


def resolved_entry(node: Node, inputs: Mapping[str, Realised]) -> str:
    """The store entry of a built node whose inputs were realized as ``inputs``."""
    return store_digest(resolved_fingerprint(node, inputs)) + "-" + _entry_label(node.drv)


def host_platform() -> dict[str, str]:
    return {
        "system": f"{platform.machine()}-{sys.platform}",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def builder_module_name(name: str) -> str:
    return f"{builders.__name__}.{builders.REGISTRY[name]}"


@cache
def builder_code(name: str) -> codeid.CodeIdentity:
    """The code builder ``name`` can run: its import closure's files and their digests."""
    registry = [builder_module_name(b) for b in builders.REGISTRY]
    file = builders.registered_file(name)
    if file is not None:  # a builder from outside the package may import any of it
        return codeid.file_builder_identity(codeid.PACKAGE_DIR, file, registry)
    return codeid.identity(codeid.PACKAGE_DIR, builder_module_name(name), registry)


def builder_source_digest(name: str) -> str:
    """One digest over the code builder ``name`` can run (see :func:`builder_code`)."""
    return store_digest(builder_code(name).fingerprint())


def fixed_entry(a: LockedArtifact) -> str:
    return store_digest({"type": "fixed", "method": a.hash.method, "sha256": a.hash.sha256,
                         "name": a.entry_basename}) + "-" + a.entry_basename


def archive_file(a: LockedArtifact) -> LockedFile | None:
    """The archive an unpacked artifact came from (kept as its own flat entry)."""
    if a.kind == "sdist" or a.unpack:
        return a.files[0]
    return None


def file_entry(f: LockedFile) -> str:
    """The flat entry a file's bytes get on their own (an archive, `store add`)."""
    base = f.path.rsplit("/", 1)[-1] if f.path else (f.urls[0].rstrip("/").rsplit("/", 1)[-1] if f.urls else "file")
    return flat_entry(f.sha256, base)


def flat_entry(sha256: str, basename: str) -> str:
    return store_digest({"type": "fixed", "method": "flat", "sha256": sha256, "name": basename}) + "-" + basename


def plan(manifest: Manifest, lock: Lock | None, targets: Iterable[str],
         overrides: Mapping[str, Any] | None = None) -> Graph:
    targets = tuple(targets)
    overrides = dict(overrides or {})
    nodes: dict[str, Node] = {}
    plat = host_platform()
    for t in targets:
        manifest.get(t)
    used_overrides: set[str] = set()

    def node(name: str) -> Node:
        if name in nodes:
            return nodes[name]
        d = manifest.get(name)
        if not isinstance(d, BuildDecl):
            if lock is None:
                raise LockError("no lockfile", hints=["run `mlbuild lock` first"])
            art = lock.artifacts.get(name)
            if d.kind == "pypi" and lock.platform != plat["system"]:
                # wheels are per platform: use the set locked for this machine, if any
                from .pypi import variant_name

                art = lock.artifacts.get(variant_name(name, plat["system"]))
                if art is None:
                    raise LockError(
                        f"`{name}` is locked to wheels for `{lock.platform}`, but this machine is `{plat['system']}`",
                        hints=[f"add `platforms = [\"{plat['system']}\"]` to `{name}` and run `mlbuild lock` "
                               "(on any machine), or run `mlbuild lock` here"])
            if art is None:
                unp = lock.unpinned.get(name)
                if unp is not None:
                    raise LockError(
                        f"`{name}` is not pinned in the lock: {unp.reason}",
                        hints=["run `mlbuild lock` where its bytes can be reached (network or `--mirror DIR`)"],
                    )
                raise LockError(f"`{name}` is not in the lock", hints=["run `mlbuild lock` to pin it"])
            if art.decl != decl_digest(d):
                raise StaleLockError(f"the lock's pin of `{name}` is out of date", reasons=[
                    f"`{name}` ({d.where.file}:{d.where.line}) changed since it was locked"],
                    hints=["run `mlbuild lock` to pin the new declaration"])
            entry = fixed_entry(art)
            n = Node(name, d.kind, entry, entry, art.hash.method,
                     {"type": "fixed", "sha256": art.hash.sha256, "method": art.hash.method}, artifact=art,
                     source=str(d.source) if isinstance(d, PathDecl) else None)
            nodes[name] = n
            return n
        mod = builders.load(d.builder)
        given = dict(d.params)
        if name in targets and overrides:
            for k, v in overrides.items():
                if k in mod.PARAMS:
                    given[k] = v
                    used_overrides.add(k)

        def err(msg: str, key: str) -> UsageError:
            return UsageError(f"`{name}`: {msg}")

        params = check_params(d.builder, mod.PARAMS, given, err)
        narrow = getattr(mod, "identity_params", None)  # leaves out params the others make unread
        if narrow is not None:
            params = narrow(params, err)
        inputs = dict(d.inputs)
        if d.envs:
            backend = params.get("loadgen")
            if not isinstance(backend, str) or backend not in d.envs:
                raise UsageError(f"`{name}` has no environment for loadgen backend `{backend}`",
                                 hints=[f"its `envs`: {', '.join(sorted(d.envs))}"])
            inputs["env"] = d.envs[backend]
        deps = {k: node(v) for k, v in sorted(inputs.items())}
        fp = {
            "type": "built", "builder": d.builder, "builder_version": mod.VERSION,
            "code": builder_code(d.builder).fingerprint(), "params": params,
            "inputs": {k: v.drv for k, v in deps.items()}, "platform": plat,
            "network": bool(getattr(mod, "NEEDS_NETWORK", False)),
        }
        extra = getattr(mod, "fingerprint_extra", None)
        if extra is not None:
            fp["extra"] = extra()
        n = Node(name, d.kind, store_digest(fp) + "-" + name, None, "tree", fp,
                 {k: v.name for k, v in deps.items()}, builder=d.builder, params=params)
        nodes[name] = n
        return n

    for t in targets:
        node(t)
    unknown = set(overrides) - used_overrides
    if unknown:
        raise UsageError(f"no target among {', '.join(targets)} has a parameter named {', '.join(sorted(unknown))}",
                         hints=["`mlbuild show TARGET` lists a target's parameters"])
    return split_runs(Graph(nodes, targets))


# ---------------------------------------------------------------------------- run split
# A benchmark run is two things of different nature: its accuracy is a pure function of
# model, data, code, parameters, runtime and the CPU's ISA (a derivation), its performance
# is a measurement of one machine (keyed by that machine, repeatable).  `split_runs` turns
# each `mlperf-run` node into up to two parts and a cheap node that assembles the target's
# output from them.

RUN_BUILDER = "mlperf-run"
ASSEMBLY_BUILDER = "mlperf-result"
# LoadGen settings that change how long / how hard the performance run drives the SUT, and
# never a sample's output: an accuracy part's identity leaves them at their defaults.
PERFORMANCE_ONLY_PARAMS = ("min_duration_ms", "max_duration_ms", "min_query_count", "max_query_count",
                           "target_qps", "target_latency_ms", "performance_sample_count")
# distributions whose version changes an accuracy result's bits (recorded beside the env entry)
RUNTIME_PACKAGES = ("numpy", "onnxruntime")


def lock_entries(lock: Lock) -> list[str]:
    """Every store entry a lock pins (all platforms, archives too), sorted."""
    out: set[str] = set()
    for a in lock.artifacts.values():
        out.add(fixed_entry(a))
        arch = archive_file(a)
        if arch is not None:
            out.add(file_entry(arch))
    return sorted(out)


def closure_lock(graph: Graph, name: str) -> dict[str, Any]:
    """The locked artifacts ``name`` depends on (name -> method + sha256, sorted) and their
    digest: a result's lock identity, unchanged by unrelated artifacts added to the lock."""
    arts: dict[str, dict[str, str]] = {}
    for n in sorted(graph.closure(name)):
        node = graph.nodes[n]
        if node.artifact is not None:
            arts[n] = {"method": node.artifact.hash.method, "sha256": node.artifact.hash.sha256}
    return {"digest": sha256_hex(canonical_json(arts)), "artifacts": arts}


def _runtime_versions(graph: Graph, name: str) -> dict[str, str]:
    """Versions of RUNTIME_PACKAGES among the locked wheels in ``name``'s closure."""
    out: dict[str, str] = {}
    for n in sorted(graph.closure(name)):
        node = graph.nodes[n]
        if node.artifact is not None and node.kind == "pypi":
            for f in node.artifact.files:
                pkg = (f.package or "").lower().replace("_", "-")
                if pkg in RUNTIME_PACKAGES and f.version:
                    out[pkg] = f.version
    return dict(sorted(out.items()))


def _mlbuild_version() -> str:
    from . import __version__

    return __version__


def split_runs(graph: Graph, *, machine: Mapping[str, Any] | None = None, isa: list[str] | None = None) -> Graph:
    """Replace every ``mlperf-run`` node by its parts and an assembly node of the same name.

    - ``NAME/accuracy`` (entry ``...-NAME-accuracy``): mode ``accuracy``, the performance-only
      params at their defaults, identity plus the CPU's ISA features and the runtime versions;
    - ``NAME/performance`` (entry ``...-NAME-performance``): mode ``performance``, identity plus
      the machine id and the repeat index (0; see :func:`rerun`);
    - ``NAME``: the ``mlperf-result`` assembly of the parts the run's mode asks for.
    ``machine``/``isa`` default to this host's (``harness.system``)."""
    runs = [n for n, node in graph.nodes.items() if node.builder == RUN_BUILDER and "part" not in node.fingerprint]
    if not runs:
        return graph
    from .harness import system

    machine = dict(machine) if machine is not None else system.machine_id()
    isa = list(isa) if isa is not None else system.cpu_isa_features()
    run_mod = builders.load(RUN_BUILDER)
    asm_mod = builders.load(ASSEMBLY_BUILDER)
    nodes = dict(graph.nodes)
    version = _mlbuild_version()
    for name in runs:
        node = graph.nodes[name]
        params = dict(node.params)
        mode = params.get("mode", "both")
        common = {"mlbuild_version": version, "lock": closure_lock(graph, name), "cpu_isa": isa,
                  "runtime": _runtime_versions(graph, name)}
        parts: dict[str, Node] = {}
        if mode in ("accuracy", "both"):
            ap = dict(params, mode="accuracy")
            for k in PERFORMANCE_ONLY_PARAMS:
                if k in run_mod.PARAMS:
                    ap[k] = run_mod.PARAMS[k].default
            fp = dict(node.fingerprint, params=ap, part="accuracy", **common)
            parts["accuracy"] = Node(f"{name}/accuracy", node.kind, f"{store_digest(fp)}-{name}-accuracy", None,
                                     "tree", fp, dict(node.inputs), builder=RUN_BUILDER, params=ap)
        if mode in ("performance", "both"):
            pp = dict(params, mode="performance")
            fp = dict(node.fingerprint, params=pp, part="performance", machine=machine, repeat=0, **common)
            parts["performance"] = Node(f"{name}/performance", node.kind, f"{store_digest(fp)}-{name}-performance",
                                        None, "tree", fp, dict(node.inputs), builder=RUN_BUILDER, params=pp)
        for part in parts.values():
            nodes[part.name] = part
        afp = {
            "type": "built", "builder": ASSEMBLY_BUILDER, "builder_version": asm_mod.VERSION,
            "code": builder_code(ASSEMBLY_BUILDER).fingerprint(), "params": params,
            "inputs": {k: v.drv for k, v in sorted(parts.items())}, "platform": node.fingerprint.get("platform"),
            "network": False, "mlbuild_version": version, "lock": common["lock"],
        }
        nodes[name] = Node(name, node.kind, f"{store_digest(afp)}-{name}", None, "tree", afp,
                           {k: v.name for k, v in sorted(parts.items())}, builder=ASSEMBLY_BUILDER, params=params)
    return Graph(nodes, graph.targets)


def _with_repeat(graph: Graph, name: str, repeat: int) -> Graph:
    """``graph`` with run target ``name``'s performance part at repeat index ``repeat``."""
    nodes = dict(graph.nodes)
    perf = nodes[f"{name}/performance"]
    fp = dict(perf.fingerprint, repeat=repeat)
    nodes[perf.name] = replace(perf, fingerprint=fp, drv=f"{store_digest(fp)}-{name}-performance", entry=None)
    asm = nodes[name]
    afp = dict(asm.fingerprint, inputs=dict(asm.fingerprint["inputs"], performance=nodes[perf.name].drv))
    nodes[name] = replace(asm, fingerprint=afp, drv=f"{store_digest(afp)}-{name}", entry=None)
    return Graph(nodes, graph.targets)


def rerun(graph: Graph, realisation: Callable[[str], Realised | None], is_valid: Callable[[str], bool]) -> Graph:
    """Each run target's performance part at its first repeat index not yet measured into a
    valid entry (``realize --rerun``): a new measurement beside the earlier ones, which stay.
    ``realisation``/``is_valid``: the store's (:meth:`Store.realisation`, :meth:`Store.is_valid`)."""

    def taken(drv: str) -> bool:
        r = realisation(drv)
        return r is not None and is_valid(r[0])

    for name in graph.targets:
        if f"{name}/performance" not in graph.nodes:
            continue
        k = 0
        g = graph
        while taken(g.nodes[f"{name}/performance"].drv):
            k += 1
            g = _with_repeat(graph, name, k)
        graph = g
    return graph
