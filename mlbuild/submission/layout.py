"""The ``<division>/<submitter>/`` tree of an MLPerf submission, from assembled run results.

Standard library only (it runs in the ``mlperf-submission`` builder).  Everything written is a
function of the inputs: sorted JSON, no clock, no host name, no absolute path.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlbuild.errors import InputError
from mlbuild.submission import rules

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
LOADGEN_LOGS = ("mlperf_log_detail.txt", "mlperf_log_summary.txt")
RESULT_COPY = "mlbuild-result.json"  # the run's own result.json: what `mlbuild reproduce` reads


@dataclass(frozen=True)
class Result:
    """One assembled run result (an ``mlperf-result`` entry) given to the package."""

    label: str  # the input's name in the package derivation (`result-1`...)
    path: Path
    doc: Mapping[str, Any]

    @property
    def params(self) -> Mapping[str, Any]:
        return self.doc.get("params") or {}

    @property
    def model_kind(self) -> str:
        return model_kind_of(self.params)

    @property
    def scenario(self) -> str:
        return str(self.params.get("scenario"))

    @property
    def model_dir(self) -> str:
        return rules.MODELS[self.model_kind][0]

    @property
    def benchmark(self) -> str:
        return rules.MODELS[self.model_kind][1]

    def part_dir(self, part: str) -> Path | None:
        """Where the result keeps a part's files (None: the run had no such part)."""
        logs = self.doc.get("logs") or {}
        where = logs.get(part)
        if not isinstance(where, str):
            return None
        return self.path if where == "." else self.path / where


@dataclass
class Tree:
    """What :func:`write_tree` laid out (for the summary and the checker's notes)."""

    root: Path
    division: str
    submitter: str
    system: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def model_kind_of(params: Mapping[str, Any]) -> str:
    """A run's model family as ``rules.MODELS`` names it: its ``decoder`` (else the older ``model_kind``;
    ``boxes-scores-labels`` is RetinaNet's)."""
    name = str(params.get("decoder") or params.get("model_kind") or "yolox")
    return {"boxes-scores-labels": "retinanet"}.get(name, name)


def load_result(label: str, path: Path) -> Result:
    f = path / "result.json"
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path.name}/result.json: not a readable run result ({e})",
                         hints=["give the entries `mlbuild realize RUN_TARGET` prints"]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) or "part" in doc:
        raise InputError(f"{path.name}/result.json: expected an assembled run result (an `mlperf-result` entry), "
                         f"found {'a run part' if isinstance(doc, dict) and 'part' in doc else 'something else'}",
                         hints=["give the run target's entry, not its `-accuracy`/`-performance` part"])
    kind = model_kind_of(doc["params"])
    if kind not in rules.MODELS:
        raise InputError(f"{path.name}/result.json: decoder {kind!r} has no MLPerf benchmark; expected one of "
                         f"{', '.join(sorted(rules.MODELS))}")
    return Result(label, path, doc)


