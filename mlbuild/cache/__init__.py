"""Binary caches: built store entries shared through a directory, HTTP(S) or S3, signed.

Format ``mlbuild-cache-1`` (documented in ARCHITECTURE.md, "Binary caches"):

    mlbuild-cache.json             {"format": "mlbuild-cache-1"}  (written with the first upload)
    entries/<entry>.json           an entry's metadata, narinfo-like, canonical JSON, signed
    nar/<sha256>.nar.zst           the entry's ``mlbuild-nar-1`` stream, zstd-compressed, named by the
                                   sha256 of the (uncompressed) stream
    traces/<drv>.json              a build trace: derivation digest -> entry and content sha256, signed

Uploads write the payload first and the metadata last, so a reader that finds the metadata finds
a complete payload (a cut upload leaves only a payload nobody points at, reused by the next
try).  Readers verify the signature against trusted keys, the compressed file's size and sha256,
the stream's sha256 and size while unpacking into a temporary directory, then the entry's content
hash, and only then hand it to the store's normal atomic add.
"""

from __future__ import annotations

FORMAT = "mlbuild-cache-1"
INFO_KEY = "mlbuild-cache.json"


def entry_key(name: str) -> str:
    return f"entries/{name}.json"


def nar_key(nar_sha256: str) -> str:
    return f"nar/{nar_sha256}.nar.zst"


def trace_key(drv: str) -> str:
    return f"traces/{drv}.json"
