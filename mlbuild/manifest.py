"""Manifests: TOML declarations of artifacts, validated into typed values.

A manifest directory holds ``*.toml`` files; each top-level table is a kind and
each sub-table one declaration, e.g. ``[fetch.yolox-nano]``.  Kinds:

- ``fetch``: one file (``url`` / ``urls``) or a named file set (``base_url`` +
  ``files``, or ``templates`` x ``ids``) from upstream URLs, with optional
  upstream ``md5``/``sha256``, optional ``unpack`` (tar/zip) and a ``method``
  (``flat``: the file's bytes; ``tree``: the canonical directory stream).
- ``pypi``: Python requirements with ranges, locked to exact wheels.
- ``sdist``: a Python source distribution (``package`` + ``version``), unpacked.
- ``build``: a builder from mlbuild's registry with typed ``params`` and ``inputs``.
- ``run``: a benchmark run (builder ``mlperf-run``) whose ``env`` input is
  chosen by its ``loadgen`` parameter from ``envs``.
- ``path``: a local file or directory (``path``, relative to the manifest file),
  hashed at lock time (``flat`` for a file, ``tree`` for a directory).

Every error names the file, the line and the key.  Nothing here touches the
network or the store.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._+-]*")  # matched whole (fullmatch): no trailing newline
# A declaration's store entry is `<32 hex digest>-<name>` and must fit a file name (255 bytes) with room
# for the longest name derived from it (a `--check` staging directory `<entry>.check.<pid>.<8 hex>`, 23
# bytes) and for a `pypi` set's platform variant (`<name>@aarch64-linux`); names are ASCII, so
# characters are bytes.  255 - 33 - 23 - 14 = 185, rounded down.
MAX_NAME_LEN = 180
# `strip_components` removes leading path components of archive members; deeper is never meaningful.
MAX_STRIP_COMPONENTS = 64
# Parameter values without a range of their own: finite floats within +-MAX_FLOAT_PARAM, and ints that
# fit a signed 32-bit integer (thread counts, sizes and counts end up in C ints in the runtimes).
MAX_FLOAT_PARAM = 1e9
INT_PARAM_RANGE = (-(2**31), 2**31 - 1)
KINDS = ("fetch", "pypi", "sdist", "build", "run", "path", "sweep")
UNPACK_FORMATS = ("tar", "tar.gz", "tgz", "tar.xz", "tar.bz2", "zip")


@dataclass(frozen=True)
class Where:
    file: str
    line: int | None


@dataclass(frozen=True)
class FileDecl:
    path: str  # relative path inside the artifact ("" for a single flat file)
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class FetchDecl:
    name: str
    where: Where
    files: tuple[FileDecl, ...]
    method: str  # "flat" | "tree"
    unpack: str | None = None
    strip_components: int = 0
    description: str = ""
    kind: str = "fetch"
    # A file list read, at lock time, from a JSON file of another pinned artifact:
    # {artifact, json, key, field, limit, dest}; see `_parse_files_from`.
    files_from: Mapping[str, Any] | None = None
    base_url: str | None = None

    @property
    def single(self) -> bool:
        return len(self.files) == 1 and self.files[0].path == ""


@dataclass(frozen=True)
class PypiDecl:
    name: str
    where: Where
    requirements: tuple[str, ...]
    description: str = ""
    kind: str = "pypi"
    # Platforms locked besides the one `mlbuild lock` runs on (keys of pypi.PLATFORM_TAGS).
    platforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class SdistDecl:
    name: str
    where: Where
    package: str
    version: str  # a specifier, e.g. "==6.0.17" or ">=6"
    description: str = ""
    kind: str = "sdist"


@dataclass(frozen=True)
class BuildDecl:
    name: str
    where: Where
    builder: str
    inputs: Mapping[str, str]
    params: Mapping[str, Any]
    envs: Mapping[str, str] = field(default_factory=dict)  # run only: loadgen -> env target
    description: str = ""
    kind: str = "build"


@dataclass(frozen=True)
class PathDecl:
    """A local file or directory, relative to the manifest file that declares it (as Nix's `path`)."""

    name: str
    where: Where
    path: str  # as written: relative to the manifest's directory, `/`-separated
    base: str = field(default="", compare=False)  # the manifest's directory (absolute; never hashed)
    sha256: str | None = None  # optional: a file's expected bytes (then the store can supply them)
    description: str = ""
    kind: str = "path"

    @property
    def source(self) -> Path:
        """Where the file or directory is on this machine."""
        return Path(self.base) / self.path


Decl = FetchDecl | PypiDecl | SdistDecl | BuildDecl | PathDecl


@dataclass(frozen=True)
class SweepDecl:
    """``[sweep.NAME]``: axes over a run target's parameters (``mlbuild sweep NAME``); not a
    buildable declaration (kept in ``Manifest.sweeps``, outside ``decls``)."""

    name: str
    where: Where
    target: str
    axes: Mapping[str, tuple[Any, ...]]  # param -> values, in the order written
    base: Mapping[str, Any] = field(default_factory=dict)  # `params`: fixed for every point
    objective: str = "samples_per_second"
    constraints: tuple[str, ...] = ()
    description: str = ""
    kind: str = "sweep"


@dataclass(frozen=True)
class Manifest:
    decls: Mapping[str, Decl]
    sources: Mapping[str, bytes]  # file name -> bytes, for the lock's manifest digest
    sweeps: Mapping[str, SweepDecl] = field(default_factory=dict)  # `[sweep.NAME]` (mlbuild.sweep)

    def get(self, name: str) -> Decl:
        from .errors import UsageError

        try:
            return self.decls[name]
        except KeyError:
            close = [n for n in sorted(self.decls) if name in n or n in name][:5]
            hints = [f"did you mean: {', '.join(close)}"] if close else []
            hints.append("`mlbuild show --list` lists every target")
            raise UsageError(f"unknown target `{name}`", hints=hints) from None

    def digest(self) -> str:
        from .hashing import canonical_json, sha256_hex

        return sha256_hex(
            canonical_json({k: sha256_hex(v) for k, v in sorted(self.sources.items())})
        )


# --------------------------------------------------------------------------- parsing


def _line_of(text: str, kind: str, name: str, key: str | None = None) -> int | None:
    """Best-effort line number of ``[kind.name]`` (and ``key`` inside it)."""
    lines = text.splitlines()
    header = re.compile(
        r"^\s*\[\s*" + re.escape(kind) + r"\s*\.\s*\"?" + re.escape(name) + r"\"?\s*\]"
    )
    start = None
    for i, line in enumerate(lines):
        if header.match(line):
            start = i
            break
    if start is None:
        # inline form: kind.name = {...} or name = {...} under [kind]
        for i, line in enumerate(lines):
            if re.match(r"^\s*\"?" + re.escape(name) + r"\"?\s*=", line):
                return i + 1
        return None
    if key is None:
        return start + 1
    top = key.split(".")[0]
    for j in range(start + 1, len(lines)):
        if lines[j].lstrip().startswith("["):
            break
        if re.match(r"^\s*\"?" + re.escape(top) + r"\"?\s*[=.]", lines[j]):
            return j + 1
    return start + 1


class _Ctx:
    def __init__(self, file: str, text: str, kind: str, name: str) -> None:
        self.file, self.text, self.kind, self.name = file, text, kind, name

    def err(self, message: str, key: str | None = None, hints: tuple[str, ...] = ()) -> ManifestError:
        return ManifestError(
            message,
            file=self.file,
            line=_line_of(self.text, self.kind, self.name, key),
            key=f"{self.kind}.{self.name}" + (f".{key}" if key else ""),
            hints=hints,
        )

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                raise self.err(
                    f"unknown field `{key}` in a `{self.kind}` declaration",
                    key,
                    (f"allowed fields: {', '.join(allowed)}",),
                )

    def string(
        self, table: Mapping[str, Any], key: str, *, required: bool = False, default: str | None = None
    ) -> str | None:
        value = table.get(key, default)
        if value is None:
            if required:
                raise self.err(f"missing required field `{key}`", None)
            return None
        if not isinstance(value, str):
            raise self.err(f"expected a string, found {type(value).__name__} {value!r}", key)
        return value

    def strings(self, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.err(f"expected a list of strings, found {value!r}", key)
        return tuple(value)


def _check_hex(ctx: _Ctx, value: str | None, length: int, key: str) -> str | None:
    if value is None:
        return None
    v = value.lower()
    if len(v) != length or any(c not in "0123456789abcdef" for c in v):
        raise ctx.err(f"expected {length} hex digits, found {value!r}", key)
    return v


def _check_url(ctx: _Ctx, url: str, key: str) -> str:
    """One URL check for manifests and the lock (mlbuild.urls.check_url), plus a path here."""
    from .urls import BadURL, check_url, redact

    try:
        check_url(url)
    except BadURL as e:
        raise ctx.err(f"expected an http(s) URL with a real host, found {redact(url)!r}: {e.reason}", key,
                      e.hints) from None
    if not url.split("://", 1)[1].partition("/")[1]:
        raise ctx.err(f"expected an http(s) URL with a path, found {url!r}", key)
    return url


def _parse_fetch(ctx: _Ctx, t: Mapping[str, Any]) -> FetchDecl:
    ctx.check_keys(
        t,
        ("description", "url", "urls", "md5", "sha256", "base_url", "files", "templates", "ids",
         "files_from", "method", "unpack", "strip_components"),
    )
    urls = ctx.strings(t, "urls") + ctx.strings(t, "url")
    md5 = _check_hex(ctx, ctx.string(t, "md5"), 32, "md5")
    sha = _check_hex(ctx, ctx.string(t, "sha256"), 64, "sha256")
    unpack = ctx.string(t, "unpack")
    if unpack is not None and unpack not in UNPACK_FORMATS:
        raise ctx.err(f"expected one of {', '.join(UNPACK_FORMATS)}, found {unpack!r}", "unpack")
    strip = t.get("strip_components", 0)
    if isinstance(strip, bool) or not isinstance(strip, int) or not 0 <= strip <= MAX_STRIP_COMPONENTS:
        raise ctx.err(f"expected an integer in 0..{MAX_STRIP_COMPONENTS}, found {_show(strip)}", "strip_components",
                      ("the number of leading path components removed from every archive member",))
    files: list[FileDecl] = []
    if urls:
        if "base_url" in t or "files" in t or "templates" in t:
            raise ctx.err("give either `url`/`urls` (one file) or `base_url` + `files` (a file set), not both", "url")
        for u in urls:
            _check_url(ctx, u, "urls" if "urls" in t else "url")
        files.append(FileDecl("", urls, md5, sha))
        default_method = "tree" if unpack else "flat"
    else:
        base = ctx.string(t, "base_url")
        if base is None:
            raise ctx.err("a `fetch` needs `url`, `urls`, or `base_url` with `files`", None)
        if not base.endswith("/"):
            base += "/"
        _check_url(ctx, base, "base_url")
        rels = list(ctx.strings(t, "files"))
        templates = ctx.strings(t, "templates")
        ids = ctx.strings(t, "ids")
        if templates and not ids:
            raise ctx.err("`templates` needs `ids` to expand `{id}`", "templates")
        for tpl in templates:
            if "{id}" not in tpl:
                raise ctx.err(f"template {tpl!r} does not contain `{{id}}`", "templates")
            rels.extend(tpl.replace("{id}", i) for i in ids)
        files_from = _parse_files_from(ctx, t.get("files_from"))
        if not rels and files_from is None:
            raise ctx.err("a file set needs at least one entry in `files`, `templates` or `files_from`", "files")
        if md5 or sha:
            raise ctx.err(
                "`md5`/`sha256` apply to a single file; a file set is pinned by the lock", "md5" if md5 else "sha256"
            )
        seen: set[str] = set()
        for rel in rels:
            parts = rel.split("/")
            if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ctx.err(f"file path {rel!r} must be relative, without `.`/`..` or empty parts", "files")
            if rel in seen:
                raise ctx.err(f"file {rel!r} is listed twice", "files")
            seen.add(rel)
            files.append(FileDecl(rel, (_check_url(ctx, base + rel, "files"),)))
        files.sort(key=lambda f: f.path)
        default_method = "tree"
    method = ctx.string(t, "method", default=default_method)
    if method not in ("flat", "tree"):
        raise ctx.err(f"expected `flat` or `tree`, found {method!r}", "method")
    if method == "flat" and (unpack or len(files) != 1 or files[0].path):
        raise ctx.err("`method = \"flat\"` hashes one file; a file set or an unpacked archive is a `tree`", "method")
    return FetchDecl(
        ctx.name, Where(ctx.file, _line_of(ctx.text, "fetch", ctx.name)), tuple(files), method, unpack,
        strip, ctx.string(t, "description", default="") or "",
        files_from=None if urls else files_from, base_url=None if urls else base,
    )


def _parse_files_from(ctx: _Ctx, value: Any) -> dict[str, Any] | None:
    """``files_from = {artifact, json, key, field, limit, dest}``: fetch ``base_url + name`` for
    each ``name = entry[field]`` of the list ``key`` in the JSON file ``json`` of the pinned
    artifact ``artifact`` (first ``limit`` entries, 0 = all), stored under ``dest``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ctx.err("expected a table {artifact, json, key, field, limit, dest}", "files_from")
    allowed = ("artifact", "json", "key", "field", "limit", "dest")
    for k in value:
        if k not in allowed:
            raise ctx.err(f"unknown field `{k}` in `files_from`", "files_from", (f"allowed: {', '.join(allowed)}",))
    for k in ("artifact", "json", "key", "field"):
        if not isinstance(value.get(k), str) or not value[k]:
            raise ctx.err(f"`files_from.{k}` must be a non-empty string", "files_from")
    limit = value.get("limit", 0)
    if not isinstance(limit, int) or limit < 0:
        raise ctx.err(f"`files_from.limit` must be a non-negative integer, found {limit!r}", "files_from")
    dest = value.get("dest", "")
    if not isinstance(dest, str) or dest.startswith("/") or ".." in dest.split("/"):
        raise ctx.err(f"`files_from.dest` must be a relative directory, found {dest!r}", "files_from")
    if dest and not dest.endswith("/"):
        dest += "/"
    return {"artifact": value["artifact"], "json": value["json"], "key": value["key"], "field": value["field"],
            "limit": limit, "dest": dest}


def _parse_pypi(ctx: _Ctx, t: Mapping[str, Any]) -> PypiDecl:
    from packaging.requirements import InvalidRequirement, Requirement

    from .pypi import PLATFORM_TAGS

    ctx.check_keys(t, ("description", "requirements", "platforms"))
    platforms = ctx.strings(t, "platforms")
    for plat in platforms:
        if plat not in PLATFORM_TAGS:
            raise ctx.err(f"unknown platform {plat!r}", "platforms",
                          (f"known platforms: {', '.join(sorted(PLATFORM_TAGS))}",))
    reqs = ctx.strings(t, "requirements")
    if not reqs:
        raise ctx.err("a `pypi` declaration needs at least one requirement", "requirements")
    for r in reqs:
        try:
            Requirement(r)
        except InvalidRequirement as e:
            raise ctx.err(f"invalid requirement {r!r}: {e}", "requirements") from None
    return PypiDecl(ctx.name, Where(ctx.file, _line_of(ctx.text, "pypi", ctx.name)), tuple(sorted(reqs)),
                    ctx.string(t, "description", default="") or "", platforms=tuple(sorted(set(platforms))))


def _parse_sdist(ctx: _Ctx, t: Mapping[str, Any]) -> SdistDecl:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    ctx.check_keys(t, ("description", "package", "version"))
    package = ctx.string(t, "package", required=True)
    version = ctx.string(t, "version", default="") or ""
    try:
        SpecifierSet(version)
    except InvalidSpecifier:
        raise ctx.err(f"invalid version specifier {version!r} (e.g. \"==6.0.17\")", "version") from None
    assert package is not None
    return SdistDecl(ctx.name, Where(ctx.file, _line_of(ctx.text, "sdist", ctx.name)), package, version,
                     ctx.string(t, "description", default="") or "")


def _parse_path(ctx: _Ctx, t: Mapping[str, Any], base: Path) -> PathDecl:
    ctx.check_keys(t, ("description", "path", "sha256"))
    rel = ctx.string(t, "path", required=True)
    assert rel is not None
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("/") or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise ctx.err(f"expected a path relative to the manifest's directory, found {rel!r}", "path",
                      ("e.g. `path = \"../data/annotations.json\"` for a file beside `manifests/`",))
    if any(p == "" for p in parts[:-1]) or not rel.isprintable():
        raise ctx.err(f"expected a relative path without empty parts, found {rel!r}", "path")
    sha = _check_hex(ctx, ctx.string(t, "sha256"), 64, "sha256")
    return PathDecl(ctx.name, Where(ctx.file, _line_of(ctx.text, "path", ctx.name)), rel.rstrip("/") or rel,
                    str(base), sha, ctx.string(t, "description", default="") or "")


def _parse_build(ctx: _Ctx, t: Mapping[str, Any], kind: str) -> BuildDecl:
    from . import builders

    allowed = ("description", "builder", "inputs", "params")
    if kind == "run":
        allowed = ("description", "inputs", "params", "envs")
    ctx.check_keys(t, allowed)
    builder = "mlperf-run" if kind == "run" else ctx.string(t, "builder", required=True)
    assert builder is not None
    if builder not in builders.names():
        raise ctx.err(f"unknown builder `{builder}`", "builder",
                      (f"known builders: {', '.join(builders.names())}",))
    inputs = t.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(v, str) for v in inputs.values()):
        raise ctx.err("expected a table of input name -> target name", "inputs")
    params = t.get("params", {})
    if not isinstance(params, dict):
        raise ctx.err("expected a table of parameters", "params")
    envs = t.get("envs", {})
    if not isinstance(envs, dict) or not all(isinstance(v, str) for v in envs.values()):
        raise ctx.err("expected a table of loadgen backend -> env target", "envs")
    return BuildDecl(ctx.name, Where(ctx.file, _line_of(ctx.text, kind, ctx.name)), builder,
                     dict(sorted(inputs.items())), dict(sorted(params.items())), dict(sorted(envs.items())),
                     ctx.string(t, "description", default="") or "", kind)


def _parse_sweep(ctx: _Ctx, t: Mapping[str, Any]) -> SweepDecl:
    ctx.check_keys(t, ("description", "target", "axes", "params", "objective", "constraints"))
    target = ctx.string(t, "target", required=True)
    assert target is not None
    axes = t.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise ctx.err("expected a non-empty table of parameter -> list of values", "axes")
    for key, values in axes.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (list, dict)) for v in values):
            raise ctx.err(f"axis `{key}`: expected a non-empty list of values", f"axes.{key}")
    params = t.get("params", {})
    if not isinstance(params, dict):
        raise ctx.err("expected a table of parameters fixed for every point", "params")
    objective = ctx.string(t, "objective", default="samples_per_second") or "samples_per_second"
    return SweepDecl(ctx.name, Where(ctx.file, _line_of(ctx.text, "sweep", ctx.name)), target,
                     {k: tuple(v) for k, v in axes.items()}, dict(sorted(params.items())), objective,
                     ctx.strings(t, "constraints"), ctx.string(t, "description", default="") or "")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a declaration name, or None when it can."""
    if len(name) > MAX_NAME_LEN:
        return (f"name `{name[:40]}...` is {len(name.encode())} bytes long; a declaration name is at most "
                f"{MAX_NAME_LEN} bytes (its store entry `<32-hex digest>-<name>` must fit a 255-byte file name)")
    if not NAME_RE.fullmatch(name):
        return (f"invalid name {name!r}: expected lowercase ASCII letters, digits and `.-_+`, "
                "starting with a letter or digit")
    return None


def _show(value: Any) -> str:
    """A value for an error message: its type and a bounded repr."""
    big = isinstance(value, int) and value.bit_length() > 100
    text = f"of {value.bit_length()} bits" if big else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def load_file(path: Path, display: str) -> tuple[list[Decl | SweepDecl], bytes]:
    raw = path.read_bytes()
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise ManifestError(f"not UTF-8 text: {e}", file=display) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise ManifestError(
            f"malformed TOML: {e}", file=display, line=int(m.group(1)) if m else None,
            hints=["fix the syntax; nothing was written"],
        ) from None
    except ValueError as e:  # tomllib's int() of a literal with thousands of digits
        raise ManifestError(f"malformed TOML: a value cannot be read: {str(e)[:120]}", file=display,
                            hints=["integers in a manifest are small (see the field's documented range)"]) from None
    decls: list[Decl | SweepDecl] = []
    for kind, table in data.items():
        if kind not in KINDS:
            raise ManifestError(
                f"unknown kind `{kind}`", file=display,
                line=_table_line(text, kind),
                key=kind, hints=[f"known kinds: {', '.join(KINDS)}"],
            )
        if not isinstance(table, dict):
            raise ManifestError(f"`{kind}` must be a table of declarations", file=display, key=kind)
        for name, body in table.items():
            ctx = _Ctx(display, text, kind, name)
            problem = name_problem(name)
            if problem is not None:  # the key is the kind: the name itself may be huge or hold a newline
                raise ManifestError(problem, file=display, line=_line_of(text, kind, name), key=kind,
                                    hints=["a name is a store entry's suffix; the `description` field can say more"])
            if not isinstance(body, dict):
                raise ctx.err("a declaration must be a table")
            if kind == "fetch":
                decls.append(_parse_fetch(ctx, body))
            elif kind == "pypi":
                decls.append(_parse_pypi(ctx, body))
            elif kind == "sdist":
                decls.append(_parse_sdist(ctx, body))
            elif kind == "path":
                decls.append(_parse_path(ctx, body, path.resolve().parent))
            elif kind == "sweep":
                decls.append(_parse_sweep(ctx, body))
            else:
                decls.append(_parse_build(ctx, body, kind))
    return decls, raw


def load(directory: Path) -> Manifest:
    """Read and validate every ``*.toml`` in ``directory``."""
    decls, sources, sweeps = load_decls(directory)
    manifest = Manifest(dict(sorted(decls.items())), sources, dict(sorted(sweeps.items())))
    validate(manifest)
    return manifest


def load_decls(directory: Path, *, display_prefix: str = "", source_prefix: str = ""
               ) -> tuple[dict[str, Decl], dict[str, bytes], dict[str, SweepDecl]]:
    """Every declaration of ``directory/*.toml`` and its sweeps, not yet cross-checked (see :func:`load`)."""
    if not directory.is_dir():
        raise ManifestError(
            f"manifest directory `{directory}` does not exist",
            hints=["run inside a project (a directory holding `manifests/`), pass `-C DIR`, "
                   "or create one with `mlbuild init`"],
        )
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise ManifestError(f"no `*.toml` manifests in `{directory}`",
                            hints=["`mlbuild init` writes an example manifest"])
    decls: dict[str, Decl] = {}
    sweeps: dict[str, SweepDecl] = {}
    sources: dict[str, bytes] = {}
    for path in files:
        display = f"{display_prefix}{directory.name}/{path.name}"
        found, raw = load_file(path, display)
        sources[source_prefix + path.name] = raw
        for d in found:
            if isinstance(d, SweepDecl):
                if d.name in sweeps:
                    raise ManifestError(f"sweep `{d.name}` is declared twice (also at {sweeps[d.name].where.file})",
                                        file=d.where.file, line=d.where.line, key=f"sweep.{d.name}")
                sweeps[d.name] = d
                continue
            if d.name in decls:
                other = decls[d.name].where
                raise ManifestError(
                    f"`{d.name}` is declared twice (also at {other.file}:{other.line})",
                    file=d.where.file, line=d.where.line, key=d.name,
                )
            decls[d.name] = d
    return decls, sources, sweeps


def _table_line(text: str, kind: str) -> int | None:
    """The 1-based line of the first ``[kind`` table header in ``text``, or None."""
    header = re.compile(r"^\s*\[\s*" + re.escape(kind) + r"\b")
    return next((i + 1 for i, line in enumerate(text.splitlines()) if header.match(line)), None)


def _decl_error(d: BuildDecl, message: str, key: str, hints: Sequence[str] = ()) -> ManifestError:
    """A ManifestError at ``key`` (relative to the declaration) of build declaration ``d``."""
    return ManifestError(message, file=d.where.file, line=d.where.line, key=f"{d.kind}.{d.name}.{key}", hints=hints)


def _param_error(d: BuildDecl, message: str, key: str) -> ManifestError:
    """``check_params``'s error factory for the parameters of build declaration ``d``."""
    return _decl_error(d, message, f"params.{key}")


def validate(manifest: Manifest) -> None:
    """Cross-declaration checks: inputs exist, builder params typed, no cycles, sweeps over runs."""
    from . import builders

    for sw in manifest.sweeps.values():
        swept = manifest.decls.get(sw.target)
        if not isinstance(swept, BuildDecl) or swept.kind != "run":
            raise ManifestError(f"sweep `{sw.name}`: `target` names `{sw.target}`, which is not a run declaration",
                                file=sw.where.file, line=sw.where.line, key=f"sweep.{sw.name}.target")

    for d in manifest.decls.values():
        if not isinstance(d, BuildDecl):
            continue
        mod = builders.load(d.builder)
        declared = dict(getattr(mod, "INPUTS", {}))
        if getattr(mod, "NEEDS_ENV", False):
            declared.setdefault("env", "the locked Python environment it runs in (a `python-env` build)")
        optional = dict(getattr(mod, "OPTIONAL_INPUTS", {}))
        names = set(d.inputs) | ({"env"} if d.envs else set())
        for key in d.inputs:
            if key not in declared and key not in optional:
                raise _decl_error(d, f"builder `{d.builder}` has no input `{key}`", f"inputs.{key}",
                                  hints=[f"its inputs: {', '.join(sorted(declared | optional))}"])
        for key in declared:
            if key not in names:
                raise _decl_error(d, f"missing input `{key}` ({declared[key]}) for builder `{d.builder}`", "inputs")
        for key, target in [*d.inputs.items(), *((f"envs.{k}", v) for k, v in d.envs.items())]:
            if target not in manifest.decls:
                raise _decl_error(d, f"input `{key}` names `{target}`, which no manifest declares",
                                  f"inputs.{key}" if not key.startswith("envs.") else key)
        check_params(d.builder, mod.PARAMS, d.params, functools.partial(_param_error, d))
    for d in manifest.decls.values():
        if isinstance(d, FetchDecl) and d.files_from is not None:
            dep = manifest.decls.get(d.files_from["artifact"])
            if not isinstance(dep, FetchDecl) or dep.files_from is not None:
                raise ManifestError(
                    f"`files_from.artifact` names `{d.files_from['artifact']}`, "
                    "which is not a plain `fetch` declaration",
                    file=d.where.file, line=d.where.line, key=f"fetch.{d.name}.files_from")
    # cycles
    state: dict[str, int] = {}

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*stack[stack.index(name):], name]
            d = manifest.decls[name]
            raise ManifestError(
                f"dependency cycle: {' -> '.join(cycle)}", file=d.where.file, line=d.where.line, key=name
            )
        state[name] = 1
        d = manifest.decls[name]
        if isinstance(d, BuildDecl):
            for dep in [*d.inputs.values(), *d.envs.values()]:
                visit(dep, [*stack, name])
        state[name] = 2

    for name in manifest.decls:
        visit(name, [])


def param_range(spec: Any) -> tuple[float, float] | None:
    """The documented range of a numeric parameter: the builder's ``min``/``max`` where it declares
    them, else the defaults (floats within +-MAX_FLOAT_PARAM, ints within a signed 32-bit int)."""
    if spec.type is float:
        lo, hi = -MAX_FLOAT_PARAM, MAX_FLOAT_PARAM
    elif spec.type is int:
        lo, hi = INT_PARAM_RANGE
    else:
        return None
    lo = lo if getattr(spec, "min", None) is None else spec.min
    hi = hi if getattr(spec, "max", None) is None else spec.max
    return lo, hi


def _check_number(key: str, spec: Any, value: Any) -> str | None:
    """Why a numeric parameter value is refused (not finite, out of range), or None."""
    import math

    rng = param_range(spec)
    if rng is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"parameter `{key}` expects a finite number, found {value!r}"
    lo, hi = rng
    if not lo <= value <= hi:
        doc = f" ({spec.doc})" if spec.doc else ""
        ends = "..".join(f"{x:g}" if isinstance(x, float) else str(x) for x in (lo, hi))
        return f"parameter `{key}` expects {spec.type.__name__} in {ends}{doc}, found {_show(value)}"
    return None


def check_params(builder: str, schema: Mapping[str, Any], given: Mapping[str, Any], err: Any) -> dict[str, Any]:
    """Validate ``given`` against a builder's PARAMS; return the full typed set (defaults filled).

    Numbers must be finite and within the parameter's range (:func:`param_range`)."""
    out: dict[str, Any] = {}
    for key in given:
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise err(f"builder `{builder}` has no parameter `{key}` (its parameters: {known})", key)
    for key, spec in schema.items():
        if key in given:
            value = given[key]
            wrong_type = not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool))
            int_for_float = spec.type is float and isinstance(value, int) and not isinstance(value, bool)
            if wrong_type and not int_for_float:
                raise err(f"parameter `{key}` expects {spec.type.__name__}, found {_show(value)}", key)
            problem = _check_number(key, spec, value)  # before int -> float: 10**400 has no float
            if problem is not None:
                raise err(problem, key)
            if spec.type is float:
                value = float(value)
            if spec.choices and value not in spec.choices:
                choices = ", ".join(map(repr, spec.choices))
                raise err(f"parameter `{key}` expects one of {choices}, found {value!r}", key)
            out[key] = value
        elif spec.required:
            raise err(f"parameter `{key}` is required ({spec.doc})", key)
        else:
            out[key] = spec.default
    return dict(sorted(out.items()))
