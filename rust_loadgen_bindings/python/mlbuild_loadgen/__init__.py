"""mlbuild_loadgen: the official MLPerf LoadGen C++ core, compiled unmodified
from the mlcommons-loadgen sdist, bound to Python with pyo3.

A drop-in for the official module: ``import mlbuild_loadgen as lg`` instead of
``import mlperf_loadgen as lg``. Extras (not in the official module):

* ``ConstructSUTBatched(issue_arrays_cb, flush_cb)``: one callback per
  IssueQuery with ``(ids, indices)`` as :class:`U64Array` (buffer protocol,
  zero-copy into numpy). The callback may also complete the query by its
  return value: ``True`` (empty responses) or a bytes-like object of n*k
  bytes (sample i gets bytes [i*k, (i+1)*k)).
* ``ConstructQueueSUT()`` + ``PollQueries(sut, max_samples, timeout_s)``:
  pull mode, the issue thread never takes the GIL.
* ``QuerySamplesCompleteArrays(ids, data_ptrs=None, sizes=None, ...)`` and
  ``QuerySamplesCompleteBuffer(ids, buffer, item_size)``: batch completion
  without a Python object per sample.
* ``StartTest(..., stall_timeout_s=...)`` / ``set_stall_timeout()``; callback
  exceptions surface as :class:`SutCallbackError` (``__cause__`` = original).
* ``build_info()``, ``embedded_mlperf_conf()``, ``check_config()``,
  ``ROUND_SEEDS`` / ``apply_round_seeds()``.
"""

from . import _lg
from ._lg import *  # noqa: F401,F403
from ._lg import (  # noqa: F401
    _completion_stats,
    ConfigError,
    LoadgenConfigWarning,
    LoadgenError,
    StallError,
    SutCallbackError,
    TestSettings,
    UnknownResponseIdError,
    __version__,
    build_info,
    check_config,
    embedded_mlperf_conf,
)

#: The three RNG seeds (qsl, sample_index, schedule) per submission round, as
#: the submission checker's ``MODEL_CONFIG[version]["seeds"]`` expects them.
#: mlperf.conf of LoadGen 6.0.17 carries the v6.1 seeds.
ROUND_SEEDS: dict[str, tuple[int, int, int]] = {
    "v5.1": (1780908523862526354, 14771362308971278857, 18209322760996052031),
    "v6.0": (2465351861681999779, 14276810075590677512, 3936089224930324775),
    "v6.1": (2085463073848966840, 2747215439041700203, 16159082839903944936),
}


def apply_round_seeds(settings: TestSettings, round: str) -> TestSettings:
    """Sets qsl/sample_index/schedule seeds of ``settings`` to those of a
    submission round (call after FromConfig, which loads mlperf.conf's)."""
    try:
        qsl, sample_index, schedule = ROUND_SEEDS[round]
    except KeyError:
        raise ValueError(f"unknown round {round!r}; known: {sorted(ROUND_SEEDS)}") from None
    settings.qsl_rng_seed = qsl
    settings.sample_index_rng_seed = sample_index
    settings.schedule_rng_seed = schedule
    return settings


class VectorQuerySample(list):
    """List of QuerySample (the official module's pybind ``bind_vector``)."""


class VectorQuerySampleResponse(list):
    """List of QuerySampleResponse (the official module's pybind ``bind_vector``)."""


__all__ = [n for n in dir(_lg) if not n.startswith("_")] + [
    "ROUND_SEEDS",
    "apply_round_seeds",
    "VectorQuerySample",
    "VectorQuerySampleResponse",
    "__version__",
]
