"""The hostile-user drill against the fetcher: it reads only where it should, and faults cost seconds.

Each test reproduces one finding (it failed on the code before the fix) against real parts: a
loopback HTTP server, real mirror directories, the real lock reader and `mlbuild` in-process.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from mlbuild import lock as lockmod
from mlbuild import manifest as manifestmod
from mlbuild.artifacts import FileReq, fetch_files
from mlbuild.errors import (
    FetchError,
    HashMismatchError,
    HTTPStatusError,
    LockError,
    ManifestError,
    NotFoundError,
    TooLargeError,
    UnreachableError,
    UnsafeURLError,
    UsageError,
)
from mlbuild.fetch import Fetcher, FileSpec, fetch_settings
from mlbuild.hashing import hash_file
from mlbuild.mirrors import Mirror, candidates, parse_mirror
from mlbuild.reporter import RecordingReporter
from mlbuild.urls import BadURL, check_url, hop_refusal
from tests.core.conftest import locked, project  # noqa: F401  (fixtures)
from tests.core.project import HELLO, Project, core_env  # noqa: F401  (fixture)
from tests.httpserver import Hang, LoopbackServer, Redirect, Serve, Status

DATA = os.urandom(50_000)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def spec(*urls: str, data: bytes = DATA, name: str = "model") -> FileSpec:
    return FileSpec(artifact=name, urls=tuple(urls), sha256=sha(data), size=len(data))


def fast(mirrors: list[Mirror] | None = None, **kw: object) -> Fetcher:
    args: dict[str, object] = dict(connect_timeout=1.0, read_timeout=2.0, retries=3, backoff=0.01, trust_env=False)
    args.update(kw)
    return Fetcher(mirrors or [], **args)  # type: ignore[arg-type]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    (tmp_path / "dl").mkdir()
    return tmp_path / "dl" / "file.partial"


# --------------------------------------------------------------------------- URLs and mirrors


def test_url_dir_mirror_never_reads_outside_its_root(tmp_path: Path, dest: Path) -> None:
    # `http://../k_secret.txt` used to map to <mirror>/../k_secret.txt and be stored.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (tmp_path / "k_secret.txt").write_bytes(b"secret\n")
    s = FileSpec("evil", ("http://../k_secret.txt",), None, None)
    assert [c.location for c in candidates([Mirror("url-dir", str(mirror))], s.urls[0], None)
            if c.is_local] == []
    with fast([parse_mirror(str(mirror))]) as f, pytest.raises(UnsafeURLError) as ei:
        f.fetch(s, dest)
    assert "k_secret" in str(ei.value) and "secret\n" not in str(ei.value)
    assert not dest.exists()


def test_url_dir_mirror_symlink_leading_out_is_not_followed(http_server: LoopbackServer, tmp_path: Path,
                                                             dest: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(DATA)
    mirror = tmp_path / "mirror"
    up = http_server.route("/files/model.bin", Status(404))
    link = mirror / f"127.0.0.1:{http_server.port}" / "files" / "model.bin"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    with fast([parse_mirror(str(mirror))]) as f, pytest.raises(NotFoundError):
        f.fetch(spec(up), dest)
    # a file really inside the mirror is used
    link.unlink()
    link.write_bytes(DATA)
    with fast([parse_mirror(str(mirror))]) as f:
        assert f.fetch(spec(up), dest).source == str(link)


@pytest.mark.parametrize("url, why", [
    ("http://../k_secret.txt", "not a valid host name"),
    ("http://..%2f..%2fetc/passwd", "not a valid host name"),
    ("file:///etc/shadow", "scheme `file`"),
    ("ftp://example.org/x", "scheme `ftp`"),
    ("https://user:hunter2@example.org/x", "credentials"),
    ("https://example.org/a\x07b", "control character"),
    ("https://example.org/a b", "whitespace"),
    ("https://example.org/a/%2e%2e/%2e%2e/etc/passwd", "`..` path segment"),
    ("https://example.org/a%2f..%2fb", "`..` path segment"),
    ("https://example.org/a%00b", "control character"),
    ("http://2130706433/x", "looks like an IP address"),
    ("https://example.org:99999/x", "invalid port"),
    ("https:///x", "no host"),
])
def test_check_url_refuses(url: str, why: str) -> None:
    with pytest.raises(BadURL) as ei:
        check_url(url)
    assert why in str(ei.value)
    assert "hunter2" not in str(ei.value)


@pytest.mark.parametrize("url", [
    "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/yolox_nano.onnx",
    "http://127.0.0.1:8080/files/a%20b.jpg?x=1",
    "https://[::1]:8443/x", "https://bücher.example/x", "HTTPS://Example.ORG/x",
])
def test_check_url_accepts(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize("url, why", [
    ("http://../k_secret.txt", "not a valid host name"),
    ("http://..%2f..%2fetc/passwd", "not a valid host name"),
    ("https://example.org/a\x01b", "control character"),
    ("file:///etc/passwd", "scheme `file`"),
])
def test_manifest_refuses_bad_urls_with_file_and_key(tmp_path: Path, url: str, why: str) -> None:
    (tmp_path / "m.toml").write_text(f"[fetch.evil]\nurl = {json.dumps(url)}\n")
    with pytest.raises(ManifestError) as ei:
        manifestmod.load(tmp_path)
    assert "m.toml" in str(ei.value) and "`fetch.evil.url`" in str(ei.value) and why in str(ei.value)


def test_manifest_credentials_are_refused_and_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text('[fetch.x]\nbase_url = "https://bob:hunter2@example.org/d/"\nfiles = ["a"]\n')
    with pytest.raises(ManifestError) as ei:
        manifestmod.load(tmp_path)
    assert "hunter2" not in str(ei.value) and "credentials" in str(ei.value)
    assert any("netrc" in h for h in ei.value.hints)


def test_lock_with_traversal_host_and_control_char_does_not_crash(project: Project) -> None:  # noqa: F811  (pytest fixture)
    p = project
    p.append_manifest('[fetch.evil]\nurl = "http://..%2f..%2fetc/passwd"\n')
    r = p.cli("lock", expect=3)
    assert r.error.startswith("error: manifests/test.toml:") and "`fetch.evil.url`" in r.error
    assert "Traceback" not in r.err and not p.lock_path.exists()
    p.write_manifest('[fetch.evil]\nurl = "https://example.org/a\\u0000b"\n')
    r = p.cli("lock", expect=3)
    assert "control character" in r.error and "Traceback" not in r.err


def test_mirror_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(FetchError) as ei:
        parse_mirror("https://bob:hunter2@127.0.0.1:9/cas")
    assert "hunter2" not in str(ei.value) and any("netrc" in h for h in ei.value.hints)


# --------------------------------------------------------------------------- the lock is input


def edit_lock(p: Project, old: str, new: str) -> None:
    text = p.lock_path.read_text()
    assert old in text
    p.lock_path.write_text(text.replace(old, new, 1))


def test_lock_edited_to_file_url_is_refused_before_any_read(locked: Project) -> None:  # noqa: F811  (pytest fixture)
    p = locked
    edit_lock(p, f'"{p.server.url("/files/hello.txt")}"', '"file:///etc/passwd"')
    text = p.lock_path.read_text()
    r = p.cli("realize", "hello", expect=4)
    assert "artifact `hello`" in r.error and "scheme `file`" in r.error
    size = str(Path("/etc/passwd").stat().st_size)
    assert f"{size} bytes" not in r.err and "Traceback" not in r.err
    assert p.lock_path.read_text() == text and not p.registered()


@pytest.mark.parametrize("field, old, new, why", [
    ("path", 'path = "a.txt"', 'path = "../../outside.txt"', "relative path without"),
    ("sha256", "sha256 = \"", "sha256 = \"ABC", "64 lowercase hex digits"),
    ("blake3", "blake3 = \"", "blake3 = \"zz", "64 lowercase hex digits"),
    ("size", "size = ", "size = -", "non-negative integer"),
    ("url", "urls = [\"http://", "urls = [\"http://bob:hunter2@", "credentials"),
])
def test_lock_fields_are_validated_like_a_manifest(locked: Project, field: str, old: str, new: str,  # noqa: F811  (pytest fixture)
                                                   why: str) -> None:
    p = locked
    edit_lock(p, old, new)
    with pytest.raises(LockError) as ei:
        lockmod.read(p.lock_path)
    assert why in str(ei.value) and "hunter2" not in str(ei.value)
    r = p.cli("realize", "greeting", expect=4)
    assert "Traceback" not in r.err and not p.registered()


# --------------------------------------------------------------------------- redirects


def test_redirect_to_link_local_is_refused_and_named(http_server: LoopbackServer, dest: Path) -> None:
    target = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    url = http_server.route("/model", Redirect(target))
    with fast() as f, pytest.raises(UnsafeURLError) as ei:
        f.fetch(spec(url), dest)
    assert ei.value.url == target
    assert "link-local" in str(ei.value) and target in str(ei.value)
    assert not dest.exists()


def test_redirect_chain_errors_name_the_final_url(http_server: LoopbackServer, dest: Path) -> None:
    first = http_server.route("/a", Redirect("/b"))
    http_server.route("/b", Redirect("/c"))
    final = http_server.url("/c")  # unrouted: 404
    with fast() as f, pytest.raises(NotFoundError) as ei:
        f.fetch(spec(first), dest)
    assert ei.value.url == final and ei.value.status == 404
    assert final in str(ei.value)
    # loopback -> loopback is allowed, and a good chain names where the bytes came from
    http_server.route("/c", Serve(DATA))
    with fast() as f:
        got = f.fetch(spec(first), dest)
    assert got.source == first and got.final_url == final


def test_hop_policy() -> None:
    names = {"public.example": ["93.184.216.34"], "sneaky.example": ["127.0.0.1"],
             "meta.example": ["169.254.169.254"], "v6meta.example": ["::ffff:169.254.169.254"],
             "localhost": ["127.0.0.1", "::1"], "fe.example": ["fe80::1"]}

    def resolve(host: str) -> list[str]:
        return names.get(host, [host])

    pub, loop = "https://public.example/a", "http://localhost:8000/a"
    assert hop_refusal(pub, "https://public.example/b", resolve) is None
    assert "loopback" in (hop_refusal(pub, "http://sneaky.example/x", resolve) or "")
    assert "loopback" in (hop_refusal(pub, "http://127.0.0.1/x", resolve) or "")
    assert "loopback" in (hop_refusal(pub, "http://[::1]/x", resolve) or "")
    assert hop_refusal(loop, "http://sneaky.example/x", resolve) is None
    assert hop_refusal(loop, "http://127.0.0.1:9/x", resolve) is None
    for target in ("http://meta.example/x", "http://v6meta.example/x", "http://fe.example/x",
                   "http://169.254.169.254/x"):
        assert "link-local" in (hop_refusal(pub, target, resolve) or ""), target
        assert "link-local" in (hop_refusal(loop, target, resolve) or ""), target


def test_redirect_to_a_refused_url_form_is_refused(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/model", Redirect("file:///etc/passwd"))
    with fast() as f, pytest.raises(UnsafeURLError) as ei:
        f.fetch(spec(url), dest)
    assert "scheme `file`" in str(ei.value)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("var", ["MLBUILD_READ_TIMEOUT", "MLBUILD_CONNECT_TIMEOUT"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e999", "-1", "0", "abc", "100000"])
def test_bad_timeouts_are_usage_errors(var: str, value: str) -> None:
    with pytest.raises(UsageError) as ei:
        fetch_settings({var: value})
    assert var in str(ei.value) and repr(value) in str(ei.value)


def test_good_settings_are_read() -> None:
    got = fetch_settings({"MLBUILD_READ_TIMEOUT": "2.5", "MLBUILD_CONNECT_TIMEOUT": "1", "MLBUILD_RETRIES": "0",
                          "MLBUILD_MAX_DOWNLOAD_BYTES": "1000"})
    assert got == {"read_timeout": 2.5, "connect_timeout": 1.0, "retries": 0, "max_download": 1000}


@pytest.mark.parametrize("value", ["nan", "inf", "1e999"])
def test_bad_timeout_through_the_cli_is_exit_2_without_traceback(locked: Project, monkeypatch: pytest.MonkeyPatch,  # noqa: F811  (pytest fixture)
                                                                 value: str) -> None:
    monkeypatch.setenv("MLBUILD_READ_TIMEOUT", value)
    r = locked.cli("realize", "hello", expect=2)
    assert "MLBUILD_READ_TIMEOUT" in r.error and "Traceback" not in r.err


# --------------------------------------------------------------------------- bad sources


def test_hanging_mirror_costs_one_timeout_per_run_not_one_per_file(http_server: LoopbackServer,
                                                                    tmp_path: Path) -> None:
    files = {f"f{i:02d}.bin": os.urandom(1000) for i in range(20)}
    reqs = []
    for name, data in files.items():
        url = http_server.route(f"/up/{name}", Serve(data))
        reqs.append(FileReq(name, (url,), sha(data), len(data)))
    rep = RecordingReporter()
    timeout = 0.5
    with LoopbackServer() as hanging:
        for data in files.values():
            hanging.route(f"/sha256/{sha(data)}", Hang(max_s=10))
        t0 = time.monotonic()
        with fast([parse_mirror(hanging.base)], read_timeout=timeout, reporter=rep) as f:
            got = fetch_files("set", reqs, tmp_path / "out", f, jobs=1)
            elapsed = time.monotonic() - t0
            assert hanging.total_requests() == 1
            assert f.bad_sources() == {hanging.base: f"timed out after {timeout:g} s (ReadTimeout)"}
    assert elapsed < 4 * timeout, elapsed  # 20 files x (1 + 3 retries) x 0.5 s before
    assert sorted(g.path for g in got) == sorted(files)
    notice = f"mirror {hanging.base} skipped for the rest of this run: timed out after 0.5 s (ReadTimeout)"
    assert ("done", (f"notice:bad:{hanging.base}", notice)) in rep.events
    assert ("message", (f"set: {notice}",)) in rep.events


def test_dead_upstream_host_is_skipped_after_the_first_failure(dest: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with fast(retries=3) as f:
        for i in range(5):
            with pytest.raises(UnreachableError) as ei:
                f.fetch(spec(f"http://127.0.0.1:{port}/f{i}"), dest)
            if i:
                assert "failed earlier in this run" in str(ei.value)
        assert list(f.bad_sources()) == [f"http://127.0.0.1:{port}"]


def test_hanging_mirror_is_reported_by_realize(locked: Project, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811  (pytest fixture)
    p = locked
    monkeypatch.setenv("MLBUILD_READ_TIMEOUT", "0.5")
    with LoopbackServer() as hanging:
        hanging.route(f"/sha256/{sha(HELLO)}", Hang(max_s=10))
        r = p.cli("realize", "hello", "--mirror", hanging.base)
    assert Path(r.out.strip()).read_bytes() == HELLO
    assert f"mirror {hanging.base} skipped for the rest of this run: timed out after 0.5 s" in r.err


def test_mirror_with_wrong_bytes_is_mentioned(locked: Project) -> None:  # noqa: F811  (pytest fixture)
    p = locked
    with LoopbackServer() as bad:
        bad.route(f"/sha256/{sha(HELLO)}", Serve(b"not the bytes you locked\n"))
        r = p.cli("realize", "hello", "--mirror", bad.base)
    assert Path(r.out.strip()).read_bytes() == HELLO
    assert f"mirror {bad.base} served wrong bytes for `hello`" in r.err


def test_wrong_bytes_mirror_is_on_the_result(http_server: LoopbackServer, dest: Path) -> None:
    http_server.route(f"/m/sha256/{sha(DATA)}", Serve(os.urandom(len(DATA))))
    up = http_server.route("/up/model", Serve(DATA))
    rep = RecordingReporter()
    with fast([parse_mirror(http_server.url("/m"))], reporter=rep) as f:
        got = f.fetch(spec(up), dest)
        assert got.source == up and [a.source for a in got.rejected] == [http_server.url(f"/m/sha256/{sha(DATA)}")]
        assert any("served wrong bytes" in n for n in f.notices)


# --------------------------------------------------------------------------- hashes and errors


def test_blake3_from_the_lock_is_checked(http_server: LoopbackServer, dest: Path, tmp_path: Path) -> None:
    url = http_server.route("/model", Serve(DATA))
    good = tmp_path / "good"
    good.write_bytes(DATA)
    b3 = hash_file(good).blake3
    wrong = ("0" if b3[0] != "0" else "1") + b3[1:]
    with fast() as f, pytest.raises(HashMismatchError) as ei:
        f.fetch(FileSpec("model", (url,), sha(DATA), len(DATA), blake3=wrong), dest)
    assert f"expected blake3:{wrong}" in str(ei.value)
    with fast() as f:
        assert f.fetch(FileSpec("model", (url,), sha(DATA), len(DATA), blake3=b3), dest).blake3 == b3


def test_specific_error_classes_carry_the_url(http_server: LoopbackServer, dest: Path) -> None:
    missing = http_server.route("/missing", Status(404))
    forbidden = http_server.route("/forbidden", Status(403))
    with fast() as f:
        with pytest.raises(NotFoundError) as nf:
            f.fetch(spec(missing), dest)
        with pytest.raises(HTTPStatusError) as hs:
            f.fetch(spec(forbidden), dest)
    assert nf.value.url == missing and nf.value.status == 404
    assert hs.value.url == forbidden and hs.value.status == 403 and not isinstance(hs.value, NotFoundError)


def test_unknown_size_download_is_capped(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/big", Serve(DATA))
    with fast(max_download=1000) as f, pytest.raises(TooLargeError) as ei:
        f.fetch(FileSpec("big", (url,)), dest)
    assert ei.value.url == url and not dest.exists()


def test_credentials_come_from_netrc_and_stay_with_their_host(http_server: LoopbackServer, dest: Path,
                                                               tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login bob password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    url = http_server.route("/private", Serve(DATA))
    with fast(trust_env=True) as f:
        f.fetch(spec(url), dest)
    assert http_server.requests("/private")[0].headers.get("Authorization", "").startswith("Basic ")
    # a redirect to another host name (same loopback server) does not carry them along
    hop = http_server.route("/hop", Redirect(f"http://localhost:{http_server.port}/elsewhere"))
    http_server.route("/elsewhere", Serve(DATA))
    with fast(trust_env=True) as f:
        f.fetch(spec(hop), dest)
    assert "Authorization" in http_server.requests("/hop")[0].headers
    assert "Authorization" not in http_server.requests("/elsewhere")[0].headers


def test_file_set_names_are_checked_as_urls(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text('[fetch.x]\nbase_url = "https://example.org/d/"\nfiles = ["%2e%2e/%2e%2e/etc"]\n')
    with pytest.raises(ManifestError) as ei:
        manifestmod.load(tmp_path)
    assert "`fetch.x.files`" in str(ei.value) and "`..` path segment" in str(ei.value)
