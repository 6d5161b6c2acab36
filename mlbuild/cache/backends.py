"""Where a binary cache lives: a directory, an HTTP(S) base, or an S3 bucket and prefix.

Every backend answers the same few calls over keys relative to the cache root
(``entries/<entry>.json``, ``nar/<sha256>.nar.zst``, ``traces/<drv>.json``):
``get`` (small metadata; None when absent), ``size`` (None when absent), ``download`` and
``put_file``/``put_bytes``.  A directory writes through a temporary file and a rename
(atomic); HTTP writes with PUT (where the server takes it); S3 through boto3
(multipart for large payloads).  A cache that does not answer within ``timeout``
seconds or refuses the connection raises :class:`CacheUnreachableError`.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import CacheError, CacheUnreachableError

OnBytes = Callable[[int], None]
DEFAULT_TIMEOUT = 5.0


class Backend(Protocol):
    url: str

    def get(self, key: str) -> bytes | None: ...
    def size(self, key: str) -> int | None: ...
    def download(self, key: str, dest: Path, on_bytes: OnBytes | None = None) -> bool: ...
    def put_file(self, key: str, src: Path, on_bytes: OnBytes | None = None) -> None: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
        raise CacheError(f"`{key}` is not a key of a binary cache")


def timeout_from_env(environ: Any = None) -> float:
    """``$MLBUILD_SUBSTITUTER_TIMEOUT`` (seconds), else 5."""
    env = os.environ if environ is None else environ
    text = env.get("MLBUILD_SUBSTITUTER_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 600:
        raise CacheError(f"MLBUILD_SUBSTITUTER_TIMEOUT must be seconds between 0 and 600, got `{text}`",
                         hints=["e.g. MLBUILD_SUBSTITUTER_TIMEOUT=2"])
    return value


# --------------------------------------------------------------------------- directory


class DirBackend:
    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CacheError(f"cannot read `{key}` from the cache `{self.url}`: {e.strerror or e}", url=self.url) from e

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CacheError(f"cannot stat `{key}` in the cache `{self.url}`: {e.strerror or e}", url=self.url) from e

    def download(self, key: str, dest: Path, on_bytes: OnBytes | None = None) -> bool:
        try:
            with open(self._path(key), "rb") as fi, open(dest, "wb") as fo:
                while chunk := fi.read(1 << 20):
                    fo.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except FileNotFoundError:
            return False
        except OSError as e:
            raise CacheError(f"cannot read `{key}` from the cache `{self.url}`: {e.strerror or e}", url=self.url) from e
        return True

    def _write(self, key: str, write: Callable[[Any], None]) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise CacheError(f"cannot write `{key}` into the cache `{self.url}`: {e.strerror or e}", url=self.url,
                             hints=["check that the directory is writable and has free space"]) from e

    def scratch(self) -> Path:
        """Where a payload can be written so that :meth:`move_in` renames it into place (no second copy)."""
        d = self.root / ".tmp"
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cannot write into the cache `{self.url}`: {e.strerror or e}", url=self.url) from e
        return d

    def move_in(self, key: str, src: Path) -> None:
        """Put ``src`` (a file in :meth:`scratch`) at ``key``: fsync, then an atomic rename."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(src, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(src, path)
        except OSError as e:
            raise CacheError(f"cannot write `{key}` into the cache `{self.url}`: {e.strerror or e}", url=self.url,
                             hints=["check that the directory is writable and has free space"]) from e

    def put_file(self, key: str, src: Path, on_bytes: OnBytes | None = None) -> None:
        def write(f: Any) -> None:
            with open(src, "rb") as fi:
                while chunk := fi.read(1 << 20):
                    f.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))

        self._write(key, write)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda f: f.write(data))


# --------------------------------------------------------------------------- HTTP


