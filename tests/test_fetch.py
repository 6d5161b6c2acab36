"""The fetcher against real HTTP on 127.0.0.1 and real mirror directories."""

from __future__ import annotations

import hashlib
import os
import socket
import time
import tracemalloc
from pathlib import Path

import pytest

from mlbuild._native import hash_file
from mlbuild.errors import FetchError, HashMismatchError, OfflineError, StoreError
from mlbuild.fetch import Fetched, Fetcher, FileSpec
from mlbuild.mirrors import Mirror, parse_mirror
from mlbuild.reporter import RecordingReporter
from tests.httpserver import (
    CutShort,
    FailTimes,
    Hang,
    LoopbackServer,
    Redirect,
    Serve,
    ServeBlocks,
    Status,
)

DATA = os.urandom(300_000)
OTHER = os.urandom(300_000)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def spec(*urls: str, data: bytes | None = DATA, md5: str | None = None, name: str = "model") -> FileSpec:
    return FileSpec(
        artifact=name,
        urls=tuple(urls),
        sha256=sha(data) if data is not None else None,
        size=len(data) if data is not None else None,
        md5=md5,
    )


def fast(mirrors: list[Mirror] | None = None, **kw: object) -> Fetcher:
    """A fetcher with test-sized timeouts and backoff."""
    args: dict[str, object] = dict(
        connect_timeout=1.0, read_timeout=2.0, retries=3, backoff=0.01, trust_env=False
    )
    args.update(kw)
    return Fetcher(mirrors or [], **args)  # type: ignore[arg-type]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "store-tmp" / "download.partial"


@pytest.fixture(autouse=True)
def _store_tmp(tmp_path: Path) -> None:
    (tmp_path / "store-tmp").mkdir()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- plain fetch --------------------------------------------------------------------------


def test_plain_fetch_writes_verified_bytes_and_reports(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/m/yolox.onnx", Serve(DATA))
    rep = RecordingReporter()
    with fast(reporter=rep) as f:
        got = f.fetch(spec(url), dest)
    assert dest.read_bytes() == DATA
    size, sha256, blake3 = hash_file(str(dest))
    assert got == Fetched(size=len(DATA), sha256=sha(DATA), blake3=blake3, source=url)
    assert (size, sha256) == (len(DATA), sha(DATA))
    assert http_server.count("/m/yolox.onnx") == 1
    # progress: started with the known total, advanced by exactly the size, finished
    assert rep.kinds("start") == [("fetch:model", "fetch model", len(DATA))]
    assert sum(adv for _, adv in rep.kinds("progress")) == len(DATA)
    assert rep.kinds("done")[0][0] == "fetch:model"
    # only dest was written in the store's temp dir
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]


def test_connections_are_reused_across_fetches(http_server: LoopbackServer, dest: Path) -> None:
    a = http_server.route("/a", Serve(DATA))
    b = http_server.route("/b", Serve(OTHER))
    with fast() as f:
        f.fetch(spec(a), dest)
        f.fetch(spec(b, data=OTHER), dest)
    (ra,), (rb,) = http_server.requests("/a"), http_server.requests("/b")
    assert ra.peer == rb.peer  # one keep-alive connection served both


