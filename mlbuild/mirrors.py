"""Mirrors: other places that may hold an artifact's exact bytes.

A lockfile names artifacts by their upstream URL and their hash; a mirror is only
another place to find those bytes (the hash is the identity, so any source whose
bytes hash right is as good as upstream).  Four layouts are understood:

``url-dir``
    a local directory laid out by URL without its scheme:
    ``https://host/a/b.onnx`` lives at ``<dir>/host/a/b.onnx``.
``cas-dir``
    a local content-addressed directory: ``<dir>/sha256/<hex>``.
``cas-http``
    an HTTP base serving ``<base>/sha256/<hex>``.
``url-http``
    an HTTP base laid out by URL without scheme: ``<base>/host/path``.

URLs are checked with :func:`mlbuild.urls.check_url` before they are mapped, and a
``url-dir`` path must resolve (symlinks followed) to a place inside the mirror's root:
a mirror never hands out a file from outside itself.

This module does no I/O beyond checking that local mirror directories exist and resolving
mirror paths, and must stay cheap to import (no HTTP library here).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from mlbuild.errors import FetchError
from mlbuild.urls import BadURL, check_url, redact

__all__ = [
    "ENV_VAR",
    "Mirror",
    "MirrorKind",
    "Source",
    "candidates",
    "mirrors_from",
    "parse_mirror",
    "url_relpath",
]

ENV_VAR = "MLBUILD_MIRRORS"

MirrorKind = Literal["url-dir", "cas-dir", "cas-http", "url-http"]
_KINDS: tuple[str, ...] = ("url-dir", "cas-dir", "cas-http", "url-http")


@dataclass(frozen=True)
class Mirror:
    kind: MirrorKind
    location: str  # absolute local directory, or an http(s) base URL without trailing slash

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown mirror kind {self.kind!r}")

    @property
    def is_local(self) -> bool:
        return self.kind in ("url-dir", "cas-dir")

    @property
    def is_cas(self) -> bool:
        return self.kind in ("cas-dir", "cas-http")

    def __str__(self) -> str:
        return f"{self.kind} mirror {self.location}"


@dataclass(frozen=True)
class Source:
    """One place to try: a local file path or an http(s) URL."""

    location: str
    is_local: bool
    mirror: Mirror | None = None  # None: the upstream URL itself

    @property
    def is_upstream(self) -> bool:
        return self.mirror is None

    def describe(self) -> str:
        if self.mirror is None:
            return self.location
        return f"{self.location} (mirror {self.mirror.location})"

    def __str__(self) -> str:
        return self.location


def _local_dir(text: str, original: str) -> str:
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise FetchError(
                f"mirror `{original}`: file:// URLs must name a local path (got host `{parts.netloc}`)"
            )
        text = unquote(parts.path)
    if not text:
        raise FetchError(f"mirror `{original}`: empty path")
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        raise FetchError(
            f"mirror directory {path} {what}",
            hints=(f"check the `--mirror` value or ${ENV_VAR}: `{original}`",),
        )
    return path


def _http_base(url: str, original: str) -> str:
    base = url.rstrip("/")
    try:
        check_url(base + "/")
    except BadURL as e:
        hints = e.hints or ("a mirror is a local directory, file://PATH, http(s)://BASE or url+http(s)://BASE",)
        raise FetchError(f"mirror `{redact(original)}`: {e.reason}", hints=hints) from None
    return base


def parse_mirror(text: str) -> Mirror:
    """Parse one ``--mirror`` / ``MLBUILD_MIRRORS`` value.

    * ``http(s)://BASE`` is a ``cas-http`` mirror; ``url+http(s)://BASE`` a ``url-http`` one;
    * a local path or ``file://`` URL is ``cas-dir`` when it has a ``sha256/``
      subdirectory, else ``url-dir``;
    * a ``cas:`` or ``url:`` prefix forces the kind (``cas:/srv/m``, ``url:https://m``).
    """
    original = text
    t = text.strip()
    forced: str | None = None
    if t.startswith("cas:"):
        forced, t = "cas", t[4:]
    elif t.startswith("url:"):
        forced, t = "url", t[4:]
    if not t:
        raise FetchError(f"mirror `{original}`: empty location")

    if t.startswith(("url+http://", "url+https://")):
        if forced == "cas":
            raise FetchError(f"mirror `{redact(original)}`: `cas:` contradicts `url+http`")
        return Mirror("url-http", _http_base(t[len("url+"):], original))
    if t.startswith(("http://", "https://")):
        return Mirror("url-http" if forced == "url" else "cas-http", _http_base(t, original))
    scheme = urlsplit(t).scheme
    if scheme and scheme != "file" and len(scheme) > 1 and "://" in t:
        raise FetchError(
            f"mirror `{original}`: unsupported scheme `{scheme}`",
            hints=("a mirror is a local directory, file://PATH, http(s)://BASE or url+http(s)://BASE",),
        )
    path = _local_dir(t, original)
    if forced == "cas":
        return Mirror("cas-dir", path)
    if forced == "url":
        return Mirror("url-dir", path)
    return Mirror("cas-dir" if os.path.isdir(os.path.join(path, "sha256")) else "url-dir", path)


def mirrors_from(cli_values: Iterable[str], environ: Mapping[str, str] | None = None) -> list[Mirror]:
    """CLI ``--mirror`` values first (in order), then ``$MLBUILD_MIRRORS`` (space-separated)."""
    env = os.environ if environ is None else environ
    values = [v for v in cli_values if v.strip()]
    values += env.get(ENV_VAR, "").split()
    return [parse_mirror(v) for v in values]


def url_relpath(url: str) -> str:
    """``https://host/a/b.onnx`` -> ``host/a/b.onnx`` (unquoted, query dropped).

    Raises ``FetchError`` for URLs that cannot be mapped safely (see :func:`check_url`).
    """
    try:
        check_url(url)
    except BadURL as e:
        raise FetchError(f"URL cannot be mapped into a mirror layout: {e}", hints=e.hints) from None
    parts = urlsplit(url)
    segments = [s for s in unquote(parts.path).split("/") if s]
    if not segments:
        raise FetchError(f"URL `{url}` names no file; cannot map it into a mirror layout")
    return posixpath.join(parts.netloc, *segments)


def _inside(root: str, path: str) -> bool:
    """Does ``path`` (symlinks resolved) stay inside the directory ``root``?"""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _url_http_location(base: str, url: str) -> str:
    parts = urlsplit(url)
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    return f"{base}/{parts.netloc}{path}"


def candidates(mirrors: Sequence[Mirror], url: str | None, sha256: str | None) -> list[Source]:
    """Where to look for ``url``'s bytes, in order: each mirror, then upstream.

    CAS mirrors are only asked when ``sha256`` is known.  A mirror that cannot map the URL
    (odd URL), or whose path for it resolves outside the mirror, is skipped.  The upstream URL
    is always remote (the fetcher refuses URLs that fail :func:`check_url`, ``file://`` ones
    included).  ``url`` may be None when only CAS mirrors can help.
    """
    digest = sha256.lower() if sha256 else None
    out: list[Source] = []
    for m in mirrors:
        if m.is_cas:
            if digest is None:
                continue
            if m.kind == "cas-dir":
                out.append(Source(str(Path(m.location, "sha256", digest)), True, m))
            else:
                out.append(Source(f"{m.location}/sha256/{digest}", False, m))
            continue
        if url is None:
            continue
        try:
            rel = url_relpath(url)
        except FetchError:
            continue
        if m.kind == "url-dir":
            path = str(Path(m.location, rel))
            if _inside(m.location, path):
                out.append(Source(path, True, m))
        else:
            out.append(Source(_url_http_location(m.location, url), False, m))
    if url is not None:
        out.append(Source(url, is_local=False))
    return out
