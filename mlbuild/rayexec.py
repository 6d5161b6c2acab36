"""Sweep points and realizes as Ray tasks (`mlbuild sweep --ray`, `mlbuild realize --ray`).

Imported only with ``--ray``; Ray itself is imported inside the functions that need it (the
optional extra ``mlbuild[ray]``).

- Each point (or realize target) is one task that runs ``mlbuild realize TARGET --set ...`` on
  a node, against that node's store (``--ray-store``, else ``$MLBUILD_RAY_STORE`` on the node,
  else the driver's store path: on a shared file system that is the driver's own store). The
  project's manifests and lock travel with the task; ``MLBUILD_SUBSTITUTERS``,
  ``MLBUILD_TRUSTED_KEYS`` and ``MLBUILD_MIRRORS`` are passed through, so nodes substitute their
  inputs from shared caches instead of rebuilding them.
- A point that measures performance asks for the custom resource ``mlbuild_bench: 1``; each
  node declares one (``ray start ... --resources '{"mlbuild_bench": 1}'``), so one measurement
  runs on a node at a time. Accuracy-only points ask for one CPU and may run side by side.
- The result comes back into the driver's store under the same names: when the node's store
  is not the driver's (another store id), the task ships the entries of the result's closure
  the driver lacks (a tar of each entry plus its registry record); the driver re-hashes each
  one against the shipped sha256/blake3 before committing it, then records the realisations.
  Identities are unchanged: the names are the node's, and the driver's own plan of the same
  point computes the same names on a machine with the same machine id.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .errors import CorruptEntryError, MlbuildError, StoreError, UsageError

BENCH_RESOURCE = "mlbuild_bench"
ENV_PASSTHROUGH = ("MLBUILD_SUBSTITUTERS", "MLBUILD_TRUSTED_KEYS", "MLBUILD_MIRRORS")
STORE_ENV = "MLBUILD_RAY_STORE"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("`--ray` needs Ray, which is not installed in this environment",
                         hints=["install the optional extra: pip install -e '.[ray]'"]) from None
    return ray


def connect(address: str | None, *, object_store_memory: int | None = None) -> Any:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``); with neither, start a local one on
    this machine that declares one benchmark slot."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        # a local instance of our own: Ray advertises the host's outward address unless told that
        # this is not a cluster of several hosts; this keeps it on 127.0.0.1 (read when ray is imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address or None, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(resources={BENCH_RESOURCE: 1}, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", object_store_memory=object_store_memory)
    except MlbuildError:
        raise
    except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError ...
        raise UsageError(f"cannot connect to the Ray cluster at `{address or os.environ.get('RAY_ADDRESS')}`: {e}",
                         hints=["start one with `ray start --head` (and `--resources "
                                f"'{{\"{BENCH_RESOURCE}\": 1}}'` on every node), or drop the address"]) from None
    return ray


def require_bench_slots(ray: Any) -> None:
    if ray.cluster_resources().get(BENCH_RESOURCE, 0) < 1:
        raise UsageError(f"no node of the Ray cluster declares the resource `{BENCH_RESOURCE}`; performance "
                         "runs would wait forever",
                         hints=[f"start each node with `--resources '{{\"{BENCH_RESOURCE}\": 1}}'`"])


# --------------------------------------------------------------------------- shipping entries


def export_entries(store: Any, names: Sequence[str], ship: set[str], fileobj: IO[bytes]) -> list[dict[str, Any]]:
    """Registry records of entries ``names`` of ``store``; a tar of those in ``ship`` into ``fileobj``."""
    records: list[dict[str, Any]] = []
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for name in names:
            info = store.info(name)
            if info is None:
                raise StoreError(f"`{name}` is not a valid entry of the store `{store.root}`")
            drvs = list((store.read_sidecar(name) or {}).get("realisations") or [])
            records.append({"name": name, "kind": info.kind, "method": info.hash.method, "size": info.hash.size,
                            "sha256": info.hash.sha256, "blake3": info.hash.blake3, "deriver": info.deriver,
                            "sandbox": info.sandbox, "references": sorted(info.references),
                            "realisations": sorted(drvs)})
            if name in ship:
                tar.add(str(store.path(name)), arcname=name, recursive=True)
    return records


def _topological(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    by_name = {r["name"]: r for r in records}
    out: list[Mapping[str, Any]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in by_name:
            return
        seen.add(name)
        for ref in by_name[name]["references"]:
            visit(ref)
        out.append(by_name[name])

    for r in records:
        visit(r["name"])
    return out


def import_entries(store: Any, records: Sequence[Mapping[str, Any]], bundle: IO[bytes]) -> list[str]:
    """Add shipped entries to ``store`` under their names, each re-hashed against its record;
    then record their realisations. Returns the names added (present ones are checked)."""
    from .hashing import ContentHash

    added: list[str] = []
    if not records:
        return added
    with tarfile.open(fileobj=bundle, mode="r") as tar:
        members = tar.getmembers()
        for rec in _topological(records):
            name = rec["name"]
            from .store import check_entry_name

            check_entry_name(name)
            have = store.info(name)
            if have is not None:
                if have.hash.sha256 != rec["sha256"]:
                    raise StoreError(f"`{name}` came back from a Ray node with sha256 {rec['sha256']}, but this store "
                                     f"holds it with {have.hash.sha256}")
                continue
            mine = [m for m in members if m.name == name or m.name.startswith(name + "/")]
            if not mine:
                raise StoreError(f"`{name}` was not shipped back from the Ray node")
            for m in mine:
                parts = Path(m.name).parts
                if ".." in parts or m.name.startswith("/") or not (m.isfile() or m.isdir() or m.issym()):
                    raise StoreError(f"shipped entry `{name}` holds an unsafe member `{m.name}`")
            with store.entry_lock(name), store.staging(name) as tmp:
                for m in mine:
                    tar.extract(m, path=tmp, set_attrs=False, filter="tar")
                    if m.isfile() and m.mode & 0o111:
                        os.chmod(tmp / m.name, 0o755)
                expected = ContentHash(rec["method"], int(rec["size"]), rec["sha256"], rec["blake3"])
                try:
                    store.commit(tmp / name, name, kind=rec["kind"], method=rec["method"], deriver=rec["deriver"],
                                 references=rec["references"], sandbox=rec["sandbox"], expected=expected)
                except CorruptEntryError as e:
                    raise CorruptEntryError(
                        f"`{name}` shipped from a Ray node does not match its recorded content hash "
                        f"(sha256 {rec['sha256']}): {e.args[0] if e.args else e}; nothing of it was added",
                        hints=["realize the point again; check the node's store with `mlbuild store verify`"],
                    ) from None
            added.append(name)
    for rec in records:
        for drv in rec["realisations"]:
            store.add_realisation(drv, rec["name"])
        if rec["kind"] == "run" and rec["name"] in added:
            store.record_completion(rec["name"])
    return added


# --------------------------------------------------------------------------- the task


def _realize_task(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Runs on a node: realize one target with overrides into the node's store; ship back what
    the driver lacks."""
    import socket
    import subprocess
    import tempfile

    from .store import Store

    node = socket.gethostname()
    store_dir = payload.get("store") or os.environ.get(STORE_ENV) or payload["driver_store"]
    with tempfile.TemporaryDirectory(prefix="mlbuild-ray-") as d:
        root = Path(d)
        (root / "manifests").mkdir()
        for fname, text in payload["manifests"].items():
            (root / "manifests" / fname).write_bytes(text)
        lock_args: list[str] = []
        if payload.get("lock") is not None:
            (root / "lock").mkdir()
            (root / "lock" / "mlbuild.lock").write_bytes(payload["lock"])
            lock_args = ["--lock", str(root / "lock" / "mlbuild.lock")]
        cmd = [sys.executable, "-m", "mlbuild", "realize", payload["target"], "--store", store_dir,
               "--manifests", str(root / "manifests"), "--no-progress", "-j", str(payload.get("jobs", 1)), *lock_args]
        for m in payload.get("mirrors", []):
            cmd += ["--mirror", m]
        for k, v in payload["overrides"].items():
            cmd += ["--set", f"{k}={json.dumps(v) if isinstance(v, bool) else v}"]
        env = dict(os.environ, MLBUILD_NO_PROGRESS="1")
        env.update(payload.get("env", {}))
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "caused by:", "hint:"))]
        return {"node": node, "error": " ".join(lines) or r.stderr.strip()[-500:] or f"exit {r.returncode}"}
    out_lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    entry = Path(out_lines[-1]).name
    store = Store(Path(store_dir))
    try:
        same = store.marker_id() == payload.get("driver_store_id")
        if same:
            return {"node": node, "entry": entry, "records": [], "bundle": b""}
        closure = sorted(store.closure([entry]))
        have = set(payload.get("have", ()))
        # every closure entry's record (its realisations matter to the driver's plans); the
        # files only of those the driver lacks
        buf = io.BytesIO()
        records = export_entries(store, closure, {n for n in closure if n not in have}, buf)
        return {"node": node, "entry": entry, "records": records, "bundle": buf.getvalue()}
    finally:
        store.close()


