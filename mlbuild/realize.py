"""The realizer: walk the derivation graph and make every needed entry valid.

Topological order, independent work in parallel (``jobs``), nothing redone that
is valid in the store.  A node is *resolved* when its inputs are settled: its
store entry is named from its inputs' content hashes (``graph.resolved_entry``),
so a rebuild that is bit-identical changes nothing downstream (early cut-off):
the downstream entry is already valid and is not rebuilt.  Each build records a
realisation (derivation digest -> entry, content hash) in the store, from which
``mlbuild graph``/``show`` resolve without building.  Fixed-output nodes are
fetched and checked against the lock; built nodes run their builder in the
sandbox; run nodes are builds whose output is a benchmark result.  Per-entry
locks make concurrent realizes of the same entry cooperate; validity is
re-checked under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import builders
from .errors import MlbuildError
from .graph import Graph, Node, Realised, archive_file, resolved_entry, resolved_fingerprint
from .hashing import hash_path
from .reporter import NullReporter, Reporter
from .store import Store

CheckStatus = Literal["identical", "differs", "not-checked"]


@dataclass(frozen=True)
class CheckResult:
    """What `realize --check` found for one target: identical, differs, or not checked (and why)."""

    name: str
    entry: str
    status: CheckStatus
    detail: str

    @property
    def identical(self) -> bool:
        return self.status == "identical"


class Realizer:
    def __init__(
        self,
        store: Store,
        graph: Graph,
        *,
        fetcher_factory: Callable[[], Any],
        reporter: Reporter | None = None,
        jobs: int = 2,
        offline: bool = False,
        force: Iterable[str] = (),
        substituter: Callable[[Store, Node, str], str | None] | None = None,
    ) -> None:
        self.store = store
        self.graph = graph
        self.reporter = reporter or NullReporter()
        self.jobs = max(1, jobs)
        self.offline = offline
        self.force = set(force)
        # binary caches asked before building (mlbuild.substitute.Substituters): entry's sha256, or None
        self.substituter = substituter
        self.substituted: list[str] = []  # entries this run took from a cache
        self._fetcher_factory = fetcher_factory
        self._fetcher: Any = None
        self._fetcher_lock = threading.Lock()
        self._settle_lock = threading.Lock()
        self.built: list[str] = []  # entries this run produced
        self.realised: dict[str, Realised] = {}  # node name -> (entry, sha256): settled in this run

    @property
    def fetcher(self) -> Any:
        with self._fetcher_lock:
            if self._fetcher is None:
                self._fetcher = self._fetcher_factory()
            return self._fetcher

    def entry(self, name: str) -> str:
        """The store entry node ``name`` was realized into (after :meth:`run`)."""
        return self.realised[name][0]

    def path(self, name: str) -> Path:
        return self.store.path(self.entry(name))

    # ------------------------------------------------------------------ resolution
    def _resolve(self, node: Node) -> str:
        """The entry of a node whose inputs are settled."""
        if node.fixed:
            assert node.entry is not None
            return node.entry
        return resolved_entry(node, {k: self.realised[v] for k, v in node.inputs.items()})

    def _settle(self, node: Node, entry: str, sha256: str) -> None:
        """Record that ``node`` is realized as ``entry``; built nodes get a realisation in the store."""
        with self._settle_lock:
            self.realised[node.name] = (entry, sha256)
        if not node.fixed and self.store.realisation(node.drv) != (entry, sha256):
            self.store.add_realisation(node.drv, entry)

    def _settle_if_valid(self, node: Node, entry: str) -> bool:
        if entry in self.force:
            return False
        info = self.store.info(entry)
        if info is None or not self.store.is_valid(entry):
            return False
        self._settle(node, entry, info.hash.sha256)
        return True

    # ------------------------------------------------------------------ scheduling
    def run(self) -> dict[str, Path]:
        order = self.graph.order()
        nodes = self.graph.nodes
        pending = set(order)
        deps = {n: set(nodes[n].inputs.values()) for n in order}
        dependents: dict[str, set[str]] = {n: set() for n in order}
        for n in order:
            for d in deps[n]:
                dependents[d].add(n)
        resolved: dict[str, str] = {}
        running: dict[Future[None], str] = {}
        errors: list[BaseException] = []

        def exclusive(node: Node) -> bool:
            """Builders that measure the machine (``EXCLUSIVE = True``) run with nothing beside them."""
            return node.builder is not None and bool(getattr(builders.load(node.builder), "EXCLUSIVE", False))

        def settled(n: str) -> None:
            for m in dependents[n]:
                deps[m].discard(n)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while pending or running:
                if not errors:
                    # resolve what became ready; what is valid already settles at once (early cut-off)
                    progress = True
                    while progress:
                        progress = False
                        for n in sorted(p for p in pending if not deps[p] and p not in resolved):
                            resolved[n] = self._resolve(nodes[n])
                            if self._settle_if_valid(nodes[n], resolved[n]):
                                pending.discard(n)
                                settled(n)
                                progress = True
                    for n in sorted(p for p in pending if not deps[p]):
                        if len(running) >= self.jobs or any(exclusive(nodes[m]) for m in running.values()):
                            break
                        if exclusive(nodes[n]) and running:
                            continue  # a measurement waits until it has the machine to itself
                        pending.discard(n)
                        running[pool.submit(self._realize_one, nodes[n], resolved[n])] = n
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    n = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        errors.append(exc)
                        continue
                    settled(n)
        if errors:
            raise errors[0]
        return {t: self.path(t) for t in self.graph.targets}

    # ------------------------------------------------------------------ one node
    def _realize_one(self, node: Node, entry: str) -> None:
        with self.store.entry_lock(entry):
            if self._settle_if_valid(node, entry):
                return  # another process made it while we waited
            if self.substituter is not None and entry not in self.force:
                sha = self.substituter(self.store, node, entry)
                if sha is not None:
                    self.substituted.append(entry)
                    self._settle(node, entry, sha)
                    return
            with self.store.staging(entry) as staging:
                got = self._fetch(node, staging) if node.fixed else self._build(node, entry, staging)
            self.force.discard(entry)
            self.built.append(entry)
            self._settle(node, entry, got)
            self.store.record_completion(entry)

    def _fetch(self, node: Node, staging: Path) -> str:
        from . import artifacts

        a = node.artifact
        assert a is not None
        key = f"get:{node.name}"
        self.reporter.on_task_start(key, f"get {node.name}", a.hash.size)
        out = staging / "out"
        refs: list[str] = []
        arch = archive_file(a)
        if arch is not None:
            path = artifacts.ensure_archive(self.store, node.name, arch, a.kind, self.fetcher, offline=self.offline)
            refs.append(path.name)
            artifacts.unpack_into(path, out, a.unpack or "tar.gz", a.strip_components, max_bytes=a.hash.size)
        elif a.kind == "fetch":
            reqs = [artifacts.FileReq.locked(f) for f in a.files]
            artifacts.fetch_files(node.name, reqs, out, self.fetcher)
        elif a.kind == "pypi":
            artifacts.fetch_python_files(node.name, a.files, out, self.fetcher, offline=self.offline)
        elif a.kind == "path":
            from .pathinput import realize_into

            realize_into(node.name, a, node.source, out, self.store)
        else:
            raise MlbuildError(f"unknown artifact kind `{a.kind}` for `{node.name}` in the lock")
        assert node.entry is not None
        got = self.store.commit(
            out, node.entry, kind="fixed", method=a.hash.method,
            deriver={"type": "fixed", "artifact": node.name, "kind": a.kind},
            expected=a.hash, references=refs,
        )
        self.reporter.on_task_done(key, f"fetched {node.name}")
        return got.sha256

    def _builder_inputs(self, node: Node) -> dict[str, Path]:
        return {k: self.path(v).resolve() for k, v in node.inputs.items()}

    def _run_builder(self, node: Node, entry: str, out: Path, *, keep_side: bool = True) -> str:
        assert node.builder is not None
        key = f"build:{node.name}"
        self.reporter.on_task_start(key, f"{'run' if node.kind == 'run' else 'build'} {node.name}", None)
        from . import sandbox

        module = builders.load(node.builder)
        inputs = {k: self.realised[v] for k, v in node.inputs.items()}
        sb = sandbox.run_builder(
            builder=node.builder, module=module, inputs=self._builder_inputs(node), params=node.params,
            out=out, jobs=self.jobs, log_path=self.store.log_path(entry), entry=entry,
            # what the builder may record about itself: its resolved fingerprint, inputs' content hashes
            fingerprint={**resolved_fingerprint(node, inputs), "drv": node.drv},
            input_hashes={k: sha for k, (_, sha) in inputs.items()},
            # side outputs (store metadata, never entry content): kept for a build, not for a --check rebuild
            side_out=self.store.side_path(entry) if keep_side else None,
            input_sides={k: p for k, (e, _) in inputs.items() if (p := self.store.side_path(e)).is_dir()},
            on_line=lambda line: self.reporter.on_message(f"{node.name}: {line}") if line else None,
        )
        self.reporter.on_task_done(key, f"{'ran' if node.kind == 'run' else 'built'} {node.name}")
        return sb

    def _build(self, node: Node, entry: str, staging: Path) -> str:
        out = staging / "out"
        sb = self._run_builder(node, entry, out)
        inputs = {k: self.realised[v] for k, v in node.inputs.items()}
        deriver = {**resolved_fingerprint(node, inputs), "drv": node.drv}
        got = self.store.commit(out, entry, kind="run" if node.kind == "run" else "built", method="tree",
                                deriver=deriver, references=[e for e, _ in inputs.values()], sandbox=sb)
        return got.sha256

    # ------------------------------------------------------------------ --check
    def check(self, names: Iterable[str]) -> list[CheckResult]:
        """Rebuild built targets in a scratch area and compare with their store entries (after :meth:`run`)."""
        results = []
        for name in names:
            # a run target's accuracy part is its pure derivation: that is what a rebuild compares
            part = self.graph.nodes.get(f"{name}/accuracy")
            results.append(self._check_one(part if part is not None else self.graph.nodes[name]))
        return results

    def _check_one(self, node: Node) -> CheckResult:
        name = node.name
        entry = self.realised[name][0] if name in self.realised else (node.entry or node.drv)

        def not_checked(why: str) -> CheckResult:
            return CheckResult(name, entry, "not-checked", f"not checked: {why}")

        if node.fixed:
            return not_checked("a fixed-output entry is not rebuilt; its hash is checked against the lock "
                               "on every fetch")
        info = self.store.info(entry)
        if name not in self.realised or info is None:
            return not_checked("it is not in the store (realize it first)")
        with self.store.staging(entry + ".check") as staging:
            out = staging / "out"
            self._run_builder(node, entry, out, keep_side=False)
            if node.kind == "run" and node.fingerprint.get("part") != "accuracy":
                return self._compare_run(node, entry, out)
            got = hash_path(out, "tree")
            if got.sha256 == info.hash.sha256:
                return CheckResult(name, entry, "identical", "bit-identical")
            kept = self._keep_rebuild(entry, out)
            return CheckResult(name, entry, "differs",
                               f"differs: store has sha256 {info.hash.sha256}, rebuild gave {got.sha256}; "
                               f"compare with `diffoscope {self.store.path(entry)} {kept}`")

    def _compare_run(self, node: Node, entry: str, out: Path) -> CheckResult:
        """A run's timings never repeat: only its accuracy result can be compared."""
        stored = self.store.path(entry) / "accuracy.txt"
        rebuilt = out / "accuracy.txt"
        if not stored.exists() and not rebuilt.exists():
            return CheckResult(node.name, entry, "not-checked",
                               "not checked: a performance-only run has no accuracy result to compare, "
                               "and its timings are not expected to repeat")
        if stored.exists() != rebuilt.exists():
            has = "the store entry" if stored.exists() else "the rerun"
            return CheckResult(node.name, entry, "differs", f"differs: only {has} has accuracy.txt")
        if stored.read_bytes() == rebuilt.read_bytes():
            return CheckResult(node.name, entry, "identical",
                               "accuracy identical (performance timings are not compared)")
        a, b = stored.read_text().strip(), rebuilt.read_text().strip()
        return CheckResult(node.name, entry, "differs", f"accuracy differs: store has `{a}`, rerun gave `{b}`")

    def _keep_rebuild(self, entry: str, out: Path) -> Path:
        """Keep a differing rebuild beside the entry so the two can be compared."""
        from .store import remove_path

        kept = self.store.meta / "check" / entry
        kept.parent.mkdir(parents=True, exist_ok=True)
        remove_path(kept)
        out.rename(kept)
        return kept


def require_success(results: list[CheckResult]) -> None:
    """Raise when a rebuild differs (entries that could not be checked are reported, not failed)."""
    bad = [r for r in results if r.status == "differs"]
    if bad:
        from .errors import CheckMismatchError

        raise CheckMismatchError(
            "rebuild is not bit-identical: " + "; ".join(f"`{r.name}` {r.detail}" for r in bad),
            hints=["the builder is not deterministic; compare the two outputs to find the difference"],
        )
