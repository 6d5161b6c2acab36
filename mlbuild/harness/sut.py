"""The system under test: an ONNX Runtime CPU session fed from memory-mapped tensors, driven
by the MLPerf LoadGen (official ``mlperf_loadgen`` or the project's ``mlbuild_loadgen``; both
have the same Python API).

- QSL: ``tensors.bin`` is memory-mapped once; ``LoadSamplesToRam`` only touches the loaded
  samples' pages (one read per 4 KiB page) so the page cache holds them before timing, and
  ``UnloadSamplesFromRam`` does nothing.
- SUT: the issue callback only queues ``(ids, indices)``, cut into chunks of ``batch_size``;
  one worker thread per ONNX Runtime session (param ``sessions``, each session with its own
  ``intra_op_threads``) takes queued samples, runs them through its session in batches of
  ``batch_size`` (the model's fixed batch dimension when it has one); post-processing each
  sample into its accuracy record and completing the batch with one ``QuerySamplesComplete``
  call run on one more thread, overlapping the next ``session.run``. In an accuracy run the
  completions are released in the order the samples were issued, so the accuracy log is the
  same bytes whatever the number of sessions (decoding is per sample). When the LoadGen offers
  ``ConstructFastSUT`` the callback receives plain id/index lists, so no ``QuerySample``
  object is built per sample. Server queries that wait in the queue are batched together up
  to ``batch_size``.
- The worker records, per sample, the time its query reached the SUT and the time it was
  completed (``time.monotonic_ns``) for the report's plots.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from mlbuild.errors import InputError, RunError
from mlbuild.harness import decoders

if TYPE_CHECKING:
    import onnxruntime as ort

LOADGEN_MODULES = {"official": "mlperf_loadgen", "pyo3": "mlbuild_loadgen"}

# Random seeds per MLPerf inference round (mlcommons/inference loadgen/mlperf.conf and the
# submission checker's MODEL_CONFIG[round]["seeds"]): qsl, sample_index, schedule.
ROUND_SEEDS: dict[str, tuple[int, int, int]] = {
    "v5.1": (1780908523862526354, 14771362308971278857, 18209322760996052031),
    "v6.0": (2465351861681999779, 14276810075590677512, 3936089224930324775),
    "v6.1": (2085463073848966840, 2747215439041700203, 16159082839903944936),
}

GRAPH_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def import_loadgen(which: str) -> ModuleType:
    """The LoadGen module for param ``loadgen`` (the only place that chooses it)."""
    import importlib

    name = LOADGEN_MODULES[which]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise RunError(
            f"loadgen `{which}`: cannot import `{name}` from the run environment: {exc}",
            hints=[f"lock an environment that provides `{name}`, or set param `loadgen`"],
        ) from None


def find_model(inp: Path) -> Path:
    """The ``.onnx`` file of a ``model`` input: the file itself or a directory holding one."""
    inp = Path(inp)
    if inp.is_file():
        return inp
    if inp.is_dir():
        found = sorted(p for p in inp.rglob("*.onnx") if p.is_file())
        if len(found) == 1:
            return found[0]
        if not found:
            raise InputError(f"{inp.name}: no `.onnx` file in the model input")
        names = ", ".join(p.name for p in found)
        raise InputError(f"{inp.name}: the model input holds {len(found)} `.onnx` files ({names}); expected one")
    raise InputError(f"{inp}: model input does not exist")


def make_session(
    model: Path, *, intra_op_threads: int, inter_op_threads: int, graph_optimization_level: str
) -> ort.InferenceSession:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = inter_op_threads
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[graph_optimization_level])
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise InputError(f"{model.name}: onnxruntime cannot load the model: {exc}") from None


def make_sessions(
    model: Path, count: int, *, intra_op_threads: int, inter_op_threads: int, graph_optimization_level: str
) -> list[ort.InferenceSession]:
    """``count`` independent sessions of ``model`` (param ``sessions``), each with its own thread pools."""
    if count < 1:
        raise InputError(f"{model.name}: sessions must be >= 1, got {count}")
    return [
        make_session(model, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads,
                     graph_optimization_level=graph_optimization_level)
        for _ in range(count)
    ]


def _dims(shape: list[Any]) -> list[int | str]:
    """A model shape for JSON: fixed dims as ints, symbolic ones (names, None) as strings."""
    return [d if isinstance(d, int) else str(d) for d in shape]


@dataclass
class ModelInfo:
    input_name: str
    input_shape: list[Any]
    input_type: str
    outputs: dict[str, tuple[list[Any], str]]
    fixed_batch: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": {"name": self.input_name, "shape": _dims(self.input_shape), "type": self.input_type},
            "outputs": {k: {"shape": _dims(s), "type": t} for k, (s, t) in sorted(self.outputs.items())},
        }


def inspect_model(session: ort.InferenceSession, model_name: str) -> ModelInfo:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InputError(f"{model_name}: model has {len(inputs)} inputs, expected 1 image input")
    i = inputs[0]
    shape = list(i.shape)
    if len(shape) != 4:
        raise InputError(f"{model_name}: input `{i.name}` has rank {len(shape)}, expected 4 (NCHW)")
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    outs = {o.name: (list(o.shape), o.type) for o in session.get_outputs()}
    return ModelInfo(i.name, shape, i.type, outs, fixed)


def check_model_against_meta(info: ModelInfo, model_name: str, meta: dict[str, Any]) -> None:
    n, c, h, w = meta["shape"]
    want = [d if isinstance(d, int) else "N" for d in info.input_shape]
    if info.input_type != "tensor(float)":
        raise InputError(
            f"{model_name}: input `{info.input_name}` wants {info.input_type}, "
            "but tensors.bin holds float32 (meta.json)"
        )
    # rank 4 (inspect_model)
    for dim, have, label in zip(info.input_shape[1:], (c, h, w), ("channels", "height", "width"), strict=True):
        if isinstance(dim, int) and dim > 0 and dim != have:
            raise InputError(
                f"{model_name}: input `{info.input_name}` wants {want} float32 but tensors.bin holds "
                f"[{n},{c},{h},{w}] (meta.json): {label} {dim} != {have}"
            )


def check_outputs(info: ModelInfo, model_name: str, decoder: decoders.Decoder, size: int) -> list[str]:
    """The decoder's check of the model's outputs; returns the output names to fetch."""
    return decoder.check(info.outputs, size, model_name)


class Postprocessor:
    """Turns one batch of session outputs into per-sample float32 accuracy records, through
    the run's decoder (``harness.decoders``)."""

    def __init__(self, decoder: decoders.Decoder, meta: dict[str, Any], output_names: list[str]) -> None:
        self.decoder = decoder
        self.output_names = list(output_names)
        self.geometry = decoders.geometries(meta)

    def __call__(self, outputs: list[Any], indices: list[int]) -> list[Any]:
        dec = self.decoder
        if not dec.batched and len(indices) != 1:
            raise RunError(f"decoder `{dec.name}`: outputs carry no batch dimension; batch_size must be 1")
        recs = []
        for j, idx in enumerate(indices):
            sample = [o[j] for o in outputs] if dec.batched else list(outputs)
            g = self.geometry[idx]
            recs.append(decoders.records(dec.decode(sample, g), idx, g))
        return recs


