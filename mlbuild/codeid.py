"""Code identity: which source files a builder can run, derived from its real import closure.

A builder's derivation digest must change whenever code that can change its output
changes.  This module computes, without importing anything it analyses, the closure of
``mlbuild`` modules a builder can import: the builder module plus what runs every builder
(``builders/__init__.py``, ``buildexec.py``, ``sandbox.py``, ``errors.py``), following every
import statement transitively with :mod:`ast` (absolute, ``from pkg import submodule``,
relative, and imports inside functions), plus the parent packages Python executes on the way.

- ``importlib.import_module``/``__import__`` calls are followed when their argument is a
  string the module spells out (a literal, an f-string over ``__name__`` and constants, a
  name bound to such values, or a subscript of a literal dict of them).  Any other dynamic
  import in the closure over-approximates: the whole package is in the identity.
- ``builders.load`` dispatches on the registry (an import over every registered builder);
  in the builder subprocess it loads the builder being realized, which is a root already.
  If any other module of the closure calls it, every registered builder is followed.
- When the closure reaches the native extension ``mlbuild._native`` (hashing, NMS), every
  source file of ``native/`` (``src/**``, ``Cargo.toml``) and the workspace's root
  ``Cargo.toml`` (its ``[profile]``) and ``Cargo.lock`` are in the identity; without a
  source tree beside the package, the extension file itself is.

The result lists files by paths relative to the project root with their sha256: the same
bytes at another path give the same identity.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "mlbuild"
PACKAGE_DIR = Path(__file__).resolve().parent
ALWAYS = ("mlbuild.builders", "mlbuild.buildexec", "mlbuild.sandbox", "mlbuild.errors")
NATIVE = "mlbuild._native"
DISPATCH_EXEMPT = ("mlbuild.buildexec",)  # its `builders.load(spec["builder"])` runs the root itself
RUST_ROOT_FILES = ("Cargo.toml", "Cargo.lock")
_IMPORT_FUNCS = {("importlib", "import_module"), ("", "import_module"), ("", "__import__"),
                 ("importlib", "__import__")}
_SKIP_DIRS = {"target", "__pycache__", ".pytest_cache"}
_UNKNOWN = ast.Constant(value=None)  # a binding whose value cannot be known statically
_MUTATORS = {"update", "setdefault", "__setitem__", "append", "extend", "insert", "add", "pop", "clear"}


@dataclass
class _Scan:
    imports: set[str] = field(default_factory=set)  # absolute names: modules, or `pkg.attr` candidates
    dynamic: list[str] = field(default_factory=list)  # unresolvable dynamic imports, described
    dispatch: set[str] = field(default_factory=set)  # registry-dispatch candidates (builders.load)
    calls_load: bool = False  # calls mlbuild.builders.load(...)


@dataclass(frozen=True)
class CodeIdentity:
    """The code a builder can run: modules, files (relative path -> sha256), and why it is wider."""

    modules: tuple[str, ...]
    files: dict[str, str]
    over_approximated: str = ""

    def fingerprint(self) -> dict[str, object]:
        out: dict[str, object] = {"files": dict(sorted(self.files.items()))}
        if self.over_approximated:
            out["over_approximated"] = self.over_approximated
        return out


# --------------------------------------------------------------------------- module <-> file


def module_file(pkg_dir: Path, module: str) -> Path | None:
    """The source file of ``module`` (``mlbuild.x.y``) under ``pkg_dir``, or None if not a module."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = pkg_dir.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    f = base.with_suffix(".py")
    return f if len(parts) > 1 and f.is_file() else None


