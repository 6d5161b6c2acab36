"""`import mlperf_loadgen` under `python -m mlbuild_loadgen.run`: this module replaces itself
with mlbuild_loadgen (the directory is put first on sys.path and PYTHONPATH, so child
processes of the client get the same alias)."""

import sys

import mlbuild_loadgen

sys.modules[__name__] = mlbuild_loadgen
