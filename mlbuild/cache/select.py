"""What ``mlbuild copy`` moves: command-line words (targets, entry names, store paths) to entries."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CacheError, UsageError
from ..store import ENTRY_RE

if TYPE_CHECKING:
    from ..store import Store
    from .backends import Backend
    from .transfer import Policy


def _as_entry(text: str) -> str | None:
    name = Path(text).name if "/" in text else text
    return name if ENTRY_RE.match(name) else None


def entries_to_push(store: Store, texts: Iterable[str], plan: Callable[[list[str]], Any]) -> list[str]:
    """Entries named by ``texts``: store entries/paths/digest prefixes, or targets resolved from realisations."""
    out: list[str] = []
    targets: list[str] = []
    for t in texts:
        if _as_entry(t) is not None or "/" in t:
            out.append(store.resolve(t))
        else:
            targets.append(t)
    if targets:
        graph = plan(targets).resolve(store.realisation)
        for t in targets:
            node = graph.nodes[t]
            if node.entry is None or not store.is_valid(node.entry):
                raise UsageError(f"`{t}` is not realized in the store `{store.root}`; nothing to copy",
                                 hints=[f"run `mlbuild realize {t}` first"])
            out.append(node.entry)
    return out


def entries_to_pull(store: Store, backend: Backend, texts: Iterable[str], plan: Callable[[list[str]], Any],
                    policy: Policy) -> list[str]:
    """Entries named by ``texts``; a built target is found through this store's realisations, else
    the cache's (verified) build trace of its derivation."""
    from .transfer import read_trace

    out: list[str] = []
    targets: list[str] = []
    for t in texts:
        name = _as_entry(t)
        if name is not None:
            out.append(name)
        elif "/" in t:
            raise UsageError(f"`{t}` is neither a target nor a store entry name")
        else:
            targets.append(t)
    if not targets:
        return out
    graph = plan(targets)
    done: dict[str, tuple[str, str]] = {}
    for n in graph.order():  # inputs before dependents: a built node resolves from its inputs' outputs
        node = graph.nodes[n]
        if node.fixed:
            done[n] = (node.entry, node.artifact.hash.sha256)
            continue
        local = store.realisation(node.drv)
        if local is not None:
            done[n] = local
            continue
        tr = read_trace(backend, node.drv, policy)
        if tr is not None:
            done[n] = (tr.entry, tr.sha256)
    for t in targets:
        if t not in done:
            raise CacheError(f"the cache `{backend.url}` has no build trace of `{t}` (derivation "
                             f"`{graph.nodes[t].drv}`) and this store has no realisation of it", url=backend.url,
                             hints=["push it from a store that realized it: `mlbuild copy --to URL TARGET`"])
        out.append(done[t][0])
    return out
