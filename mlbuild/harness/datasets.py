"""COCO detection datasets: find the ground truth in an input, select images, check they are
present, and write the ``annotations.json`` the preprocessors and the run read. The code of the
``coco-dataset`` builder (documented there) and of ``openimages-to-coco`` / ``openimages-layout``,
its case for MLPerf's own Open Images layout."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from mlbuild.errors import InputError
from mlbuild.harness import coco

MAX_LISTED = 5


def _named(root: Path, name: str) -> list[Path]:
    """Every file named exactly ``name`` under ``root`` (no glob: names may hold ``[`` or ``*``)."""
    return sorted(Path(d) / name for d, _dirs, files in os.walk(root) if name in files)


def relative(value: str, what: str) -> PurePosixPath:
    """``value`` as a relative path that stays inside its input ('' is the input itself)."""
    path = PurePosixPath(value)
    if value.startswith("/") or ".." in path.parts or "\\" in value:
        raise InputError(f"{what} must be a relative path inside the input, got {value!r}")
    return path


def _listing(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:MAX_LISTED])
    return shown + (f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else "")


def find_annotations_file(inp: Path, name: str, *, param: str = "annotations_file") -> Path:
    """The COCO JSON of an ``annotations`` input: the entry itself when it is a file; else the
    file ``name`` names inside the directory (a relative path, or a bare name found anywhere in
    it), or with ``name`` empty the directory's only ``.json`` file."""
    inp = Path(inp)
    if inp.is_file():
        return inp
    if not inp.is_dir():
        raise InputError(f"the annotations input `{inp.name}` does not exist")
    if name:
        rel = relative(name, f"param `{param}`")
        exact = inp.joinpath(*rel.parts)
        if exact.is_file():
            return exact
        found = [p for p in _named(inp, rel.name) if p.is_file()] if len(rel.parts) == 1 else []
        if len(found) == 1:
            return found[0]
        where = [p.relative_to(inp).as_posix() for p in found]
        if found:
            raise InputError(
                f"the annotations input holds {len(found)} files named `{name}` ({_listing(where)})",
                hints=[f"set param `{param}` to the relative path of the one to use"],
            )
        others = sorted(p.relative_to(inp).as_posix() for p in inp.rglob("*.json") if p.is_file())
        raise InputError(
            f"the annotations input has no `{name}`"
            + (f"; its JSON files: {_listing(others)}" if others else "; it holds no JSON file"),
            hints=[f"set param `{param}` to the COCO JSON's path inside the input"],
        )
    found = sorted(p for p in inp.rglob("*.json") if p.is_file())
    if len(found) == 1:
        return found[0]
    where = [p.relative_to(inp).as_posix() for p in found]
    if found:
        raise InputError(
            f"the annotations input holds {len(found)} JSON files ({_listing(where)}), expected one",
            hints=[f"set param `{param}` to the one that is the COCO ground truth"],
        )
    files = sorted(p.relative_to(inp).as_posix() for p in inp.rglob("*") if p.is_file())
    raise InputError(
        "the annotations input holds no `.json` file" + (f" (it holds {_listing(files)})" if files else " (empty)"),
        hints=["point `annotations` at the COCO JSON (a file, or a directory or archive holding it)"],
    )


def _select(images: list[dict[str, Any]], ids: Sequence[Any], count: int, source: str) -> list[dict[str, Any]]:
    if ids:
        bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool)]
        if bad:
            raise InputError(f"param `ids` must list integer image ids, got {bad[0]!r}")
        dupes = sorted(i for i, k in Counter(ids).items() if k > 1)
        if dupes:
            raise InputError(f"param `ids` lists image id {dupes[0]} more than once")
        known = {im["id"] for im in images}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise InputError(
                f"{source}: param `ids` names {len(unknown)} image id(s) the annotations do not have: "
                f"{_listing([str(i) for i in unknown])}",
                hints=[f"{source} has {len(images)} images, ids {min(known)}..{max(known)}"],
            )
        wanted = set(ids)
        images = [im for im in images if im["id"] in wanted]
    if count:
        images = images[:count]
    return images


