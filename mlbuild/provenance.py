"""Signed provenance of results: in-toto Statement v1 + SLSA provenance v1 in a DSSE envelope.

- Keys: ed25519 (the ``cryptography`` package).  ``generate_key`` writes ``mlbuild-ed25519.key``
  (PKCS#8 PEM, mode 0600) and ``mlbuild-ed25519.pub`` (SubjectPublicKeyInfo PEM) into
  ``$MLBUILD_KEYS`` or ``~/.config/mlbuild/keys``.  A key's id is the sha256 (hex) of its 32 raw
  public key bytes.
- Statement: ``subject`` lists every file of the result entry (relative path, sha256 of its
  bytes); the predicate's ``resolvedDependencies`` are the lockfile (sha256 of its bytes) and
  every entry of the result's closure (entry name, sha256 of its bytes, or of its
  ``mlbuild-nar-1`` stream for a directory, and its deriver).  Nothing in it is a time, an
  absolute path or a host name; it is serialised as canonical JSON, so that signing the same
  result twice gives the same envelope (ed25519 signatures are deterministic).
- Envelope: DSSE v1, payloadType ``application/vnd.in-toto+json``, signature over
  ``PAE(type, payload) = "DSSEv1" SP len(type) SP type SP len(payload) SP payload``.
- Where: ``<store>/.mlbuild/attestations/<entry>.dsse.json`` beside the copy of the lockfile the
  result was realized from (``<entry>.lock``); the entry itself stays a pure function of its
  identity.  ``export_result`` writes the entry's files, ``provenance.dsse.json`` and
  ``mlbuild.lock`` into one directory for a peer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ProvenanceError, SignatureError, UsageError
from .keypaths import PRIVATE_NAME, PUBLIC_NAME, attestation_path, keys_dir, signing_key_path

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from .store import Store

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:mlbuild:realize:v1"
BUILDER_ID = "urn:mlbuild:builder"
ATTESTATION_NAME = "provenance.dsse.json"  # in an exported result directory
LOCK_NAME = "mlbuild.lock"  # in an exported result directory
RESULT_NAME = "result.json"


# --------------------------------------------------------------------------- keys


def raw_public(pub: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keyid(pub: Ed25519PublicKey) -> str:
    """sha256 (hex) of the 32 raw bytes of an ed25519 public key."""
    return hashlib.sha256(raw_public(pub)).hexdigest()


def generate_key(out: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write a new ed25519 key pair into ``out``; return (private path, public path, keyid)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    priv_path, pub_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    if priv_path.exists() and not force:
        raise UsageError(f"a signing key already exists at `{priv_path}`; not overwriting it",
                         hints=["pass `--force` to replace it (results signed with it stay verifiable "
                                "with its public key), or `--out DIR` for another place"])
    key = Ed25519PrivateKey.generate()
    try:
        out.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        tmp = priv_path.with_name(priv_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.chmod(tmp, 0o600)
        os.replace(tmp, priv_path)
        pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        pub_path.write_bytes(pub_pem)
    except OSError as e:
        raise UsageError(f"cannot write the key pair into `{out}`: {e}") from e
    return priv_path, pub_path, keyid(key.public_key())


def load_private(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ProvenanceError(f"cannot read the signing key `{path}`: {e}",
                              hints=["`mlbuild key generate` writes a new one"]) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvenanceError(f"`{path}` is not an ed25519 private key", hints=["`mlbuild key generate`"])
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """A public key file (PEM), or the public half of a private key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the public key `{path}`: {e}") from e
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as e:
            raise UsageError(f"`{path}` is not a PEM ed25519 public key", hints=[
                f"a public key is the `{PUBLIC_NAME}` that `mlbuild key generate` wrote"]) from e
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"`{path}` holds a public key, but not an ed25519 one")
    return key