@dataclass
class Timeline:
    """Per-sample SUT-side times (monotonic ns): when the query arrived, when it completed."""

    issued: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)


class Harness:
    """QSL + SUT around one or more sessions; ``run(settings, outdir)`` runs one LoadGen test.

    ``session``: one session, or a list of them (one worker thread each, fed from one queue)."""

    def __init__(
        self,
        lg: ModuleType,
        session: ort.InferenceSession | Sequence[ort.InferenceSession],
        info: ModelInfo,
        tensors: Path,
        meta: dict[str, Any],
        post: Postprocessor,
        batch_size: int,
        perf_count: int,
        log: Callable[[str], None],
    ) -> None:
        import numpy as np

        self.lg = lg
        self.sessions: list[ort.InferenceSession] = list(session) if isinstance(session, (list, tuple)) else [session]
        if not self.sessions:
            raise RunError("the SUT needs at least one ONNX Runtime session")
        self.session = self.sessions[0]
        self.info = info
        self.meta = meta
        self.post = post
        self.batch_size = batch_size
        self.perf_count = perf_count
        self.log = log
        self.n = int(meta["shape"][0])
        self.data = np.memmap(tensors, dtype=np.float32, mode="r", shape=tuple(meta["shape"]))
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.timeline = Timeline()
        self.failure: BaseException | None = None
        self.completed = 0
        self._np = np
        self._seq = 0  # samples issued so far in this test (issue order, for ordered completion)
        self.ordered = False  # release completions in issue order (accuracy runs)

    # --- QSL -------------------------------------------------------------------------------
    def load(self, indices: Sequence[int]) -> None:
        page = 4096 // 4
        for i in indices:
            flat = self.data[i].reshape(-1)
            # one read per page pulls the sample into the page cache
            float(flat[::page].sum())

    def unload(self, indices: Sequence[int]) -> None:
        return None

    # --- SUT -------------------------------------------------------------------------------
    def _enqueue(self, ids: list[int], idx: list[int]) -> None:
        # Cut a large query (Offline sends every sample in one) into batch-sized chunks, so that
        # several session workers share it.
        t = time.monotonic_ns()
        step = max(1, self.batch_size)
        seq = self._seq
        self._seq += len(ids)
        for k in range(0, len(ids), step):
            self.queue.put((t, ids[k : k + step], idx[k : k + step], seq + k))

    def issue(self, query_samples: Sequence[Any]) -> None:
        self._enqueue([q.id for q in query_samples], [q.index for q in query_samples])

    def issue_fast(self, ids: Sequence[int], idx: Sequence[int]) -> None:
        self._enqueue(list(ids), list(idx))

    def flush(self) -> None:
        return None

    def _worker(self, session: ort.InferenceSession) -> None:
        bs = self.batch_size
        run = session.run
        names = self.post.output_names
        feed_name = self.info.input_name
        np = self._np
        pending: list[tuple[int, int, int, int]] = []  # (t_issue, id, index, seq)

        def take(item: tuple[int, list[int], list[int], int]) -> None:
            t, ids, idx, seq = item
            pending.extend((t, i, x, seq + k) for k, (i, x) in enumerate(zip(ids, idx, strict=True)))

        while True:
            if not pending:
                item = self.queue.get()
                if item is None:
                    return
                take(item)
            # batch what is already waiting (Server queries arrive one by one)
            while len(pending) < bs:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.queue.put(None)
                    break
                take(item)
            batch, pending = pending[:bs], pending[bs:]
            indices = [b[2] for b in batch]
            try:
                x = np.asarray(self.data[indices[0] : indices[0] + 1]) if len(indices) == 1 else self.data[indices]
                if self.info.fixed_batch and x.shape[0] < self.info.fixed_batch:
                    padded = np.zeros((self.info.fixed_batch, *x.shape[1:]), dtype=np.float32)
                    padded[: x.shape[0]] = x
                    x = padded
                outputs = run(names, {feed_name: x})
            except BaseException as exc:  # keep the LoadGen from waiting forever
                if self.failure is None:
                    self.failure = exc
                outputs = None
            # Post-processing and completion overlap the next session.run (which releases the GIL).
            self.post_queue.put((batch, indices, outputs))

    def _completer(self) -> None:
        lg = self.lg
        np = self._np
        held: dict[int, tuple[int, int, Any]] = {}  # ordered mode: seq -> (t_issue, id, record)
        next_seq = 0
        while True:
            item = self.post_queue.get()
            if item is None:
                return
            batch, indices, outputs = item
            recs = None
            if outputs is not None:
                try:
                    recs = self.post(outputs, indices)
                except BaseException as exc:
                    if self.failure is None:
                        self.failure = exc
            if recs is None:
                recs = [np.zeros((0, 7), np.float32) for _ in batch]
            done: list[tuple[int, int, Any]] = []
            if self.ordered:
                for (t, qid, _, seq), rec in zip(batch, recs, strict=True):
                    held[seq] = (t, qid, rec)
                while next_seq in held:
                    done.append(held.pop(next_seq))
                    next_seq += 1
                if not done:
                    continue
            else:
                done = [(t, qid, rec) for (t, qid, _, _), rec in zip(batch, recs, strict=True)]
            responses = []
            for _, qid, rec in done:  # one record array per sample
                ptr, _ = rec.__array_interface__["data"]
                responses.append(lg.QuerySampleResponse(qid, ptr if rec.size else 0, rec.nbytes))
            lg.QuerySamplesComplete(responses)
            now = time.monotonic_ns()
            tl = self.timeline
            for t, _, _ in done:
                tl.issued.append(t)
                tl.completed.append(now)
            self.completed += len(done)

    def warmup(self, runs: int = 2) -> None:
        np = self._np
        shape = [self.info.fixed_batch or self.batch_size, *self.meta["shape"][1:]]
        x = np.zeros(shape, dtype=np.float32)
        for session in self.sessions:
            for _ in range(runs):
                session.run(self.post.output_names, {self.info.input_name: x})

    def run(self, settings: Any, outdir: Path, *, ordered: bool = False) -> Timeline:
        """One LoadGen test. ``ordered``: complete samples in the order they were issued (an
        accuracy run: the accuracy log's bytes then do not depend on the number of sessions)."""
        lg = self.lg
        outdir.mkdir(parents=True, exist_ok=True)
        self.timeline = Timeline()
        self.failure = None
        self.ordered = ordered
        self._seq = 0
        self.post_queue: queue.SimpleQueue = queue.SimpleQueue()
        workers = [
            threading.Thread(target=self._worker, args=(sess,), name=f"mlbuild-sut-{k}", daemon=True)
            for k, sess in enumerate(self.sessions)
        ]
        completer = threading.Thread(target=self._completer, name="mlbuild-sut-complete", daemon=True)
        for w in workers:
            w.start()
        completer.start()
        fast = hasattr(lg, "ConstructFastSUT")
        sut = lg.ConstructFastSUT(self.issue_fast, self.flush) if fast else lg.ConstructSUT(self.issue, self.flush)
        qsl = lg.ConstructQSL(self.n, self.perf_count, self.load, self.unload)
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(outdir)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False
        cwd = os.getcwd()
        try:
            # The LoadGen looks for `audit.config` in the working directory; run where none is.
            os.chdir(outdir)
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        finally:
            os.chdir(cwd)
            for _ in workers:
                self.queue.put(None)
            for w in workers:
                w.join()
            self.post_queue.put(None)
            completer.join()
            (lg.DestroyFastSUT if fast else lg.DestroySUT)(sut)
            lg.DestroyQSL(qsl)
            self.queue = queue.SimpleQueue()
        if self.failure is not None:
            raise RunError(f"the SUT failed during the LoadGen test: {self.failure!r}") from None
        trace = outdir / "mlperf_log_trace.json"
        if trace.is_file() and trace.stat().st_size == 0:
            trace.unlink()
        return self.timeline
