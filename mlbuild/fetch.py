"""Fixed-output downloads: fetch an artifact's bytes from mirrors or upstream, verified.

:class:`Fetcher.fetch` writes one file to a path the caller (the store) chose, streaming
in constant memory and hashing (sha256 + blake3, and md5 when an upstream md5 is known)
as bytes arrive.  Sources are tried in order (see :func:`mlbuild.mirrors.candidates`);
a source whose bytes do not match the known size/sha256/md5 is rejected and the next
one tried, so wrong bytes never count.  On failure the destination file is removed:
the file at ``dest`` is only valid when :meth:`Fetcher.fetch` returns.

Hardening (see ``mlbuild.urls``): every URL is checked before use; redirects are followed
by hand and each hop is checked (never to link-local addresses, to loopback only from a
loopback URL); errors name the URL the bytes finally came from or failed at.  A source
that times out or cannot be connected to is marked bad and skipped for the rest of the
run (one :class:`Fetcher` serves one ``realize``/``lock``), and the reporter says so.
Failures raise specific :mod:`mlbuild.errors` classes: ``NotFoundError``,
``HTTPStatusError``, ``UnreachableError``, ``UnsafeURLError``, ``TooLargeError``,
``HashMismatchError``, ``OfflineError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlbuild._native import Hasher
from mlbuild.errors import (
    FetchError,
    HashMismatchError,
    HTTPStatusError,
    NotFoundError,
    OfflineError,
    StoreError,
    TooLargeError,
    UnreachableError,
    UnsafeURLError,
    UsageError,
)
from mlbuild.mirrors import Mirror, Source, candidates
from mlbuild.reporter import NullReporter, Reporter
from mlbuild.urls import BadURL, Resolver, check_url, hop_refusal, host_addresses, origin, redact

if TYPE_CHECKING:  # pragma: no cover
    import httpx

__all__ = ["MAX_DOWNLOAD", "Attempt", "Fetched", "Fetcher", "FileSpec", "fetch_settings"]

CHUNK = 1 << 20  # bytes read/written per step: memory use is a small multiple of this
USER_AGENT = "mlbuild/0.1 (fixed-output fetcher)"
_MAX_RESUMES = 50  # resumes that made progress, per source (bounded so a trickling server ends)
MAX_DOWNLOAD = 64 << 30  # bytes one file may have when no size is known (pinning); MLBUILD_MAX_DOWNLOAD_BYTES
_REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class FileSpec:
    artifact: str  # display name: "yolox-nano-onnx", "coco128/images/x.jpg"
    urls: tuple[str, ...]  # ordered upstream URLs
    sha256: str | None = None
    size: int | None = None
    md5: str | None = None  # upstream checksum (MLPerf publishes md5)
    blake3: str | None = None  # the lock's blake3, checked as well as sha256


@dataclass(frozen=True)
class Attempt:
    """What happened at one source (kept on raised errors as ``.attempts``).

    ``kind``: ``ok``, ``wrong-bytes``, ``not-found``, ``http``, ``unreachable``, ``skipped``
    (marked bad earlier in the run), ``unsafe`` (refused URL or redirect), ``too-large``,
    ``other``.  ``url``: where the source finally answered (after redirects)."""

    source: str
    reason: str
    wrong_bytes: bool = False
    kind: str = "other"
    url: str = ""
    status: int = 0


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str
    blake3: str
    source: str  # the URL or mirror path the bytes came from
    # where ``source`` led after redirects, and the sources that served wrong bytes before it
    # (not part of equality: two fetches of the same bytes from the same source are equal)
    final_url: str = field(default="", compare=False)
    rejected: tuple[Attempt, ...] = field(default=(), compare=False)


class _SourceFailed(Exception):
    """This source cannot deliver; go on with the next one."""

    def __init__(self, reason: str, *, kind: str = "other", url: str = "", status: int = 0) -> None:
        super().__init__(reason)
        self.kind = kind
        self.url = url
        self.status = status


class _Retryable(Exception):
    """A transient failure (5xx, broken connection, timeout, body cut short).

    ``kind``: ``status`` (5xx/408/429), ``broken`` (connection broken, body cut short),
    ``connect`` (could not connect), ``timeout`` (no answer in time)."""

    def __init__(self, reason: str, *, kind: str = "broken", url: str = "", status: int = 0) -> None:
        super().__init__(reason)
        self.kind = kind
        self.url = url
        self.status = status


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

    def __init__(self, f: IO[bytes], spec: FileSpec, progress: _Progress, cap: int = MAX_DOWNLOAD) -> None:
        self.f = f
        self.spec = spec
        self.progress = progress
        self.cap = cap
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
        if limit is None and self.n + len(chunk) > self.cap:
            raise _SourceFailed(f"more than {self.cap} bytes (the download limit; MLBUILD_MAX_DOWNLOAD_BYTES)",
                                kind="too-large")
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
    """Downloads fixed-output files.  One per run (``realize``/``lock``): it holds the HTTP
    connection pool and remembers the sources that failed.

    ``retries`` is how many times a transient failure (5xx, broken connection) is retried per
    source, with backoff ``backoff * 2**k`` seconds.  A failure to connect is retried at most
    once and a timeout (no answer within ``read_timeout``) not at all; either marks the source
    (its ``scheme://host:port``) bad, so every later file skips it: a dead or hanging mirror
    costs about one timeout per run, not one per file.  A body cut short is resumed with a
    ``Range`` request (or restarted when the server ignores it).  Redirects are followed by
    hand (at most ``max_redirects``); each hop must pass :func:`mlbuild.urls.check_url` and
    :func:`mlbuild.urls.hop_refusal` (``resolve`` maps a host to its addresses; tests inject
    one).  Without a known size a file may have at most ``max_download`` bytes.
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
        max_download: int = MAX_DOWNLOAD,
        resolve: Resolver = host_addresses,
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
        self.max_download = max_download
        self.resolve = resolve
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._bad: dict[str, str] = {}  # source key -> why it was given up on in this run
        self._wrong: dict[str, int] = {}  # mirror location -> files it served wrong bytes for
        self._state_lock = threading.Lock()
        self.notices: list[str] = []  # run-level notices (also sent to the reporter)

    # -- lifecycle -----------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self.offline:  # defensive: never reached, offline filters out network sources
            raise OfflineError("internal: network access attempted while offline")
        with self._client_lock:
            if self._client is None:
                import httpx  # lazy: a no-op realize never pays for it

                self._client = httpx.Client(
                    auth=_netrc_auth() if self.trust_env else None,
                    timeout=httpx.Timeout(
                        connect=self.connect_timeout,
                        read=self.read_timeout,
                        write=self.read_timeout,
                        pool=self.connect_timeout,
                    ),
                    follow_redirects=False,  # followed by hand: every hop is checked
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

    # -- bad sources ---------------------------------------------------------------------

    @staticmethod
    def _source_key(src: Source) -> str | None:
        return None if src.is_local else origin(src.location)

    @staticmethod
    def _label(src: Source) -> str:
        if src.mirror is not None:
            return f"mirror {redact(src.mirror.location)}"
        return f"upstream {origin(src.location)}"

    def bad_sources(self) -> dict[str, str]:
        """Sources given up on in this run (``scheme://host:port`` -> why)."""
        with self._state_lock:
            return dict(self._bad)

    def _skip_reason(self, src: Source) -> str | None:
        key = self._source_key(src)
        if key is None:
            return None
        with self._state_lock:
            return self._bad.get(key)

    def _notice(self, topic: str, artifact: str, text: str) -> None:
        """A run-level notice: on the progress line (``artifact: text``) and as a plain line."""
        with self._state_lock:
            self.notices.append(text)
        top = artifact.split("/", 1)[0]
        self.reporter.on_message(f"{top}: {text}")
        self.reporter.on_task_done(f"notice:{topic}", text)

    def _mark_bad(self, src: Source, reason: str, artifact: str) -> None:
        key = self._source_key(src)
        if key is None:
            return
        with self._state_lock:
            if key in self._bad:
                return
            self._bad[key] = reason
        self._notice(f"bad:{key}", artifact, f"{self._label(src)} skipped for the rest of this run: {reason}")

    def _note_wrong_bytes(self, src: Source, artifact: str, used: Source, reason: str) -> None:
        if src.mirror is None:
            return
        loc = src.mirror.location
        with self._state_lock:
            n = self._wrong.get(loc, 0)
            self._wrong[loc] = n + 1
        if n == 0:
            self._notice(f"wrong:{loc}", artifact,
                         f"{self._label(src)} served wrong bytes for `{artifact}` ({reason}); "
                         f"used {redact(used.location)} instead (further files noted with -v)")

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

        Raises ``UnsafeURLError`` for a URL mlbuild may not fetch (before anything else),
        ``HashMismatchError`` when some source served wrong bytes and none right ones,
        ``OfflineError`` when offline and no local mirror holds the file, else a
        ``FetchError`` subclass chosen by what upstream (or the last source) said, listing
        every source tried.  On any failure ``dest`` is removed.
        """
        for url in spec.urls:
            try:
                check_url(url)
            except BadURL as e:
                raise UnsafeURLError(f"refusing to fetch `{spec.artifact}`: {e}", url=redact(url),
                                     hints=e.hints or ("only http(s) URLs with a real host are fetched",)) from None
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
                sink = _Sink(f, spec, progress, self.max_download)
                for src in sources:
                    skip = self._skip_reason(src)
                    if skip is not None:
                        attempts.append(Attempt(src.location, f"skipped: {self._label(src)} failed earlier in this "
                                                f"run ({skip})", kind="skipped", url=src.location))
                        continue
                    sink.reset()
                    final = [src.location]
                    try:
                        if src.is_local:
                            self._copy_local(src, sink)
                        else:
                            self._download(src, sink, spec, final)
                        result = self._verify(spec, sink, src, final[0])
                    except _Mismatch as e:
                        mismatches.append((src, e))
                        attempts.append(Attempt(src.location, str(e), wrong_bytes=True, kind="wrong-bytes",
                                                url=final[0]))
                        self.reporter.on_message(
                            f"{spec.artifact}: rejected bytes from {_where(src.location, final[0])}: {e}"
                        )
                        continue
                    except _SourceFailed as e:
                        url = e.url or final[0]
                        attempts.append(Attempt(src.location, str(e), kind=e.kind, url=url, status=e.status))
                        if e.kind == "unreachable":
                            self._mark_bad(src, str(e), spec.artifact)
                        if len(sources) > 1:
                            self.reporter.on_message(f"{spec.artifact}: {src.location}: {e}")
                        continue
                    try:
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError as e:
                        raise _DestWriteError(e) from e
                    ok = True
                    rejected = tuple(a for a in attempts if a.wrong_bytes)
                    for bad_src, mm in mismatches:
                        self._note_wrong_bytes(bad_src, spec.artifact, src, str(mm))
                    done = f"from {_where(src.location, final[0])}"
                    skipped = [a for a in attempts if a.kind in ("skipped", "unreachable")]
                    if rejected:
                        done += f" ({len(rejected)} source(s) served wrong bytes)"
                    if skipped:
                        done += f" ({len(skipped)} unreachable source(s) skipped)"
                    self.reporter.on_task_done(key, done)
                    return Fetched(result.size, result.sha256, result.blake3, result.source, result.final_url,
                                   rejected)
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
                with contextlib.suppress(FileNotFoundError):
                    dest.unlink()
        self.reporter.on_task_done(key, "failed")
        raise self._failure(spec, sources, attempts, mismatches)

    # -- sources -------------------------------------------------------------------------

    def _copy_local(self, src: Source, sink: _Sink) -> None:
        try:
            fh = open(src.location, "rb")  # noqa: SIM115  (`with fh` below: open and read errors differ)
        except FileNotFoundError:
            where = "not in mirror" if src.mirror is not None else "no such file"
            raise _SourceFailed(f"{where} (looked at {src.location})", kind="not-found") from None
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

    def _download(self, src: Source, sink: _Sink, spec: FileSpec, final: list[str]) -> None:
        failures = 0
        connect_failures = 0
        resumes = 0
        use_range = True
        while True:
            before = sink.n
            try:
                self._get_once(src.location, sink, use_range, final)
                return
            except _Retryable as e:
                if sink.n > before:
                    # Progress was made: resume (does not use up a retry).
                    resumes += 1
                    if resumes > _MAX_RESUMES:
                        raise _SourceFailed(f"{e}; gave up after {resumes} resumes", kind="unreachable",
                                            url=e.url) from None
                    self.reporter.on_message(
                        f"{spec.artifact}: {e} at byte {sink.n}; resuming from {src.location}"
                    )
                    continue
                failures += 1
                if e.kind == "connect":
                    connect_failures += 1
                if e.kind == "timeout":
                    # No answer at all within the timeout: waiting again rarely helps.
                    raise _SourceFailed(str(e), kind="unreachable", url=e.url) from None
                allowed = min(self.retries, 1) if e.kind == "connect" else self.retries
                if failures > allowed or connect_failures > min(self.retries, 1):
                    tries = "attempt" if failures == 1 else "attempts"
                    kind = "http" if e.kind == "status" else "unreachable"
                    raise _SourceFailed(f"{e} ({failures} {tries})", kind=kind, url=e.url,
                                        status=e.status) from None
                delay = self.backoff * (2 ** (failures - 1))
                self.reporter.on_message(
                    f"{spec.artifact}: {e}; retrying {src.location} in {delay:.2g}s"
                )
                time.sleep(delay)
            except _RangeIgnored:
                use_range = False

    def _open(self, client: httpx.Client, url: str, headers: dict[str, str], final: list[str]) -> httpx.Response:
        """GET ``url`` as a stream, following redirects by hand; ``final[0]`` is where it led."""
        import httpx

        current = url
        why = hop_refusal(url, url, _literal_only)  # a link-local IP literal is refused even unredirected
        if why is not None:
            raise _SourceFailed(why.replace("redirect to a", "request to a"), kind="unsafe", url=url)
        for _ in range(self.max_redirects + 1):
            final[0] = current
            resp = client.send(client.build_request("GET", current, headers=headers), stream=True)
            location = resp.headers.get("location")
            if resp.status_code not in _REDIRECTS or not location:
                return resp
            resp.close()
            try:
                target = str(httpx.URL(current).join(location))
            except (httpx.InvalidURL, ValueError, TypeError) as e:
                raise _SourceFailed(f"bad redirect from {current}: {_describe(e)}", kind="unsafe",
                                    url=current) from None
            try:
                check_url(target)
            except BadURL as e:
                raise _SourceFailed(f"redirect from {current} refused: {e}", kind="unsafe", url=current) from None
            why = hop_refusal(url, target, self.resolve)
            if why is not None:
                raise _SourceFailed(f"{why}: {redact(target)} (redirected from {current})", kind="unsafe",
                                    url=target)
            current = target
        final[0] = current
        raise _SourceFailed(f"too many redirects (limit {self.max_redirects}), last {current}", url=current)

    def _get_once(self, url: str, sink: _Sink, use_range: bool, final: list[str]) -> None:
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
            with contextlib.closing(self._open(client, url, headers, final)) as resp:
                at = final[0]
                where = "" if at == url else f" (at {at})"
                status = resp.status_code
                if status in (404, 410):
                    raise _SourceFailed(f"HTTP {status} {resp.reason_phrase or 'Not Found'}{where}",
                                        kind="not-found", url=at, status=status)
                if status >= 500 or status in (408, 429):
                    raise _Retryable(f"HTTP {status} {resp.reason_phrase}".rstrip() + where, kind="status",
                                     url=at, status=status)
                if status == 416 and "Range" in headers:
                    sink.reset()
                    raise _RangeIgnored()
                if status not in (200, 206):
                    raise _SourceFailed(f"HTTP {status} {resp.reason_phrase}".rstrip() + where, kind="http",
                                        url=at, status=status)
                total: int | None = None
                clen = resp.headers.get("content-length")
                if status == 206:
                    if "Range" not in headers:
                        raise _SourceFailed("HTTP 206 Partial Content to a request without Range" + where, url=at)
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
                if total is not None and expected is None and total > sink.cap:
                    raise _SourceFailed(f"announces {total} bytes, more than the download limit {sink.cap}"
                                        + where, kind="too-large", url=at)
                for chunk in resp.iter_raw():
                    sink.write(chunk)
                if total is not None and sink.n < total:
                    raise _Retryable(f"body cut short ({sink.n} of {total} bytes){where}", url=at)
                if total is not None and sink.n > total:
                    raise _SourceFailed(f"server sent {sink.n} bytes, more than the {total} announced{where}",
                                        url=at)
        except (_SourceFailed, _Retryable, _RangeIgnored, _Mismatch, _DestWriteError):
            raise
        except httpx.UnsupportedProtocol as e:
            raise _SourceFailed(f"unsupported URL or redirect: {_describe(e)}", kind="unsafe", url=final[0]) from None
        except httpx.ConnectTimeout:
            raise _Retryable(f"timed out after {self.connect_timeout:g} s (ConnectTimeout){_at(url, final[0])}",
                             kind="timeout", url=final[0]) from None
        except httpx.ConnectError as e:
            raise _Retryable(f"cannot connect: {_describe(e)}{_at(url, final[0])}", kind="connect",
                             url=final[0]) from None
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out after {self.read_timeout:g} s ({type(e).__name__}){_at(url, final[0])}",
                             kind="timeout", url=final[0]) from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection broken: {_describe(e)}{_at(url, final[0])}", url=final[0]) from None
        except httpx.HTTPError as e:
            raise _SourceFailed(f"HTTP error: {_describe(e)}{_at(url, final[0])}", url=final[0]) from None

    # -- verification and errors ---------------------------------------------------------

    def _verify(self, spec: FileSpec, sink: _Sink, src: Source, final_url: str) -> Fetched:
        size, sha, b3, md5 = sink.finish()
        if spec.sha256 is not None and sha != spec.sha256.lower():
            raise _Mismatch(
                f"sha256:{spec.sha256.lower()}",
                f"sha256:{sha}",
                size,
                f"sha256 is {sha}, expected {spec.sha256.lower()}",
            )
        if spec.size is not None and size != spec.size:
            got = f"md5:{md5}" if md5 is not None else f"sha256:{sha}"
            raise _Mismatch(_expected_label(spec), got, size, f"{size} bytes, expected {spec.size}")
        if spec.md5 is not None and md5 != spec.md5.lower():
            raise _Mismatch(f"md5:{spec.md5.lower()}", f"md5:{md5}", size, f"md5 is {md5}, expected {spec.md5.lower()}")
        if spec.blake3 is not None and b3 != spec.blake3.lower():
            raise _Mismatch(f"blake3:{spec.blake3.lower()}", f"blake3:{b3}", size,
                            f"blake3 is {b3}, expected {spec.blake3.lower()}")
        return Fetched(size=size, sha256=sha, blake3=b3, source=src.location, final_url=final_url)

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
            final = next((a.url for a in attempts if a.wrong_bytes and a.source == src.location), src.location)
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
                url=_where(src.location, final),
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
            msg = f"could not fetch `{spec.artifact}`; every source failed:\n{lines}"
            hints = [
                "pass `--mirror DIR` (or set MLBUILD_MIRRORS) to a mirror that holds it",
                "check network access" + (f" to {', '.join(hosts)}" if hosts else ""),
            ]
            # What decides: upstream's answer (the last upstream attempt), else the last source's.
            upstream = [a for a in attempts if a.source in spec.urls]
            decisive = upstream[-1] if upstream else (attempts[-1] if attempts else None)
            kind = decisive.kind if decisive is not None else "not-found"
            url = decisive.url if decisive is not None else None
            status = decisive.status if decisive is not None else 0
            if kind == "not-found":
                err = NotFoundError(msg, url=url, status=status, hints=[
                    "check the URL in the manifest (or the lock); the file is not there", *hints[:1]])
            elif kind == "http":
                err = HTTPStatusError(msg, url=url, status=status, hints=hints)
            elif kind in ("unreachable", "skipped"):
                err = UnreachableError(msg, url=url, hints=hints)
            elif kind == "unsafe":
                err = UnsafeURLError(msg, url=url, hints=(
                    "a redirect may not lead to a link-local address, nor from a public URL to a loopback one",))
            elif kind == "too-large":
                err = TooLargeError(msg, url=url, hints=(
                    "raise MLBUILD_MAX_DOWNLOAD_BYTES if the file really is this large",))
            else:
                err = FetchError(msg, hints=hints)
                err.url = url  # type: ignore[attr-defined]
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


def _where(source: str, final: str) -> str:
    return source if not final or final == source else f"{source} (redirected to {final})"


def _at(url: str, final: str) -> str:
    return "" if not final or final == url else f" (at {final})"


def _netrc_auth() -> Any:
    """Credentials per host from ``$NETRC`` or ``~/.netrc`` (never from a URL, a manifest or the lock).

    Applied by httpx per request to that request's host, so a redirect to another host never
    carries them along."""
    import httpx

    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    if not os.path.isfile(path):
        return None
    try:
        return httpx.NetRCAuth(path)
    except Exception as e:  # netrc.NetrcParseError, OSError, UnicodeError
        raise UsageError(f"cannot read the netrc file {path}: {e}",
                         hints=("fix its syntax (machine NAME login USER password PASS), or move it away",)) from None


def _literal_only(host: str) -> list[str]:
    """A resolver that knows IP literals only (no DNS lookup)."""
    import ipaddress

    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return []


# --------------------------------------------------------------------------- settings

_LIMITS: dict[str, tuple[str, type, float, float]] = {
    # variable: (keyword, type, smallest, largest)
    "MLBUILD_CONNECT_TIMEOUT": ("connect_timeout", float, 0.001, 3600.0),
    "MLBUILD_READ_TIMEOUT": ("read_timeout", float, 0.001, 3600.0),
    "MLBUILD_RETRIES": ("retries", int, 0, 100),
    "MLBUILD_RETRY_BACKOFF": ("backoff", float, 0.0, 600.0),
    "MLBUILD_MAX_DOWNLOAD_BYTES": ("max_download", int, 1, float(1 << 50)),
}


def fetch_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fetcher keywords from MLBUILD_CONNECT_TIMEOUT / _READ_TIMEOUT (seconds, > 0, at most an hour),
    MLBUILD_RETRIES (0-100), MLBUILD_RETRY_BACKOFF (seconds, 0-600) and MLBUILD_MAX_DOWNLOAD_BYTES.

    Raises ``UsageError`` for a value that is not a finite number in range (``nan``, ``inf``,
    ``1e999``, ``-1``, ``0`` timeouts, ``abc``).
    """
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for var, (key, conv, low, high) in _LIMITS.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        kind = "an integer" if conv is int else "a number of seconds"
        try:
            value = conv(raw)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value) and low <= value <= high
        if not ok:
            raise UsageError(f"${var}={raw!r}: expected {kind} from {low:g} to {high:g}",
                             hints=(f"unset {var} for the default, or set a finite value in range",))
        out[key] = value
    return out