def trusted_keys(paths: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, Ed25519PublicKey]:
    """keyid -> key for ``--key`` files and ``$MLBUILD_TRUSTED_KEYS`` (paths separated by ``:``;
    a directory means every ``*.pub`` in it).  With neither, your own public key, if you have one."""
    env = os.environ if environ is None else environ
    files: list[Path] = []
    given = list(paths) + [p for p in env.get("MLBUILD_TRUSTED_KEYS", "").split(os.pathsep) if p]
    for p in given:
        path = Path(p)
        files.extend(sorted(path.glob("*.pub")) if path.is_dir() else [path])
    if not given:
        own = keys_dir(env) / PUBLIC_NAME
        if own.exists():
            files.append(own)
    out: dict[str, Ed25519PublicKey] = {}
    for f in files:
        k = load_public(f)
        out[keyid(k)] = k
    return out


# --------------------------------------------------------------------------- DSSE


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def sign_envelope(statement: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    from .hashing import canonical_json

    payload = canonical_json(statement)
    sig = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": keyid(key.public_key()), "sig": base64.b64encode(sig).decode()}],
    }


def open_envelope(envelope: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey], where: str
                  ) -> tuple[dict[str, Any], str]:
    """Check the envelope's signature with a trusted key; return (statement, keyid that signed)."""
    from cryptography.exceptions import InvalidSignature

    try:
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        sigs = [(s["keyid"], base64.b64decode(s["sig"], validate=True)) for s in envelope["signatures"]]
    except (KeyError, TypeError, ValueError) as e:
        raise SignatureError(f"`{where}` is not a DSSE envelope (payload, payloadType, signatures): {e}") from e
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"`{where}`: payloadType is `{payload_type}`, expected `{PAYLOAD_TYPE}`")
    if not trusted:
        raise SignatureError(f"`{where}` is signed by {', '.join(k[:16] for k, _ in sigs) or 'nobody'}, "
                             "but no key is trusted", hints=[
                                 "pass the signer's public key with `--key PUB` (or list it in "
                                 "$MLBUILD_TRUSTED_KEYS)"])
    message = pae(payload_type, payload)
    tried: list[str] = []
    for kid, sig in sigs:
        candidates = [(kid, trusted[kid])] if kid in trusted else list(trusted.items())
        for trusted_id, key in candidates:
            try:
                key.verify(sig, message)
            except InvalidSignature:
                tried.append(kid)
                continue
            try:
                statement = json.loads(payload)
            except ValueError as e:
                raise SignatureError(f"`{where}`: the signed payload is not JSON: {e}") from e
            return statement, trusted_id
    known = [k for k, _ in sigs if k in trusted]
    if known:
        raise SignatureError(f"`{where}`: the signature by key {known[0][:16]} does not verify: the statement "
                             "or the signature was altered (forged or tampered)",
                             hints=["ask the signer for the original attestation; do not trust this result"])
    raise SignatureError(
        f"`{where}` is signed by key {', '.join(k[:16] for k, _ in sigs) or '(none)'}, which is not among the "
        f"trusted keys ({', '.join(k[:16] for k in sorted(trusted))}), and no trusted key verifies it",
        hints=["pass the signer's public key with `--key PUB` if you trust it"])


# --------------------------------------------------------------------------- statement


def _files(root: Path) -> list[tuple[str, Path]]:
    if root.is_file():
        return [(root.name, root)]
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out.append((p.relative_to(root).as_posix(), p))
    return out


def _file_sha256(path: Path) -> str:
    from .hashing import hash_file

    return hash_file(path).sha256


def subjects_of(entry_path: Path) -> list[dict[str, Any]]:
    return [{"name": rel, "digest": {"sha256": _file_sha256(p)}} for rel, p in _files(entry_path)]


