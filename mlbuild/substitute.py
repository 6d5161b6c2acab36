"""Substituters: before building an entry, ask binary caches for it (``realize --substituter URL``,
``$MLBUILD_SUBSTITUTERS``, space-separated; trusted keys from ``$MLBUILD_TRUSTED_KEYS``).

The caches are asked in order.  An entry is taken only when its metadata is signed by a trusted
key, its name is derived from what it claims to be, a fixed entry's content hash is the lock's,
and its payload checks (size, sha256, stream and content hashes); otherwise it is refused, the
reason reported, and the next cache asked (then the entry is built).  A cache that does not
answer within the timeout (``$MLBUILD_SUBSTITUTER_TIMEOUT``, default 5 s) or refuses the
connection is skipped for the rest of the run.  Performance measurements (a run's
``performance`` part) and the results assembled from them are never substituted: a measurement
describes the machine that made it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import CacheError, CacheUnreachableError
from .reporter import NullReporter, Reporter

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from .cache.backends import Backend
    from .graph import Node
    from .store import Store

ENV = "MLBUILD_SUBSTITUTERS"
ASSEMBLY_BUILDER = "mlperf-result"


def urls_from(cli_values: Iterable[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """``--substituter`` values first, then ``$MLBUILD_SUBSTITUTERS`` (space-separated), without repeats."""
    env = os.environ if environ is None else environ
    out: list[str] = []
    for u in [*cli_values, *env.get(ENV, "").split()]:
        if u and u not in out:
            out.append(u)
    return out


def never_substituted(node: Node) -> str | None:
    """Why ``node`` is always made here (None: it may be substituted)."""
    if node.kind == "run" and node.fingerprint.get("part") == "performance":
        return "a performance measurement describes the machine that made it"
    if node.builder == ASSEMBLY_BUILDER:
        return "a result assembled from a performance measurement is made where it was measured"
    return None


class Substituters:
    """The caches of one realize, asked in order; a cache that is down is skipped after one timeout."""

    def __init__(self, urls: Iterable[str], trusted: Mapping[str, Ed25519PublicKey], *,
                 reporter: Reporter | None = None, timeout: float | None = None) -> None:
        from .cache.backends import open_cache

        self.reporter = reporter or NullReporter()
        self.trusted = dict(trusted)
        self.caches: list[Backend] = [open_cache(u, timeout=timeout) for u in urls]
        self.dead: dict[str, str] = {}  # url -> why it is skipped
        self.refused: list[tuple[str, str, str]] = []  # (entry, url, why)
        self.substituted: list[str] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.caches)

    def _down(self, cache: Backend, e: CacheError) -> None:
        with self._lock:
            if cache.url in self.dead:
                return
            self.dead[cache.url] = e.message
        self.reporter.on_message(f"substituter {cache.url} is down or slow ({e.message}); "
                                 f"skipping it for the rest of this run")

    def __call__(self, store: Store, node: Node, entry: str) -> str | None:
        """Substitute ``entry`` (node ``node``, whose lock the caller holds); its sha256, or None."""
        from .cache import transfer
        from .cache.meta import EntryMeta

        if never_substituted(node) is not None:
            return None
        policy = transfer.Policy(self.trusted)
        for cache in self.caches:
            if cache.url in self.dead:
                continue
            try:
                meta: EntryMeta | None = transfer.read_meta(cache, entry, policy)
                if meta is None:
                    continue
                if node.fixed:
                    a: Any = node.artifact
                    if (meta.method, meta.sha256, meta.size) != (a.hash.method, a.hash.sha256, a.hash.size):
                        raise CacheError(f"`{entry}` in `{cache.url}` has content sha256 {meta.sha256}, the lock "
                                         f"pins {a.hash.sha256}", url=cache.url)
                key = f"substitute:{node.name}"
                self.reporter.on_task_start(key, f"substitute {node.name} from {cache.url}", meta.nar_size)
                transfer.pull(store, cache, [entry], policy, held=entry, first={entry: meta})
                self.reporter.on_task_done(key, f"substituted {node.name} from {cache.url}")
            except CacheUnreachableError as e:
                self._down(cache, e)
                continue
            except CacheError as e:
                with self._lock:
                    self.refused.append((entry, cache.url, e.message))
                self.reporter.on_message(f"refused `{entry}` from {cache.url}: {e.message}")
                continue
            info = store.info(entry)
            if info is None or not store.is_valid(entry):
                continue
            with self._lock:
                self.substituted.append(entry)
            return info.hash.sha256
        return None


def from_cli(cli_urls: Iterable[str], reporter: Reporter | None = None,
             environ: Mapping[str, str] | None = None) -> Substituters | None:
    """The run's substituters (None when no cache is configured); trusted keys from the environment."""
    urls = urls_from(cli_urls, environ)
    if not urls:
        return None
    from .provenance import trusted_keys

    return Substituters(urls, trusted_keys([], environ), reporter=reporter)


def signing_key(path: str | None = None) -> Any:
    """The private key that signs what is pushed: ``path``, else your own (None when you have none)."""
    from pathlib import Path

    from .keypaths import signing_key_path
    from .provenance import load_private

    p = Path(path) if path else signing_key_path()
    if not path and not p.exists():
        return None
    return load_private(p)


def push(store: Store, urls: Iterable[str], names: Iterable[str], *, key: Any,
         reporter: Reporter | None = None) -> list[tuple[str, Any]]:
    """Upload ``names`` and their closure to each cache in ``urls``; (url, TransferReport) per cache."""
    from .cache import transfer
    from .cache.backends import open_cache

    names = sorted(set(names))
    out = []
    for u in urls:
        out.append((u, transfer.push(store, open_cache(u), names, key=key, reporter=reporter)))
    return out
