"""mlbuild: hermetic, lockfile-driven builds and runs of MLPerf inference benchmarks."""

__version__ = "0.1.0"
