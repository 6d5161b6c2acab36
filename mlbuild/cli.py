"""The command line: parse, run one command, render errors.  The only module that prints.

Imports are lazy so that a no-op ``mlbuild realize`` starts in well under 0.1 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

DESCRIPTION = """\
mlbuild: hermetic, lockfile-driven builds and runs of MLPerf inference benchmarks.

Manifests (manifests/*.toml) declare models, datasets, Python packages, builds
and benchmark runs.  `mlbuild lock` pins every input to exact bytes in
lock/mlbuild.lock; `mlbuild realize TARGET` builds what TARGET needs into the
content-addressed store (./store), reusing what is already there.

typical session:
  mlbuild lock                                     # pin inputs (once, or after editing manifests)
  mlbuild realize yolox-coco128-offline            # fetch, preprocess, run; prints mAP and samples/s
  mlbuild realize yolox-coco128-offline --scenario SingleStream   # a new run; nothing else redone
  mlbuild results                                  # every result in the store
  mlbuild show yolox-coco128-offline               # what a target is and its store entry

without network, point at a mirror:  --mirror ../shared/mirror   (or MLBUILD_MIRRORS)

your own project anywhere:  mlbuild init DIR; then `mlbuild add path|fetch|run ...` inside it
  (commands use the nearest directory holding manifests/, or `-C DIR`)

environment:
  MLBUILD_STORE, MLBUILD_MANIFESTS, MLBUILD_MIRRORS   defaults for --store, --manifests, --mirror
  MLBUILD_CONNECT_TIMEOUT, MLBUILD_READ_TIMEOUT        download timeouts in seconds (default 5, 30)
  MLBUILD_RETRIES, MLBUILD_RETRY_BACKOFF               retries of a transient failure per source
                                                       (default 3) and the first backoff (0.5 s, doubling)
"""

# CLI shorthands for the run parameters users change most (as CM's flags do).
RUN_FLAGS = {
    "scenario": ("scenario", str, "LoadGen scenario: Offline, SingleStream, Server, MultiStream"),
    "mode": ("mode", str, "accuracy, performance or both"),
    "loadgen": ("loadgen", str, "LoadGen backend: pyo3 (ours, built from the official source) or official (wheel)"),
    "threads": ("intra_op_threads", int, "ONNX Runtime intra-op threads"),
    "count": ("max_query_count", int, "test query count (LoadGen max_query_count)"),
    "target_qps": ("target_qps", float, "Offline expected QPS / Server target QPS"),
    "min_duration_ms": ("min_duration_ms", int, "LoadGen minimum test duration"),
}


class Printer:
    def __init__(self, quiet: bool, verbose: bool, progress: bool) -> None:
        self.quiet, self.verbose, self.progress = quiet, verbose, progress

    def err(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.err(msg)


def _detail(key: str) -> bool:
    """Per-file fetches of a file set are details: shown with -v only."""
    return key.startswith("fetch:") and "/" in key


class PlainReporter:
    """Plain lines on stderr (not a terminal, or --no-progress)."""

    def __init__(self, printer: Printer) -> None:
        self.p = printer

    # Plain lines name artifacts and builds; which file came from which source is -v detail.
    def on_task_start(self, key: str, description: str, total: int | None = None) -> None:
        if self.p.verbose or not key.startswith("fetch:"):
            self.p.info(f"{description} ...")

    def on_task_progress(self, key: str, advance: int) -> None:
        pass

    def on_task_done(self, key: str, message: str = "") -> None:
        if message and (self.p.verbose or not key.startswith("fetch:")):
            self.p.info(message)

    def on_message(self, message: str) -> None:
        if self.p.verbose:
            self.p.err(f"  {message}")


class RichReporter:
    """rich progress bars on a terminal; builder output as a status line."""

    def __init__(self, printer: Printer) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.p = printer
        self.console = Console(stderr=True)
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def on_task_start(self, key: str, description: str, total: int | None = None) -> None:
        if _detail(key) and not self.p.verbose:
            return
        self.tasks[key] = (self.progress.add_task(description, total=total), description)

    def on_task_progress(self, key: str, advance: int) -> None:
        if key in self.tasks:
            self.progress.advance(self.tasks[key][0], advance)

    def on_task_done(self, key: str, message: str = "") -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            self.progress.remove_task(task[0])
        if message and not self.p.quiet and task is not None:
            self.console.print(f"[green]✓[/] {message}", markup=True, highlight=False)

    def on_message(self, message: str) -> None:
        name = message.split(":", 1)[0]
        for key, (tid, desc) in self.tasks.items():
            if key.endswith(":" + name):
                self.progress.update(tid, description=f"{desc}: {message[len(name) + 1:].strip()[:70]}")
        if self.p.verbose:
            self.console.print(f"  {message}", markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()


# --------------------------------------------------------------------------- context


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        progress = not args.no_progress and sys.stderr.isatty() and not os.environ.get("MLBUILD_NO_PROGRESS")
        self.printer = Printer(args.quiet, args.verbose, progress)
        self._reporter: Any = None
        self._store: Any = None

    @property
    def reporter(self) -> Any:
        if self._reporter is None:
            self._reporter = RichReporter(self.printer) if self.printer.progress else PlainReporter(self.printer)
        return self._reporter

    def close(self) -> None:
        if isinstance(self._reporter, RichReporter):
            self._reporter.close()
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> Any:
        if self._store is None:
            from .store import Store, default_root

            self._store = Store(default_root(self.args.store))
        return self._store

    def manifest(self) -> Any:
        from . import project

        named = [*(getattr(self.args, "targets", None) or []),
                 *(getattr(self.args, k, None) or "" for k in ("target", "a", "b"))]
        return project.load_manifest(Path(self.args.manifests), [t for t in named if t])

    def lock_path(self) -> Path:
        return Path(self.args.lock)

    def read_lock(self) -> Any:
        from . import lock

        return lock.read(self.lock_path())

    def mirrors(self) -> list[Any]:
        from .mirrors import mirrors_from

        return mirrors_from(self.args.mirror or [], os.environ)

    def fetcher_factory(self, offline: bool) -> Any:
        made: list[Any] = []

        def make() -> Any:
            # One Fetcher per command: its connection pool and its memory of bad sources span the run.
            if not made:
                from .fetch import Fetcher

                made.append(Fetcher(mirrors=self.mirrors(), offline=offline, reporter=self.reporter,
                                    **fetch_settings()))
            return made[0]

        return make


def fetch_settings(environ: Any = None) -> dict[str, Any]:
    """Download settings from the environment (parsed and checked in mlbuild.fetch)."""
    from .fetch import fetch_settings as settings

    return settings(environ)


# --------------------------------------------------------------------------- commands


def cmd_lock(ctx: Ctx) -> int:
    from . import lock as lockmod
    from . import project

    manifest = ctx.manifest()
    path = ctx.lock_path()
    previous = lockmod.read(path) if path.exists() else None
    if ctx.args.check:
        if previous is None:
            from .errors import LockError

            raise LockError(f"no lockfile at `{path}`", hints=["run `mlbuild lock` to create it"])
        from . import toolchain

        lockmod.check(previous, manifest, toolchain=toolchain.expected(manifest))
        n = len(previous.artifacts)
        ctx.printer.info(f"{path} satisfies the manifests ({n} artifacts pinned, {len(previous.unpinned)} unpinned)")
        return 0
    if ctx.args.accept_toolchain:
        return _accept_toolchain(ctx, manifest, previous)
    from .graph import lock_entries
    from .resolve import resolve

    store = ctx.store
    kept: dict[str, str] = {}
    with store.session():  # gc waits while pins enter the store and get rooted
        new = resolve(manifest, project.with_shipped_pins(previous, manifest, path), store=store,
                      fetcher_factory=ctx.fetcher_factory(ctx.args.offline),
                      offline=ctx.args.offline, update=ctx.args.update or [], reporter=ctx.reporter,
                      project_root=path.parent.parent if path.parent.name == "lock" else Path("."), kept=kept)
        changed = lockmod.write_if_changed(path, new)
        store.add_lock_roots(path, [e for e in lock_entries(new) if store.is_valid(e)])
    ctx.printer.info(f"{'wrote' if changed else 'unchanged:'} {path} ({len(new.artifacts)} artifacts pinned)")
    for name, reason in sorted(kept.items()):
        ctx.printer.err(f"kept the existing pin of `{name}`: it could not be re-resolved: {reason}")
    for u in new.unpinned.values():
        ctx.printer.err(f"unpinned: `{u.name}`: {u.reason}")
    if new.unpinned:
        ctx.printer.err("hint: unpinned artifacts need network or a `--mirror` that holds them; "
                        "targets that use them cannot be realized yet")
    return 0


def _accept_toolchain(ctx: Ctx, manifest: Any, previous: Any) -> int:
    """`lock --accept-toolchain`: record this host's build tools; only [toolchain] changes."""
    from . import lock as lockmod
    from . import toolchain

    path = ctx.lock_path()
    if previous is None:
        from .errors import LockError

        raise LockError(f"no lockfile at `{path}` to record the toolchain in", hints=["run `mlbuild lock` first"])
    new, changes = toolchain.accept(previous, manifest)
    lockmod.write_if_changed(path, new)
    for line in changes:
        ctx.printer.info(line)
    ctx.printer.info(f"{'wrote' if changes else 'unchanged:'} {path} [toolchain]")
    return 0


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings to typed values (int, float, bool, else string)."""
    from .errors import UsageError

    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"`--set {pair}`: expected KEY=VALUE", hints=["e.g. `--set scenario=SingleStream`"])
        key, raw = pair.split("=", 1)
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for conv in (int, float):
                try:
                    value = conv(raw)
                    break
                except ValueError:
                    pass
        out[key.strip().replace("-", "_")] = value
    return out


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = parse_overrides(args.set or [])
    for flag, (param, _typ, _doc) in RUN_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[param] = value
    return out


def _plan(ctx: Ctx, targets: Sequence[str], overrides: dict[str, Any] | None = None, *,
          resolve: bool = False) -> Any:
    """The derivation graph; with ``resolve``, built nodes' entries filled in from the store's realisations."""
    from .graph import plan
    from .project import plan_lock

    manifest = ctx.manifest()
    lock = plan_lock(ctx.read_lock(), manifest, ctx.lock_path()) if ctx.lock_path().exists() else None
    graph = plan(manifest, lock, targets, overrides)
    return graph.resolve(ctx.store.realisation) if resolve else graph


UNRESOLVED = "(resolved after its inputs build)"


def _realize_noop(ctx: Ctx, overrides: dict[str, Any]) -> str | None:
    """The plan-cache shortcut (``mlbuild.fastpath``, which answers the plain form before this module loads).

    Returns the cache key to save under after a full realize (None: don't)."""
    from .fastpath import lookup, print_answer

    root = str(ctx.store.root)
    k, plan = lookup(root, ctx.args.manifests, str(ctx.lock_path()), list(ctx.args.targets), overrides)
    # Here the registry is at hand too (the plain form never gets here): ask it as well, so a damaged
    # registry is reported rather than answered around.
    if plan is None or not ctx.store.all_valid(plan.closure):
        return k
    ctx.close()
    print_answer(root, plan, ctx.args.targets, ctx.printer.quiet)
    raise _Done()


class _Done(Exception):
    pass


def cmd_realize(ctx: Ctx) -> int:
    overrides = _overrides(ctx.args)
    if getattr(ctx.args, "ray", None) is not None:
        return _realize_ray(ctx, overrides)
    cache_key = None
    if not ctx.args.check and not ctx.args.offline and not ctx.args.rerun:
        try:
            cache_key = _realize_noop(ctx, overrides)
        except _Done:
            return 0
    from .realize import Realizer, require_success

    graph = _plan(ctx, ctx.args.targets, overrides)
    from . import toolchain

    toolchain.check_graph(graph, ctx.lock_path())  # host tools, when the closure builds with them
    store = ctx.store
    if ctx.args.rerun:
        from .graph import rerun

        graph = rerun(graph, store.realisation, store.is_valid)
    subs = _substituters(ctx)
    with store.session():
        r = Realizer(store, graph, fetcher_factory=ctx.fetcher_factory(ctx.args.offline), reporter=ctx.reporter,
                     jobs=ctx.args.jobs, offline=ctx.args.offline, substituter=subs)
        if ctx.args.offline:
            _offline_preflight(ctx, graph)
        try:
            paths = r.run()
        finally:
            _report_substitution(ctx, subs)
        if not store.read_only:
            from .provenance import attest_result

            lock_file = ctx.lock_path() if ctx.lock_path().exists() else None
            for t in graph.targets:
                if graph.nodes[t].kind == "run":  # a copy of the lock beside it; signed when you have a key
                    attest_result(store, r.entry(t), lock_file)
        if ctx.lock_path().exists():
            closure = store.closure(r.entry(t) for t in graph.targets)
            store.add_lock_roots(ctx.lock_path(), closure)
            if cache_key is not None and not store.read_only:
                from . import plancache

                plancache.save(store.meta, cache_key, {t: r.entry(t) for t in graph.targets},
                               {t: graph.nodes[t].kind for t in graph.targets}, sorted(closure), store.plan_stamp())
        _push_built(ctx, r)  # last: a cache that fails leaves the realized store complete (signed, rooted)
        checks = r.check(ctx.args.targets) if ctx.args.check else []
    ctx.close()
    for t in graph.targets:
        node = graph.nodes[t]
        if node.kind == "run":
            _print_run_summary(ctx, paths[t])
    for c in checks:
        ctx.printer.err(f"check `{c.name}`: {c.detail}")
    require_success(checks)
    for t in graph.targets:
        print(paths[t])
    return 0


def _ray_runner(ctx: Ctx) -> Any:
    from .rayexec import RayRunner

    address = None if ctx.args.ray in ("", "local") else ctx.args.ray
    lock = ctx.lock_path() if ctx.lock_path().exists() else None
    return RayRunner(store=ctx.store, manifests=Path(ctx.args.manifests), lock_path=lock,
                     mirrors=list(ctx.args.mirror or []), address=address, worker_store=ctx.args.ray_store,
                     object_store_memory=ctx.args.object_store_memory, jobs=ctx.args.jobs)


def _realize_ray(ctx: Ctx, overrides: dict[str, Any]) -> int:
    """`realize --ray`: each target realized by a Ray task, its result brought into this store."""
    from .errors import BuildError

    if ctx.args.check or ctx.args.rerun or ctx.args.offline:
        from .errors import UsageError

        raise UsageError("`--ray` cannot be combined with --check, --rerun or --offline")
    graph = _plan(ctx, ctx.args.targets, overrides)  # checks targets and overrides before any task starts
    have = graph.resolve(ctx.store.realisation)
    todo = [t for t in graph.targets if not (have.nodes[t].entry and ctx.store.is_valid(have.nodes[t].entry))]
    errors: dict[str, str] = {}
    if todo:  # what this store holds already is reused, as a plain realize does
        runner = _ray_runner(ctx)
        try:
            refs = [runner.submit(t, overrides, performance=f"{t}/performance" in graph.nodes) for t in todo]
            runner.wait_all(refs, lambda i, _reply, err: errors.__setitem__(todo[i], err) if err else None)
        finally:
            runner.close()
    entries = {t: graph.resolve(ctx.store.realisation).nodes[t].entry for t in graph.targets}
    if errors:
        t, e = sorted(errors.items())[0]
        raise BuildError(f"`{t}` failed on Ray: {e}")
    ctx.close()
    for t in graph.targets:
        if graph.nodes[t].kind == "run" and entries[t]:
            _print_run_summary(ctx, ctx.store.path(entries[t]))
    for t in graph.targets:
        print(ctx.store.path(entries[t]) if entries[t] else f"{t}: (not resolved)")
    return 0


def cmd_sweep(ctx: Ctx) -> int:
    """`mlbuild sweep`: every point an ordinary run; the table, the best point, the stored report."""
    import json

    from . import sweep

    manifest = ctx.manifest()
    spec = sweep.spec_for(manifest, ctx.args.name, ctx.args.set or [], scenario=ctx.args.scenario,
                          objective=ctx.args.objective, constraints=ctx.args.constraint or [])
    lock = ctx.read_lock() if ctx.lock_path().exists() else None
    local = sweep.LocalExecutor(store=ctx.store, manifest=manifest, lock=lock,
                                lock_path=ctx.lock_path() if ctx.lock_path().exists() else None,
                                fetcher_factory=ctx.fetcher_factory(False), reporter=ctx.reporter,
                                jobs=ctx.args.jobs)
    executor: Any = local
    runner = None
    if ctx.args.ray is not None:
        from .rayexec import RayExecutor

        runner = _ray_runner(ctx)
        executor = RayExecutor(runner, local)
    try:
        result = sweep.run_sweep(spec, executor, rerun=ctx.args.rerun, log=ctx.printer.info)
    finally:
        if runner is not None:
            runner.close()
    path = sweep.store_sweep(ctx.store, result)
    ctx.close()
    if ctx.args.json:
        print(json.dumps(dict(result.document(), entry=result.entry), indent=2, sort_keys=True))
    else:
        print(sweep.format_table(result))
        print(f"report: {path / 'report.html'}")
    print(path)
    return 0 if result.best is not None else 1



def _substituters(ctx: Ctx) -> Any:
    """The binary caches realize asks before building (`--substituter`, $MLBUILD_SUBSTITUTERS)."""
    if not ctx.args.substituter and not os.environ.get("MLBUILD_SUBSTITUTERS"):
        return None
    from .substitute import from_cli

    return from_cli(ctx.args.substituter or [], ctx.reporter)


def _report_substitution(ctx: Ctx, subs: Any) -> None:
    if subs is None:
        return
    for url, why in subs.dead.items():
        ctx.printer.err(f"substituter {url} skipped for this run: {why}")
    for entry, url, why in subs.refused:
        ctx.printer.err(f"refused `{entry}` from {url} (built here instead): {why}")
    if subs.substituted:
        ctx.printer.info(f"substituted {len(subs.substituted)} entries from binary caches")


def _push_built(ctx: Ctx, r: Any) -> None:
    """`realize --push URL`: upload what this run built (and its closure) to each cache."""
    if not ctx.args.push:
        return
    from .substitute import push, signing_key

    key = signing_key()
    if key is None:
        ctx.printer.err("note: no signing key (`mlbuild key generate`): pushed entries are unsigned, "
                        "and substituters refuse unsigned entries")
    for url, rep in push(ctx.store, ctx.args.push, r.built, key=key, reporter=ctx.reporter):
        ctx.printer.info(f"push {url}: {rep.summary('uploaded')}")


def cmd_copy(ctx: Ctx) -> int:
    from .cache import select, transfer
    from .cache.backends import open_cache

    args = ctx.args

    def plan(targets: list[str]) -> Any:
        return _plan(ctx, targets)

    store = ctx.store
    if args.to:
        from .substitute import signing_key

        key = signing_key(args.key)
        if key is None:
            ctx.printer.err("note: no signing key (`mlbuild key generate`, or `--key FILE`): the entries are "
                            "uploaded unsigned, and substituters refuse unsigned entries")
        backend = open_cache(args.to)
        names = select.entries_to_push(store, args.items, plan)
        rep = transfer.push(store, backend, names, key=key, closure=not args.no_closure, reporter=ctx.reporter)
        ctx.printer.info(rep.summary("uploaded"))
    else:
        from .provenance import trusted_keys

        backend = open_cache(args.from_)
        policy = transfer.Policy(trusted_keys([], os.environ), require_sigs=not args.no_check_sigs)
        with store.session():
            names = select.entries_to_pull(store, backend, args.items, plan, policy)
            rep = transfer.pull(store, backend, names, policy, closure=not args.no_closure, reporter=ctx.reporter)
        ctx.printer.info(rep.summary("downloaded"))
    ctx.close()
    for n in names:
        print(store.path(n))
    return 0


def _offline_preflight(ctx: Ctx, graph: Any) -> None:
    """With --offline, list every fixed input that is neither in the store nor in a local mirror."""
    from .errors import OfflineError
    from .mirrors import candidates

    missing = []
    local = [m for m in ctx.mirrors() if not m.location.startswith(("http://", "https://"))]
    for name in graph.order():
        node = graph.nodes[name]
        if not node.fixed or ctx.store.is_valid(node.entry):
            continue
        from .graph import archive_file, file_entry

        arch = archive_file(node.artifact)
        if arch is not None and ctx.store.is_valid(file_entry(arch)):
            continue
        if node.kind == "path" and ((node.source and Path(node.source).exists())
                                    or ctx.store.find_by_sha256(node.artifact.hash.sha256, node.method)):
            continue
        for f in node.artifact.files:
            urls = f.urls or ("",)
            found = any(
                Path(src.location).exists()
                for u in urls for src in candidates(local, u, f.sha256)
                if getattr(src, "is_local", not str(src.location).startswith(("http://", "https://")))
            )
            if not found:
                missing.append(f"{name}/{f.path}" if f.path else name)
    if missing:
        raise OfflineError(
            f"--offline: {len(missing)} file(s) are neither in the store nor in a local mirror: "
            + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
            hints=["pass `--mirror DIR` with a mirror that holds them, or drop `--offline`"],
        )


def _print_run_summary(ctx: Ctx, path: Path) -> None:
    try:
        from .harness.summary import format_summary, load_result

        result = load_result(path)
    except Exception as e:  # a result without result.json is still a result
        ctx.printer.err(f"(no summary for {path.name}: {e})")
        return
    ctx.printer.info(format_summary(result))


def cmd_show(ctx: Ctx) -> int:
    import json

    if ctx.args.list:
        manifest = ctx.manifest()
        for name, d in manifest.decls.items():
            kind = getattr(d, "builder", None) or d.kind
            print(f"{name:40s} {d.kind:6s} {kind if d.kind == 'build' else '':18s} {d.description}")
        return 0
    if not ctx.args.target:
        from .errors import UsageError

        raise UsageError("`mlbuild show` needs a TARGET or a store path (or `--list`)")
    target = ctx.args.target
    manifest = ctx.manifest()
    if target in manifest.decls:
        graph = _plan(ctx, [target], _overrides(ctx.args), resolve=True)
        node = graph.nodes[target]
        d = manifest.decls[target]
        info = ctx.store.info(node.entry) if node.entry else None
        data: dict[str, Any] = {
            "name": target, "kind": node.kind, "entry": node.entry or UNRESOLVED, "drv": node.drv,
            "resolved": node.entry is not None,
            "path": str(ctx.store.path(node.entry)) if node.entry else "", "valid": info is not None,
            "declared_at": f"{d.where.file}:{d.where.line}", "description": d.description,
            "fingerprint": node.fingerprint,
            "inputs": {k: graph.nodes[v].entry or f"{UNRESOLVED} {graph.nodes[v].drv}" for k, v in node.inputs.items()},
        }
        code = node.fingerprint.get("code")
        if code:
            data["code"] = code["files"]
            if code.get("over_approximated"):
                data["code_over_approximated"] = code["over_approximated"]
        if node.builder:
            from . import builders

            mod = builders.load(node.builder)
            data["builder"] = node.builder
            data["params"] = dict(node.params)
            data["param_docs"] = {k: p.doc for k, p in mod.PARAMS.items()}
    else:
        name = ctx.store.resolve(target)
        info = ctx.store.info(name)
        assert info is not None
        data = {"entry": name, "path": str(ctx.store.path(name)), "kind": info.kind, "valid": True,
                "deriver": info.deriver, "references": list(info.references)}
        if isinstance(info.deriver.get("code"), dict):
            data["code"] = info.deriver["code"].get("files", {})
            data["code_over_approximated"] = info.deriver["code"].get("over_approximated", "")
    if info is not None:
        data.update({"method": info.hash.method, "size": info.hash.size, "sha256": info.hash.sha256,
                     "blake3": info.hash.blake3, "sandbox": info.sandbox})
    if ctx.args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    for k in ("name", "kind", "builder", "entry", "drv", "path", "valid", "declared_at", "description", "method",
              "size", "sha256", "blake3", "sandbox"):
        if k in data and data[k] not in ("", None):
            print(f"{k:12s} {data[k]}")
    if data.get("params"):
        print("params")
        for k, v in data["params"].items():
            doc = data.get("param_docs", {}).get(k, "")
            print(f"  {k} = {json.dumps(v)}" + (f"    # {doc}" if doc else ""))
    if data.get("inputs"):
        print("inputs")
        for k, v in sorted(data["inputs"].items()):
            print(f"  {k} = {v}")
    if data.get("references"):
        print("references")
        for r in data["references"]:
            print(f"  {r}")
    if data.get("code"):
        wide = data.get("code_over_approximated")
        print("code" + (f" (the whole package: {wide})" if wide else " (the builder's import closure)"))
        for path, digest in sorted(data["code"].items()):
            print(f"  {path} {digest[:16]}")
    return 0


def cmd_graph(ctx: Ctx) -> int:
    import json

    graph = _plan(ctx, [ctx.args.target], _overrides(ctx.args), resolve=True)
    fmt = ctx.args.format
    order = graph.order()

    def valid(node: Any) -> bool:
        return node.entry is not None and ctx.store.is_valid(node.entry)

    if fmt == "json":
        out = {n: {"kind": graph.nodes[n].kind, "entry": graph.nodes[n].entry, "drv": graph.nodes[n].drv,
                   "inputs": dict(graph.nodes[n].inputs), "valid": valid(graph.nodes[n])}
               for n in order}
        print(json.dumps(out, indent=2, sort_keys=True))
    elif fmt == "dot":
        print("digraph mlbuild {")
        print("  rankdir=LR;")
        for n in order:
            node = graph.nodes[n]
            shape = "box" if node.fixed else ("doubleoctagon" if node.kind == "run" else "ellipse")
            label = node.entry[:12] if node.entry else "unresolved"
            print(f'  "{n}" [shape={shape}, label="{n}\\n{label}"];')
            for k, dep in sorted(node.inputs.items()):
                print(f'  "{dep}" -> "{n}" [label="{k}"];')
        print("}")
    else:
        def walk(n: str, prefix: str, label: str, seen: set[str]) -> None:
            node = graph.nodes[n]
            mark = "✓" if valid(node) else "·"
            print(f"{prefix}{label}{n} [{node.kind}] {mark} {node.entry or UNRESOLVED}")
            if n in seen and node.inputs:
                print(f"{prefix}    ...")
                return
            seen.add(n)
            for k, dep in sorted(node.inputs.items()):
                walk(dep, prefix + "    ", f"{k}: ", seen)

        walk(graph.targets[0], "", "", set())
    return 0


def cmd_why_depends(ctx: Ctx) -> int:
    from .errors import UsageError

    manifest = ctx.manifest()
    a, b = ctx.args.a, ctx.args.b
    if a in manifest.decls:
        graph = _plan(ctx, [a], resolve=True)
        if b not in graph.nodes:
            b_entries = {n for n, node in graph.nodes.items()
                         if any(x and (x == b or x.startswith(b)) for x in (node.entry, node.drv))}
            if not b_entries:
                raise UsageError(f"`{a}` does not depend on `{b}`")
            b = sorted(b_entries)[0]
        edges = {n: [(k, v) for k, v in sorted(node.inputs.items())] for n, node in graph.nodes.items()}
        start = a
    else:
        store = ctx.store
        a_entry, b_entry = store.resolve(a), store.resolve(b)
        edges = {}
        for n in store.closure([a_entry]):
            info = store.info(n)
            edges[n] = [("", r) for r in info.references] if info else []
        start, b = a_entry, b_entry
    # BFS for the shortest chain
    prev: dict[str, tuple[str, str] | None] = {start: None}
    queue = [start]
    while queue:
        n = queue.pop(0)
        if n == b:
            break
        for label, dep in edges.get(n, []):
            if dep not in prev:
                prev[dep] = (n, label)
                queue.append(dep)
    if b not in prev:
        raise UsageError(f"`{a}` does not depend on `{b}`")
    chain = []
    cur: str | None = b
    while cur is not None:
        p = prev[cur]
        chain.append((cur, p[1] if p else ""))
        cur = p[0] if p else None
    chain.reverse()
    for i, (n, label) in enumerate(chain):
        print(("  " * i) + ("└─ " if i else "") + (f"{label}: " if label else "") + n)
    return 0


def cmd_log(ctx: Ctx) -> int:
    manifest_names = set()
    with contextlib.suppress(Exception):
        manifest_names = set(ctx.manifest().decls)
    if ctx.args.path in manifest_names:
        entry = _plan(ctx, [ctx.args.path], _overrides(ctx.args), resolve=True).nodes[ctx.args.path].entry
        if entry is None:
            from .errors import StoreError

            raise StoreError(f"`{ctx.args.path}` has not been built: its entry is {UNRESOLVED}",
                             hints=[f"`mlbuild realize {ctx.args.path}` builds it"])
    else:
        entry = ctx.store.resolve(ctx.args.path)
    log = ctx.store.log_path(entry)
    if not log.exists():
        from .errors import StoreError

        raise StoreError(f"no build log for `{entry}`", hints=["fetched entries have no log; only builds and runs do"])
    sys.stdout.write(log.read_text())
    return 0


def cmd_gc(ctx: Ctx) -> int:
    dry = ctx.args.dry_run
    report = ctx.store.gc(dry_run=dry)
    verb = "would remove" if dry else "removed"
    for name, size in report.entries:
        print(f"{verb} {name} ({size} bytes)")
    for path, size in report.temporaries:
        print(f"{verb} stale temporary {path} ({size} bytes)")
    for name in report.left_alone:
        ctx.printer.err(f"left alone (not mlbuild's): {name}")
    total = sum(s for _, s in report.entries) + sum(s for _, s in report.temporaries)
    ctx.printer.info(f"{len(report.entries)} entries, {total / 2**20:.1f} MiB {'would be ' if dry else ''}freed")
    return 0


def cmd_store_verify(ctx: Ctx) -> int:
    from . import repair
    from .errors import CorruptEntryError

    store = ctx.store
    if ctx.args.repair:
        rep = repair.repair(store, lambda names: _repair(ctx, names))
        for path in rep.moved_aside:
            ctx.printer.err(f"moved the damaged registry aside: {path}")
        for name, why in rep.quarantined:
            ctx.printer.err(f"quarantined: {name}: {why} (moved to {store.meta / 'quarantine'})")
        for name in rep.repaired:
            ctx.printer.err(f"repaired: {name}")
        for name in rep.foreign:
            ctx.printer.err(f"left alone (not mlbuild's): {name}")
        ctx.printer.info(f"registered {len(rep.adopted)} entries from disk, repaired {len(rep.repaired)} entries, "
                         f"wrote {rep.sidecars_written} metadata files; {len(store.entries())} entries valid")
        return 0
    report = repair.verify(store)
    for name, why in report.corrupt:
        ctx.printer.err(f"corrupt: {name}: {why}")
    for name in report.unregistered:
        ctx.printer.err(f"not registered: {name}: on disk with its metadata, but the registry does not list it")
    for name in report.foreign:
        ctx.printer.err(f"left alone (not mlbuild's): {name}")
    if report.corrupt:
        raise CorruptEntryError(f"{len(report.corrupt)} of {report.checked} store entries are corrupt",
                                hints=["`mlbuild store verify --repair` refetches or rebuilds them"])
    if report.unregistered:
        raise CorruptEntryError(
            f"{len(report.unregistered)} entries on disk are missing from the registry "
            f"({report.checked} registered entries verified)",
            hints=["`mlbuild store verify --repair` re-hashes them and registers them again"])
    if report.busy:
        ctx.printer.err("note: a realize or lock is running; entries it is writing were not looked at")
    ctx.printer.info(f"{report.checked} entries verified")
    return 0


def _repair(ctx: Ctx, entries: list[str]) -> None:
    """Refetch or rebuild corrupt entries from the manifests and the lock (see repair.py)."""
    from .repair import refetch_or_rebuild

    lock = ctx.read_lock() if ctx.lock_path().exists() else None
    refetch_or_rebuild(ctx.store, ctx.manifest(), lock, entries, fetcher_factory=ctx.fetcher_factory(False),
                       reporter=ctx.reporter, jobs=ctx.args.jobs)


def cmd_store_add(ctx: Ctx) -> int:
    from .errors import UsageError
    from .graph import flat_entry
    from .store import basename_problem

    src = Path(ctx.args.file)
    if not src.is_file():
        raise UsageError(f"`{src}` is not a file")
    name = ctx.args.name or src.name
    why = basename_problem(name)
    if why is not None:
        raise UsageError(f"`--name {name}` cannot name a store entry: {why}",
                         hints=["give a plain file name, e.g. `--name model.onnx`"])
    store = ctx.store
    store.require_writable(f"add `{src}`")
    with store.session(), store.staging(f"add-{os.getpid()}") as staging:
        out = staging / "out"
        h = _copy_hashing(src, out)
        entry = flat_entry(h.sha256, name)
        with store.entry_lock(entry):
            if not store.is_valid(entry):
                store.commit(out, entry, kind="fixed", method="flat", known=h,
                             deriver={"type": "fixed", "artifact": name, "kind": "added"})
    print(store.path(entry))
    return 0


def _copy_hashing(src: Path, dest: Path) -> Any:
    """Copy in constant memory, hashing the bytes as they pass."""
    from . import _native
    from .hashing import ContentHash

    h = _native.Hasher()  # its update() takes bytes (not a memoryview)
    with open(src, "rb", buffering=0) as fi, open(dest, "wb") as fo:
        while chunk := fi.read(4 << 20):
            h.update(chunk)
            fo.write(chunk)
    size, sha, b3 = h.finish()
    return ContentHash("flat", size, sha, b3)


def cmd_mirror_export(ctx: Ctx) -> int:
    import shutil

    from .graph import archive_file, file_entry, fixed_entry
    from .pypi import variant_name

    graph = _plan(ctx, ctx.args.targets)
    lock = ctx.read_lock()
    dest = Path(ctx.args.dir)
    (dest / "sha256").mkdir(parents=True, exist_ok=True)
    # (what, artifact, its store entry): the graph's fixed inputs, plus the wheel sets locked for
    # other platforms that `--platform` asks for (they entered the store when they were locked)
    wanted: list[tuple[str, Any, str]] = []
    for name in graph.order():
        node = graph.nodes[name]
        if not node.fixed:
            continue
        wanted.append((name, node.artifact, node.entry))
        if node.kind == "pypi":
            for plat in ctx.args.platform or []:
                if plat == lock.platform:
                    art = lock.artifacts.get(name)
                else:
                    art = lock.artifacts.get(variant_name(name, plat))
                if art is None:
                    from .errors import LockError

                    raise LockError(f"`{name}` has no wheels locked for `{plat}`",
                                    hints=[f"add `{plat}` to its `platforms` and run `mlbuild lock`"])
                wanted.append((art.name, art, fixed_entry(art)))
    count = 0
    missing = []
    for name, a, entry in wanted:
        arch = archive_file(a)
        for f in ([arch] if arch else a.files):
            if arch is not None:
                src = ctx.store.path(file_entry(arch))
            elif a.hash.method == "flat":
                src = ctx.store.path(entry)
            else:
                src = ctx.store.path(entry) / f.path
            target = dest / "sha256" / f.sha256
            if target.exists():
                continue
            if not src.exists():
                missing.append(f"{name}/{f.path}" if f.path else name)
                continue
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
            count += 1
    if missing:
        from .errors import StoreError

        raise StoreError(f"{len(missing)} file(s) are not in the store: {', '.join(missing[:10])}",
                         hints=[f"run `mlbuild realize {' '.join(ctx.args.targets)}` first "
                                "(wheel sets of other platforms enter the store with `mlbuild lock`)"])
    ctx.printer.info(f"exported {count} new file(s) to {dest}/sha256 (content-addressed)")
    print(dest)
    return 0


def cmd_results(ctx: Ctx) -> int:
    import json

    from .harness.summary import format_summary, load_result, newest_result, run_results

    store = ctx.store
    if ctx.args.results_cmd == "show":
        want = ctx.args.id or newest_result(store)
        if want is None:
            from .errors import UsageError

            raise UsageError("no results in the store", hints=["`mlbuild realize yolox-coco128-offline`"])
        name = store.resolve(want)
        result = load_result(store.path(name))
        if ctx.args.json:
            print(json.dumps(result, indent=2, sort_keys=True))
        else:
            print(format_summary(result))
            print(f"entry: {store.path(name)}")
        return 0
    rows: list[dict[str, Any]] = []
    for name, when in run_results(store):
        try:
            r = load_result(store.path(name))
        except Exception as e:
            rows.append({"entry": name, "completed_at": when, "error": str(e)})
            continue
        rows.append({"entry": name, "completed_at": when, **_key_figures(r)})
    if ctx.args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        ctx.printer.info("no results in the store yet")
        return 0
    import time

    print(f"{'completed (UTC)':19s} {'scenario':12s} {'mode':11s} {'loadgen':8s} {'mAP %':>7s} {'samples/s':>10s} "
          f"{'validity':8s} entry")
    for row in rows:
        when = row.get("completed_at")
        done = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when)) if isinstance(when, float) else "-"
        if "error" in row:
            print(f"{done:19s} {'?':12s} {'':11s} {'':8s} {'':>7s} {'':>10s} {'':8s} {row['entry']} "
                  f"(unreadable: {row['error']})")
            continue
        m = f"{row['map']:.3f}" if isinstance(row.get("map"), (int, float)) else "-"
        q = f"{row['samples_per_second']:.1f}" if isinstance(row.get("samples_per_second"), (int, float)) else "-"
        print(f"{done:19s} {row.get('scenario', '-')!s:12s} {row.get('mode', '-')!s:11s} "
              f"{row.get('loadgen', '-')!s:8s} {m:>7s} {q:>10s} {row.get('validity', '-')!s:8s} {row['entry']}")
    return 0


def _key_figures(result: dict[str, Any]) -> dict[str, Any]:
    from .harness.summary import key_figures

    return key_figures(result)


# --------------------------------------------------------------------------- submission


def cmd_submission(ctx: Ctx) -> int:
    import json

    from .errors import UsageError
    from .submission import package

    items = list(ctx.args.items)
    if items[0] == "check":
        if len(items) != 2:
            raise UsageError("usage: mlbuild submission check DIR|TARBALL")
        report = package.check(Path(items[1]))
        if ctx.args.json:
            print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        else:
            _render_check(ctx, report)
        return 0 if report.ok else 1
    target = _submission_target(ctx, items)
    if target is not None:
        ctx.args.targets = [target]
        rc = cmd_realize(ctx)  # the runs, the package (a [build] of `mlperf-submission`) and what they need
        if rc:
            return rc
        fresh = Ctx(ctx.args)
        try:
            entry = _plan(fresh, [target], resolve=True).nodes[target].entry
            pkg = package.read_package(fresh.store.path(entry))
        finally:
            fresh.close()
    else:
        if not ctx.args.submitter:
            raise UsageError("`mlbuild submission RESULT...` needs --submitter NAME",
                             hints=["or name a submission target of the manifests"])
        manifest = lock = None
        if Path(ctx.args.manifests).is_dir() and ctx.lock_path().exists():
            manifest, lock = ctx.manifest(), ctx.read_lock()
        params = {"submitter": ctx.args.submitter, "division": ctx.args.division,
                  "system_name": ctx.args.system_name or "",
                  "system": package.system_overrides(Path(ctx.args.system_toml) if ctx.args.system_toml else None)}
        pkg = package.build(ctx.store, items, params, loadgen_src=package.pinned_loadgen_src(ctx.store, manifest, lock),
                            on_line=lambda line: ctx.reporter.on_message(f"submission: {line}") if line else None)
    _render_check(ctx, package.check(pkg.path), summary_only=True)
    if ctx.args.out:
        ctx.printer.info(f"copied to {package.copy_out(pkg, Path(ctx.args.out))}")
    print(pkg.path)
    print(f"{pkg.tarball}  sha256:{pkg.tarball_sha256}")
    return 0


def _submission_target(ctx: Ctx, items: list[str]) -> str | None:
    """``items`` names one submission target of the manifests (a build of `mlperf-submission`)."""
    if len(items) != 1 or not Path(ctx.args.manifests).is_dir():
        return None
    decl = ctx.manifest().decls.get(items[0])
    return items[0] if getattr(decl, "builder", None) == "mlperf-submission" else None


def _render_check(ctx: Ctx, report: Any, summary_only: bool = False) -> None:
    if report.ok:
        ctx.printer.err(f"check: {len(report.checked)} result(s), every rule passed: submittable")
        return
    ctx.printer.err(f"check: NOT SUBMITTABLE: {len(report.findings)} rule(s) failed over "
                    f"{len(report.checked)} result(s)")
    for f in report.findings:
        ctx.printer.err(f"  {f.kind}: {f.render()}")
    if not summary_only:
        for n in report.notes:
            ctx.printer.err(f"  note: {n}")


# --------------------------------------------------------------------------- provenance, reproduce, diff


def cmd_key_generate(ctx: Ctx) -> int:
    from . import provenance

    out = Path(ctx.args.out) if ctx.args.out else provenance.keys_dir()
    priv, pub, kid = provenance.generate_key(out, force=ctx.args.force)
    ctx.printer.info(f"wrote {priv} (private, 0600) and {pub} (public); keyid {kid}")
    ctx.printer.info("results realized from now on are signed; give peers the public key to `mlbuild verify --key`")
    print(pub)
    return 0


def cmd_verify(ctx: Ctx) -> int:
    import json

    from . import provenance

    store = _store_if_any(ctx)
    ref = provenance.locate_result(ctx.args.result, store)
    trusted = provenance.trusted_keys(ctx.args.key or [])
    v = provenance.verify(ref, trusted, store, attestation=Path(ctx.args.attestation) if ctx.args.attestation else None,
                          lock=Path(ctx.args.with_lock) if ctx.args.with_lock else None)
    if ctx.args.json:
        print(json.dumps(v.as_dict(), indent=2, sort_keys=True))
    else:
        for c in v.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.what}: {c.detail}")
    provenance.require_verified(v)
    ctx.printer.info(f"verified: `{v.entry}` signed by {v.keyid[:16]}")
    return 0


def cmd_export(ctx: Ctx) -> int:
    from . import provenance

    ref = provenance.locate_result(ctx.args.result, ctx.store)
    lock = Path(ctx.args.with_lock) if ctx.args.with_lock else None
    written = provenance.export_result(ref, Path(ctx.args.dir), lock=lock, fallback_lock=ctx.lock_path())
    ctx.printer.info(f"exported `{ref.entry}`: {len(written)} file(s)"
                     + ("" if ref.attestation else " (unsigned: no attestation; `mlbuild key generate` first)"))
    print(ctx.args.dir)
    return 0


def _store_if_any(ctx: Ctx) -> Any:
    """The store when there is one (verify and diff also work on exported results without one)."""
    from .store import default_root

    return ctx.store if (default_root(ctx.args.store) / ".mlbuild").is_dir() else None


def cmd_reproduce(ctx: Ctx) -> int:
    import json

    from . import provenance, reproduce
    from .errors import UsageError
    from .realize import Realizer

    arg = Path(ctx.args.source)
    peer_ref = None
    if arg.suffix == ".json" or arg.is_dir():
        peer_ref = provenance.locate_result(str(arg), None)
        lock_path = Path(ctx.args.lock) if ctx.args.lock else peer_ref.lock or Path("lock/mlbuild.lock")
    else:
        if not ctx.args.target:
            raise UsageError(f"`{arg}` is a lockfile: which target?", hints=["pass `--target TARGET`"])
        lock_path = arg
    store = ctx.store
    rep = reproduce.reproduce(
        store=store, manifest=ctx.manifest(), lock_path=lock_path, target=ctx.args.target, peer_ref=peer_ref,
        make_realizer=lambda g: Realizer(store, g, fetcher_factory=ctx.fetcher_factory(False), reporter=ctx.reporter,
                                         jobs=ctx.args.jobs))
    ctx.close()
    print(json.dumps(rep.as_dict(), indent=2, sort_keys=True) if ctx.args.json else rep.render())
    reproduce.require_reproduced(rep)
    return 0


def cmd_diff(ctx: Ctx) -> int:
    import json

    from . import diffing

    rep = diffing.diff(ctx.args.a, ctx.args.b, _store_if_any(ctx), manifest_loader=ctx.manifest)
    print(json.dumps(rep.as_dict(), indent=2, sort_keys=True) if ctx.args.json else rep.render())
    return 0


def cmd_init(ctx: Ctx) -> int:
    from . import project

    base = Path(ctx.args.chdir) if getattr(ctx.args, "chdir", None) else Path(".")
    directory = base / ctx.args.dir if ctx.args.dir else base
    for path in project.init(directory):
        ctx.printer.info(f"wrote {path}")
    where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {ctx.args.dir or directory} && "
    ctx.printer.info(f"next: {where}mlbuild add path NAME FILE   (or edit {project.MANIFESTS}/*.toml), "
                     "then `mlbuild lock`")
    return 0


def cmd_add(ctx: Ctx) -> int:
    from . import manifest_edit as me
    from .errors import MlbuildError

    a = ctx.args
    manifests = Path(a.manifests)
    root = manifests.resolve().parent
    file = me.manifest_file(manifests, root, a.file)
    if a.what == "fetch":
        add = me.add_fetch(file, a.name, a.urls, a.unpack)
    elif a.what == "path":
        add = me.add_path(file, a.name, a.target)
    elif a.what == "dataset":
        add = me.add_dataset(file, manifests, a.name, a.annotations, a.images)
    else:
        add = me.add_run(file, manifests, a.name, a.model, dataset=a.dataset, annotations=a.annotations,
                         images=a.images, params=parse_overrides(a.set or []))
    old, names = me.apply(add, manifests, root)
    ctx.printer.info(f"added {', '.join(f'`{n}`' for n in names)} to {file}")
    if not a.no_lock:
        a.check = a.accept_toolchain = False
        a.update = a.update or []
        try:
            cmd_lock(ctx)
        except MlbuildError:
            me.restore(file, old)
            ctx.printer.err(f"{file} is back as it was")
            raise
    ctx.printer.info(f"next: {me.next_command(add)}")
    return 0


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("global options")
    g.add_argument("--store", metavar="DIR", help="store root (default ./store, or $MLBUILD_STORE)")
    g.add_argument("--mirror", metavar="M", action="append",
                   help="a mirror to try before upstream: a directory laid out by URL (like ../shared/mirror), "
                        "a content-addressed directory or HTTP base (sha256/<hex>); repeatable; also $MLBUILD_MIRRORS")
    g.add_argument("-C", dest="chdir", metavar="DIR",
                   help="the project in DIR (default: the nearest directory at or above . holding manifests/)")
    g.add_argument("--manifests", metavar="DIR", default=None,
                   help="manifest directory (default: the project's manifests/, or $MLBUILD_MANIFESTS)")
    g.add_argument("--lock", metavar="FILE", default=None, help="lockfile (default: the project's lock/mlbuild.lock)")
    g.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2, help="parallel jobs (default: cores)")
    g.add_argument("-v", "--verbose", action="store_true", help="show builder output and tracebacks")
    g.add_argument("-q", "--quiet", action="store_true", help="only results and errors")
    g.add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")


def _run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run parameters (override the manifest; each change is a new run)")
    g.add_argument("--set", metavar="KEY=VALUE", action="append", help="any builder/run parameter")
    for flag, (_param, typ, doc) in RUN_FLAGS.items():
        g.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=typ, help=doc)


# Every top-level command, in the order `mlbuild --help` lists them (a test holds this to the parser).
COMMANDS = ("init", "add", "lock", "realize", "copy", "show", "graph", "why-depends", "log", "gc", "store",
            "mirror", "results", "key", "verify", "export", "reproduce", "diff", "submission", "sweep")


class _Skipped:
    """Stands in for the parsers of commands other than the one being run: every call is a no-op.
    Building all ~20 argparse parsers costs more than a no-op realize does in all (their help
    strings go through gettext)."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_k: self


class _OnlySubparsers:
    """``add_subparsers()``'s action, building only the parser of command ``only``."""

    def __init__(self, real: Any, only: str) -> None:
        self.real, self.only = real, only

    def add_parser(self, name: str, **kw: Any) -> Any:
        return self.real.add_parser(name, **kw) if name == self.only else _Skipped()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that command's parser (the others are not built)."""
    parser = argparse.ArgumentParser(prog="mlbuild", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    real_sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    real_sub.required = True
    sub: Any = _OnlySubparsers(real_sub, only) if only is not None else real_sub

    def add(name: str, help: str, epilog: str = "") -> Any:  # an ArgumentParser, or _Skipped
        p = sub.add_parser(name, help=help, description=help, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _common(p)
        return p

    p = add("init", "create an mlbuild project (manifests/ with a commented example, .gitignore for store/)")
    p.add_argument("dir", nargs="?", metavar="DIR", help="where (default: here; created if missing)")
    p.set_defaults(func=cmd_init)

    add_p = sub.add_parser("add", help="add a declaration to the project's manifest (comments kept), then lock it")
    add_sub = add_p.add_subparsers(dest="what", metavar="KIND")
    add_sub.required = True

    def add_kind(kind: str, help: str) -> Any:
        q = add_sub.add_parser(kind, help=help, description=help)
        _common(q)
        q.add_argument("name", metavar="NAME")
        q.add_argument("--file", metavar="FILE", help="the manifest to add to (default manifests/<project>.toml)")
        q.add_argument("--no-lock", action="store_true", help="only edit the manifest")
        q.add_argument("--offline", action="store_true", help="lock without network")
        q.add_argument("--update", metavar="NAME", action="append", help=argparse.SUPPRESS)
        q.set_defaults(func=cmd_add)
        return q

    q = add_kind("fetch", "a file from upstream URLs (the first is upstream, more are alternatives)")
    q.add_argument("urls", nargs="+", metavar="URL")
    q.add_argument("--unpack", choices=("zip", "tar", "tar.gz", "tgz", "tar.xz", "tar.bz2"))
    q = add_kind("path", "a local file or directory, pinned by its content")
    q.add_argument("target", metavar="FILE")
    q = add_kind("dataset", "a COCO dataset: a COCO JSON and its images (`coco-dataset` build)")
    q.add_argument("--annotations", required=True, metavar="A", help="a declared name, or a local COCO JSON")
    q.add_argument("--images", required=True, metavar="I", help="a declared name, or a local image directory")
    q = add_kind("run", "a benchmark run of a model on a dataset, and the preprocessing it needs")
    q.add_argument("--model", required=True, metavar="M", help="a declared name, or a local .onnx file")
    q.add_argument("--dataset", metavar="D", help="a declared `coco-dataset` build")
    q.add_argument("--annotations", metavar="A", help="instead of --dataset: a COCO JSON (name or local file)")
    q.add_argument("--images", metavar="I", help="instead of --dataset: its images (name or local directory)")
    q.add_argument("--set", metavar="KEY=VALUE", action="append", help="a run parameter (e.g. scenario=SingleStream)")

    p = add("lock", "pin every manifest input to exact sources and hashes in the lockfile",
            "The lock is rewritten only when something changed.  Inputs whose bytes cannot be reached\n"
            "are listed as unpinned with the reason; everything else is still locked.")
    p.add_argument("--check", action="store_true", help="exit non-zero, naming each entry, if the lock is stale")
    p.add_argument("--offline", action="store_true", help="no network: pin only what the store or local mirrors hold")
    p.add_argument("--update", metavar="NAME", action="append", help="re-resolve NAME even if its pin is current")
    p.add_argument("--accept-toolchain", action="store_true",
                   help="record this host's C++ compiler, cc, rustc and cargo versions in the lock's [toolchain] "
                        "(rewrites nothing else)")
    p.set_defaults(func=cmd_lock)

    p = add("realize", "build TARGETs (and what they need) into the store; print their store paths",
            "examples:\n  mlbuild realize yolox-coco128-offline\n"
            "  mlbuild realize yolox-coco128-offline --scenario SingleStream --mode performance\n"
            "  mlbuild realize coco128-letterbox --check     # rebuild and compare bit for bit")
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.add_argument(
        "--check", action="store_true", help="rebuild built targets and report whether they are bit-identical"
    )
    p.add_argument("--offline", action="store_true", help="no network; list what is missing")
    p.add_argument("--rerun", action="store_true",
                   help="measure run targets' performance again (a new repeat; earlier ones are kept)")
    p.add_argument("--substituter", metavar="URL", action="append",
                   help="a binary cache to take entries from instead of building them (a directory, "
                        "http(s)://..., s3://bucket/prefix); repeatable, asked in order; also "
                        "$MLBUILD_SUBSTITUTERS (space-separated); signatures by $MLBUILD_TRUSTED_KEYS")
    p.add_argument("--push", metavar="URL", action="append",
                   help="upload what this run built (with its closure) to a binary cache; repeatable")
    _run_flags(p)
    _ray_flags(p)
    p.set_defaults(func=cmd_realize)

    p = add("copy", "copy store entries (with their closure) to or from a binary cache",
            "examples:\n  mlbuild copy --to ../cache yolox-coco128-offline\n"
            "  mlbuild copy --to s3://bucket/mlbuild coco128-letterbox     # AWS_ENDPOINT_URL for S3-compatible\n"
            "  mlbuild copy --from http://cache.example:8080/ coco128-letterbox")
    p.add_argument("items", nargs="+", metavar="TARGET|PATH")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", metavar="URL", help="upload to this cache (a directory, http(s)://, s3://)")
    direction.add_argument("--from", dest="from_", metavar="URL", help="download from this cache")
    p.add_argument("--no-closure", action="store_true", help="only the entries named, not what they reference")
    p.add_argument("--key", metavar="FILE", help="sign with this private key (default: your own, if you have one)")
    p.add_argument("--no-check-sigs", action="store_true",
                   help="with --from: accept entries no trusted key signed (hashes are still checked)")
    p.set_defaults(func=cmd_copy)

    p = add("show", "describe a target or a store entry")
    p.add_argument("target", nargs="?", metavar="TARGET|PATH")
    p.add_argument("--json", action="store_true")
    p.add_argument("--list", action="store_true", help="list every target of the manifests")
    _run_flags(p)
    p.set_defaults(func=cmd_show)

    p = add("graph", "print a target's derivation graph")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--format", choices=("tree", "dot", "json"), default="tree")
    _run_flags(p)
    p.set_defaults(func=cmd_graph)

    p = add("why-depends", "show the chain by which A depends on B (targets or store paths)")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.set_defaults(func=cmd_why_depends)

    p = add("log", "print the build log of a store entry or target")
    p.add_argument("path", metavar="PATH|TARGET")
    _run_flags(p)
    p.set_defaults(func=cmd_log)

    p = add("gc", "delete store entries no root needs (lockfile closures, results, running realizes)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    p.set_defaults(func=cmd_gc)

    store_p = sub.add_parser("store", help="store maintenance: verify, add")
    store_sub = store_p.add_subparsers(dest="store_cmd", metavar="SUBCOMMAND")
    store_sub.required = True
    p = store_sub.add_parser("verify", help="re-hash every entry; name each corrupt one")
    _common(p)
    p.add_argument("--repair", action="store_true", help="refetch or rebuild corrupt entries")
    p.set_defaults(func=cmd_store_verify)
    p = store_sub.add_parser("add", help="import a file you already have; same entry a fetch of its bytes gives")
    _common(p)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", help="entry name (default: the file's name; a fetch uses the URL's last component)")
    p.set_defaults(func=cmd_store_add)

    mirror_p = sub.add_parser("mirror", help="content-addressed mirrors for air-gapped machines")
    mirror_sub = mirror_p.add_subparsers(dest="mirror_cmd", metavar="SUBCOMMAND")
    mirror_sub.required = True
    p = mirror_sub.add_parser("export", help="copy every fixed input of TARGETs into DIR/sha256/<hex>")
    _common(p)
    p.add_argument("targets", nargs="+", metavar="TARGET")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--platform", action="append", metavar="PLATFORM",
                   help="also export the Python wheels locked for PLATFORM (e.g. aarch64-linux); repeatable")
    p.set_defaults(func=cmd_mirror_export)

    p = add("results", "list benchmark results in the store, or show one")
    p.add_argument("results_cmd", nargs="?", choices=("show",), help="show one result as a summary table")
    p.add_argument("id", nargs="?", help="store entry (or unique prefix); default: the newest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_results)

    key_p = sub.add_parser("key", help="signing keys for result provenance")
    key_sub = key_p.add_subparsers(dest="key_cmd", metavar="SUBCOMMAND")
    key_sub.required = True
    p = key_sub.add_parser("generate", help="write an ed25519 key pair; results are signed when it exists")
    _common(p)
    p.add_argument("--out", metavar="DIR", help="where (default $MLBUILD_KEYS, or ~/.config/mlbuild/keys)")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=cmd_key_generate)

    p = add("verify", "check a result's signed provenance: signature, file digests, lock and closure entries",
            "RESULT: a store entry (or prefix), a result.json, or a directory from `mlbuild export`.\n"
            "Trusted keys: --key PUB (repeatable) or $MLBUILD_TRUSTED_KEYS (paths or directories of *.pub,\n"
            "separated by ':'); with neither, your own public key.")
    p.add_argument("result", metavar="RESULT")
    p.add_argument("--key", metavar="PUB", action="append", help="a trusted public key (PEM)")
    p.add_argument("--attestation", metavar="FILE", help="the DSSE envelope (default: beside the result)")
    p.add_argument("--with-lock", metavar="FILE", help="also check this lockfile against the signed lock digest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)

    p = add("export", "copy a result, its attestation and its lockfile into DIR, for a peer to verify and reproduce")
    p.add_argument("result", metavar="RESULT")
    p.add_argument("dir", metavar="DIR")
    p.add_argument(
        "--with-lock",
        metavar="FILE",
        help="the lockfile to ship (default: the copy kept when the result was realized, else --lock)",
    )
    p.set_defaults(func=cmd_export)

    p = add("reproduce", "realize a peer's closure here and compare it artifact by artifact",
            "examples:\n  mlbuild reproduce peer/result.json --lock peer/mlbuild.lock\n"
            "  mlbuild reproduce peer/          # a directory from `mlbuild export`\n"
            "  mlbuild reproduce peer/mlbuild.lock --target yolox-coco128-offline\n"
            "exit 0 only when every artifact and the accuracy output are identical")
    p.add_argument("source", metavar="RESULT.json|DIR|LOCKFILE")
    # --lock is the peer's lockfile here: default mlbuild.lock beside RESULT.json, else lock/mlbuild.lock
    p.set_defaults(lock=None, project_lock=False)
    p.add_argument("--target", metavar="TARGET", help="the target (default: the result's run)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reproduce)

    p = add("diff", "what differs between two results, two lockfiles or two store entries, and what it rebuilt")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)

    p = add("submission", "build an MLPerf submission package from run results, or check one",
            "examples:\n  mlbuild submission yolox-coco128-submission --mirror ../shared/mirror  # runs+package+check\n"
            "  mlbuild submission RESULT... --submitter ORG [--division open] [--system-name NAME]\n"
            "  mlbuild submission check DIR|TARBALL\n"
            "prints the package's path and its tarball's sha256; `check` exits 1 when a rule fails")
    p.add_argument("items", nargs="+", metavar="RESULT|TARGET|check")
    p.add_argument("--submitter", help="the submitting organisation (its directory name)")
    p.add_argument("--division", choices=("open", "closed"), default="open")
    p.add_argument("--system-name", help="the system's id (default: from the CPU model and cores)")
    p.add_argument("--system-toml", metavar="F", help="systems/<system>.json fields mlbuild cannot know")
    p.add_argument("--out", metavar="DIR", help="also copy the package (writable) into DIR")
    p.add_argument("--offline", action="store_true", help="no network (a submission target's runs)")
    p.add_argument("--json", action="store_true", help="`check`: the report as JSON")
    # cmd_realize reads these (`mlbuild realize` flags a submission target does not take)
    p.set_defaults(func=cmd_submission, check=False, rerun=False, set=None, substituter=None, push=None, ray=None)

    p = add("sweep", "run a target over every combination of parameter values; table, best point, Pareto front",
            "examples:\n  mlbuild sweep yolox-coco128-offline --set sessions=1,2 --set intra_op_threads=1,2\n"
            "  mlbuild sweep yolox-coco128-offline --set batch_size=1,2,4 --constraint 'latency_p99_ms<=100'\n"
            "  mlbuild sweep NAME            # a [sweep.NAME] manifest declaration\n"
            "Every point is an ordinary run (reused when in the store); the sweep is stored with report.html.\n"
            "exit 0 when a point is VALID and meets the constraints, 1 otherwise")
    p.add_argument("name", metavar="TARGET|SWEEP")
    p.add_argument("--set", metavar="KEY=V1,V2", action="append",
                   help="an axis (several values) or a fixed setting (one value); repeatable")
    p.add_argument("--scenario", help="LoadGen scenario for every point")
    p.add_argument("--objective", help="metric to optimise (default samples_per_second; latency_p99_ms, mAP ...)")
    p.add_argument("--constraint", metavar="METRIC<=N", action="append",
                   help="a point is feasible only when it holds, e.g. 'latency_p99_ms<=100'; repeatable")
    p.add_argument("--rerun", action="store_true", help="measure every point's performance again (a new repeat)")
    p.add_argument("--json", action="store_true", help="print the sweep document as JSON")
    _ray_flags(p)
    p.set_defaults(func=cmd_sweep)
    return parser


def _ray_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray (optional extra `mlbuild[ray]`)")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run as Ray tasks: on the cluster at ADDRESS (or $RAY_ADDRESS), else a local one")
    g.add_argument("--ray-store", metavar="DIR",
                   help="the store nodes realize into (default $MLBUILD_RAY_STORE on the node, else this store's path)")
    g.add_argument("--object-store-memory", type=int, metavar="BYTES",
                   help="object store size of a local Ray instance this command starts")


def render_error(e: BaseException, verbose: bool) -> int:
    from .errors import MlbuildError, StaleLockError

    if isinstance(e, MlbuildError):
        print(f"error: {e.message}", file=sys.stderr)
        if isinstance(e, StaleLockError):
            for r in e.reasons:
                print(f"  - {r}", file=sys.stderr)
        cause = e.__cause__
        while cause is not None:
            print(f"  caused by: {cause}", file=sys.stderr)
            cause = cause.__cause__
        for h in e.hints:
            print(f"hint: {h}", file=sys.stderr)
        if verbose:
            import traceback

            traceback.print_exception(e)
        return e.exit_code
    import traceback

    traceback.print_exception(e)
    print("error: internal error in mlbuild (a bug); the traceback is above", file=sys.stderr)
    return 70


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: unwound like Ctrl-C (staging removed, locks released)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    # Builders run in their own process groups (a terminal's Ctrl-C doesn't reach them): stop them first,
    # so that the workers waiting on them return and the unwinding below doesn't wait for a build.
    sandbox = sys.modules.get("mlbuild.sandbox")
    if sandbox is not None:
        sandbox.interrupt()
    raise _Interrupted(signum)


def _install_signal_handlers() -> dict[int, Any]:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv) if argv is not None else sys.argv[1:]
    chdir = None
    while argv[:1] == ["-C"] and len(argv) > 1:  # `mlbuild -C DIR COMMAND ...`, as git
        chdir, argv = argv[1], argv[2:]
    parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if chdir is not None and getattr(args, "chdir", None) is None:
        args.chdir = chdir
    ctx = Ctx(args)
    previous = _install_signal_handlers()
    try:
        from . import project

        project.apply_defaults(args)
        return int(args.func(ctx))
    except KeyboardInterrupt as e:
        import signal

        signum = e.signum if isinstance(e, _Interrupted) else signal.SIGINT
        ctx.close()
        print(f"interrupted ({signal.Signals(signum).name}); nothing half-built was kept", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # `mlbuild graph ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as e:
        if isinstance(e, SystemExit):
            raise
        ctx.close()
        return render_error(e, args.verbose)
    finally:
        ctx.close()
        if previous:
            import signal

            for signum, handler in previous.items():
                signal.signal(signum, handler)
            sandbox = sys.modules.get("mlbuild.sandbox")
            if sandbox is not None:
                sandbox.reset_interrupt()


def entrypoint() -> NoReturn:
    sys.exit(main())
