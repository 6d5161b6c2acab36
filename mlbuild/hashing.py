"""Digests and canonical serialisation.

- ``hash_file(path)``: (size, sha256, blake3) of a file's bytes, one pass.
- ``hash_tree(path)``: the same over the canonical tree stream ``mlbuild-nar-1``
  (sorted entries, executable bit, symlink targets; no times, owners or other
  modes), as Nix's NAR does.  The stream format is specified in
  ``native/src/lib.rs`` and ARCHITECTURE.md; the hashing itself is native code
  (two hashers on two cores, the GIL released).
- ``canonical_json``: sorted keys, no whitespace, UTF-8 - what every hashed
  record is serialised with.
- ``store_digest``: the 32-hex-digit digest used in store entry names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import _native

Method = Literal["flat", "tree"]
TREE_FORMAT = _native.TREE_FORMAT


@dataclass(frozen=True, slots=True)
class ContentHash:
    """What a store entry's bytes are: size plus sha256 and blake3 (hex)."""

    method: Method
    size: int
    sha256: str
    blake3: str

    def __post_init__(self) -> None:
        for name in ("sha256", "blake3"):
            value = getattr(self, name)
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ValueError(f"`{name}` must be 64 lowercase hex digits, got {value!r}")
        if self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")


def hash_file(path: Path | str) -> ContentHash:
    size, sha, b3 = _native.hash_file(str(path))
    return ContentHash("flat", size, sha, b3)


def hash_tree(path: Path | str) -> ContentHash:
    size, sha, b3 = _native.hash_tree(str(path))
    return ContentHash("tree", size, sha, b3)


def hash_path(path: Path, method: Method) -> ContentHash:
    return hash_file(path) if method == "flat" else hash_tree(path)


def hash_bytes(data: bytes) -> ContentHash:
    h = _native.Hasher()
    h.update(data)
    size, sha, b3 = h.finish()
    return ContentHash("flat", size, sha, b3)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def store_digest(fingerprint: Any) -> str:
    """32 hex digits (128 bits) of sha256 over the canonical JSON of a fingerprint."""
    return sha256_hex(canonical_json(fingerprint))[:32]
