"""`mlbuild add`: add declarations to a project's manifest, keeping the file byte for byte.

Each command builds its tables with tomlkit (quoting and escaping as TOML wants) and appends them
to the manifest file; nothing already in the file is rewritten, so comments and layout stay as
they were.  The result is parsed and validated with the project's other manifests before it is
written; an edit that would not validate is refused and the file is left as it was.

- ``fetch NAME URL... [--unpack FMT]``: one file from its URLs (the first is upstream, the rest
  alternatives), optionally unpacked;
- ``path NAME FILE``: a local file or directory, written relative to the manifest;
- ``dataset NAME --annotations A --images I``: a ``coco-dataset`` build (A and I: declared
  names, or local paths that become ``path`` inputs ``NAME-annotations`` / ``NAME-images``);
- ``run NAME --model M (--dataset D | --annotations A --images I) [--set K=V]``: a benchmark run
  like the shipped ``yolox-coco128-offline`` plus the letterbox preprocessing it needs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError, UsageError

# What a run added by `mlbuild add run` starts from (the shipped YOLOX run's settings, short).
RUN_DEFAULTS: dict[str, Any] = {"model_kind": "yolox", "scenario": "Offline", "mode": "both", "loadgen": "pyo3",
                                 "round": "v6.0", "min_duration_ms": 10000, "target_qps": 100.0}
RUN_ENVS = {"official": "env-run-official", "pyo3": "env-run-pyo3"}
PREPROCESS_ENV = "env-data"
LETTERBOX = {"size": 416, "pad": 114}
DATASET_BUILDER = "coco-dataset"


@dataclass
class Addition:
    """Tables to append to one manifest file: ``[(kind, name, body)]``."""

    file: Path
    tables: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [n for _k, n, _b in self.tables]

    @property
    def lockable(self) -> list[str]:
        return [n for k, n, _b in self.tables if k in ("fetch", "path", "pypi", "sdist")]


def manifest_file(manifests: Path, root: Path | None, chosen: str | None) -> Path:
    """Which file gets the tables: ``--file``, else ``manifests/<project>.toml`` (what `init` wrote),
    else the only manifest there is."""
    from .project import project_name

    if chosen:
        p = Path(chosen)
        if p.suffix != ".toml":
            raise UsageError(f"`--file {chosen}`: expected a `.toml` file in `{manifests}`")
        if p.parent == Path("."):
            p = manifests / p
        if p.resolve().parent != manifests.resolve():
            raise UsageError(f"`--file {chosen}`: expected a file in the manifest directory `{manifests}`",
                             hints=["mlbuild reads `*.toml` of the manifest directory only"])
        return p
    if not manifests.is_dir():
        from .project import no_project_error

        raise no_project_error(Path.cwd())
    default = manifests / f"{project_name(root or manifests.resolve().parent)}.toml"
    if default.exists():
        return default
    existing = sorted(manifests.glob("*.toml"))
    if len(existing) == 1:
        return existing[0]
    return default


def _rel_to(file: Path, target: str) -> str:
    """``target`` (a path given on the command line, relative to the working directory) as the
    manifest writes it: relative to the manifest file's directory, `/`-separated."""
    return Path(os.path.relpath(Path(target).resolve(), file.resolve().parent)).as_posix()


def _known(manifests: Path, targets: Sequence[str] = ()) -> set[str]:
    from .project import load_manifest

    return set(load_manifest(manifests, targets).decls) if any(manifests.glob("*.toml")) else set()


def _decl(manifests: Path, name: str) -> object | None:
    from .project import load_manifest

    return load_manifest(manifests, [name]).decls.get(name)


def _ref_or_path(add: Addition, known: set[str], value: str, name: str, what: str) -> str:
    """A declared name as is; a local file or directory becomes a `path` input ``name``."""
    if value in known or value in add.names:
        return value
    if os.path.exists(value):
        add.tables.append(("path", name, {"description": f"{what} (added by `mlbuild add`)",
                                          "path": _rel_to(add.file, value)}))
        return name
    raise UsageError(f"{what} `{value}` is neither a declared name nor an existing file or directory",
                     hints=["give a name `mlbuild show --list` lists, or a path to a local file or directory"])


def add_fetch(file: Path, name: str, urls: Sequence[str], unpack: str | None) -> Addition:
    body: dict[str, Any] = {}
    if len(urls) == 1:
        body["url"] = urls[0]
    else:
        body["urls"] = list(urls)
    if unpack:
        body["unpack"] = unpack
    return Addition(file, [("fetch", name, body)])


def add_path(file: Path, name: str, target: str) -> Addition:
    if not os.path.exists(target):
        raise UsageError(f"`{target}` does not exist", hints=["give an existing file or directory"])
    return Addition(file, [("path", name, {"path": _rel_to(file, target)})])


def add_dataset(file: Path, manifests: Path, name: str, annotations: str, images: str) -> Addition:
    from . import builders

    add = Addition(file)
    known = _known(manifests, [annotations, images])
    ann = _ref_or_path(add, known, annotations, f"{name}-annotations", "annotations")
    img = _ref_or_path(add, known, images, f"{name}-images", "images")
    inputs = {"annotations": ann, "images": img}
    if getattr(builders.load(DATASET_BUILDER), "NEEDS_ENV", False):
        inputs["env"] = PREPROCESS_ENV
    add.tables.append(("build", name, {"description": f"COCO dataset {name} (added by `mlbuild add`)",
                                       "builder": DATASET_BUILDER, "inputs": inputs}))
    return add


