"""Fixed-output downloads: fetch an artifact's bytes from mirrors or upstream, verified.

:class:`Fetcher.fetch` writes one file to a path the caller (the store) chose, streaming
in constant memory and hashing (sha256 + blake3, and md5 when an upstream md5 is known)
as bytes arrive.  Sources are tried in order (see :func:`mlbuild.mirrors.candidates`);
a source whose bytes do not match the known size/sha256/md5 is rejected and the next
one tried, so wrong bytes never count.  On failure the destination file is removed:
the file at ``dest`` is only valid when :meth:`Fetcher.fetch` returns.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlbuild._native import Hasher
from mlbuild.errors import FetchError, HashMismatchError, OfflineError, StoreError
from mlbuild.mirrors import Mirror, Source, candidates
from mlbuild.reporter import NullReporter, Reporter

if TYPE_CHECKING:  # pragma: no cover
    import httpx

__all__ = ["FileSpec", "Fetched", "Fetcher", "Attempt"]

CHUNK = 1 << 20  # bytes read/written per step: memory use is a small multiple of this
USER_AGENT = "mlbuild/0.1 (fixed-output fetcher)"
_MAX_RESUMES = 50  # resumes that made progress, per source (bounded so a trickling server ends)


@dataclass(frozen=True)
class FileSpec:
    artifact: str  # display name: "yolox-nano-onnx", "coco128/images/x.jpg"
    urls: tuple[str, ...]  # ordered upstream URLs
    sha256: str | None = None
    size: int | None = None
    md5: str | None = None  # upstream checksum (MLPerf publishes md5)


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str
    blake3: str
    source: str  # the URL or mirror path the bytes came from


@dataclass(frozen=True)
class Attempt:
    """What happened at one source (kept on raised errors as ``.attempts``)."""

    source: str
    reason: str
    wrong_bytes: bool = False


class _SourceFailed(Exception):
    """This source cannot deliver; go on with the next one."""


class _Retryable(Exception):
    """A transient failure (5xx, broken connection, timeout, body cut short)."""

    def __init__(self, reason: str, *, connect: bool = False) -> None:
        super().__init__(reason)
        self.connect = connect


class _Mismatch(Exception):
    def __init__(self, expected: str, got: str, got_size: int, reason: str) -> None:
        super().__init__(reason)
        self.expected = expected
        self.got = got
        self.got_size = got_size


class _DestWriteError(Exception):
    """Writing the destination failed (disk full, ...): no other source can help."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _Sink:
    """The destination file plus running digests; restartable from zero."""

    def __init__(self, f: IO[bytes], spec: FileSpec, progress: _Progress) -> None:
        self.f = f
        self.spec = spec
        self.progress = progress
        self.reset()

    def reset(self) -> None:
        try:
            self.f.seek(0)
            self.f.truncate()
        except OSError as e:
            raise _DestWriteError(e) from e
        self.n = 0
        self.hasher = Hasher()
        self.md5 = hashlib.md5(usedforsecurity=False) if self.spec.md5 else None

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        limit = self.spec.size
        if limit is not None and self.n + len(chunk) > limit:
            got = self.n + len(chunk)
            raise _Mismatch(
                _expected_label(self.spec),
                f"more than {limit} bytes",
                got,
                f"served more than the expected {limit} bytes",
            )
        try:
            self.f.write(chunk)
        except OSError as e:
            raise _DestWriteError(e) from e
        self.hasher.update(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)
        self.n += len(chunk)
        self.progress.at(self.n)

    def finish(self) -> tuple[int, str, str, str | None]:
        size, sha, b3 = self.hasher.finish()
        return size, sha, b3, (self.md5.hexdigest() if self.md5 is not None else None)


