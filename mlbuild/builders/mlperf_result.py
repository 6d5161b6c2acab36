"""The output of a benchmark run, assembled from its accuracy and performance parts.

A run target (``[run.NAME]``) is split by the graph (``graph.split_runs``) into an accuracy
derivation and a performance measurement, both ``mlperf-run`` builds; this cheap,
standard-library-only builder gives the target the layout users know:

- mode ``both``: ``accuracy/`` (``mlperf_log_accuracy.json``, ``accuracy.txt``),
  ``performance/`` (the LoadGen's performance logs), ``accuracy.txt``, ``result.json``,
  ``report.html``;
- mode ``accuracy`` or ``performance``: that part's files at the top, ``result.json``,
  ``report.html``.

``result.json`` merges the parts' results; its ``provenance`` names both parts (entry,
content hash, derivation digest), every input of the run with its entry and content hash,
the closure lock digest, mlbuild's version, the LoadGen's file hashes, the accuracy log's
digest and the machine the measurement ran on.
"""

from __future__ import annotations

from mlbuild.builders import BuildContext
from mlbuild.harness.runparams import PARAMS as RUN_PARAMS

NAME = "mlperf-result"
VERSION = 1
INPUTS: dict[str, str] = {}
OPTIONAL_INPUTS = {
    "accuracy": "the run's accuracy part (an `mlperf-run` entry of mode accuracy)",
    "performance": "the run's performance part (an `mlperf-run` entry of mode performance)",
}
PARAMS = RUN_PARAMS  # the run's parameters, as the graph resolved them; only `mode` is read here
NEEDS_ENV = False
NEEDS_NETWORK = False


def build(ctx: BuildContext) -> None:
    from mlbuild.harness import assemble

    assemble.assemble(ctx)
