"""The one URL check for every URL mlbuild will fetch: manifests, the lock, redirects.

:func:`check_url` accepts ``http``/``https`` URLs with a real host (a DNS name by
hostname rules, after IDNA, or an IP literal), no ``user:pass@`` part, no control
characters or whitespace, and no ``.``/``..`` path segment, also after percent-decoding.
Anything else raises :class:`BadURL` (a ``ValueError`` the readers turn into their own
error, naming file and key).

:func:`hop_refusal` is the redirect policy: a redirect never leads to a link-local address
(169.254.0.0/16, fe80::/10: cloud metadata services live there), nor to a loopback one
unless the original URL was itself loopback.

Cheap to import (standard library only): the manifest and lock readers use it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from urllib.parse import SplitResult, unquote, urlsplit

__all__ = ["BadURL", "check_url", "hop_refusal", "host_addresses", "is_loopback_url", "origin", "redact"]

SCHEMES = ("http", "https")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
NETRC_HINT = "put credentials in ~/.netrc (or the proxy's environment variables), never in a URL"


class BadURL(ValueError):
    """A URL mlbuild refuses; ``reason`` says why, ``hints`` what to do."""

    def __init__(self, url: str, reason: str, hints: Sequence[str] = ()) -> None:
        super().__init__(f"{reason}: {redact(url)!r}")
        self.url = url
        self.reason = reason
        self.hints = tuple(hints)


def redact(url: str) -> str:
    """``url`` with any ``user:pass@`` part replaced by ``***@`` (safe to print)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for c in "/?#":
        i = rest.find(c)
        if i != -1:
            end = min(end, i)
    at = rest.rfind("@", 0, end)
    if at == -1:
        return url
    return f"{scheme}://***@{rest[at + 1:]}"


def _bad_char(text: str, *, space_ok: bool = False) -> str | None:
    for c in text:
        o = ord(c)
        if o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F:
            return f"U+{o:04X}"
        if c.isspace() and not space_ok:
            return f"whitespace U+{o:04X}"
    return None


def _check_host(url: str, parts: SplitResult) -> str:
    netloc = parts.netloc
    if not netloc:
        raise BadURL(url, "no host")
    if "@" in netloc:
        raise BadURL(url, "credentials (`user:pass@`) in a URL are not allowed", (NETRC_HINT,))
    try:
        parts.port  # noqa: B018  (validates the port)
    except ValueError:
        raise BadURL(url, "invalid port") from None
    if netloc.endswith(":"):
        raise BadURL(url, "empty port")
    host = parts.hostname or ""
    if not host:
        raise BadURL(url, "no host")
    if netloc.startswith("["):
        if "%" in host:
            raise BadURL(url, "IPv6 zone identifiers are not allowed in a URL")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadURL(url, f"`[{host}]` is not an IPv6 address") from None
        return host
    try:
        ipaddress.IPv4Address(host)
        return host
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise BadURL(url, f"host `{host}` is not a valid host name") from None
    name = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadURL(url, f"host `{host}` is not a valid host name")
    if _NUMERIC_LABEL.match(labels[-1]):
        # `127.1`, `2130706433`, `0x7f.1`: resolvers read these as IPv4 addresses
        raise BadURL(url, f"host `{host}` looks like an IP address but is not a dotted-quad IPv4 address")
    return host


def check_url(url: object) -> str:
    """Return ``url`` unchanged when mlbuild may fetch it, else raise :class:`BadURL`."""
    if not isinstance(url, str):
        raise BadURL(repr(url), "not a string")
    bad = _bad_char(url)
    if bad is not None:
        raise BadURL(url, f"control character or whitespace ({bad}) in URL")
    if "\\" in url:
        raise BadURL(url, "backslash in URL")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise BadURL(url, f"not a URL ({e})") from None
    if parts.scheme.lower() not in SCHEMES:
        raise BadURL(url, f"scheme `{parts.scheme or '(none)'}` is not allowed (only http and https)")
    if not url.lower().startswith(parts.scheme.lower() + "://"):
        raise BadURL(url, "expected `scheme://host/path`")
    _check_host(url, parts)
    decoded = unquote(parts.path)
    if _bad_char(decoded, space_ok=True) is not None:
        raise BadURL(url, "percent-encoded control character in the path")
    segments = decoded.replace("\\", "/").split("/")
    if any(s in (".", "..") for s in segments):
        raise BadURL(url, "`.` or `..` path segment (after percent-decoding)")
    return url


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (the unit a bad source is remembered by)."""
    p = urlsplit(url)
    return f"{p.scheme.lower()}://{p.netloc.rsplit('@', 1)[-1].lower()}"


Resolver = Callable[[str], Sequence[str]]


def host_addresses(host: str) -> list[str]:
    """The addresses ``host`` resolves to (an IP literal is its own address); [] when unknown."""
    try:
        return [str(ipaddress.ip_address(host.split("%", 1)[0]))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def _classify(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return "link-local"
    if ip.is_loopback or ip.is_unspecified:
        return "loopback"
    return None


def is_loopback_url(url: str, resolve: Resolver = host_addresses) -> bool:
    host = urlsplit(url).hostname or ""
    addresses = resolve(host)
    return bool(addresses) and all(_classify(a) == "loopback" for a in addresses)


def hop_refusal(original: str, target: str, resolve: Resolver = host_addresses) -> str | None:
    """Why a redirect from (a chain that started at) ``original`` to ``target`` is refused; None: allowed.

    ``target`` must already have passed :func:`check_url`.  Its host is resolved (``resolve``;
    tests inject one) and every address must be allowed: never link-local; loopback only when
    ``original`` was loopback too.
    """
    host = urlsplit(target).hostname or ""
    kinds = {_classify(a) for a in resolve(host)}
    if "link-local" in kinds:
        return f"redirect to a link-local address ({host}) refused"
    if "loopback" in kinds and not is_loopback_url(original, resolve):
        return f"redirect from a non-loopback URL to a loopback address ({host}) refused"
    return None