class _Progress:
    """Reports a monotonic byte count: restarts and rejected sources never overshoot."""

    def __init__(self, reporter: Reporter, key: str) -> None:
        self.reporter = reporter
        self.key = key
        self.high = 0

    def at(self, n: int) -> None:
        if n > self.high:
            self.reporter.on_task_progress(self.key, n - self.high)
            self.high = n


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class Fetcher:
    """Downloads fixed-output files.  One per process: it holds the HTTP connection pool.

    ``retries`` is how many times a transient failure (5xx, timeout, broken connection) is
    retried per source, with backoff ``backoff * 2**k`` seconds; failures to connect at all
    are retried at most once, so a dead mirror costs about two connect timeouts.  A body cut
    short is resumed with a ``Range`` request (or restarted when the server ignores it).
    """

    def __init__(
        self,
        mirrors: Sequence[Mirror] = (),
        *,
        offline: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_redirects: int = 10,
        reporter: Reporter | None = None,
        trust_env: bool = True,
    ) -> None:
        self.mirrors = tuple(mirrors)
        self.offline = offline
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_redirects = max_redirects
        self.reporter: Reporter = reporter if reporter is not None else NullReporter()
        self.trust_env = trust_env
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self.offline:  # defensive: never reached, offline filters out network sources
            raise OfflineError("internal: network access attempted while offline")
        with self._client_lock:
            if self._client is None:
                import httpx  # lazy: a no-op realize never pays for it

                self._client = httpx.Client(
                    timeout=httpx.Timeout(
                        connect=self.connect_timeout,
                        read=self.read_timeout,
                        write=self.read_timeout,
                        pool=self.connect_timeout,
                    ),
                    follow_redirects=True,
                    max_redirects=self.max_redirects,
                    headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                    trust_env=self.trust_env,
                )
            return self._client

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public --------------------------------------------------------------------------

    def sources(self, spec: FileSpec) -> list[Source]:
        """Every place ``fetch`` would try for ``spec``, in order (offline: local only)."""
        out: list[Source] = []
        seen: set[str] = set()
        urls: Sequence[str | None] = spec.urls or (None,)
        for url in urls:
            for s in candidates(self.mirrors, url, spec.sha256):
                if s.location in seen:
                    continue
                seen.add(s.location)
                out.append(s)
        if self.offline:
            out = [s for s in out if s.is_local]
        return out

    def fetch(self, spec: FileSpec, dest: Path) -> Fetched:
        """Write ``spec``'s verified bytes to ``dest`` (fsynced) and return their digests.

        Raises ``HashMismatchError`` when some source served wrong bytes and none right ones,
        ``OfflineError`` when offline and no local mirror holds the file, else ``FetchError``
        listing every source tried.  On any failure ``dest`` is removed.
        """
        dest = Path(dest)
        sources = self.sources(spec)
        key = f"fetch:{spec.artifact}"
        progress = _Progress(self.reporter, key)
        attempts: list[Attempt] = []
        mismatches: list[tuple[Source, _Mismatch]] = []
        self.reporter.on_task_start(key, f"fetch {spec.artifact}", spec.size)
        ok = False
        try:
            with open(dest, "wb") as f:
                sink = _Sink(f, spec, progress)
                for src in sources:
                    sink.reset()
                    try:
                        if src.is_local:
                            self._copy_local(src, sink)
                        else:
                            self._download(src, sink, spec)
                        result = self._verify(spec, sink, src)
                    except _Mismatch as e:
                        mismatches.append((src, e))
                        attempts.append(Attempt(src.location, str(e), wrong_bytes=True))
                        self.reporter.on_message(
                            f"{spec.artifact}: rejected bytes from {src.location}: {e}"
                        )
                        continue
                    except _SourceFailed as e:
                        attempts.append(Attempt(src.location, str(e)))
                        if len(sources) > 1:
                            self.reporter.on_message(f"{spec.artifact}: {src.location}: {e}")
                        continue
                    try:
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError as e:
                        raise _DestWriteError(e) from e
                    ok = True
                    self.reporter.on_task_done(key, f"from {src.location}")
                    return result
                sink.reset()
        except _DestWriteError as e:
            self.reporter.on_task_done(key, "failed")
            raise StoreError(
                f"cannot write the download of `{spec.artifact}` to {dest}: "
                f"{e.cause.strerror or e.cause}",
                hints=("check free space and permissions of the store",),
            ) from e.cause
        finally:
            if not ok:
                try:
                    dest.unlink()
                except FileNotFoundError:
                    pass
        self.reporter.on_task_done(key, "failed")
        raise self._failure(spec, sources, attempts, mismatches)

    # -- sources -------------------------------------------------------------------------

    def _copy_local(self, src: Source, sink: _Sink) -> None:
        try:
            fh = open(src.location, "rb")
        except FileNotFoundError:
            where = "not in mirror" if src.mirror is not None else "no such file"
            raise _SourceFailed(f"{where} (looked at {src.location})") from None
        except IsADirectoryError:
            raise _SourceFailed(f"{src.location} is a directory, not a file") from None
        except OSError as e:
            raise _SourceFailed(f"cannot read {src.location}: {e.strerror or e}") from None
        with fh:
            try:
                while chunk := fh.read(CHUNK):
                    sink.write(chunk)
            except IsADirectoryError:
                raise _SourceFailed(f"{src.location} is a directory, not a file") from None
            except OSError as e:
                raise _SourceFailed(f"error reading {src.location}: {e.strerror or e}") from None

    def _download(self, src: Source, sink: _Sink, spec: FileSpec) -> None:
        failures = 0
        connect_failures = 0
        resumes = 0
        use_range = True
        while True:
            before = sink.n
            try:
                self._get_once(src.location, sink, use_range)
                return
            except _Retryable as e:
                if sink.n > before:
                    # Progress was made: resume (does not use up a retry).
                    resumes += 1
                    if resumes > _MAX_RESUMES:
                        raise _SourceFailed(f"{e}; gave up after {resumes} resumes") from None
                    self.reporter.on_message(
                        f"{spec.artifact}: {e} at byte {sink.n}; resuming from {src.location}"
                    )
                    continue
                failures += 1
                if e.connect:
                    connect_failures += 1
                allowed = min(self.retries, 1) if e.connect else self.retries
                if failures > allowed or connect_failures > min(self.retries, 1):
                    tries = "attempt" if failures == 1 else "attempts"
                    raise _SourceFailed(f"{e} ({failures} {tries})") from None
                delay = self.backoff * (2 ** (failures - 1))
                self.reporter.on_message(
                    f"{spec.artifact}: {e}; retrying {src.location} in {delay:.2g}s"
                )
                time.sleep(delay)
            except _RangeIgnored:
                use_range = False

    def _get_once(self, url: str, sink: _Sink, use_range: bool) -> None:
        import httpx

        client = self._http()
        offset = sink.n
        headers: dict[str, str] = {}
        if offset and use_range:
            headers["Range"] = f"bytes={offset}-"
        elif offset:
            sink.reset()
            offset = 0
        try:
            with client.stream("GET", url, headers=headers) as resp:
                status = resp.status_code
                if status in (404, 410):
                    raise _SourceFailed(f"HTTP {status} {resp.reason_phrase or 'Not Found'}")
                if status >= 500 or status in (408, 429):
                    raise _Retryable(f"HTTP {status} {resp.reason_phrase}".rstrip())
                if status == 416 and "Range" in headers:
                    sink.reset()
                    raise _RangeIgnored()
                if status not in (200, 206):
                    raise _SourceFailed(f"HTTP {status} {resp.reason_phrase}".rstrip())
                total: int | None = None
                clen = resp.headers.get("content-length")
                if status == 206:
                    if "Range" not in headers:
                        raise _SourceFailed("HTTP 206 Partial Content to a request without Range")
                    m = _CONTENT_RANGE.match(resp.headers.get("content-range", ""))
                    if m is None or int(m.group(1)) != offset:
                        # Not the part we asked for: start over without Range.
                        sink.reset()
                        raise _RangeIgnored()
                    if m.group(3) != "*":
                        total = int(m.group(3))
                    elif clen is not None and clen.isdigit():
                        total = offset + int(clen)
                else:
                    if offset:  # server ignored Range: restart from the first byte
                        sink.reset()
                    if clen is not None and clen.isdigit():
                        total = int(clen)
                expected = sink.spec.size
                if total is not None and expected is not None and total != expected:
                    # Wrong length announced: reject without downloading the body.
                    raise _Mismatch(
                        _expected_label(sink.spec),
                        f"a {total}-byte body",
                        total,
                        f"announces {total} bytes, expected {expected}",
                    )
                for chunk in resp.iter_raw():
                    sink.write(chunk)
                if total is not None and sink.n < total:
                    raise _Retryable(f"body cut short ({sink.n} of {total} bytes)")
                if total is not None and sink.n > total:
                    raise _SourceFailed(f"server sent {sink.n} bytes, more than the {total} announced")
        except (_SourceFailed, _Retryable, _RangeIgnored, _Mismatch, _DestWriteError):
            raise
        except httpx.TooManyRedirects:
            raise _SourceFailed(f"too many redirects (limit {self.max_redirects})") from None
        except httpx.UnsupportedProtocol as e:
            raise _SourceFailed(f"unsupported URL or redirect: {e}") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise _Retryable(f"cannot connect: {_describe(e)}", connect=True) from None
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out: {_describe(e)}") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection broken: {_describe(e)}") from None
        except httpx.HTTPError as e:
            raise _SourceFailed(f"HTTP error: {_describe(e)}") from None

    # -- verification and errors ---------------------------------------------------------

    def _verify(self, spec: FileSpec, sink: _Sink, src: Source) -> Fetched:
        size, sha, b3, md5 = sink.finish()
        if spec.sha256 is not None and sha != spec.sha256.lower():
            raise _Mismatch(
                f"sha256:{spec.sha256.lower()}", f"sha256:{sha}", size, f"sha256 is {sha}, expected {spec.sha256.lower()}"
            )
        if spec.size is not None and size != spec.size:
            got = f"md5:{md5}" if md5 is not None else f"sha256:{sha}"
            raise _Mismatch(_expected_label(spec), got, size, f"{size} bytes, expected {spec.size}")
        if spec.md5 is not None and md5 != spec.md5.lower():
            raise _Mismatch(f"md5:{spec.md5.lower()}", f"md5:{md5}", size, f"md5 is {md5}, expected {spec.md5.lower()}")
        return Fetched(size=size, sha256=sha, blake3=b3, source=src.location)

    def _failure(
        self,
        spec: FileSpec,
        sources: list[Source],
        attempts: list[Attempt],
        mismatches: list[tuple[Source, _Mismatch]],
    ) -> FetchError:
        tried = [f"{a.source}: {a.reason}" for a in attempts]
        lock_name = spec.artifact.split("/", 1)[0]
        if mismatches:
            # Prefer upstream's mismatch: then upstream itself changed.
            src, mm = next(((s, m) for s, m in mismatches if s.is_upstream), mismatches[0])
            hints = []
            if any(not s.is_upstream for s, _ in mismatches):
                bad = ", ".join(s.mirror.location for s, _ in mismatches if s.mirror is not None)
                hints.append(
                    f"the mirror served different bytes; fix or drop it ({bad}), "
                    "or fetch without it"
                )
            hints.append(f"if upstream changed on purpose, run `mlbuild lock --update {lock_name}`")
            hints += [f"tried {t}" for t in tried]
            err: FetchError = HashMismatchError(
                artifact=spec.artifact,
                url=src.location,
                expected=mm.expected,
                got=mm.got,
                expected_size=spec.size,
                got_size=mm.got_size,
                hints=hints,
            )
        elif self.offline:
            if sources:
                looked = "; ".join(tried)
                msg = f"`{spec.artifact}` is not available offline; looked in: {looked}"
            else:
                msg = (
                    f"`{spec.artifact}` is not available offline: no local mirror is configured "
                    f"(upstream: {', '.join(spec.urls) or 'none'})"
                )
            err = OfflineError(
                msg,
                hints=(
                    "pass `--mirror DIR` (or set MLBUILD_MIRRORS) to a local mirror holding it",
                    "or run without `--offline` to download it",
                ),
            )
        else:
            hosts = sorted({urlsplit(u).netloc for u in spec.urls if urlsplit(u).netloc})
            lines = "\n".join(f"  - {t}" for t in tried) or "  (no sources: no URL and no CAS mirror)"
            err = FetchError(
                f"could not fetch `{spec.artifact}`; every source failed:\n{lines}",
                hints=(
                    "pass `--mirror DIR` (or set MLBUILD_MIRRORS) to a mirror that holds it",
                    "check network access" + (f" to {', '.join(hosts)}" if hosts else ""),
                ),
            )
        err.attempts = tuple(attempts)  # type: ignore[attr-defined]
        return err


class _RangeIgnored(Exception):
    """The server answered a resume with the wrong part: retry from zero without Range."""


def _expected_label(spec: FileSpec) -> str:
    if spec.sha256 is not None:
        return f"sha256:{spec.sha256.lower()}"
    if spec.md5 is not None:
        return f"md5:{spec.md5.lower()}"
    return f"size {spec.size}"


def _describe(e: Any) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
