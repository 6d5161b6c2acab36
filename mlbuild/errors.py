"""One error hierarchy for the whole tool.

Library code raises these; only the CLI renders them (``error:``, ``caused by:``,
``hint:``).  Every error names the thing, what was expected and what was found;
``hints`` say what to do next.  Each class maps to a process exit code.
"""

from __future__ import annotations

from collections.abc import Sequence


class MlbuildError(Exception):
    """Base of every error mlbuild raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hints: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.hints = tuple(hints)

    def __str__(self) -> str:
        return self.message


class UsageError(MlbuildError):
    """The command line itself is wrong (unknown target, bad flag value)."""

    exit_code = 2


class ManifestError(MlbuildError):
    """A manifest file is malformed or inconsistent; carries file, line and key."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hints: Sequence[str] = (),
    ) -> None:
        where = ""
        if file is not None:
            where = file + (f":{line}" if line is not None else "")
            if key:
                where += f": `{key}`"
            where += ": "
        super().__init__(where + message, hints=hints)
        self.file = file
        self.line = line
        self.key = key


class LockError(MlbuildError):
    """The lockfile is missing, unreadable, or does not satisfy the manifests."""

    exit_code = 4


class StaleLockError(LockError):
    """``lock --check`` (or realize) found the lock out of date; ``reasons`` say why."""

    def __init__(self, message: str, *, reasons: Sequence[str], hints: Sequence[str] = ()) -> None:
        super().__init__(message, hints=hints)
        self.reasons = tuple(reasons)


class StoreError(MlbuildError):
    """The store cannot be opened, read or written."""

    exit_code = 5


class CorruptEntryError(StoreError):
    """A store entry's bytes no longer match its registered hash."""


class FetchError(MlbuildError):
    """No mirror or upstream could deliver an artifact's bytes."""

    exit_code = 6


class HashMismatchError(FetchError):
    """A source served bytes whose hash or size differ from the declared ones."""

    def __init__(
        self,
        *,
        artifact: str,
        url: str,
        expected: str,
        got: str,
        expected_size: int | None,
        got_size: int,
        hints: Sequence[str] = (),
    ) -> None:
        size_part = ""
        if expected_size is not None and expected_size != got_size:
            size_part = f", size expected {expected_size} bytes, got {got_size}"
        super().__init__(
            f"hash mismatch for `{artifact}` from {url}: expected {expected}, got {got}{size_part}",
            hints=hints,
        )
        self.artifact = artifact
        self.url = url
        self.expected = expected
        self.got = got
        self.expected_size = expected_size
        self.got_size = got_size


class OfflineError(FetchError):
    """``--offline`` was given and some bytes are not in the store or a local mirror."""


class UnsafeArchiveError(FetchError):
    """An archive member would escape the unpack directory."""


class BuildError(MlbuildError):
    """A builder failed; the message names the derivation and points at its log."""

    exit_code = 7


class InputError(BuildError):
    """A builder's or a run's input data is malformed (bad image, wrong tensor size, ...)."""


class RunError(BuildError):
    """A benchmark run failed before or during the LoadGen test."""


class CheckMismatchError(BuildError):
    """``realize --check`` rebuilt an entry and it came out different."""

    exit_code = 8


class ProvenanceError(MlbuildError):
    """A result's attestation is missing or does not match the result, its lock or its closure."""

    exit_code = 9


class SignatureError(ProvenanceError):
    """An attestation's signature is missing, forged, or made by a key that is not trusted."""


class NotReproducedError(MlbuildError):
    """``mlbuild reproduce`` found an artifact or the accuracy output that differs (or is unavailable)."""

    exit_code = 10


class ToolchainMismatchError(StaleLockError):
    """A host build tool (C++ compiler, rustc, ...) differs from the version the lock's [toolchain] records."""


# --------------------------------------------------------------------------- specific fetch failures
# Each carries ``url``: the URL (after redirects) or mirror path of the source that decided the
# failure, and ``attempts`` (set by the fetcher): what happened at every source tried.


class _SourceFetchError(FetchError):
    def __init__(self, message: str, *, url: str | None = None, hints: Sequence[str] = ()) -> None:
        super().__init__(message, hints=hints)
        self.url = url


class HTTPStatusError(_SourceFetchError):
    """A source answered with an HTTP error status (``status``) for the artifact."""

    def __init__(self, message: str, *, url: str | None = None, status: int = 0, hints: Sequence[str] = ()) -> None:
        super().__init__(message, url=url, hints=hints)
        self.status = status


class NotFoundError(HTTPStatusError):
    """Every source that answered said the file does not exist (HTTP 404/410, not in a mirror)."""


class UnreachableError(_SourceFetchError):
    """No source could be reached: connection refused, DNS failure, timeouts (a network problem)."""


class UnsafeURLError(_SourceFetchError):
    """A URL (or a redirect's target) is not one mlbuild may fetch: a bad scheme, host or path,
    credentials in the URL, or a redirect to a link-local or (from a non-loopback URL) loopback address."""


class TooLargeError(_SourceFetchError):
    """A download or an unpacked archive grew past the size it is allowed (the lock's, or a cap)."""


class ArchiveBombError(UnsafeArchiveError, TooLargeError):
    """An archive expands past the lock's size for it, or past the expansion bound when pinning."""


class CacheError(MlbuildError):
    """A binary cache (directory, HTTP or S3) could not be read or written, or holds something wrong."""

    exit_code = 11

    def __init__(self, message: str, *, url: str | None = None, hints: Sequence[str] = ()) -> None:
        super().__init__(message, hints=hints)
        self.url = url


class CacheUnreachableError(CacheError):
    """A binary cache did not answer in time or refused the connection (it is skipped for the run)."""


class CacheFormatError(CacheError):
    """A cache's metadata or serialised entry is malformed, truncated, or does not match its hashes."""


class CacheTrustError(CacheError):
    """A cache entry is unsigned, or signed by no trusted key, or its signature does not verify."""
