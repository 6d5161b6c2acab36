"""The body of the ``mlperf-submission`` builder: lay out the tree, check it, archive it, summarise it.

Output (``ctx.out``)::

    <division>/<submitter>/...   the submission tree (spec §1.9)
    <division>.tar.gz            the tree, byte-stable (mlbuild.submission.tarball)
    summary.csv, summary.json    one row per model and scenario; summary.json also holds the check
    README.md                    what the package holds, whether it is submittable and why not
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlbuild.errors import InputError
from mlbuild.submission import checker, layout, rules, summary, tarball

RESULT_PREFIX = "result-"
LOADGEN_SRC_INPUT = "loadgen-src"


def _results(inputs: Mapping[str, Path]) -> list[layout.Result]:
    labels = sorted((k for k in inputs if k.startswith(RESULT_PREFIX)), key=lambda k: int(k[len(RESULT_PREFIX):]))
    if not labels:
        raise InputError("mlperf-submission: no result was given",
                         hints=["inputs `result-1`, `result-2`...: run targets (their assembled entries)"])
    return [layout.load_result(k, Path(inputs[k])) for k in labels]


def _source_digest(code: Mapping[str, Any]) -> str:
    """The digest a run's result.json records as ``builder_source`` for this code identity."""
    canon = json.dumps(code, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(canon).hexdigest()[:32]


def write_sources(src: Path, results: Sequence[layout.Result], run_code: Mapping[str, Any], notes: list[str]) -> None:
    """``src/``: the run builder's code (its code identity, which the graph put in this derivation:
    ``fingerprint_extra``) and ``SOURCES.json`` (each file's sha256 and the digest results record as
    ``builder_source``).  Files are copied from this mlbuild only when their bytes are the listed ones."""
    import mlbuild

    files = {str(k): str(v) for k, v in (run_code.get("files") or {}).items()}
    if not files:
        raise InputError("mlperf-submission: its derivation carries no `extra.run_code` (the run builder's code "
                         "identity)", hints=["build packages with `mlbuild submission` or a manifest target"])
    root = Path(mlbuild.__file__).resolve().parent.parent
    absent = []
    for rel, sha in sorted(files.items()):
        f = root / rel
        if f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == sha:
            dest = src / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        else:
            absent.append(rel)
    if absent:
        notes.append(f"src/: {len(absent)} file(s) of the harness's identity are listed in SOURCES.json but not "
                     f"copied (not visible to the builder): {', '.join(absent[:4])}{' ...' if len(absent) > 4 else ''}")
    digest = _source_digest(run_code)
    ran = sorted({str(((r.doc.get("provenance") or {}).get("mlbuild") or {}).get("builder_source"))
                  for r in results})
    for d in ran:
        if d != digest:
            notes.append(f"src/: a result ran harness code `{d}`; this package holds `{digest}` (the code this "
                         "mlbuild runs), so src/ is not the code that ran")
    layout.dump_json(src / "SOURCES.json", {"builder": "mlperf-run", "builder_source": digest,
                                           "files": dict(sorted(files.items())), "results_ran": ran})


def loadgen_sdist_sha1(src_dir: Path) -> dict[str, str]:
    """sha1 of each file of the pinned LoadGen source, keyed as the LoadGen's `loadgen_file_sha1` does."""
    out: dict[str, str] = {}
    for p in sorted(src_dir.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out["/" + p.relative_to(src_dir).as_posix()] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def _reasons_for(report: checker.Report, prefix: str) -> list[str]:
    """Failed rules that concern one scenario directory (or the whole submitter tree)."""
    out = []
    for f in report.findings:
        if f.file.startswith(prefix + "/") or "/results/" not in f.file:
            out.append(f.render())
    return out


def _params(p: Mapping[str, Any]) -> dict[str, Any]:
    try:
        overrides = json.loads(str(p.get("system") or "{}"))
    except ValueError as e:
        raise InputError(f"param `system`: not a JSON object ({e})") from None
    if not isinstance(overrides, dict):
        raise InputError("param `system`: expected a JSON object of system description fields")
    return dict(p, system=overrides)


def build(ctx: Any) -> None:
    out = Path(ctx.out)
    p = _params(ctx.params)
    results = _results(ctx.inputs)
    division, submitter = str(p["division"]), str(p["submitter"])
    system_id = str(p.get("system_name") or "") or layout.default_system_name(results)
    layout.check_names(division=division, submitter=submitter, system=system_id)
    layout.check_unique(results)
    notes: list[str] = []
    sub = out / division / submitter
    system = layout.system_description(results, division=division, submitter=submitter,
                                       system_name=str(p["system"].get("system_name") or system_id),
                                       status=str(p["status"]), system_type=str(p["system_type"]),
                                       overrides=p["system"])
    layout.dump_json(sub / "systems" / f"{system_id}.json", system)
    write_sources(sub / "src", results, ((ctx.fingerprint or {}).get("extra") or {}).get("run_code") or {}, notes)
    src_in = ctx.inputs.get(LOADGEN_SRC_INPUT)
    if src_in is not None:
        layout.dump_json(sub / "src" / checker.LOADGEN_SDIST_FILE,
                         {"sdist": Path(src_in).name.split("-", 1)[-1], "sha1": loadgen_sdist_sha1(Path(src_in))})
    (sub / "code").mkdir(parents=True, exist_ok=True)
    (sub / "code" / "README.md").write_text(
        "The code that ran is in `../src` (the harness's import closure, listed with sha256 in "
        "`../src/SOURCES.json`); MLPerf's current checker reads `src/`, `submission_structure.md` draws `code/`.\n",
        encoding="utf-8")
    mapping = layout.model_mapping(results)
    if mapping:
        layout.dump_json(sub / "model_mapping.json", mapping)
    scen_dirs = {}
    for r in results:
        scen = sub / "results" / system_id / r.model_dir / r.scenario
        scen_dirs[r.label] = scen
        layout.write_result(r, scen, [], notes)
    report = checker.check_tree(out)
    report.root = "."
    rows = []
    for r in results:
        rel = scen_dirs[r.label].relative_to(out).as_posix()
        reasons = _reasons_for(report, rel)
        (scen_dirs[r.label] / "README.md").write_text(layout.readme(r, reasons), encoding="utf-8")
        rows.append(summary.row(system=system, system_id=system_id, model=r.model_dir, benchmark=r.benchmark,
                                scenario=r.scenario, metrics=r.doc.get("metrics") or {}, location=rel,
                                reasons=[f.message for f in report.findings
                                         if f.file.startswith(rel + "/") or "/results/" not in f.file]))
    archive = f"{division}.tar.gz"
    sha = tarball.write(out / division, out / archive)
    doc = {
        "submittable": report.ok,
        "division": division,
        "submitter": submitter,
        "system": system_id,
        "tarball": {"file": archive, "sha256": sha},
        "rows": rows,
        "check": report.as_dict(),
        "notes": sorted(set(notes + report.notes)),
        "results": [{"input": r.label, "entry": r.path.name, "lock": layout.lock_digest(r.doc)} for r in results],
    }
    layout.dump_json(out / "summary.json", doc)
    (out / "summary.csv").write_text(summary.to_csv(rows), encoding="utf-8")
    (out / "README.md").write_text(_package_readme(doc, report), encoding="utf-8")


def _package_readme(doc: Mapping[str, Any], report: checker.Report) -> str:
    lines = [f"# MLPerf inference submission package: {doc['division']}/{doc['submitter']}", "",
             f"`{doc['tarball']['file']}` (sha256 `{doc['tarball']['sha256']}`) holds the tree "
             f"`{doc['division']}/{doc['submitter']}/`; `summary.csv`/`summary.json` list one row per model and "
             "scenario.", ""]
    if report.ok:
        lines += ["The checker (rules of MLPerf's " + rules.CHECKER_VERSION + " submission checker) found nothing "
                  "to fix.", ""]
    else:
        lines += ["## NOT SUBMITTABLE", "",
                  "This package is a demo unless every rule below is fixed (e.g. MLPerf requires a 600 s minimum "
                  "duration, in the open division too):", "",
                  *(f"- {f.render()}" for f in report.findings), ""]
    if doc["notes"]:
        lines += ["## Notes", "", *(f"- {n}" for n in doc["notes"]), ""]
    lines += ["## Reproduce", "", "Each `results/<system>/<model>/<scenario>/README.md` gives the run's lock digest "
              "and the `mlbuild reproduce` command.", ""]
    return "\n".join(lines)