class RayRunner:
    """Submits realizes of (target, overrides) to a Ray cluster and brings results home."""

    def __init__(self, *, store: Any, manifests: Path, lock_path: Path | None, mirrors: Sequence[str],
                 address: str | None, worker_store: str | None = None, object_store_memory: int | None = None,
                 jobs: int = 1) -> None:
        self.store = store
        self.ray = connect(address, object_store_memory=object_store_memory)
        self.base = {
            "manifests": {p.name: p.read_bytes() for p in sorted(Path(manifests).glob("*.toml"))},
            "lock": lock_path.read_bytes() if lock_path is not None and lock_path.exists() else None,
            "mirrors": [str(Path(m).resolve()) if "://" not in m and Path(m).exists() else m for m in mirrors],
            "env": {k: os.environ[k] for k in ENV_PASSTHROUGH if k in os.environ},
            "store": worker_store,
            "driver_store": str(Path(store.root).resolve()),
            "driver_store_id": store.marker_id(),
            "jobs": jobs,
        }
        self.task = self.ray.remote(_realize_task)

    def submit(self, target: str, overrides: Mapping[str, Any], *, performance: bool) -> Any:
        payload = dict(self.base, target=target, overrides=dict(overrides), have=sorted(self.store.entries()))
        if performance:
            require_bench_slots(self.ray)
            opts: dict[str, Any] = {"resources": {BENCH_RESOURCE: 1}, "num_cpus": 0}
        else:
            opts = {"num_cpus": 1}
        return self.task.options(max_retries=0, **opts).remote(payload)

    def wait_all(self, refs: Sequence[Any], on_done: Callable[[int, dict[str, Any] | None, str | None], None]) -> None:
        """Calls ``on_done(index, reply, error)`` as each task finishes (in completion order)."""
        pending = {ref: i for i, ref in enumerate(refs)}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    reply = self.ray.get(ref)
                except Exception as e:  # a task that died (node lost, worker crashed)
                    on_done(i, None, f"the Ray task failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
                    continue
                if reply.get("error"):
                    on_done(i, reply, f"on node {reply.get('node')}: {reply['error']}")
                    continue
                try:
                    import_entries(self.store, reply["records"], io.BytesIO(reply["bundle"]))
                except MlbuildError as e:
                    on_done(i, reply, f"bringing the result home failed: {e}")
                    continue
                if not self.store.is_valid(reply["entry"]):
                    on_done(i, reply, f"`{reply['entry']}` is not in the store after the Ray task")
                    continue
                on_done(i, reply, None)

    def close(self) -> None:
        self.ray.shutdown()


class RayExecutor:
    """A sweep executor (``sweep.Executor``) over a :class:`RayRunner`."""

    def __init__(self, runner: RayRunner, local: Any) -> None:
        self.runner, self.local = runner, local  # local: a sweep.LocalExecutor (planning, reuse)

    def __call__(self, spec: Any, points: list[Any], rerun: bool, log: Callable[[str], None]) -> list[Path | None]:
        from .sweep import describe_error

        if rerun:
            raise UsageError("`--rerun` with `--ray` is not supported yet",
                             hints=["rerun the sweep without `--ray` to measure again on this machine"])
        store = self.runner.store
        paths: list[Path | None] = [None] * len(points)
        refs: list[Any] = []
        index: list[int] = []
        for k, p in enumerate(points):
            label = ", ".join(f"{a}={v}" for a, v in p.settings.items())
            try:
                graph = self.local.plan(spec.target, p.overrides, False)
            except MlbuildError as e:
                p.error = describe_error(e)
                log(f"point {k + 1}/{len(points)}: {label}: failed: {p.error}")
                continue
            p.drv = graph.nodes[spec.target].drv
            resolved = graph.resolve(store.realisation).nodes[spec.target].entry
            if resolved is not None and store.is_valid(resolved):
                p.reused, p.entry, paths[k] = True, resolved, store.path(resolved)
                log(f"point {k + 1}/{len(points)}: {label}: reused")
                continue
            perf = f"{spec.target}/performance" in graph.nodes
            refs.append(self.runner.submit(spec.target, p.overrides, performance=perf))
            index.append(k)
            log(f"point {k + 1}/{len(points)}: {label}: submitted to Ray")

        def done(i: int, reply: dict[str, Any] | None, error: str | None) -> None:
            k = index[i]
            p = points[k]
            p.where = str((reply or {}).get("node") or "ray")
            label = ", ".join(f"{a}={v}" for a, v in p.settings.items())
            if error is not None:
                p.error = error
                log(f"point {k + 1}/{len(points)}: {label}: failed: {error}")
                return
            assert reply is not None
            p.entry = reply["entry"]
            paths[k] = store.path(reply["entry"])
            log(f"point {k + 1}/{len(points)}: {label}: done on {p.where}")

        self.runner.wait_all(refs, done)
        return paths
