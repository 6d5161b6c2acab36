"""What is scored: the ground truth's categories, and how a model's labels map to them.

The ground truth's ``categories`` define what is scored. A model's *labels* are the values its
decoding writes into the accuracy records' ``label`` field (YOLOX: the COCO category id of its
class; RetinaNet: its own 0-based class index, which MLPerf's Open Images annotations use as
category ids). The ``label_map`` run param maps them to ground-truth category ids:

- ``"id"`` (default): label ``L`` is ground-truth category ``L``;
- ``"name"``: a label maps to the ground-truth category of the same name (compared case-
  insensitively, runs of spaces, ``_`` and ``-`` alike); needs the model's class names;
- an explicit table ``"MODEL=GT, MODEL=GT, ..."``: each side an integer id or a name (the model
  side's names need the model's class names); labels it does not list are not scored.

:func:`resolve` checks the map at the start of a run, before any inference, against the labels
and names the model is known to have (:func:`model_labels`) and the annotations; a map under
which nothing the model can answer is scored, or under which an id means two different names,
is an error. Detections whose label maps to no ground-truth category are dropped before scoring
and counted (``result.json``'s ``accuracy.dropped``): MLPerf's accuracy scripts and pycocotools
score only the ground truth's categories too, so the mAP is the same as theirs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlbuild.errors import InputError

MODES = ("id", "name")
MAX_LISTED = 5
HINT_NAME = "map by class name with `label_map = \"name\"`, or give a table `label_map = \"MODEL=GT, ...\"`"
HINT_ID = "map by id (`label_map = \"id\"`) or give an explicit table `label_map = \"MODEL=GT, ...\"`"


def normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().casefold()


def model_labels(model_kind: str, num_classes: int | None = None) -> dict[int, str] | None:
    """The labels a model of ``model_kind`` writes and their class names, where known (else None)."""
    if model_kind == "yolox" and num_classes in (None, 80):
        from mlbuild.harness.coco import COCO80

        return dict(COCO80)
    return None


@dataclass(frozen=True)
class LabelMap:
    """model label -> ground-truth category id. ``table`` None: the identity on ``gt_ids``."""

    spec: str
    gt_ids: frozenset[int]
    table: Mapping[int, int] | None = None
    warnings: tuple[str, ...] = field(default=())

    def target(self, label: int) -> int | None:
        if self.table is None:
            return label if label in self.gt_ids else None
        return self.table.get(label)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label_map": self.spec, "scored": sorted(self.gt_ids)}
        if self.table is not None:
            out["table"] = {str(k): v for k, v in sorted(self.table.items())}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _listing(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _by_name(cats: Mapping[int, str], who: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for cid, name in sorted(cats.items()):
        key = normalise(name)
        if key in out:
            raise InputError(
                f"{who} names two categories `{name}` (ids {out[key]} and {cid}); "
                "a label map by name needs unique names",
                hints=[HINT_ID],
            )
        out[key] = cid
    return out


def _side(token: str, cats: Mapping[int, str] | None, who: str, spec: str) -> int:
    token = token.strip()
    if re.fullmatch(r"-?\d+", token):
        value = int(token)
        if cats is not None and value not in cats:
            raise InputError(f"param `label_map` {spec!r}: {who} has no category id {value}",
                             hints=[f"{who}'s ids: {_listing(sorted(cats))}"])
        return value
    if cats is None:
        raise InputError(f"param `label_map` {spec!r}: `{token}` is a name, but {who}'s class names are not known",
                         hints=[f"use {who}'s integer labels on that side"])
    found = _by_name(cats, who).get(normalise(token))
    if found is None:
        raise InputError(f"param `label_map` {spec!r}: {who} has no category named `{token}`",
                         hints=[f"{who}'s names: {_listing([cats[k] for k in sorted(cats)])}"])
    return found


def _placeholder(name: str, cid: int) -> bool:
    """True for a class name that carries no meaning beyond its id (``3``, ``class 3``, ``class_3``)."""
    n = normalise(name).replace("_", " ").replace("-", " ")
    return n in (str(cid), f"class {cid}", f"class{cid}", f"category {cid}", f"cls {cid}")


def resolve(spec: str, model: Mapping[int, str] | None, categories: Sequence[Mapping[str, Any]],
            *, model_name: str = "the model", gt_name: str = "annotations.json") -> LabelMap:
    """The label map ``spec`` means for a model with labels ``model`` (label -> class name, None
    when unknown) and the ground truth's ``categories``; checked (see the module docstring)."""
    gt = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
    gt_ids = frozenset(gt)
    if not gt:
        raise InputError(f"{gt_name}: no categories, so nothing can be scored")
    warnings: list[str] = []
    spec = spec.strip()
    table: dict[int, int] | None
    if spec == "id":
        table = None
        if model is not None:
            common = sorted(set(model) & gt_ids)
            if not common:
                raise InputError(
                    f"none of {model_name}'s {len(model)} labels is a category id of {gt_name} "
                    f"(model ids {_listing(sorted(model))}; ground truth ids {_listing(sorted(gt_ids))})",
                    hints=[HINT_NAME],
                )
            # a ground-truth name that only restates its id ("3", "class 3") contradicts nothing
            clash = [i for i in common if not _placeholder(gt[i], i) and normalise(model[i]) != normalise(gt[i])]
            if clash:
                pairs = [f"{i}: `{model[i]}` vs `{gt[i]}`" for i in clash]
                raise InputError(
                    f"label_map \"id\": {len(clash)} category id(s) name different classes in {model_name} and "
                    f"{gt_name} ({_listing(pairs)})",
                    hints=[HINT_NAME],
                )
            unseen = sorted(gt_ids - set(model))
            if unseen:
                warnings.append(f"{len(unseen)} ground-truth categories are no label of {model_name}: "
                                f"{_listing([gt[i] for i in unseen])} (their AP is 0 where they have boxes)")
    elif spec == "name":
        if model is None:
            raise InputError(
                f"label_map \"name\": {model_name}'s class names are not known",
                hints=["map by id (`label_map = \"id\"`) or give a table of ids `label_map = \"MODEL=GT, ...\"`"],
            )
        gt_names = _by_name(gt, gt_name)
        table = {}
        for label, name in sorted(model.items()):
            cid = gt_names.get(normalise(name))
            if cid is not None:
                table[label] = cid
        if not table:
            raise InputError(
                f"label_map \"name\": no class name of {model_name} is a category name of {gt_name} "
                f"(its names: {_listing([gt[i] for i in sorted(gt)])})",
                hints=["give an explicit table `label_map = \"MODEL=GT, ...\"`"],
            )
        unseen = sorted(gt_ids - set(table.values()))
        if unseen:
            warnings.append(f"{len(unseen)} ground-truth categories match no class name of {model_name}: "
                            f"{_listing([gt[i] for i in unseen])} (their AP is 0 where they have boxes)")
    else:
        pairs = [p for p in spec.split(",") if p.strip()]
        if not pairs or any(p.count("=") != 1 for p in pairs):
            raise InputError(
                f"param `label_map` must be \"id\", \"name\" or a table \"MODEL=GT, ...\", got {spec!r}",
                hints=["e.g. `label_map = \"name\"`, or `label_map = \"1=3, person=human\"`"],
            )
        table = {}
        for p in pairs:
            left, right = p.split("=")
            label = _side(left, model, model_name, spec)
            if label in table:
                raise InputError(f"param `label_map` {spec!r}: model label {label} is mapped twice")
            table[label] = _side(right, gt, gt_name, spec)
    return LabelMap(spec, gt_ids, table, tuple(warnings))