def truncate_accuracy_log(data: bytes) -> bytes:
    """What MLPerf's ``truncate_accuracy_log.py`` leaves of an accuracy log: a log shorter than 4096
    bytes unchanged, else its first 4096 characters, ``"\\n\\n...\\n\\n"`` and its last 4096 bytes."""
    n = rules.TRUNCATE_VIEWABLE
    if len(data) < n:
        return data
    return data[:n] + b"\n\n...\n\n" + data[len(data) - n:]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dump_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def lock_digest(result: Mapping[str, Any]) -> str | None:
    """sha256 of the canonical JSON of the run's closure lock (result.json ``provenance.lock``)."""
    lock = (result.get("provenance") or {}).get("lock")
    if not isinstance(lock, dict):
        return None
    canon = json.dumps(lock, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return _sha256(canon)


# ----------------------------------------------------------------------------- systems/<system>.json


def _machine(r: Result) -> dict[str, Any]:
    m = (r.doc.get("provenance") or {}).get("machine")
    return dict(m) if isinstance(m, dict) else {}


def default_system_name(results: Sequence[Result]) -> str:
    m = next((_machine(r) for r in results if _machine(r)), {})
    cpu = re.sub(r"[^A-Za-z0-9]+", "_", str(m.get("cpu_model") or "cpu")).strip("_")[:40] or "cpu"
    return f"{cpu}-{m.get('cpu_cores', 0)}c"


def system_description(results: Sequence[Result], *, division: str, submitter: str, system_name: str,
                       status: str, system_type: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The system JSON: what the results recorded about the machine their measurements ran on, then
    ``overrides`` (the user's TOML) for what mlbuild cannot know (storage, networking, cooling...)."""
    machines = {json.dumps(_machine(r), sort_keys=True) for r in results if _machine(r)}
    if len(machines) > 1:
        raise InputError(f"the results were measured on {len(machines)} different machines; a package describes "
                         "one system", hints=["package the results of each machine separately"])
    m = next((_machine(r) for r in results if _machine(r)), {})
    sysinfo: dict[str, Any] = next((dict(r.doc["system"]) for r in results if isinstance(r.doc.get("system"), dict)),
                                   {})
    libs = sysinfo.get("libraries") or {}
    ort = libs.get("onnxruntime")
    backends = sorted({str(r.params.get("loadgen")) for r in results})
    lg_version = next((str(lg.get("loadgen_version")) for r in results
                       if isinstance(lg := (r.doc.get("system") or {}).get("loadgen"), dict)
                       and lg.get("loadgen_version")), "")
    other = [f"Python {sysinfo.get('python')}" if sysinfo.get("python") else "",
             *(f"{k} {v}" for k, v in sorted(libs.items()) if k != "onnxruntime"),
             f"MLPerf LoadGen {lg_version} ({', '.join(backends)} binding)" if lg_version else "",
             "mlbuild " + str(((results[0].doc.get("provenance") or {}).get("mlbuild") or {}).get("version", ""))]
    memory = m.get("memory_mib")
    doc: dict[str, Any] = {k: "" for k in rules.SYSTEM_REQUIRED_FIELDS}
    doc.update({
        "division": division,
        "submitter": submitter,
        "status": status,
        "system_name": system_name,
        "system_type": system_type,
        "number_of_nodes": 1,
        "host_processor_model_name": m.get("cpu_model") or "",
        # mlbuild records logical CPUs, not sockets x physical cores: the TOML can say better
        "host_processor_core_count": m.get("cpu_cores") or "",
        "host_memory_capacity": f"{round(memory / 1024)} GB" if isinstance(memory, (int, float)) else "",
        "accelerators_per_node": 0,
        "accelerator_model_name": "N/A",
        "accelerator_memory_capacity": "N/A",
        "accelerator_frequency": "N/A",
        "accelerator_host_interconnect": "N/A",
        "accelerator_interconnect": "N/A",
        "accelerator_interconnect_topology": "N/A",
        "accelerator_memory_configuration": "N/A",
        "accelerator_on-chip_memories": "N/A",
        "framework": f"ONNX Runtime {ort}" if ort else "ONNX Runtime",
        "operating_system": " ".join(x for x in (m.get("os"), f"(kernel {m['kernel']})" if m.get("kernel") else "")
                                     if x),
        "other_software_stack": ", ".join(x for x in other if x),
        "sw_notes": "built and run by mlbuild from a lockfile; host_processor_core_count counts logical CPUs",
        "hw_notes": "",
    })
    for k, v in sorted(overrides.items()):
        doc[str(k)] = v
    return doc


# ----------------------------------------------------------------------------- one result


def _user_conf(r: Result) -> str:
    """The LoadGen settings the run changed from mlperf.conf, in user.conf syntax (`model.Scenario.key = v`)."""
    p = r.params
    prefix = f"{rules.MLPERF_CONF_NAME.get(r.model_kind, r.model_kind)}.{r.scenario}"
    lines = [f"# the settings of run {((r.doc.get('run') or {}).get('entry') or r.path.name)} that differ from the",
             "# LoadGen's embedded mlperf.conf (mlbuild sets the round's seeds explicitly)"]
    seeds = rules.ROUND_SEEDS.get(str(p.get("round")))
    if seeds:
        for key, value in zip(("qsl_rng_seed", "sample_index_rng_seed", "schedule_rng_seed"), seeds, strict=True):
            lines.append(f"*.*.{key} = {value}")
    conf = {
        "performance_sample_count_override": p.get("performance_sample_count") or None,
        "min_duration": p.get("min_duration_ms") if isinstance(p.get("min_duration_ms"), int)
        and p["min_duration_ms"] >= 0 else None,
        "max_duration": p.get("max_duration_ms") or None,
        "min_query_count": p.get("min_query_count") if isinstance(p.get("min_query_count"), int)
        and p["min_query_count"] >= 0 else None,
        "max_query_count": p.get("max_query_count") or None,
        "target_qps": p.get("target_qps") or None,
        "target_latency": p.get("target_latency_ms") or None,
        "samples_per_query": p.get("samples_per_query") or None,
    }
    lines += [f"{prefix}.{k} = {v}" for k, v in conf.items() if v is not None]
    return "\n".join(lines) + "\n"


def _measurements(r: Result) -> dict[str, Any]:
    model = r.doc.get("model") or {}
    dtype = str(((model.get("input") or {}).get("type")) or "")
    data_type = {"tensor(float)": "fp32", "tensor(float16)": "fp16", "tensor(uint8)": "uint8",
                 "tensor(int8)": "int8"}.get(dtype, dtype or "unknown")
    pre = {"yolox": "letterbox to the model's square input, BGR, 0-255 (mlbuild `letterbox`)",
           "retinanet": "resize to 800x800, RGB, normalised (mlbuild `retinanet-preprocess`)"}
    return {
        "input_data_types": data_type,
        "retraining": "no",
        "starting_weights_filename": str(model.get("file") or ""),
        "weight_data_types": data_type,
        "weight_transformations": "none (the ONNX file as fetched, pinned by sha256 in the lock)",
        "preprocessing": pre.get(r.model_kind, ""),
    }


def readme(r: Result, reasons: Sequence[str]) -> str:
    run = (r.doc.get("run") or {}).get("entry") or r.path.name
    digest = lock_digest(r.doc)
    metrics = r.doc.get("metrics") or {}
    lines = [
        f"# {r.model_dir} {r.scenario} (MLPerf benchmark `{r.benchmark}`)",
        "",
        f"Run `{run}` by mlbuild ({r.params.get('loadgen')} LoadGen binding, round {r.params.get('round')} seeds).",
        f"mAP: {metrics.get('mAP')}%; samples/s: {metrics.get('samples_per_second')}; "
        f"validity: {metrics.get('validity')}.",
        "",
        "## How to reproduce",
        "",
        f"The run's closure lock digest is `sha256:{digest}` (sha256 of the canonical JSON of "
        "`provenance.lock` in `mlbuild-result.json`: every locked artifact the run used).",
        "From a checkout of mlbuild whose `lock/mlbuild.lock` pins those artifacts:",
        "",
        "```bash",
        f"mlbuild reproduce {RESULT_COPY} --lock lock/mlbuild.lock",
        "```",
        "",
        "It rebuilds every input, reruns the benchmark and compares the accuracy log record by record.",
        "",
    ]
    if reasons:
        lines += ["## Not submittable", "", *(f"- {x}" for x in reasons), ""]
    return "\n".join(lines)


def write_result(r: Result, scen: Path, reasons: Sequence[str], notes: list[str]) -> None:
    """``results/<system>/<model>/<scenario>/``: performance/run_1, accuracy, measurements.json, user.conf,
    README.md and the run's own result.json."""
    perf = r.part_dir("performance")
    if perf is not None:
        run1 = scen / "performance" / "run_1"
        run1.mkdir(parents=True, exist_ok=True)
        for name in LOADGEN_LOGS:
            if (perf / name).is_file():
                shutil.copyfile(perf / name, run1 / name)
    acc = r.part_dir("accuracy")
    if acc is not None:
        adir = scen / "accuracy"
        adir.mkdir(parents=True, exist_ok=True)
        for name in LOADGEN_LOGS:
            if (acc / name).is_file():
                shutil.copyfile(acc / name, adir / name)
        missing = [n for n in LOADGEN_LOGS if not (acc / n).is_file()]
        if missing:
            notes.append(f"{r.path.name}: its accuracy part's LoadGen logs ({', '.join(missing)}) were not kept "
                         "(realized before mlbuild kept them); rerun the accuracy part to get them")
        log = acc / "mlperf_log_accuracy.json"
        if log.is_file():
            full = log.read_bytes()
            (adir / "mlperf_log_accuracy.json").write_bytes(truncate_accuracy_log(full))
            text = (acc / "accuracy.txt").read_text(encoding="utf-8") if (acc / "accuracy.txt").is_file() else ""
            if text and not text.endswith("\n"):
                text += "\n"
            (adir / "accuracy.txt").write_text(text + f"hash={_sha256(full)}\n", encoding="utf-8")
    scen.mkdir(parents=True, exist_ok=True)
    dump_json(scen / "measurements.json", _measurements(r))
    (scen / "user.conf").write_text(_user_conf(r), encoding="utf-8")
    (scen / "README.md").write_text(readme(r, reasons), encoding="utf-8")
    shutil.copyfile(r.path / "result.json", scen / RESULT_COPY)


def check_names(*, division: str, submitter: str, system: str) -> None:
    if division not in rules.DIVISIONS:
        raise InputError(f"division {division!r}: expected one of {', '.join(rules.DIVISIONS)}")
    for what, value in (("submitter", submitter), ("system name", system)):
        if not SAFE_NAME.match(value):
            raise InputError(f"{what} {value!r}: expected 1-64 letters, digits or `_.+-` (it names a directory)",
                             hints=[f"pass another --{what.replace(' ', '-')}"])


def check_unique(results: Sequence[Result]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for r in results:
        key = (r.model_dir, r.scenario)
        if key in seen:
            raise InputError(f"two results for {key[0]}/{key[1]}: {seen[key]} and {r.path.name}",
                             hints=["a package holds one result per model and scenario"])
        seen[key] = r.path.name


def model_mapping(results: Sequence[Result]) -> dict[str, str]:
    """model_mapping.json: the open division's custom model names -> the benchmark they run."""
    return {r.model_dir: r.benchmark for r in sorted(results, key=lambda x: x.model_dir)
            if r.model_dir != r.benchmark}