def _all_modules(pkg_dir: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(pkg_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        rel = Path(dirpath).relative_to(pkg_dir).parts
        for f in sorted(filenames):
            if f.endswith(".py"):
                stem = f[:-3]
                parts = [PACKAGE, *rel] + ([] if stem == "__init__" else [stem])
                out.append(".".join(parts))
    return out


# --------------------------------------------------------------------------- scanning one module


class _Strings:
    """Resolve an expression to the finite set of strings it can evaluate to, or None."""

    def __init__(self, module: str, tree: ast.Module) -> None:
        self.module = module
        self.tree = tree
        self._globals: dict[str, list[ast.expr]] | None = None

    @property
    def globals(self) -> dict[str, list[ast.expr]]:
        if self._globals is None:
            self._globals = self._bindings(self.tree.body)
        return self._globals

    @staticmethod
    def _bindings(nodes: Iterable[ast.AST]) -> dict[str, list[ast.expr]]:
        """Every value assigned to a plain name anywhere in ``nodes`` (unknowable ones as None)."""
        out: dict[str, list[ast.expr]] = {}

        def unknown(target: ast.AST) -> None:
            for n in ast.walk(target):
                if isinstance(n, ast.Name):
                    out.setdefault(n.id, []).append(_UNKNOWN)

        for top in nodes:
            for node in ast.walk(top):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            out.setdefault(t.id, []).append(node.value)
                        else:
                            unknown(t)
                elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and isinstance(node.target, ast.Name):
                    if node.value is not None:
                        out.setdefault(node.target.id, []).append(node.value)
                elif isinstance(node, (ast.AugAssign, ast.For, ast.AsyncFor, ast.comprehension)):
                    unknown(node.target)
                elif isinstance(node, (ast.With, ast.AsyncWith)):
                    for item in node.items:
                        if item.optional_vars is not None:
                            unknown(item.optional_vars)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                        node.func.attr in _MUTATORS:
                    unknown(node.func.value)  # `TABLE.update(...)`: its contents are no longer literal
        return out

    def resolve(self, e: ast.expr, local: dict[str, list[ast.expr]], params: set[str],
                depth: int = 0) -> set[str] | None:
        if depth > 8:
            return None

        def r(x: ast.expr) -> set[str] | None:
            return self.resolve(x, local, params, depth + 1)

        if isinstance(e, ast.Constant):
            return {e.value} if isinstance(e.value, str) else None
        if isinstance(e, ast.JoinedStr):
            pieces: list[set[str]] = []
            for v in e.values:
                if isinstance(v, ast.FormattedValue) and (v.conversion != -1 or v.format_spec is not None):
                    return None
                got = r(v.value) if isinstance(v, ast.FormattedValue) else r(v)
                if got is None:
                    return None
                pieces.append(got)
            return {"".join(p) for p in itertools.product(*pieces)}
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            a, b = r(e.left), r(e.right)
            return None if a is None or b is None else {x + y for x in a for y in b}
        if isinstance(e, ast.IfExp):
            a, b = r(e.body), r(e.orelse)
            return None if a is None or b is None else a | b
        if isinstance(e, ast.Subscript):
            d = self._dict(e.value, local, params, depth + 1)
            if d is None:
                return None
            out: set[str] = set()
            for v in d.values:
                got = r(v)
                if got is None:
                    return None
                out |= got
            return out
        if isinstance(e, ast.Name):
            if e.id == "__name__":
                return {self.module}
            if e.id in params:
                return None
            values = local.get(e.id) if e.id in local else self.globals.get(e.id)
            if not values:
                return None
            out = set()
            for v in values:
                got = r(v)
                if got is None:
                    return None
                out |= got
            return out
        return None

    def _dict(self, e: ast.expr, local: dict[str, list[ast.expr]], params: set[str], depth: int) -> ast.Dict | None:
        if isinstance(e, ast.Dict):
            return e
        if isinstance(e, ast.Name) and e.id not in params:
            values = local.get(e.id) if e.id in local else self.globals.get(e.id)
            if values and len(values) == 1 and isinstance(values[0], ast.Dict):
                return values[0]
        return None


def _scan(pkg_dir: Path, module: str, registry_modules: set[str]) -> _Scan:
    path = module_file(pkg_dir, module)
    assert path is not None
    data = path.read_bytes()
    return _scan_source(data, module, path.name == "__init__.py", frozenset(registry_modules))


@functools.lru_cache(maxsize=512)
def _scan_source(data: bytes, module: str, is_pkg: bool, registry_modules: frozenset[str]) -> _Scan:
    """Scan one module's source (cached by its bytes: an edited file is scanned afresh)."""
    tree = ast.parse(data, filename=module)
    package = module if is_pkg else module.rpartition(".")[0]
    scan = _Scan()
    strings = _Strings(module, tree)
    builders_aliases: set[str] = set()  # names bound to the mlbuild.builders module
    load_aliases: set[str] = set()  # names bound to mlbuild.builders.load
    calls: list[ast.Call] = []  # calls that may import: import_module, __import__, load

    def base_of(node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        parts = package.split(".")
        if node.level - 1 > 0:
            parts = parts[: len(parts) - (node.level - 1)]
        return ".".join(parts + ([node.module] if node.module else []))

    for stmt in _statements(tree.body):
        if isinstance(stmt, ast.Import):
            for a in stmt.names:
                scan.imports.add(a.name)
                if a.name == "mlbuild.builders" and a.asname:
                    builders_aliases.add(a.asname)
        elif isinstance(stmt, ast.ImportFrom):
            base = base_of(stmt)
            scan.imports.add(base)
            for a in stmt.names:
                if a.name != "*":
                    scan.imports.add(f"{base}.{a.name}")
                    if f"{base}.{a.name}" == "mlbuild.builders":
                        builders_aliases.add(a.asname or a.name)
                    if base == "mlbuild.builders" and a.name == "load":
                        load_aliases.add(a.asname or a.name)
                elif base.startswith(PACKAGE):
                    scan.dynamic.append(f"`from {base} import *` in {module}")

    # Calls that may import.  Their names must appear in the text, so most modules skip the walk.
    callees = {"import_module", "__import__", *load_aliases}
    wanted = (b"import_module", b"__import__", *(a.encode() + b"." for a in builders_aliases),
              *(a.encode() for a in load_aliases))
    if any(w in data for w in wanted):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Name) and f.id in callees) or \
                        (isinstance(f, ast.Attribute) and f.attr in ("import_module", "__import__", "load")):
                    calls.append(node)

    parents: dict[ast.AST, ast.AST] = {}

    def context(node: ast.AST) -> tuple[dict[str, list[ast.expr]], set[str]]:
        """Local bindings and parameters of the functions enclosing ``node`` (innermost wins)."""
        if not parents:
            parents.update({c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)})
        chain = []
        cur = parents.get(node)
        while cur is not None:
            if isinstance(cur, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                chain.append(cur)
            cur = parents.get(cur)
        local: dict[str, list[ast.expr]] = {}
        params: set[str] = set()
        for fn in reversed(chain):  # outermost first
            args = fn.args
            names = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
            names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
            inner = _Strings._bindings([fn.body] if isinstance(fn, ast.Lambda) else fn.body)
            local = {**local, **inner}
            params = (params - set(inner)) | names
        return local, params

    for call in calls:
        f = call.func
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        if (isinstance(f, ast.Attribute) and name == "load" and owner in builders_aliases) or \
                (isinstance(f, ast.Name) and name in load_aliases):
            scan.calls_load = True
            continue
        if (owner, name) not in _IMPORT_FUNCS:
            continue
        where = f"{module}:{call.lineno}"
        if not call.args:
            scan.dynamic.append(f"`{name}()` without a module name at {where}")
            continue
        pkg_arg = call.args[1] if len(call.args) > 1 and name == "import_module" else None
        for kw in call.keywords:
            if kw.arg == "package":
                pkg_arg = kw.value
        literal = [a for a in (call.args[0], pkg_arg) if a is not None]
        local, params = ({}, set()) if all(isinstance(a, ast.Constant) for a in literal) else context(call)
        got = strings.resolve(call.args[0], local, params)
        if got is None:
            scan.dynamic.append(f"non-literal `{name}(...)` at {where}")
            continue
        if any(g.startswith(".") for g in got):
            pkgs = strings.resolve(pkg_arg, local, params) if pkg_arg is not None else None
            if pkgs is None:
                scan.dynamic.append(f"relative `{name}(...)` without a literal package at {where}")
                continue
            got = {_relative(g, p) for g in got for p in pkgs}
        if module == "mlbuild.builders" and got and got <= registry_modules:
            scan.dispatch |= got
        else:
            scan.imports |= got
    return scan


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones included (imports are statements; expressions are skipped)."""
    for stmt in body:
        yield stmt
        for name in ("body", "orelse", "finalbody"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list):
                yield from _statements(inner)
        for h in getattr(stmt, "handlers", ()):
            yield from _statements(h.body)
        for case in getattr(stmt, "cases", ()):
            yield from _statements(case.body)


def _relative(name: str, package: str) -> str:
    level = len(name) - len(name.lstrip("."))
    parts = package.split(".")
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    rest = name[level:]
    return ".".join(parts + ([rest] if rest else []))


# --------------------------------------------------------------------------- the closure


def module_closure(pkg_dir: Path, roots: Iterable[str], registry_modules: Iterable[str]) -> tuple[set[str], str]:
    """Every ``mlbuild`` module importing ``roots`` can execute, and why it is the whole package (or "")."""
    registry = set(registry_modules)
    seen: set[str] = set()
    todo = list(roots)
    dynamic: list[str] = []
    dispatch_called = False
    native = False
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        if m == NATIVE:
            native = True
            seen.add(m)
            continue
        if module_file(pkg_dir, m) is None:
            continue  # not an mlbuild module (stdlib, third party) or `pkg.attribute`
        seen.add(m)
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parents run first
        s = _scan(pkg_dir, m, registry)
        dynamic.extend(s.dynamic)
        if s.calls_load and m not in DISPATCH_EXEMPT:
            dispatch_called = True
        for imp in s.imports:
            if imp == PACKAGE or imp.startswith(PACKAGE + "."):
                todo.append(imp)
        if dispatch_called:
            todo.extend(sorted(registry))
    if dynamic:
        every = set(_all_modules(pkg_dir)) | {NATIVE}
        return every, "dynamic import: " + "; ".join(sorted(set(dynamic)))
    if native:
        seen.add(NATIVE)
    return seen, ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def native_files(pkg_dir: Path) -> dict[str, str]:
    """The native extension's sources (relative path -> sha256), or the built extension without them."""
    root = pkg_dir.parent
    out: dict[str, str] = {}
    if (root / "native" / "Cargo.toml").is_file():
        for dirpath, dirnames, filenames in os.walk(root / "native"):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for f in sorted(filenames):
                p = Path(dirpath) / f
                if p.is_file() and not p.is_symlink():
                    out[p.relative_to(root).as_posix()] = _sha256(p)
        for f in RUST_ROOT_FILES:
            if (root / f).is_file():
                out[f] = _sha256(root / f)
    else:
        for p in sorted(pkg_dir.glob("_native*")):
            if p.is_file():
                out[p.relative_to(root).as_posix()] = _sha256(p)
    return out


def identity(pkg_dir: Path, builder_module: str, registry_modules: Iterable[str]) -> CodeIdentity:
    """The code identity of the builder module ``builder_module`` (``mlbuild.builders.x``)."""
    registry = set(registry_modules)
    mods, why = module_closure(pkg_dir, [builder_module, *ALWAYS], registry)
    root = pkg_dir.parent
    files: dict[str, str] = {}
    for m in sorted(mods):
        if m == NATIVE:
            files.update(native_files(pkg_dir))
            continue
        f = module_file(pkg_dir, m)
        assert f is not None
        files[f.relative_to(root).as_posix()] = _sha256(f)
    return CodeIdentity(tuple(sorted(mods)), files, why)