class HttpBackend:
    def __init__(self, base: str, timeout: float) -> None:
        import httpx

        self.url = base
        self.base = base.rstrip("/") + "/"
        self._httpx = httpx
        self.client = httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False)

    def _u(self, key: str) -> str:
        _check_key(key)
        return self.base + urllib.parse.quote(key)

    def _call(self, method: str, key: str, **kw: Any) -> Any:
        httpx = self._httpx
        try:
            return self.client.request(method, self._u(key), **kw)
        except httpx.TimeoutException as e:
            raise CacheUnreachableError(f"the cache `{self.url}` did not answer {method} `{key}` in time "
                                        f"({type(e).__name__})", url=self.url) from e
        except httpx.TransportError as e:
            raise CacheUnreachableError(f"cannot reach the cache `{self.url}`: {e}", url=self.url) from e

    def _status(self, r: Any, method: str, key: str) -> None:
        if r.status_code >= 400:
            hints = ["the server must accept PUT to be written to (a directory or S3 cache always can)"] \
                if method == "PUT" and r.status_code in (403, 405, 501) else []
            raise CacheError(f"the cache `{self.url}` answered {method} `{key}` with HTTP {r.status_code}",
                             url=self.url, hints=hints)

    def get(self, key: str) -> bytes | None:
        r = self._call("GET", key)
        if r.status_code in (404, 410):
            return None
        self._status(r, "GET", key)
        return bytes(r.content)

    def size(self, key: str) -> int | None:
        r = self._call("HEAD", key)
        if r.status_code in (404, 410):
            return None
        self._status(r, "HEAD", key)
        try:
            return int(r.headers.get("content-length", "-1"))
        except ValueError:
            return -1

    def download(self, key: str, dest: Path, on_bytes: OnBytes | None = None) -> bool:
        httpx = self._httpx
        try:
            with self.client.stream("GET", self._u(key)) as r:
                if r.status_code in (404, 410):
                    return False
                self._status(r, "GET", key)
                with open(dest, "wb") as fo:
                    for chunk in r.iter_bytes(1 << 20):
                        fo.write(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
        except httpx.TimeoutException as e:
            raise CacheUnreachableError(f"the cache `{self.url}` stopped sending `{key}` ({type(e).__name__})",
                                        url=self.url) from e
        except httpx.TransportError as e:
            raise CacheUnreachableError(f"reading `{key}` from the cache `{self.url}` failed: {e}", url=self.url) from e
        return True

    def put_file(self, key: str, src: Path, on_bytes: OnBytes | None = None) -> None:
        def body() -> Any:
            with open(src, "rb") as fi:
                while chunk := fi.read(1 << 20):
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    yield chunk

        size = src.stat().st_size
        r = self._call("PUT", key, content=body(), headers={"Content-Length": str(size)})
        self._status(r, "PUT", key)

    def put_bytes(self, key: str, data: bytes) -> None:
        r = self._call("PUT", key, content=data)
        self._status(r, "PUT", key)


# --------------------------------------------------------------------------- S3


class S3Backend:
    """``s3://bucket/prefix`` through boto3: any S3-compatible endpoint (``AWS_ENDPOINT_URL``),
    credentials and region from the usual environment and files."""

    def __init__(self, bucket: str, prefix: str, url: str, timeout: float) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as e:
            raise CacheError(f"`{url}` is an S3 cache, and S3 needs boto3, which is not installed",
                             url=url, hints=["install the `s3` extra: pip install 'mlbuild[s3]'"]) from e
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._exc = botocore.exceptions
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        cfg = botocore.config.Config(connect_timeout=timeout, read_timeout=timeout,
                                     retries={"max_attempts": 1, "mode": "standard"},
                                     s3={"addressing_style": "path" if endpoint else "auto"})
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=cfg)

    def _k(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, e: Exception, what: str, key: str) -> CacheError:
        exc = self._exc
        if isinstance(e, exc.NoCredentialsError):
            return CacheError(f"no S3 credentials to {what} `{key}` in `{self.url}`", url=self.url,
                              hints=["set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"])
        if isinstance(e, exc.EndpointConnectionError | exc.ConnectTimeoutError | exc.ReadTimeoutError
                      | exc.ConnectionClosedError):
            return CacheUnreachableError(f"cannot reach the S3 cache `{self.url}` to {what} `{key}`: {e}",
                                         url=self.url, hints=["check AWS_ENDPOINT_URL and that the server is up"])
        if isinstance(e, exc.ClientError):
            code = e.response.get("Error", {}).get("Code", "?")
            return CacheError(f"the S3 cache `{self.url}` refused to {what} `{key}`: {code}", url=self.url,
                              hints=["check the bucket exists and the credentials may use it"])
        return CacheError(f"the S3 cache `{self.url}` failed to {what} `{key}`: {e}", url=self.url)

    @staticmethod
    def _missing(e: Exception) -> bool:
        resp = getattr(e, "response", None)
        code = str(resp.get("Error", {}).get("Code", "")) if isinstance(resp, dict) else ""
        return code in ("404", "NoSuchKey", "NotFound")

    def get(self, key: str) -> bytes | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            return bytes(obj["Body"].read())
        except self._exc.BotoCoreError as e:
            raise self._fail(e, "read", key) from e
        except self._exc.ClientError as e:
            if self._missing(e):
                return None
            raise self._fail(e, "read", key) from e

    def size(self, key: str) -> int | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return int(head["ContentLength"])
        except self._exc.BotoCoreError as e:
            raise self._fail(e, "look up", key) from e
        except self._exc.ClientError as e:
            if self._missing(e):
                return None
            raise self._fail(e, "look up", key) from e

    def download(self, key: str, dest: Path, on_bytes: OnBytes | None = None) -> bool:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
            with open(dest, "wb") as fo:
                for chunk in obj["Body"].iter_chunks(1 << 20):
                    fo.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except self._exc.BotoCoreError as e:
            raise self._fail(e, "read", key) from e
        except self._exc.ClientError as e:
            if self._missing(e):
                return False
            raise self._fail(e, "read", key) from e
        return True

    def put_file(self, key: str, src: Path, on_bytes: OnBytes | None = None) -> None:
        try:
            self.client.upload_file(str(src), self.bucket, self._k(key), Callback=on_bytes)
        except (self._exc.BotoCoreError, self._exc.ClientError) as e:
            raise self._fail(e, "write", key) from e
        except Exception as e:  # boto3's transfer manager wraps failures in S3UploadFailedError
            raise self._fail(e, "write", key) from e

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data)
        except (self._exc.BotoCoreError, self._exc.ClientError) as e:
            raise self._fail(e, "write", key) from e


