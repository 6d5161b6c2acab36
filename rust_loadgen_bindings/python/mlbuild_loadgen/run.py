"""Runs an unmodified ``mlperf_loadgen`` client on mlbuild_loadgen.

    python -m mlbuild_loadgen.run SCRIPT.py [ARGS...]
    python -m mlbuild_loadgen.run -m PACKAGE.MODULE [ARGS...]

``import mlperf_loadgen`` (and ``from mlperf_loadgen import ...``) in the client, and in any
Python child process it starts, gives ``mlbuild_loadgen``: the directory holding the alias
module is put first on ``sys.path`` and on ``PYTHONPATH``. The script runs as ``__main__``
with ``sys.argv`` = [SCRIPT, ARGS...], like ``python SCRIPT ARGS``.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

# Not an importable package name (a dash), so nothing walks into it as mlbuild_loadgen.<name>.
ALIAS_DIR = str(Path(__file__).resolve().parent / "alias-dir")

USAGE = "usage: python -m mlbuild_loadgen.run SCRIPT.py [ARGS...] | -m MODULE [ARGS...]"


def install_alias() -> None:
    """Makes ``import mlperf_loadgen`` give mlbuild_loadgen here and in child processes."""
    import mlbuild_loadgen

    if ALIAS_DIR not in sys.path:
        sys.path.insert(0, ALIAS_DIR)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != ALIAS_DIR]
    os.environ["PYTHONPATH"] = os.pathsep.join([ALIAS_DIR, *parts])
    sys.modules["mlperf_loadgen"] = mlbuild_loadgen


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not args else sys.stdout)
        return 2 if not args else 0
    install_alias()
    if args[0] == "-m":
        if len(args) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return 0
    script = Path(args[0])
    if not script.is_file():
        print(f"mlbuild_loadgen.run: {script}: no such file\n{USAGE}", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args[1:]]
    # Like `python SCRIPT`: the script's directory first on sys.path (after the alias).
    sys.path.insert(1, str(script.resolve().parent))
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
