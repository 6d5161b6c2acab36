"""An MLPerf submission package, built from run results (standard library only).

Inputs: ``result-1`` ... ``result-8``: assembled run results (``mlperf-result`` entries of run
targets); ``loadgen-src`` (optional): the pinned LoadGen sdist tree, whose files' sha1 the checker
compares with each run's logged ``loadgen_file_sha1``.

Output: ``<division>/<submitter>/`` (systems/, src/ + code/, results/<system>/<model>/<scenario>/
with performance/run_1, accuracy/ (truncated log, ``hash=``), measurements.json, user.conf,
README.md), ``<division>.tar.gz`` (byte-stable), ``summary.csv``, ``summary.json`` (with the
checker's findings) and ``README.md``.  A package of results MLPerf would not accept (a short run,
another round's seeds...) is still built, and says so.  The body is ``mlbuild.submission.build``.
"""

from __future__ import annotations

from typing import Any

from mlbuild.builders import BuildContext, Param

NAME = "mlperf-submission"
VERSION = 1
MAX_RESULTS = 8
INPUTS: dict[str, str] = {}
OPTIONAL_INPUTS = {
    **{f"result-{i}": "a run target's assembled result (an `mlperf-result` entry)" for i in range(1, MAX_RESULTS + 1)},
    "loadgen-src": "the pinned LoadGen source (an `sdist` tree): `loadgen_file_sha1` is compared with it",
}
PARAMS = {
    "submitter": Param(str, "", "the submitting organisation (a directory name)", required=True),
    "division": Param(str, "open", "MLPerf division", ("open", "closed")),
    "system_name": Param(str, "", "the system's directory/id (empty: derived from the CPU model and cores)"),
    "status": Param(str, "available", "system availability", ("available", "preview", "rdi")),
    "system_type": Param(str, "edge", "system type", ("edge", "datacenter", "datacenter,edge")),
    "system": Param(str, "{}", "JSON object of systems/<system>.json fields mlbuild cannot know (storage...)"),
}
NEEDS_ENV = False
NEEDS_NETWORK = False
RUN_BUILDER_MODULE = "mlbuild.builders.mlperf_run"


def fingerprint_extra() -> dict[str, Any]:
    """The run builder's code identity: a package's `src/` holds those files, so they are in its
    derivation (as data: this builder runs none of them, and its own code identity stays its own)."""
    from mlbuild import builders, codeid

    registry = [f"{builders.__name__}.{m}" for m in builders.REGISTRY.values()]
    return {"run_code": codeid.identity(codeid.PACKAGE_DIR, RUN_BUILDER_MODULE, registry).fingerprint()}


def build(ctx: BuildContext) -> None:
    from mlbuild.submission import build as body

    body.build(ctx)
