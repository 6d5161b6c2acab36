"""Cache metadata: an entry's narinfo-like record and a derivation's build trace, their signed
fingerprints, and the checks a reader makes before trusting either."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CacheFormatError, CacheTrustError
from ..hashing import canonical_json, sha256_hex, store_digest
from . import FORMAT

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DRV = re.compile(r"^[0-9a-f]{32}-.+$")


@dataclass(frozen=True)
class EntryMeta:
    """What a cache says about one entry (``entries/<name>.json``)."""

    name: str
    kind: str
    method: str
    size: int
    sha256: str
    blake3: str
    nar_sha256: str
    nar_size: int
    file_sha256: str
    file_size: int
    references: tuple[str, ...]
    deriver: Mapping[str, Any]
    sandbox: str
    sigs: tuple[tuple[str, str], ...]  # (keyid, base64 signature)

    def fingerprint(self) -> bytes:
        """What a signature signs (after Nix's ``1;path;narHash;narSize;refs``): the entry, its content
        hash, the stream's hash and size, its references, the digest of its deriver, and its sandbox."""
        return ";".join([
            FORMAT, self.name, self.kind, f"{self.method}:{self.sha256}", str(self.size), f"blake3:{self.blake3}",
            f"nar:{self.nar_sha256}", str(self.nar_size), ",".join(self.references),
            sha256_hex(canonical_json(dict(self.deriver))), self.sandbox,
        ]).encode()

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT, "name": self.name, "kind": self.kind, "method": self.method, "size": self.size,
            "sha256": self.sha256, "blake3": self.blake3,
            "nar": {"sha256": self.nar_sha256, "size": self.nar_size, "compression": "zstd",
                    "file_sha256": self.file_sha256, "file_size": self.file_size},
            "references": list(self.references), "deriver": dict(self.deriver), "sandbox": self.sandbox,
            "sigs": [{"keyid": k, "sig": s} for k, s in sorted(self.sigs)],
        }
        return canonical_json(doc) + b"\n"

    def signed(self, key: Ed25519PrivateKey) -> EntryMeta:
        from ..provenance import keyid

        kid = keyid(key.public_key())
        sig = base64.b64encode(key.sign(self.fingerprint())).decode()
        return _replace_sigs(self, tuple(sorted({*((k, s) for k, s in self.sigs if k != kid), (kid, sig)})))

    def signed_by(self, kid: str) -> bool:
        return any(k == kid for k, _ in self.sigs)


def _replace_sigs(m: EntryMeta, sigs: tuple[tuple[str, str], ...]) -> EntryMeta:
    from dataclasses import replace

    return replace(m, sigs=sigs)


@dataclass(frozen=True)
class Trace:
    """A build trace (``traces/<drv>.json``): derivation ``drv`` was built into ``entry`` (content ``sha256``)."""

    drv: str
    entry: str
    sha256: str
    sigs: tuple[tuple[str, str], ...]

    def fingerprint(self) -> bytes:
        return f"{FORMAT};trace;{self.drv};{self.entry};{self.sha256}".encode()

    def to_json(self) -> bytes:
        return canonical_json({"format": FORMAT, "drv": self.drv, "entry": self.entry, "sha256": self.sha256,
                               "sigs": [{"keyid": k, "sig": s} for k, s in sorted(self.sigs)]}) + b"\n"

    def signed(self, key: Ed25519PrivateKey) -> Trace:
        from dataclasses import replace

        from ..provenance import keyid

        kid = keyid(key.public_key())
        sig = base64.b64encode(key.sign(self.fingerprint())).decode()
        return replace(self, sigs=tuple(sorted({*((k, s) for k, s in self.sigs if k != kid), (kid, sig)})))


