"""The realizer: walk the derivation graph and make every needed entry valid.

Topological order, independent work in parallel (``jobs``), nothing redone that
is valid in the store.  Fixed-output nodes are fetched and checked against the
lock; built nodes run their builder in the sandbox; run nodes are builds whose
output is a benchmark result.  Per-entry locks make concurrent realizes of the
same entry cooperate; validity is re-checked under the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import builders
from .errors import MlbuildError
from .graph import Graph, Node, archive_file
from .hashing import hash_path
from .reporter import NullReporter, Reporter
from .store import Store


@dataclass(frozen=True)
class CheckResult:
    name: str
    entry: str
    identical: bool
    detail: str


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
    ) -> None:
        self.store = store
        self.graph = graph
        self.reporter = reporter or NullReporter()
        self.jobs = max(1, jobs)
        self.offline = offline
        self.force = set(force)
        self._fetcher_factory = fetcher_factory
        self._fetcher: Any = None
        self._fetcher_lock = threading.Lock()
        self.built: list[str] = []  # entries this run produced

    @property
    def fetcher(self) -> Any:
        with self._fetcher_lock:
            if self._fetcher is None:
                self._fetcher = self._fetcher_factory()
            return self._fetcher

    def path(self, name: str) -> Path:
        return self.store.path(self.graph.nodes[name].entry)

    # ------------------------------------------------------------------ scheduling
    def run(self) -> dict[str, Path]:
        order = self.graph.order()
        todo = [n for n in order if self.graph.nodes[n].entry in self.force or not self.store.is_valid(self.graph.nodes[n].entry)]
        pending = set(todo)
        if not pending:
            return {t: self.path(t) for t in self.graph.targets}
        deps = {n: {d for d in self.graph.nodes[n].inputs.values() if d in pending} for n in pending}
        running: dict[Future[None], str] = {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            while pending or running:
                if not errors:
                    ready = sorted(n for n in pending if not deps[n])
                    for n in ready:
                        if len(running) >= self.jobs:
                            break
                        pending.discard(n)
                        running[pool.submit(self._realize_one, self.graph.nodes[n])] = n
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    n = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        errors.append(exc)
                        continue
                    for m in pending:
                        deps[m].discard(n)
        if errors:
            raise errors[0]
        return {t: self.path(t) for t in self.graph.targets}

    # ------------------------------------------------------------------ one node
    def _realize_one(self, node: Node) -> None:
        with self.store.entry_lock(node.entry):
            if node.entry not in self.force and self.store.is_valid(node.entry):
                return  # another process made it while we waited
            with self.store.staging(node.entry) as staging:
                if node.fixed:
                    self._fetch(node, staging)
                else:
                    self._build(node, staging)
            self.force.discard(node.entry)
            self.built.append(node.entry)

    def _fetch(self, node: Node, staging: Path) -> None:
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
        else:
            raise MlbuildError(f"unknown artifact kind `{a.kind}` for `{node.name}` in the lock")
        self.store.commit(
            out, node.entry, kind="fixed", method=a.hash.method,  # type: ignore[arg-type]
            deriver={"type": "fixed", "artifact": node.name, "kind": a.kind},
            expected=a.hash, references=refs,
        )
        self.reporter.on_task_done(key, f"fetched {node.name}")

    def _builder_inputs(self, node: Node) -> dict[str, Path]:
        return {k: self.path(v).resolve() for k, v in node.inputs.items()}

    def _run_builder(self, node: Node, out: Path) -> str:
        assert node.builder is not None
        key = f"build:{node.name}"
        self.reporter.on_task_start(key, f"{'run' if node.kind == 'run' else 'build'} {node.name}", None)
        from . import sandbox

        module = builders.load(node.builder)
        sb = sandbox.run_builder(
            builder=node.builder, module=module, inputs=self._builder_inputs(node), params=node.params,
            out=out, jobs=self.jobs, log_path=self.store.log_path(node.entry), entry=node.entry,
            on_line=lambda line: self.reporter.on_message(f"{node.name}: {line}") if line else None,
        )
        self.reporter.on_task_done(key, f"{'ran' if node.kind == 'run' else 'built'} {node.name}")
        return sb

    def _build(self, node: Node, staging: Path) -> None:
        out = staging / "out"
        sb = self._run_builder(node, out)
        refs = [self.graph.nodes[v].entry for v in node.inputs.values()]
        self.store.commit(out, node.entry, kind="run" if node.kind == "run" else "built", method="tree",
                          deriver=dict(node.fingerprint), references=refs, sandbox=sb)

    # ------------------------------------------------------------------ --check
    def check(self, names: Iterable[str]) -> list[CheckResult]:
        """Rebuild built targets in a scratch area and compare with the store entry."""
        results = []
        for name in names:
            node = self.graph.nodes[name]
            info = self.store.info(node.entry)
            if node.fixed or info is None:
                results.append(CheckResult(name, node.entry, True, "fixed-output: checked by hash on every fetch"))
                continue
            with self.store.staging(node.entry + ".check") as staging:
                out = staging / "out"
                self._run_builder(node, out)
                if node.kind == "run":
                    a = (out / "accuracy.txt")
                    b = self.store.path(node.entry) / "accuracy.txt"
                    if a.exists() and b.exists():
                        same = a.read_bytes() == b.read_bytes()
                        results.append(CheckResult(name, node.entry, same,
                                                   "accuracy identical" if same else "accuracy differs"))
                    else:
                        results.append(CheckResult(name, node.entry, True,
                                                   "performance-only run: timings are not expected to repeat"))
                    continue
                got = hash_path(out, "tree")
                same = got.sha256 == info.hash.sha256
                detail = "bit-identical"
                if not same:
                    # keep the rebuild beside the entry so the two can be compared
                    from .store import remove_path

                    kept = self.store.meta / "check" / node.entry
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    remove_path(kept)
                    out.rename(kept)
                    detail = (f"differs: store has sha256 {info.hash.sha256}, rebuild gave {got.sha256}; "
                              f"compare with `diffoscope {self.store.path(node.entry)} {kept}`")
                results.append(CheckResult(name, node.entry, same, detail))
        return results


def require_success(results: list[CheckResult]) -> None:
    bad = [r for r in results if not r.identical]
    if bad:
        from .errors import CheckMismatchError

        raise CheckMismatchError(
            "rebuild is not bit-identical: " + "; ".join(f"`{r.name}` {r.detail}" for r in bad),
            hints=["the builder is not deterministic; compare the two outputs to find the difference"],
        )