def add_run(file: Path, manifests: Path, name: str, model: str, *, dataset: str | None,
            annotations: str | None, images: str | None, params: Mapping[str, Any]) -> Addition:
    if dataset is None and (annotations is None or images is None):
        raise UsageError("`mlbuild add run` needs `--dataset D`, or `--annotations A` and `--images I`")
    if dataset is not None and (annotations is not None or images is not None):
        raise UsageError("give either `--dataset D` or `--annotations A --images I`, not both")
    add = Addition(file)
    known = _known(manifests, [x for x in (model, dataset, annotations, images) if x])
    model_ref = _ref_or_path(add, known, model, f"{name}-model", "model")
    if dataset is not None:
        if dataset not in known:
            raise UsageError(f"dataset `{dataset}` is not declared",
                             hints=["`mlbuild add dataset NAME --annotations A --images I` declares one"])
        ann = img = dataset
        decl: Any = _decl(manifests, dataset)
        if getattr(decl, "builder", None) == DATASET_BUILDER:
            # a `coco-dataset` build writes annotations.json; its images are its `images` input
            img = str(decl.inputs["images"])
    else:
        # a COCO JSON and its images: through a `coco-dataset` build (every image checked present)
        assert annotations is not None and images is not None
        gt = _ref_or_path(add, known, annotations, f"{name}-annotations", "annotations")
        img = _ref_or_path(add, known, images, f"{name}-images", "images")
        ann = f"{name}-dataset"
        add.tables.append(("build", ann, {"description": f"COCO dataset of `{name}` (added by `mlbuild add`)",
                                          "builder": DATASET_BUILDER, "inputs": {"annotations": gt, "images": img}}))
    pre = f"{name}-letterbox"
    add.tables.append(("build", pre, {
        "description": f"the images of `{img}` letterboxed for `{name}` (added by `mlbuild add`)",
        "builder": "letterbox", "inputs": {"dataset": img, "annotations": ann, "env": PREPROCESS_ENV},
        "params": dict(LETTERBOX)}))
    run_params = {**RUN_DEFAULTS, **params}
    add.tables.append(("run", name, {
        "description": f"`{model_ref}` on `{img}` (added by `mlbuild add`)",
        "inputs": {"model": model_ref, "preprocessed": pre, "annotations": ann},
        "envs": dict(RUN_ENVS), "params": run_params}))
    return add


def render(tables: Sequence[tuple[str, str, dict[str, Any]]]) -> str:
    """The tables as TOML text (tomlkit), nested values as inline tables as the shipped manifests write them."""
    import tomlkit

    chunks = []
    for kind, name, body in tables:
        doc = tomlkit.document()
        outer = tomlkit.table(is_super_table=True)
        t = tomlkit.table()
        for k, v in body.items():
            if isinstance(v, dict):
                it = tomlkit.inline_table()
                it.update(v)
                t.add(k, it)
            else:
                t.add(k, v)
        outer.add(name, t)
        doc.add(kind, outer)
        chunks.append(tomlkit.dumps(doc).strip("\n") + "\n")
    return "\n".join(chunks)


def apply(add: Addition, manifests: Path, root: Path | None) -> tuple[bytes | None, list[str]]:
    """Append the tables to ``add.file`` after checking that the project validates with them.

    Returns the file's previous bytes (None: it did not exist), for :func:`restore`, and the names."""
    import tomlkit

    from .manifest import name_problem
    from .project import load_manifest

    for _kind, name, _body in add.tables:
        problem = name_problem(name)
        if problem is not None:
            raise UsageError(problem)
    own = {n for p in manifests.glob("*.toml") for n in _declared(p)} if manifests.is_dir() else set()
    for name in add.names:
        if name in own:
            raise UsageError(f"`{name}` is already declared in `{manifests}`",
                             hints=["choose another name, or edit the manifest"])
    old = add.file.read_bytes() if add.file.exists() else None
    text = old.decode() if old is not None else ""
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    new = text + sep + render(add.tables)
    try:
        tomlkit.parse(new)
        tomllib.loads(new)
    except Exception as e:
        raise ManifestError(f"adding to `{add.file.name}` would not give valid TOML: {e}", file=str(add.file),
                            hints=["fix the file first; nothing was written"]) from None
    manifests.mkdir(parents=True, exist_ok=True)
    tmp = add.file.with_name(f".{add.file.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, add.file)
    try:
        load_manifest(manifests)
    except Exception:
        restore(add.file, old)
        raise
    return old, add.names


def restore(file: Path, old: bytes | None) -> None:
    """Put ``file`` back as it was before :func:`apply`."""
    if old is None:
        file.unlink(missing_ok=True)
    else:
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        tmp.write_bytes(old)
        os.replace(tmp, file)


def _declared(path: Path) -> set[str]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {n for table in data.values() if isinstance(table, dict) for n in table}


def next_command(add: Addition) -> str:
    runs = [n for k, n, _b in add.tables if k == "run"]
    builds = [n for k, n, _b in add.tables if k == "build"]
    target = (runs or builds or add.names)[-1]
    return f"mlbuild realize {target}"
