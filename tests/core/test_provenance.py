"""Signed provenance: keys, the in-toto/SLSA statement in a DSSE envelope, `verify`, `export`.

Real ed25519 keys, real signatures, a real store built by the concat builder; the envelope is
also checked with securesystemslib, standard in-toto tooling."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mlbuild import provenance
from mlbuild.store import Store, make_writable
from tests.core.project import Project


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "keys"
    monkeypatch.setenv("MLBUILD_KEYS", str(d))
    monkeypatch.delenv("MLBUILD_TRUSTED_KEYS", raising=False)
    return d


def signed_bundle(p: Project, keys: Path) -> tuple[Store, str, Path]:
    """Realize `bundle`, generate a key and attest the entry as realize does."""
    p.cli("key", "generate")
    p.cli("realize", "bundle")
    store = Store(p.store_dir)
    entry = p.entry("bundle")
    att = provenance.attest_result(store, entry, p.lock_path)
    assert att is not None
    return store, entry, att


def statement(att: Path) -> dict:
    return json.loads(base64.b64decode(json.loads(att.read_text())["payload"]))


def test_key_generate_writes_a_private_key_only_its_owner_reads(locked: Project, keys: Path) -> None:
    r = locked.cli("key", "generate")
    priv, pub = keys / "mlbuild-ed25519.key", keys / "mlbuild-ed25519.pub"
    assert r.out.strip() == str(pub)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    key = provenance.load_public(pub)
    kid = hashlib.sha256(provenance.raw_public(key)).hexdigest()
    assert kid in r.err, "the keyid (sha256 of the raw public key) is reported"
    before = priv.read_bytes()
    again = locked.cli("key", "generate", expect=2)
    assert "already exists" in again.error and priv.read_bytes() == before
    assert "--force" in again.err
    other = locked.cli("key", "generate", "--out", str(keys / "other"))
    assert Path(other.out.strip()).read_bytes() != pub.read_bytes()


def test_no_key_no_signature_but_the_lock_is_kept(locked: Project, keys: Path) -> None:
    locked.cli("realize", "bundle")
    store = Store(locked.store_dir)
    entry = locked.entry("bundle")
    assert provenance.attest_result(store, entry, locked.lock_path) is None
    assert provenance.lock_copy_path(store, entry).read_bytes() == locked.lock_path.read_bytes()


def test_statement_is_slsa_provenance_of_the_entry_and_its_closure(locked: Project, keys: Path) -> None:
    store, entry, att = signed_bundle(locked, keys)
    env = json.loads(att.read_text())
    assert env["payloadType"] == "application/vnd.in-toto+json"
    st = statement(att)
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/provenance/v1"
    result = store.path(entry) / "result.txt"
    digest = hashlib.sha256(result.read_bytes()).hexdigest()
    assert st["subject"] == [{"name": "result.txt", "digest": {"sha256": digest}}]
    deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
    lock_dep = [d for d in deps if d.get("annotations", {}).get("role") == "lock"]
    assert lock_dep[0]["digest"]["sha256"] == hashlib.sha256(locked.lock_path.read_bytes()).hexdigest()
    names = {d["name"] for d in deps} - {lock_dep[0]["name"]}
    assert names == store.closure([entry]) - {entry}
    for d in deps:
        if d["name"] in names:
            assert d["digest"]["sha256"] == store.info(d["name"]).hash.sha256
    assert st["predicate"]["runDetails"]["metadata"]["invocationId"] == entry
    payload = base64.b64decode(env["payload"]).decode()
    assert str(locked.root) not in payload and os.uname().nodename not in payload
    # deterministic: attesting again gives the same bytes
    before = att.read_bytes()
    att.unlink()
    assert provenance.attest_result(store, entry, locked.lock_path) == att and att.read_bytes() == before


def test_standard_in_toto_tooling_verifies_the_envelope(locked: Project, keys: Path) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    _, _, att = signed_bundle(locked, keys)
    pub = provenance.load_public(keys / "mlbuild-ed25519.pub")
    kid = provenance.keyid(pub)
    key = SSlibKey(kid, "ed25519", "ed25519", {"public": provenance.raw_public(pub).hex()})
    envelope = Envelope.from_dict(json.loads(att.read_text()))
    assert set(envelope.verify([key], 1)) == {kid}
    # and it refuses a payload changed after signing
    envelope.payload = envelope.payload.replace(b"result.txt", b"result.TXT")
    from securesystemslib.exceptions import VerificationError

    with pytest.raises(VerificationError):
        envelope.verify([key], 1)


def test_verify_accepts_the_untouched_result_in_the_store_and_exported(locked: Project, keys: Path,
                                                                       tmp_path: Path) -> None:
    _, entry, _ = signed_bundle(locked, keys)
    r = locked.cli("verify", entry[:12])
    assert "FAIL" not in r.out and "signature" in r.out and "closure entries" in r.out
    out = tmp_path / "peer"
    locked.cli("export", entry, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["mlbuild.lock", "provenance.dsse.json", "result.txt"]
    # a peer, with only the public key and no store
    pub = keys / "mlbuild-ed25519.pub"
    r = locked.cli("verify", str(out), "--key", str(pub), "--json", store=tmp_path / "nostore")
    report = json.loads(r.out)
    assert report["ok"] and report["entry"] == entry
    assert {c["what"] for c in report["checks"]} >= {"signature", "result files", "lock"}


def test_verify_refuses_a_tampered_result(locked: Project, keys: Path, tmp_path: Path) -> None:
    _, entry, _ = signed_bundle(locked, keys)
    out = tmp_path / "peer"
    locked.cli("export", entry, str(out))
    f = out / "result.txt"
    f.write_bytes(f.read_bytes().replace(b"hello", b"HELLO"))
    r = locked.cli("verify", str(out), "--key", str(keys / "mlbuild-ed25519.pub"), expect=9)
    assert "does not verify" in r.error and "result.txt: sha256" in r.error
    assert "FAIL result files" in r.out


def test_verify_refuses_a_forged_signature(locked: Project, keys: Path, tmp_path: Path) -> None:
    _, entry, _ = signed_bundle(locked, keys)
    out = tmp_path / "peer"
    locked.cli("export", entry, str(out))
    pub = str(keys / "mlbuild-ed25519.pub")
    env_path = out / "provenance.dsse.json"
    original = env_path.read_text()
    # 1. the statement edited after signing (its digest claims other bytes)
    env = json.loads(original)
    st = json.loads(base64.b64decode(env["payload"]))
    st["subject"][0]["digest"]["sha256"] = "0" * 64
    env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    env_path.write_text(json.dumps(env))
    r = locked.cli("verify", str(out), "--key", pub, expect=9)
    assert "does not verify" in r.error and "forged or tampered" in r.error
    # 2. re-signed by another key that claims the trusted key's id
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    env = json.loads(original)
    mallory = Ed25519PrivateKey.generate()
    payload = base64.b64decode(env["payload"])
    env["signatures"][0]["sig"] = base64.b64encode(
        mallory.sign(provenance.pae(env["payloadType"], payload))).decode()
    env_path.write_text(json.dumps(env))
    r = locked.cli("verify", str(out), "--key", pub, expect=9)
    assert "does not verify" in r.error
    # 3. properly signed, but by a key nobody trusts
    forged = provenance.sign_envelope(json.loads(payload), mallory)
    env_path.write_text(json.dumps(forged))
    r = locked.cli("verify", str(out), "--key", pub, expect=9)
    assert "not among the trusted keys" in r.error and "--key" in r.err
    # and with no trusted key at all, verify says how to trust one
    env_path.write_text(original)
    r = locked.cli("verify", str(out), "--key", pub)
    assert "FAIL" not in r.out


def test_verify_refuses_a_result_whose_entries_changed(locked: Project, keys: Path) -> None:
    store, entry, _ = signed_bundle(locked, keys)
    greeting = store.path(locked.entry("greeting"))
    make_writable(greeting)
    (greeting / "result.txt").write_bytes(b"something else\n")
    r = locked.cli("verify", entry, expect=9)
    assert "does not verify" in r.error and "closure entries" in r.error
    assert locked.entry("greeting") in r.error and "content changed" in r.error
    assert "store verify --repair" in r.err


def test_verify_refuses_a_lock_other_than_the_signed_one(locked: Project, keys: Path, tmp_path: Path) -> None:
    _, entry, _ = signed_bundle(locked, keys)
    out = tmp_path / "peer"
    locked.cli("export", entry, str(out))
    with open(out / "mlbuild.lock", "a") as f:
        f.write("# edited\n")
    r = locked.cli("verify", str(out), "--key", str(keys / "mlbuild-ed25519.pub"), expect=9)
    assert "lock:" in r.error and "signed" in r.error


def test_verify_without_attestation_or_trusted_key_says_what_to_do(locked: Project, keys: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    locked.cli("realize", "bundle")
    entry = locked.entry("bundle")
    r = locked.cli("verify", entry, expect=9)
    assert "has no attestation" in r.error and "mlbuild key generate" in r.err
    _, entry, _ = signed_bundle(locked, keys)
    (keys / "mlbuild-ed25519.pub").unlink()
    r = locked.cli("verify", entry, expect=9)
    assert "no key is trusted" in r.error and "--key PUB" in r.err
    # $MLBUILD_TRUSTED_KEYS: a directory of public keys
    trusted = keys.parent / "trusted"
    trusted.mkdir()
    public = provenance.load_private(keys / "mlbuild-ed25519.key").public_key()
    (trusted / "me.pub").write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("MLBUILD_TRUSTED_KEYS", str(trusted))
    locked.cli("verify", entry)
