"""Where signing keys and attestations live: cheap paths, importing nothing heavy.

The no-op `realize` asks :func:`unattested` (a key exists, a result has no attestation yet)
without importing the provenance module and its crypto; the key directory's rule lives in
``mlbuild.fastpath`` (which answers the plainest no-op realize without importing this)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .fastpath import KEY_NAME
from .fastpath import keys_dir as _keys_dir

if TYPE_CHECKING:
    from .store import Store

PRIVATE_NAME = KEY_NAME
PUBLIC_NAME = "mlbuild-ed25519.pub"


def keys_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$MLBUILD_KEYS``, else ``~/.config/mlbuild/keys``."""
    return Path(_keys_dir(environ))


def signing_key_path(environ: Mapping[str, str] | None = None) -> Path:
    return keys_dir(environ) / PRIVATE_NAME


def attestation_path(store: Store, entry: str) -> Path:
    """A result's DSSE envelope: beside the entry in the store's metadata, never inside it."""
    return store.meta / "attestations" / f"{entry}.dsse.json"


def unattested(store: Store, entries: Iterable[str]) -> list[str]:
    """The run entries that realize would sign now: a signing key exists and they have no
    attestation yet (a few stats; the no-op realize asks)."""
    if not signing_key_path().exists():
        return []
    return [e for e in entries if not attestation_path(store, e).exists()]