def statement_for(store: Store, entry: str, lock_path: Path | None, closure: Iterable[str] | None = None
                  ) -> dict[str, Any]:
    from . import __version__

    info = store.info(entry)
    if info is None:
        raise ProvenanceError(f"cannot attest `{entry}`: it is not a valid entry of `{store.root}`")
    deps: list[dict[str, Any]] = []
    if lock_path is not None and lock_path.exists():
        deps.append({"name": f"lock/{LOCK_NAME}", "digest": {"sha256": _file_sha256(lock_path)},
                     "annotations": {"role": "lock"}})
    names = set(closure) if closure is not None else store.closure([entry])
    for name in sorted(names - {entry}):
        d = store.info(name)
        if d is None:
            raise ProvenanceError(f"cannot attest `{entry}`: its dependency `{name}` is not a valid entry")
        deps.append({"name": name, "uri": f"mlbuild:store/{name}", "digest": {"sha256": d.hash.sha256},
                     "annotations": {"kind": d.kind, "method": d.hash.method, "size": d.hash.size,
                                     "deriver": d.deriver}})
    deriver = dict(info.deriver)
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects_of(store.path(entry)),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"target": entry.split("-", 1)[1], "params": deriver.get("params", {})},
                "internalParameters": {"derivation": deriver},
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"mlbuild": __version__}},
                "metadata": {"invocationId": entry},
                "byproducts": [{"name": entry, "digest": {"sha256": info.hash.sha256},
                                "annotations": {"method": info.hash.method, "size": info.hash.size}}],
            },
        },
    }


def lock_copy_path(store: Store, entry: str) -> Path:
    return store.meta / "attestations" / f"{entry}.lock"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def attest_result(store: Store, entry: str, lock_path: Path | None, closure: Iterable[str] | None = None
                  ) -> Path | None:
    """After realizing a run ``entry``: keep a copy of the lock beside it and, when a signing key
    exists, sign its provenance.  Returns the attestation's path, or None when there is no key.

    ``closure``: the entries the result depends on (default: its closure in the store)."""
    if lock_path is not None and lock_path.exists():
        data = lock_path.read_bytes()
        copy = lock_copy_path(store, entry)
        if not copy.exists() or copy.read_bytes() != data:
            _write_atomic(copy, data)
    key_path = signing_key_path()
    if not key_path.exists():
        return None
    key = load_private(key_path)
    envelope = sign_envelope(statement_for(store, entry, lock_path, closure), key)
    out = attestation_path(store, entry)
    text = json.dumps(envelope, indent=2, sort_keys=True) + "\n"
    if not out.exists() or out.read_text() != text:
        _write_atomic(out, text.encode())
    return out


# --------------------------------------------------------------------------- result references


@dataclass(frozen=True)
class ResultRef:
    """A result to verify, reproduce or compare: a store entry or an exported directory."""

    dir: Path
    entry: str
    attestation: Path | None
    lock: Path | None
    in_store: bool

    @property
    def result_json(self) -> Path:
        return self.dir / RESULT_NAME

    def load(self) -> dict[str, Any]:
        """The result.json ({} for an entry that is not a benchmark run)."""
        return load_result_json(self.result_json) if self.result_json.exists() else {}


def load_result_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read `{path}`: {e}") from e
    except ValueError as e:
        raise UsageError(f"`{path}` is not JSON: {e}", hints=["give the result.json a run wrote"]) from e
    if not isinstance(data, dict):
        raise UsageError(f"`{path}`: expected a result object, found {type(data).__name__}")
    return data


def locate_result(text: str, store: Store | None) -> ResultRef:
    """``text``: a result.json, a directory from `mlbuild export`, or a store entry (or prefix)."""
    path = Path(text)
    d = path.parent if path.is_file() else path
    if path.is_file() or (path.is_dir() and ((path / RESULT_NAME).is_file() or (path / ATTESTATION_NAME).is_file())):
        if store is not None and d.parent.resolve() == store.root.resolve() and store.info(d.name) is not None:
            return _store_ref(store, d.name)
        att = d / ATTESTATION_NAME
        lock = d / LOCK_NAME
        result = load_result_json(d / RESULT_NAME) if (d / RESULT_NAME).is_file() else {}
        entry = run_entry(result) or (_invocation(att) if att.exists() else None) or d.name
        return ResultRef(d, entry, att if att.exists() else None, lock if lock.exists() else None, False)
    if store is None or path.exists():
        raise UsageError(f"`{text}` is neither a result.json, a directory from `mlbuild export`, nor a store entry",
                         hints=["a store entry needs `--store DIR` (or $MLBUILD_STORE) when it is not ./store"])
    return _store_ref(store, store.resolve(text))