def _sigs(doc: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    raw = doc.get("sigs", [])
    if not isinstance(raw, list) or not all(isinstance(s, dict) and isinstance(s.get("keyid"), str)
                                            and isinstance(s.get("sig"), str) for s in raw):
        raise CacheFormatError(f"{where}: `sigs` must be a list of {{keyid, sig}}")
    return tuple((s["keyid"], s["sig"]) for s in raw)


def _load(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CacheFormatError(f"{where} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise CacheFormatError(f"{where} is not a JSON object")
    if doc.get("format") != FORMAT:
        raise CacheFormatError(f"{where} has format {doc.get('format')!r}; this mlbuild reads {FORMAT!r}",
                               hints=["use an mlbuild that knows this cache format, or another cache"])
    return doc


def parse_entry(data: bytes, name: str, where: str) -> EntryMeta:
    """The metadata of ``name`` read from ``data``, every field type- and shape-checked."""
    from ..store import check_entry_name

    doc = _load(data, where)
    nar = doc.get("nar")
    try:
        if not isinstance(nar, dict):
            raise TypeError("`nar` is not an object")
        refs = doc["references"]
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs) or refs != sorted(set(refs)):
            raise TypeError("`references` is not a sorted list of entry names")
        for r in refs:
            check_entry_name(r)
        m = EntryMeta(
            name=_str(doc, "name"), kind=_str(doc, "kind"), method=_str(doc, "method"), size=_int(doc, "size"),
            sha256=_hex(doc, "sha256"), blake3=_hex(doc, "blake3"), nar_sha256=_hex(nar, "sha256"),
            nar_size=_int(nar, "size"), file_sha256=_hex(nar, "file_sha256"), file_size=_int(nar, "file_size"),
            references=tuple(refs), deriver=_dict(doc, "deriver"), sandbox=_str(doc, "sandbox"),
            sigs=_sigs(doc, where))
        if nar.get("compression") != "zstd":
            raise TypeError(f"compression {nar.get('compression')!r} (expected zstd)")
    except (KeyError, TypeError, ValueError) as e:
        raise CacheFormatError(f"{where} is not valid entry metadata: {e}") from e
    except CacheFormatError:
        raise
    except Exception as e:  # check_entry_name's StoreError
        raise CacheFormatError(f"{where} is not valid entry metadata: {e}") from e
    if m.name != name:
        raise CacheFormatError(f"{where} describes `{m.name}`, not `{name}`")
    if m.method not in ("flat", "tree") or m.kind not in ("fixed", "built", "run"):
        raise CacheFormatError(f"{where}: method {m.method!r} / kind {m.kind!r} are not an entry's")
    if m.method == "tree" and (m.nar_sha256 != m.sha256 or m.nar_size != m.size):
        raise CacheFormatError(f"{where}: a directory's stream hash must be its content hash")
    check_name_derivation(m, where)
    return m


def check_name_derivation(m: EntryMeta, where: str) -> None:
    """An entry's name is derived from its deriver (built) or its content (fixed): check that it is."""
    d = dict(m.deriver)
    digest, label = m.name.split("-", 1)
    if d.get("type") == "resolved":
        want = store_digest({k: v for k, v in d.items() if k != "drv"})
        if want != digest:
            raise CacheFormatError(f"{where}: the entry name `{m.name}` is not derived from the deriver it "
                                   f"gives (expected digest {want})")
    elif d.get("type") == "fixed":
        want = store_digest({"type": "fixed", "method": m.method, "sha256": m.sha256, "name": label})
        if want != digest:
            raise CacheFormatError(f"{where}: the fixed entry `{m.name}` does not name the content it gives "
                                   f"(sha256 {m.sha256})")


def parse_trace(data: bytes, drv: str, where: str) -> Trace:
    doc = _load(data, where)
    try:
        t = Trace(drv=_str(doc, "drv"), entry=_str(doc, "entry"), sha256=_hex(doc, "sha256"), sigs=_sigs(doc, where))
    except (KeyError, TypeError, ValueError) as e:
        raise CacheFormatError(f"{where} is not a valid build trace: {e}") from e
    if t.drv != drv or not _DRV.match(t.entry):
        raise CacheFormatError(f"{where} traces `{t.drv}` -> `{t.entry}`, not a build of `{drv}`")
    return t


def _str(doc: Mapping[str, Any], key: str) -> str:
    v = doc[key]
    if not isinstance(v, str):
        raise TypeError(f"`{key}` is not a string")
    return v


def _int(doc: Mapping[str, Any], key: str) -> int:
    v = doc[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise TypeError(f"`{key}` is not a size")
    return v


def _hex(doc: Mapping[str, Any], key: str) -> str:
    v = doc[key]
    if not isinstance(v, str) or not _HEX64.match(v):
        raise TypeError(f"`{key}` is not 64 lowercase hex digits")
    return v


def _dict(doc: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = doc[key]
    if not isinstance(v, dict):
        raise TypeError(f"`{key}` is not an object")
    return v


def verify_sigs(fingerprint: bytes, sigs: tuple[tuple[str, str], ...], trusted: Mapping[str, Ed25519PublicKey],
                what: str, url: str) -> str:
    """The keyid of a trusted key whose signature over ``fingerprint`` verifies; else CacheTrustError."""
    from cryptography.exceptions import InvalidSignature

    if not sigs:
        raise CacheTrustError(f"{what} in `{url}` is not signed; refusing it", url=url,
                              hints=["push it with a signing key (`mlbuild key generate`), or build it here"])
    untrusted = []
    for kid, sig in sigs:
        key = trusted.get(kid)
        if key is None:
            untrusted.append(kid[:16])
            continue
        try:
            key.verify(base64.b64decode(sig, validate=True), fingerprint)
        except (InvalidSignature, ValueError) as e:
            raise CacheTrustError(f"{what} in `{url}` carries a signature by trusted key {kid[:16]} that does not "
                                  f"verify (the metadata was changed after signing); refusing it", url=url) from e
        return kid
    raise CacheTrustError(
        f"{what} in `{url}` is signed only by untrusted key(s) {', '.join(untrusted)}; refusing it", url=url,
        hints=["add the signer's public key to MLBUILD_TRUSTED_KEYS (paths separated by `:`) if you trust it"])