def _images_prefix(root: Path, first: str, images_dir: str) -> PurePosixPath:
    """The directory inside ``root`` that ``file_name`` entries are relative to."""
    if images_dir:
        prefix = relative(images_dir, "param `images_dir`")
        if not root.joinpath(*prefix.parts).is_dir():
            raise InputError(f"the images input has no directory `{images_dir}`",
                             hints=["set param `images_dir` to the directory holding the images, or leave it empty"])
        return prefix
    target = PurePosixPath(first)
    if root.joinpath(*target.parts).is_file():
        return PurePosixPath("")
    prefixes = set()
    for p in _named(root, target.name):
        rel = PurePosixPath(p.relative_to(root).as_posix())
        if p.is_file() and rel.parts[len(rel.parts) - len(target.parts):] == target.parts:
            prefixes.add(PurePosixPath(*rel.parts[: len(rel.parts) - len(target.parts)]))
    if len(prefixes) > 1:
        shown = sorted(p.as_posix() for p in prefixes)
        raise InputError(
            f"the images input holds `{first}` under {len(shown)} directories ({_listing(shown)})",
            hints=["set param `images_dir` to the one the annotations refer to"],
        )
    return prefixes.pop() if prefixes else PurePosixPath("")


def convert(
    annotations: Path,
    images_root: Path,
    *,
    count: int = 0,
    ids: Sequence[Any] = (),
    images_dir: str = "",
    order: str = "id",
    description: str,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The dataset's ``annotations.json`` document (see the module docstring).

    ``annotations`` is the COCO JSON file, ``images_root`` the images input; ``order`` is the
    sample order, ``"id"`` (ascending image id) or ``"file_name"``."""
    source = annotations.name
    doc = coco.load_annotations(annotations)
    root = Path(images_root)
    if not root.is_dir():
        raise InputError(
            f"the images input `{root.name}` is a single file; expected a directory holding the images",
            hints=["declare the images as a file set, a `path` directory or an archive to unpack"],
        )
    key: Callable[[dict[str, Any]], Any] = (lambda im: im["id"]) if order == "id" else (lambda im: im["file_name"])
    all_images = sorted(doc["images"], key=key)
    if count > len(all_images):
        log(f"count {count} > {len(all_images)} images in {source}; keeping all")
    images = _select(all_images, ids, count, source)
    prefix = _images_prefix(root, images[0]["file_name"], images_dir)
    missing = []
    out_images = []
    for im in images:
        rel = (prefix / im["file_name"]).as_posix()
        if not root.joinpath(*PurePosixPath(rel).parts).is_file():
            missing.append(f"{rel} (id {im['id']})")
        out_images.append({"coco_url": im.get("coco_url"), "file_name": rel, "height": im["height"],
                           "id": im["id"], "width": im["width"]})
    if missing:
        raise InputError(
            f"{source}: {len(missing)} of the {len(images)} selected images are missing from the images input: "
            f"{_listing(missing)}",
            hints=["check that `images` holds the files the annotations name (param `images_dir` sets where they "
                   "are), or select fewer images with `count` or `ids`"],
        )
    kept = {im["id"] for im in images}
    anns: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    for a in doc["annotations"]:
        if a["image_id"] not in kept:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        iscrowd = a.get("iscrowd", 0)
        if isinstance(iscrowd, bool) or iscrowd not in (0, 1):
            raise InputError(f"{source}: annotation {a.get('id')!r} has `iscrowd` {iscrowd!r}, expected 0 or 1")
        out = {"area": float(a.get("area", w * h)), "bbox": [x, y, w, h], "category_id": a["category_id"],
               "image_id": a["image_id"], "iscrowd": int(iscrowd)}
        if isinstance(a.get("id"), int) and not isinstance(a.get("id"), bool):
            anns.append(dict(out, id=a["id"]))
        else:
            pending.append(out)
    if pending:
        ids_all = [a["id"] for a in doc["annotations"] if isinstance(a.get("id"), int)]
        nxt = max(ids_all, default=0) + 1
        for k, out in enumerate(pending):
            anns.append(dict(out, id=nxt + k))
    seen: set[int] = set()
    for a in anns:
        if a["id"] in seen:
            raise InputError(f"{source}: duplicate annotation id {a['id']}")
        seen.add(a["id"])
    anns.sort(key=lambda a: a["id"])
    categories = sorted(({"id": c["id"], "name": str(c.get("name", c["id"]))} for c in doc["categories"]),
                        key=lambda c: c["id"])
    return {
        "annotations": anns,
        "categories": categories,
        "images": out_images,
        "info": {"description": description.replace("{n}", str(len(out_images)))},
    }