# --------------------------------------------------------------------------- URLs


def open_cache(text: str, *, timeout: float | None = None) -> Backend:
    """The backend of a cache URL: a path or ``file://``, ``http(s)://``, ``s3://bucket/prefix``."""
    t = timeout_from_env() if timeout is None else timeout
    if text.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(text)
        if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
            raise CacheError(f"`{text}` is not a cache URL mlbuild takes (expected http(s)://host[:port]/path, "
                             f"no credentials, query or fragment)", url=text)
        return HttpBackend(text, t)
    if text.startswith("s3://"):
        parts = urllib.parse.urlsplit(text)
        if not parts.netloc or parts.query or parts.fragment:
            raise CacheError(f"`{text}` is not an S3 cache URL (expected s3://bucket[/prefix])", url=text)
        return S3Backend(parts.netloc, urllib.parse.unquote(parts.path), text, t)
    if text.startswith("file://"):
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise CacheError(f"`{text}` names a file on another host; give a local path", url=text)
        return DirBackend(Path(urllib.parse.unquote(parts.path)), text)
    if "://" in text:
        raise CacheError(f"`{text}`: unknown cache URL scheme", url=text,
                         hints=["use a directory (path or file://), http(s)://..., or s3://bucket/prefix"])
    if not text:
        raise CacheError("an empty cache URL", hints=["give a directory, http(s)://... or s3://bucket/prefix"])
    return DirBackend(Path(text).absolute(), text)
