"""The body of the ``mlperf-run`` builder: check inputs, run the LoadGen, score, report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlbuild.errors import InputError, RunError
from mlbuild.harness import categories, coco, decoders, images, logs, provenance, runparams, sut

if TYPE_CHECKING:
    from types import ModuleType

    from mlbuild.builders import BuildContext

RESULT_SCHEMA = 1
# the LoadGen logs of an accuracy part that a submission needs; kept as side outputs (ctx.side)
ACCURACY_SIDE_LOGS = ("mlperf_log_detail.txt", "mlperf_log_summary.txt")


def check_inputs(*, meta: dict[str, Any], annotations: dict[str, Any]) -> None:
    """The preprocessed samples must be a prefix of the annotations' images, each with the
    geometry its decoding needs."""
    n = meta["shape"][0]
    imgs = annotations["images"]
    if n > len(imgs):
        raise InputError(
            f"meta.json: {n} samples but annotations.json lists only {len(imgs)} images (sample count mismatch)"
        )
    for i, s in enumerate(meta["samples"]):
        a = imgs[i]
        if s.get("image_id") != a["id"] or s.get("file_name") != a["file_name"]:
            raise InputError(
                f"meta.json: sample {i} is image {s.get('image_id')!r} `{s.get('file_name')}`, but "
                f"annotations.json has image {a['id']!r} `{a['file_name']}` at that index"
            )
        if (s.get("width"), s.get("height")) != (a["width"], a["height"]):
            raise InputError(
                f"meta.json: sample {i} is {s.get('width')}x{s.get('height')}, annotations.json says "
                f"{a['width']}x{a['height']}"
            )
    decoders.geometries(meta)  # each sample's scale/offset, checked
    h, w = meta["shape"][2:]
    if h != w:
        raise InputError(f"meta.json: tensors are {h}x{w}; the detection models take a square input")


def _settings(lg: ModuleType, p: dict[str, Any], *, accuracy: bool, n: int) -> Any:
    s = lg.TestSettings()
    # conf_type 0: the LoadGen's embedded mlperf.conf only (no user.conf, so the
    # process-global "multiple conf files" rule never fires); the path is not read.
    mlperf_model = decoders.DECODERS[decoders.resolve_name(p["decoder"], p["model_kind"])].mlperf_model
    rc = s.FromConfig("mlperf.conf", mlperf_model, p["scenario"], 0)
    if rc != 0:
        raise RunError(f"the LoadGen could not apply its embedded mlperf.conf (error {rc})")
    s.scenario = getattr(lg.TestScenario, p["scenario"])
    s.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    qsl_seed, sample_seed, schedule_seed = sut.ROUND_SEEDS[p["round"]]
    s.qsl_rng_seed = qsl_seed
    s.sample_index_rng_seed = sample_seed
    s.schedule_rng_seed = schedule_seed
    if p["performance_sample_count"] > 0:
        s.performance_sample_count_override = min(p["performance_sample_count"], n)
    elif int(s.performance_sample_count_override) > n:  # mlperf.conf's count (yolo: 64) on a smaller dataset
        s.performance_sample_count_override = n
    if p["min_duration_ms"] >= 0:
        s.min_duration_ms = p["min_duration_ms"]
    if p["max_duration_ms"] > 0:
        s.max_duration_ms = p["max_duration_ms"]
    if p["min_query_count"] >= 0:
        s.min_query_count = p["min_query_count"]
    if p["max_query_count"] > 0:
        s.max_query_count = p["max_query_count"]
    qps = p["target_qps"]
    if qps > 0:
        scen = p["scenario"]
        if scen == "Offline":
            s.offline_expected_qps = qps
        elif scen == "Server":
            s.server_target_qps = qps
        elif scen == "SingleStream":
            s.single_stream_expected_latency_ns = max(1, int(1e9 / qps))
        else:
            s.multi_stream_expected_latency_ns = max(1, int(1e9 / qps))
    if p["target_latency_ms"] > 0:
        s.server_target_latency_ns = int(p["target_latency_ms"] * 1e6)
    if p["samples_per_query"] > 0:
        s.multi_stream_samples_per_query = p["samples_per_query"]
    return s


def run(ctx: BuildContext, p: dict[str, Any], version: int) -> None:
    log: Callable[[str], None] = ctx.log
    out = Path(ctx.out)
    model_path = sut.find_model(Path(ctx.inputs["model"]))
    meta, tensors = images.read_meta(Path(ctx.inputs["preprocessed"]))
    annotations = coco.load_annotations(Path(ctx.inputs["annotations"]))
    kind = decoders.resolve_name(p["decoder"], p["model_kind"])
    check_inputs(meta=meta, annotations=annotations)
    n = int(meta["shape"][0])
    # what is scored, checked before any inference: the ground truth's categories and the label map
    label_map = categories.resolve(p["label_map"], categories.model_labels(kind), annotations["categories"],
                                   model_name=model_path.name)
    for w in label_map.warnings:
        log(f"warning: {w}")

    sessions = sut.make_sessions(
        model_path,
        p["sessions"],
        intra_op_threads=p["intra_op_threads"],
        inter_op_threads=p["inter_op_threads"],
        graph_optimization_level=p["graph_optimization_level"],
    )
    session = sessions[0]
    info = sut.inspect_model(session, model_path.name)
    sut.check_model_against_meta(info, model_path.name, meta)
    threshold = p["score_threshold"]
    if threshold < 0:
        threshold = decoders.DECODERS[kind].default_score_threshold
    decoder = decoders.make(kind, score_threshold=threshold, nms_iou=p["nms_iou"], max_detections=p["max_detections"])
    output_names = sut.check_outputs(info, model_path.name, decoder, int(meta["shape"][2]))
    if info.fixed_batch is not None:
        batch = info.fixed_batch
        if p["batch_size"] and p["batch_size"] != batch:
            log(f"param batch_size={p['batch_size']} ignored: {model_path.name} has a fixed batch of {batch}")
    else:
        batch = p["batch_size"] or 1
    if not decoder.batched and batch != 1:
        raise InputError(
            f"{model_path.name}: decoder `{kind}`'s outputs carry no batch dimension; batch_size must be 1, got {batch}"
        )
    post = sut.Postprocessor(decoder, meta, output_names)
    lg = sut.import_loadgen(p["loadgen"])
    perf_count = min(p["performance_sample_count"], n) if p["performance_sample_count"] > 0 else n
    harness = sut.Harness(lg, sessions, info, tensors, meta, post, batch, perf_count, log)
    harness.warmup()

    # A part of a split run (see graph.split_runs) is told so by its derivation's fingerprint:
    # the accuracy part keeps only what is a pure function of its identity.
    part = str(ctx.fingerprint.get("part") or "")
    phases = ["accuracy", "performance"] if p["mode"] == "both" else [p["mode"]]
    dirs = {ph: (out / ph if p["mode"] == "both" else out) for ph in phases}
    if part == "accuracy":
        # the LoadGen's detail/summary logs carry wall-clock times: they stay outside the entry
        dirs["accuracy"] = Path(ctx.tmp) / "loadgen-accuracy"
        dirs["accuracy"].mkdir(parents=True, exist_ok=True)
    timelines: dict[str, Any] = {}
    details: dict[str, dict[str, Any]] = {}
    errors: dict[str, list[str]] = {}
    for ph in phases:
        settings = _settings(lg, p, accuracy=(ph == "accuracy"), n=n)
        log(f"{ph} run: {p['scenario']}, {n} samples, batch {batch}, {len(sessions)} session(s), "
            f"loadgen `{p['loadgen']}`")
        timelines[ph] = harness.run(settings, dirs[ph], ordered=(ph == "accuracy"))
        entries = logs.parse_detail(dirs[ph] / "mlperf_log_detail.txt")
        details[ph] = logs.detail_values(entries)
        errors[ph] = logs.detail_errors(entries)
        for e in errors[ph]:
            log(f"loadgen error in the {ph} run: {e}")
    if part == "accuracy":
        import shutil

        shutil.copyfile(dirs["accuracy"] / "mlperf_log_accuracy.json", out / "mlperf_log_accuracy.json")
        if ctx.side is not None:  # beside the entry, never in it: a submission packages them
            for name in ACCURACY_SIDE_LOGS:
                if (dirs["accuracy"] / name).is_file():
                    shutil.copyfile(dirs["accuracy"] / name, Path(ctx.side) / name)
        dirs["accuracy"] = out
        timelines = {}

    result: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "builder": {"name": "mlperf-run", "version": version},
        "params": dict(runparams.for_kind(p), score_threshold_effective=threshold, batch_size_effective=batch),
        "inputs": {k: Path(v).name for k, v in sorted(ctx.inputs.items())},
        # the run's identity: its store entry, named by the digest of its derivation
        "run": {"entry": ctx.entry, "digest": ctx.entry.split("-", 1)[0]} if ctx.entry else {},
        "model": dict(info.as_dict(), file=model_path.name),
        "dataset": {"samples": n, "annotated_images": len(annotations["images"]), "shape": meta["shape"]},
        "metrics": {"mAP": None, "samples_per_second": None, "validity": None},
        "categories": label_map.describe(),
        "loadgen_errors": errors,
        "logs": {ph: str(dirs[ph].relative_to(out)) if dirs[ph] != out else "." for ph in phases},
    }
    if part:
        result["part"] = part
    if "accuracy" in phases:
        acc_log = dirs["accuracy"] / "mlperf_log_accuracy.json"
        acc = sut_accuracy(acc_log, annotations, n, label_map)
        if acc["samples_logged"] != n:
            raise RunError(
                f"mlperf_log_accuracy.json: {acc['samples_logged']} of {n} samples were logged by the accuracy run"
            )
        from mlbuild.harness import accuracy as haccuracy

        text = haccuracy.accuracy_text(acc)
        (out / "accuracy.txt").write_text(text, encoding="utf-8")
        if dirs["accuracy"] != out:
            (dirs["accuracy"] / "accuracy.txt").write_text(text, encoding="utf-8")
        result["accuracy"] = {k: v for k, v in acc.items() if k != "cocoeval_summary"}
        result["metrics"]["mAP"] = acc["mAP"]
        log(f"mAP={acc['mAP']:.3f}% over {n} samples ({acc['detections']} detections)")
        dropped = acc["dropped"]
        if dropped["detections"]:
            warning = (f"{dropped['detections']} detections of {len(dropped['labels'])} model label(s) the ground "
                       f"truth does not score were dropped (labels {', '.join(list(dropped['labels'])[:10])})")
            result["warnings"] = [warning]
            log(f"warning: {warning}")
    if "performance" in phases:
        summary = logs.parse_summary(dirs["performance"] / "mlperf_log_summary.txt")
        perf = logs.performance_metrics(summary, details["performance"])
        result["performance"] = perf
        result["metrics"]["samples_per_second"] = perf.get("samples_per_second")
        result["metrics"]["validity"] = perf.get("validity")
        result["metrics"]["latency_ns"] = perf.get("latency_ns")
        result["metrics"]["scenario"] = perf.get("scenario")
        log(
            f"performance: {perf.get('samples_per_second')} samples/s, {perf.get('validity')} "
            f"({p['scenario']})"
        )
        if part == "performance":
            tl = timelines["performance"]
            coco.dump_json(dirs["performance"] / provenance.TIMELINE_FILE,
                           {"issued": list(tl.issued), "completed": list(tl.completed)})
    first = details[phases[0]]
    system_info = _system(lg, first)
    result["system"] = provenance.pure_system(system_info) if part == "accuracy" else system_info
    result["provenance"] = provenance.describe(
        fingerprint=ctx.fingerprint,
        inputs={k: Path(v).name for k, v in ctx.inputs.items()},
        input_hashes=ctx.input_hashes,
        loadgen_module=lg,
        accuracy_log=(dirs["accuracy"] / "mlperf_log_accuracy.json") if "accuracy" in phases else None,
        out=out,
    )
    coco.dump_json(out / "result.json", result, indent=2)
    from mlbuild.harness import report

    (out / "report.html").write_text(report.render(result, timelines), encoding="utf-8")


def sut_accuracy(
    acc_log: Path, annotations: dict[str, Any], n: int, label_map: categories.LabelMap | None = None
) -> dict[str, Any]:
    from mlbuild.harness import accuracy as haccuracy

    return haccuracy.evaluate(acc_log, annotations, n, label_map)


def _system(lg: ModuleType, detail: dict[str, Any]) -> dict[str, Any]:
    from mlbuild.harness import system

    return system.describe(lg, detail)