def read_statement_unverified(envelope_path: Path) -> dict[str, Any]:
    """The statement inside an envelope, without checking its signature (for display and planning)."""
    try:
        env = json.loads(envelope_path.read_text(encoding="utf-8"))
        st = json.loads(base64.b64decode(env["payload"]))
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return st if isinstance(st, dict) else {}


def _invocation(envelope_path: Path) -> str | None:
    st = read_statement_unverified(envelope_path)
    inv = ((st.get("predicate") or {}).get("runDetails") or {}).get("metadata", {}).get("invocationId")
    return inv if isinstance(inv, str) else None


def _store_ref(store: Store, entry: str) -> ResultRef:
    att = attestation_path(store, entry)
    lock = lock_copy_path(store, entry)
    return ResultRef(store.path(entry), entry, att if att.exists() else None, lock if lock.exists() else None, True)


# Accessors of result.json fields: the one place that knows its layout (schema 1 and the
# fields the run's later schema adds), so that reproduce and diff adapt in a few lines.


def run_entry(result: Mapping[str, Any]) -> str | None:
    run = result.get("run")
    if isinstance(run, Mapping) and isinstance(run.get("entry"), str):
        return str(run["entry"])
    return None


def run_params(result: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters as given (without the ``*_effective`` values the run derived)."""
    params = result.get("params") or {}
    return {k: v for k, v in params.items() if not k.endswith("_effective")}


def _pairs(block: Any) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for k, v in (block or {}).items():
        if isinstance(v, str):
            out[k] = (v, None)
        elif isinstance(v, Mapping) and isinstance(v.get("entry"), str):
            sha = v.get("sha256")
            out[k] = (str(v["entry"]), str(sha) if isinstance(sha, str) else None)
    return out


def _prov(result: Mapping[str, Any]) -> Mapping[str, Any]:
    p = result.get("provenance")
    return p if isinstance(p, Mapping) else {}


def run_inputs(result: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """input name -> (entry, sha256 of its content, or None where the result does not record it)."""
    return _pairs(_prov(result).get("inputs")) or _pairs(result.get("inputs"))


def run_parts(result: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """A split run's parts (``accuracy``, ``performance``) -> (entry, sha256)."""
    return _pairs(_prov(result).get("parts"))


def closure_lock(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The locked artifacts the result depends on and their digest (``provenance.lock``)."""
    lock = _prov(result).get("lock")
    return dict(lock) if isinstance(lock, Mapping) else None


def accuracy_log(ref_dir: Path, result: Mapping[str, Any]) -> Path | None:
    """The result's mlperf_log_accuracy.json, when its directory holds it."""
    rec = _prov(result).get("accuracy_log")
    candidates = []
    if isinstance(rec, Mapping) and isinstance(rec.get("path"), str):
        candidates.append(ref_dir / rec["path"])
    logs = result.get("logs") or {}
    sub = logs.get("accuracy") if isinstance(logs, Mapping) else None
    if isinstance(sub, str):
        candidates.append(ref_dir / sub / "mlperf_log_accuracy.json")
    return next((p for p in candidates if p.is_file()), None)


def accuracy_log_digest(result: Mapping[str, Any]) -> str | None:
    rec = _prov(result).get("accuracy_log")
    if isinstance(rec, Mapping) and isinstance(rec.get("sha256"), str):
        return str(rec["sha256"])
    return None


def cpu_isa(result: Mapping[str, Any]) -> Any:
    return _prov(result).get("cpu_isa")


def machine(result: Mapping[str, Any]) -> dict[str, Any]:
    m = result.get("system") or {}
    out = dict(m) if isinstance(m, Mapping) else {}
    mid = _prov(result).get("machine")
    if isinstance(mid, Mapping):
        out.setdefault("machine_id", dict(mid))
    return out


# --------------------------------------------------------------------------- verify


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Verification:
    entry: str
    keyid: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "keyid": self.keyid, "ok": self.ok,
                "checks": [{"what": c.what, "ok": c.ok, "detail": c.detail} for c in self.checks]}


def verify(ref: ResultRef, trusted: Mapping[str, Ed25519PublicKey], store: Store | None,
           *, attestation: Path | None = None, lock: Path | None = None) -> Verification:
    """Check the signature, the result's files against the statement's subjects, the lock and
    every closure entry this store holds against the statement's digests (re-hashing them).

    Raises SignatureError when the envelope is not signed by a trusted key; returns the
    checks otherwise (``require_verified`` turns failed ones into an error)."""
    att = attestation or ref.attestation
    if att is None or not att.exists():
        raise ProvenanceError(f"`{ref.entry}` has no attestation" + (f" (looked for `{att}`)" if att else ""),
                              hints=["results are signed at realize time when a key exists: "
                                     "run `mlbuild key generate`, then `mlbuild realize` the target again"])
    try:
        envelope = json.loads(att.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SignatureError(f"cannot read the attestation `{att}`: {e}") from e
    if not isinstance(envelope, dict):
        raise SignatureError(f"`{att}` is not a DSSE envelope")
    statement, kid = open_envelope(envelope, trusted, str(att))
    v = Verification(ref.entry, kid)
    v.checks.append(Check("signature", True, f"DSSE ed25519 signature by trusted key {kid[:16]}"))
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        v.checks.append(Check("statement", False, f"expected an in-toto {STATEMENT_TYPE} with predicate "
                                                  f"{PREDICATE_TYPE}, found {statement.get('_type')} / "
                                                  f"{statement.get('predicateType')}"))
        return v
    pred = statement.get("predicate") or {}
    invocation = ((pred.get("runDetails") or {}).get("metadata") or {}).get("invocationId")
    v.checks.append(Check("entry", invocation == ref.entry,
                          f"statement is about `{invocation}`" + ("" if invocation == ref.entry
                                                                   else f", but the result is `{ref.entry}`")))
    # subjects: every file of the result, and nothing else in it
    subjects = {s.get("name"): (s.get("digest") or {}).get("sha256") for s in statement.get("subject") or []}
    present = dict(_files(ref.dir))
    extra = {ATTESTATION_NAME, LOCK_NAME} if not ref.in_store else set()
    bad: list[str] = []
    for name, want in sorted(subjects.items()):
        p = present.get(str(name))
        if p is None:
            bad.append(f"{name}: missing")
            continue
        got = _file_sha256(p)
        if got != want:
            bad.append(f"{name}: sha256 {got}, signed {want}")
    for name in sorted(set(present) - set(subjects) - extra):
        bad.append(f"{name}: not in the signed statement")
    v.checks.append(Check("result files", not bad, "; ".join(bad) if bad else
                          f"{len(subjects)} file(s) match the signed digests"))
    # the run's own record of its identity and inputs must agree with the signed closure
    deps = (pred.get("buildDefinition") or {}).get("resolvedDependencies") or []
    dep_digest = {d.get("name"): (d.get("digest") or {}).get("sha256") for d in deps}
    try:
        result = ref.load()
    except UsageError as e:
        result = {}
        v.checks.append(Check("result.json", False, e.message))
    recorded = {**run_inputs(result), **run_parts(result)}
    wrong = []
    for k, (dep, sha) in sorted(recorded.items()):
        if dep not in dep_digest:
            wrong.append(f"{k} = {dep} is not in the signed closure")
        elif sha is not None and sha != dep_digest[dep]:
            wrong.append(f"{k} = {dep} has sha256 {sha} in result.json, {dep_digest[dep]} signed")
    if result:
        v.checks.append(Check("inputs", not wrong, "; ".join(wrong) if wrong else
                              f"{len(recorded)} input(s) recorded by the result are in the signed closure"))
    # the lock
    lock_path = lock or ref.lock
    lock_dep = next((d for d in deps if (d.get("annotations") or {}).get("role") == "lock"), None)
    if lock_dep is not None and lock_path is not None and lock_path.exists():
        got = _file_sha256(lock_path)
        want = (lock_dep.get("digest") or {}).get("sha256")
        v.checks.append(Check("lock", got == want, f"`{lock_path.name}` sha256 {got}" + (
            " matches" if got == want else f", signed {want}")))
    # the closure's entries, where this store holds them
    if store is not None:
        checked, changed, absent = 0, [], 0
        for d in deps:
            name = d.get("name")
            if (d.get("annotations") or {}).get("role") == "lock" or not isinstance(name, str):
                continue
            info = store.info(name)
            if info is None:
                absent += 1
                continue
            ok, why = store.verify_entry(name)
            want = (d.get("digest") or {}).get("sha256")
            checked += 1
            if not ok:
                changed.append(f"{name}: {why}")
            elif info.hash.sha256 != want:
                changed.append(f"{name}: sha256 {info.hash.sha256}, signed {want}")
        if ref.in_store:
            ok, why = store.verify_entry(ref.entry)
            if not ok:
                changed.append(f"{ref.entry}: {why}")
        noun = "entry" if checked == 1 else "entries"
        detail = "; ".join(changed) if changed else f"{checked} {noun} re-hashed, all match"
        if absent:
            detail += f" ({absent} not in this store)"
        v.checks.append(Check("closure entries", not changed, detail))
    return v


def require_verified(v: Verification) -> None:
    bad = [c for c in v.checks if not c.ok]
    if bad:
        raise ProvenanceError(
            f"`{v.entry}` does not verify: " + "; ".join(f"{c.what}: {c.detail}" for c in bad),
            hints=["the result, its lock or an entry it was built from changed after it was signed; "
                   "do not trust its figures: realize it again (`mlbuild store verify --repair` restores entries)"])


# --------------------------------------------------------------------------- export


def lock_fits(lock_path: Path, result: Mapping[str, Any]) -> list[str]:
    """Artifacts of the result's closure lock that ``lock_path`` pins differently (or not at all)."""
    from . import lock as lockmod

    wanted = (closure_lock(result) or {}).get("artifacts") or {}
    lock = lockmod.read(lock_path)
    bad = []
    for name, pin in sorted(wanted.items()):
        art = lock.artifacts.get(name)
        if art is None or art.hash.sha256 != pin.get("sha256"):
            bad.append(name)
    return bad


def export_result(ref: ResultRef, dest: Path, *, lock: Path | None = None, fallback_lock: Path | None = None
                  ) -> list[str]:
    """Copy the result's files, its attestation and its lock into ``dest`` (for a peer).

    The lock: ``lock`` if given, else the copy kept when the result was realized, else
    ``fallback_lock``; it must pin every artifact of the result's closure lock as the result did."""
    lock_path = lock if lock is not None else ref.lock if ref.lock is not None else fallback_lock
    if lock_path is None or not lock_path.exists():
        raise ProvenanceError(f"no lockfile is recorded for `{ref.entry}`",
                              hints=["pass the lock it was realized from with `--with-lock FILE`"])
    bad = lock_fits(lock_path, ref.load())
    if bad:
        raise ProvenanceError(f"`{lock_path}` is not the lock `{ref.entry}` was realized from: it pins "
                              f"{', '.join(bad[:5])} differently", hints=["pass the right one with `--with-lock FILE`"])
    if dest.exists() and any(dest.iterdir()):
        raise UsageError(f"`{dest}` exists and is not empty", hints=["give a new directory"])
    written = []
    for rel, src in _files(ref.dir):
        if not ref.in_store and rel in (ATTESTATION_NAME, LOCK_NAME):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        written.append(rel)
    shutil.copyfile(lock_path, dest / LOCK_NAME)
    written.append(LOCK_NAME)
    if ref.attestation is not None:
        shutil.copyfile(ref.attestation, dest / ATTESTATION_NAME)
        written.append(ATTESTATION_NAME)
    return written
