"""Mirror parsing (`--mirror`, MLBUILD_MIRRORS) and the order sources are tried in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlbuild.errors import FetchError
from mlbuild.mirrors import Mirror, Source, candidates, mirrors_from, parse_mirror, url_relpath

URL = "https://files.example.org/models/v1/yolox_nano.onnx"
SHA = "ab" * 32


def test_http_base_is_cas_unless_marked_url(tmp_path: Path) -> None:
    assert parse_mirror("http://127.0.0.1:8000/cache/") == Mirror("cas-http", "http://127.0.0.1:8000/cache")
    assert parse_mirror("https://m.internal/x") == Mirror("cas-http", "https://m.internal/x")
    assert parse_mirror("url+https://m.internal/x/") == Mirror("url-http", "https://m.internal/x")
    assert parse_mirror("url:http://m.internal") == Mirror("url-http", "http://m.internal")
    assert parse_mirror("cas:http://m.internal") == Mirror("cas-http", "http://m.internal")


def test_local_dir_kind_follows_layout(tmp_path: Path) -> None:
    by_url = tmp_path / "byurl"
    (by_url / "files.example.org").mkdir(parents=True)
    cas = tmp_path / "cas"
    (cas / "sha256").mkdir(parents=True)
    assert parse_mirror(str(by_url)) == Mirror("url-dir", str(by_url))
    assert parse_mirror(str(cas)) == Mirror("cas-dir", str(cas))
    assert parse_mirror(f"file://{cas}") == Mirror("cas-dir", str(cas))
    # explicit prefixes win over the layout
    assert parse_mirror(f"url:{cas}") == Mirror("url-dir", str(cas))
    assert parse_mirror(f"cas:{by_url}") == Mirror("cas-dir", str(by_url))


def test_relative_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_mirror("m") == Mirror("url-dir", str(tmp_path / "m"))


def test_missing_local_dir_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mirror"
    with pytest.raises(FetchError) as ei:
        parse_mirror(str(missing))
    assert str(missing) in str(ei.value)
    assert "does not exist" in str(ei.value)


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(FetchError, match="unsupported scheme"):
        parse_mirror("ftp://m.internal/pub")


def test_cli_mirrors_come_before_environment(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    env = {"MLBUILD_MIRRORS": f"{c}  http://127.0.0.1:9/cas"}
    got = mirrors_from([str(a), str(b)], env)
    assert got == [
        Mirror("url-dir", str(a)),
        Mirror("url-dir", str(b)),
        Mirror("url-dir", str(c)),
        Mirror("cas-http", "http://127.0.0.1:9/cas"),
    ]
    assert mirrors_from([], {}) == []


def test_url_relpath_matches_shared_mirror_layout() -> None:
    assert url_relpath(URL) == "files.example.org/models/v1/yolox_nano.onnx"
    assert url_relpath("http://127.0.0.1:8080/a%20b/c.jpg?x=1") == "127.0.0.1:8080/a b/c.jpg"
    for bad in ("https://h/../etc/passwd", "https://h/", "/just/a/path"):
        with pytest.raises(FetchError):
            url_relpath(bad)


def test_candidates_order_mirrors_then_upstream(tmp_path: Path) -> None:
    mirrors = [
        Mirror("url-dir", "/m/url"),
        Mirror("cas-dir", "/m/cas"),
        Mirror("cas-http", "http://127.0.0.1:1/cas"),
        Mirror("url-http", "http://127.0.0.1:2/byurl"),
    ]
    got = candidates(mirrors, URL, SHA.upper())
    assert [s.location for s in got] == [
        "/m/url/files.example.org/models/v1/yolox_nano.onnx",
        f"/m/cas/sha256/{SHA}",
        f"http://127.0.0.1:1/cas/sha256/{SHA}",
        "http://127.0.0.1:2/byurl/files.example.org/models/v1/yolox_nano.onnx",
        URL,
    ]
    assert [s.is_local for s in got] == [True, True, False, False, False]
    assert got[-1] == Source(URL, is_local=False, mirror=None) and got[-1].is_upstream
    assert got[1].mirror == mirrors[1]


def test_cas_mirrors_skipped_without_sha256() -> None:
    mirrors = [Mirror("cas-dir", "/m/cas"), Mirror("cas-http", "http://127.0.0.1:1"),
               Mirror("url-dir", "/m/url")]
    got = candidates(mirrors, URL, None)
    assert [s.location for s in got] == ["/m/url/files.example.org/models/v1/yolox_nano.onnx", URL]


def test_file_url_upstream_is_never_read_as_a_local_file() -> None:
    # file:// upstreams were once read from the local disk; a lock edited to file:///etc/shadow
    # was "fetched".  Upstream is always remote now (and the fetcher refuses non-http URLs).
    (src,) = candidates([], "file:///srv/data/x.bin", None)
    assert not src.is_local


def test_mirrors_module_does_not_import_httpx() -> None:
    code = "import sys, mlbuild.mirrors; print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