def test_unknown_hash_first_source_wins_and_digest_is_returned(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/new.bin", Serve(DATA))
    with fast() as f:
        got = f.fetch(spec(url, data=None), dest)
    assert got.sha256 == sha(DATA) and got.size == len(DATA)
    assert dest.read_bytes() == DATA


def test_md5_is_checked(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/x", Serve(DATA))
    good = hashlib.md5(DATA).hexdigest()
    with fast() as f:
        assert f.fetch(spec(url, data=None, md5=good.upper()), dest).sha256 == sha(DATA)
        with pytest.raises(HashMismatchError) as ei:
            f.fetch(spec(url, data=None, md5="0" * 32), dest)
    assert ei.value.expected == "md5:" + "0" * 32
    assert ei.value.got == "md5:" + good
    assert not dest.exists()


# -- transient failures -------------------------------------------------------------------


def test_500_twice_then_success(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/flaky", FailTimes(2, then=Serve(DATA)))
    with fast() as f:
        got = f.fetch(spec(url), dest)
    assert got.sha256 == sha(DATA)
    assert http_server.count("/flaky") == 3
    assert dest.read_bytes() == DATA


def test_500_forever_gives_up_after_retries(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/down", Status(503))
    with fast(retries=2) as f, pytest.raises(FetchError) as ei:
        f.fetch(spec(url), dest)
    assert http_server.count("/down") == 3  # first try + 2 retries
    assert "HTTP 503" in str(ei.value) and url in str(ei.value)
    assert not dest.exists()


def test_body_cut_short_is_resumed_with_range(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/big", CutShort(DATA, after=100_000))
    with fast() as f:
        got = f.fetch(spec(url), dest)
    reqs = http_server.requests("/big")
    assert len(reqs) == 2
    assert "Range" not in reqs[0].headers
    assert reqs[1].headers["Range"] == "bytes=100000-"
    assert got.sha256 == sha(DATA)
    assert dest.read_bytes() == DATA


def test_body_cut_short_without_range_support_restarts(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/big", CutShort(DATA, after=100_000, ranges=False))
    with fast() as f:
        got = f.fetch(spec(url), dest)
    assert http_server.count("/big") == 2
    assert got.sha256 == sha(DATA) and dest.read_bytes() == DATA


def test_server_that_never_answers_fails_fast_and_next_source_is_used(
    http_server: LoopbackServer, dest: Path
) -> None:
    with LoopbackServer() as hanging:
        hang = hanging.route("/mirror/model", Hang(max_s=10))
        good = http_server.route("/up/model", Serve(DATA))
        t0 = time.monotonic()
        with fast(read_timeout=0.3, retries=1) as f:
            got = f.fetch(spec(hang, good), dest)
        assert time.monotonic() - t0 < 3.0
        assert got.source == good
        assert hanging.count("/mirror/model") == 1  # a timeout is not retried (the source is marked bad)
        assert dest.read_bytes() == DATA


def test_dead_port_costs_little_and_next_source_is_used(http_server: LoopbackServer, dest: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/cas"
    good = http_server.route("/up/model", Serve(DATA))
    t0 = time.monotonic()
    with fast([parse_mirror(dead)], retries=5) as f:
        got = f.fetch(spec(good), dest)
    assert time.monotonic() - t0 < 2.0
    assert got.source == good


def test_redirects_are_followed(http_server: LoopbackServer, dest: Path) -> None:
    url = http_server.route("/old", Redirect("/new"))
    http_server.route("/new", Serve(DATA))
    with fast() as f:
        got = f.fetch(spec(url), dest)
    assert got.source == url and dest.read_bytes() == DATA


def test_redirect_loop_moves_on_to_next_source(http_server: LoopbackServer, dest: Path) -> None:
    loop = http_server.route("/a", Redirect("/b"))
    http_server.route("/b", Redirect("/a"))
    good = http_server.route("/good", Serve(DATA))
    with fast(max_redirects=5) as f:
        got = f.fetch(spec(loop, good), dest)
    assert got.source == good
    assert http_server.count("/a") + http_server.count("/b") == 6  # no retries of a loop
    with fast(max_redirects=5) as f, pytest.raises(FetchError, match="too many redirects"):
        f.fetch(spec(loop), dest)


# -- mirrors ------------------------------------------------------------------------------


def test_404_on_first_mirror_then_second_mirror(http_server: LoopbackServer, dest: Path) -> None:
    up = "http://127.0.0.1:9/upstream/model.onnx"  # never reached
    digest = sha(DATA)
    http_server.route(f"/m2/sha256/{digest}", Serve(DATA))
    mirrors = [parse_mirror(http_server.url("/m1")), parse_mirror(http_server.url("/m2"))]
    with fast(mirrors) as f:
        got = f.fetch(spec(up), dest)
    assert http_server.count(f"/m1/sha256/{digest}") == 1  # 404: no retries
    assert got.source == http_server.url(f"/m2/sha256/{digest}")
    assert dest.read_bytes() == DATA


def test_url_http_mirror(http_server: LoopbackServer, dest: Path) -> None:
    up = "https://files.example.org/models/model.onnx"
    http_server.route("/byurl/files.example.org/models/model.onnx", Serve(DATA))
    with fast([parse_mirror("url+" + http_server.url("/byurl"))]) as f:
        got = f.fetch(spec(up), dest)
    assert got.source.endswith("/byurl/files.example.org/models/model.onnx")
    assert dest.read_bytes() == DATA


def test_mirror_with_wrong_bytes_falls_back_to_correct_source(http_server: LoopbackServer, dest: Path) -> None:
    http_server.route(f"/bad/sha256/{sha(DATA)}", Serve(OTHER))
    up = http_server.route("/up/model", Serve(DATA))
    rep = RecordingReporter()
    with fast([parse_mirror(http_server.url("/bad"))], reporter=rep) as f:
        got = f.fetch(spec(up), dest)
    assert got.source == up
    assert dest.read_bytes() == DATA  # the bad bytes never end up in dest
    assert any("rejected" in m for (m,) in rep.kinds("message"))
    # the progress bar did not count the rejected bytes twice
    assert sum(adv for _, adv in rep.kinds("progress")) == len(DATA)


def test_wrong_bytes_everywhere_is_hash_mismatch(http_server: LoopbackServer, dest: Path) -> None:
    http_server.route(f"/bad/sha256/{sha(DATA)}", Serve(OTHER))
    up = http_server.route("/up/model", Serve(OTHER + b"x"))
    with fast([parse_mirror(http_server.url("/bad"))]) as f, pytest.raises(HashMismatchError) as ei:
        f.fetch(spec(up, name="retinanet-onnx"), dest)
    e = ei.value
    assert e.artifact == "retinanet-onnx"
    assert e.url == up  # upstream's own mismatch is the one reported
    assert e.expected == f"sha256:{sha(DATA)}"
    assert e.expected_size == len(DATA)
    hints = " ".join(e.hints)
    assert "mirror served different bytes" in hints
    assert "mlbuild lock --update retinanet-onnx" in hints
    assert not dest.exists()


def test_wrong_content_length_is_rejected_before_the_body(http_server: LoopbackServer, dest: Path) -> None:
    block = os.urandom(1 << 20)
    http_server.route("/huge", ServeBlocks(block, 16))
    rep = RecordingReporter()
    with fast(reporter=rep) as f, pytest.raises(HashMismatchError) as ei:
        f.fetch(spec(http_server.url("/huge")), dest)
    assert ei.value.got_size == 16 << 20 and ei.value.expected_size == len(DATA)
    assert rep.kinds("progress") == []  # not a byte of the body was taken
    assert not dest.exists()


def test_oversized_body_without_length_is_cut_off_early(http_server: LoopbackServer, dest: Path) -> None:
    block = os.urandom(1 << 20)
    http_server.route("/huge", ServeBlocks(block, 16, content_length=False))
    rep = RecordingReporter()
    with fast(reporter=rep) as f, pytest.raises(HashMismatchError) as ei:
        f.fetch(spec(http_server.url("/huge")), dest)
    assert "more than" in ei.value.got
    assert sum(adv for _, adv in rep.kinds("progress")) <= len(DATA)  # stopped at the limit
    assert not dest.exists()


def test_unwritable_dest_is_a_store_error_not_a_source_failure(
    http_server: LoopbackServer, dest: Path
) -> None:
    # A real write failure: the file size limit (as a full disk would) makes writes fail.
    import resource
    import signal

    url = http_server.route("/x", Serve(DATA))
    second = http_server.route("/y", Serve(DATA))
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, old_limit[1]))
    try:
        with fast() as f, pytest.raises(StoreError) as ei:
            f.fetch(spec(url, second), dest)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert str(dest) in str(ei.value)
    assert http_server.count("/y") == 0  # no point trying another source
    assert not dest.exists()


def test_every_source_failing_lists_each(http_server: LoopbackServer, dest: Path, tmp_path: Path) -> None:
    local = tmp_path / "mirror"
    local.mkdir()
    a = http_server.route("/a", Status(404))
    b = http_server.route("/b", Status(403))
    with fast([parse_mirror(str(local))]) as f, pytest.raises(FetchError) as ei:
        f.fetch(spec(a, b), dest)
    e = ei.value
    assert not isinstance(e, HashMismatchError)
    msg = str(e)
    for where in (a, b, str(local / "127.0.0.1:")):
        assert where in msg
    assert "HTTP 404" in msg and "HTTP 403" in msg and "not in mirror" in msg
    assert any("--mirror DIR" in h for h in e.hints)
    assert len(e.attempts) == 4  # type: ignore[attr-defined]
    assert not dest.exists()


def test_stale_partial_dest_is_removed_on_failure(http_server: LoopbackServer, dest: Path) -> None:
    dest.write_bytes(b"old partial junk")
    with fast() as f, pytest.raises(FetchError):
        f.fetch(spec(http_server.url("/missing")), dest)
    assert not dest.exists()


def write_url_dir(root: Path, url: str, data: bytes) -> None:
    rel = url.split("://", 1)[1]
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def test_url_dir_mirror_laid_out_like_shared_mirror(http_server: LoopbackServer, dest: Path, tmp_path: Path) -> None:
    up = http_server.url("/upstream/coco128/images/000000000009.jpg")  # would 404
    root = tmp_path / "mirror"
    write_url_dir(root, up, DATA)
    assert (root / f"127.0.0.1:{http_server.port}" / "upstream/coco128/images/000000000009.jpg").exists()
    with fast([parse_mirror(str(root))]) as f:
        got = f.fetch(spec(up, name="coco128/images/000000000009.jpg"), dest)
    assert got.source == str(root / up.split("://", 1)[1])
    assert http_server.total_requests() == 0  # the mirror hit: no network at all
    assert dest.read_bytes() == DATA


def test_cas_dir_mirror(http_server: LoopbackServer, dest: Path, tmp_path: Path) -> None:
    cas = tmp_path / "cas"
    (cas / "sha256").mkdir(parents=True)
    (cas / "sha256" / sha(DATA)).write_bytes(DATA)
    up = http_server.url("/up/model")
    with fast([parse_mirror(str(cas))]) as f:
        got = f.fetch(spec(up), dest)
    assert got.source == str(cas / "sha256" / sha(DATA))
    assert http_server.total_requests() == 0
    assert dest.read_bytes() == DATA


def test_cas_http_mirror(http_server: LoopbackServer, dest: Path) -> None:
    http_server.route(f"/cache/sha256/{sha(DATA)}", Serve(DATA))
    up = http_server.url("/up/model")
    with fast([parse_mirror(http_server.url("/cache"))]) as f:
        got = f.fetch(spec(up), dest)
    assert got.source == http_server.url(f"/cache/sha256/{sha(DATA)}")
    assert http_server.count("/up/model") == 0


# -- offline ------------------------------------------------------------------------------


def test_offline_uses_local_mirror_and_no_network(http_server: LoopbackServer, dest: Path, tmp_path: Path) -> None:
    up = http_server.url("/up/model")
    root = tmp_path / "mirror"
    write_url_dir(root, up, DATA)
    mirrors = [parse_mirror(http_server.url("/cas")), parse_mirror(str(root))]
    with fast(mirrors, offline=True) as f:
        got = f.fetch(spec(up), dest)
        assert f._client is None  # no HTTP client was ever created
    assert got.source.startswith(str(root))
    assert http_server.total_requests() == 0
    assert dest.read_bytes() == DATA


def test_offline_without_mirror_raises_offline_error(http_server: LoopbackServer, dest: Path, tmp_path: Path) -> None:
    up = http_server.route("/up/model", Serve(DATA))
    with fast(offline=True) as f, pytest.raises(OfflineError) as ei:
        f.fetch(spec(up, name="yolox-nano-onnx"), dest)
    assert "yolox-nano-onnx" in str(ei.value) and "no local mirror" in str(ei.value)
    assert any("--mirror" in h for h in ei.value.hints)

    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with fast([parse_mirror(str(empty))], offline=True) as f, pytest.raises(OfflineError) as ei:
        f.fetch(spec(up, name="yolox-nano-onnx"), dest)
    assert str(empty) in str(ei.value)  # says where it looked
    assert http_server.total_requests() == 0
    assert not dest.exists()


SHARED = Path("/work/shared/mirror")
YOLOX_URL = (
    "https://raw.githubusercontent.com/Bigisland1729/object-detection-models/"
    "7f3f2fa34b351e3d2af150893458106ad3f3a84f/yolox_nano.onnx"
)


def test_real_shared_mirror_offline(dest: Path) -> None:
    with fast([parse_mirror(str(SHARED))], offline=True) as f:
        got = f.fetch(FileSpec("yolox-nano-onnx", (YOLOX_URL,), None, 3_678_356, None), dest)
    assert got.size == 3_678_356
    assert got.sha256 == hash_file(str(dest))[1]


# -- memory -------------------------------------------------------------------------------


def test_streaming_uses_constant_memory(http_server: LoopbackServer, dest: Path) -> None:
    block = os.urandom(1 << 20)
    count = 64
    h = hashlib.sha256()
    for _ in range(count):
        h.update(block)
    url = http_server.route("/huge", ServeBlocks(block, count))
    f = fast()
    tracemalloc.start()
    try:
        got = f.fetch(FileSpec("huge", (url,), h.hexdigest(), count * len(block), None), dest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        f.close()
    assert got.size == 64 << 20
    assert peak < 8 << 20, f"peak {peak} bytes while streaming 64 MiB"
