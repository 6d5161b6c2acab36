"""The MLPerf submission package: a store entry built from run results (``mlperf-submission``).

Standard library only: the builder runs these modules in the sandbox without an environment.

- :mod:`.rules`: what MLPerf's submission checker reads (constants of spec §1.9);
- :mod:`.layout`: the ``<division>/<submitter>/`` tree from result entries;
- :mod:`.summary`: ``summary.csv`` / ``summary.json``, one row per model and scenario;
- :mod:`.tarball`: ``<division>.tar.gz``, byte-identical whenever it is rebuilt from the same tree;
- :mod:`.checker`: our checker (each failed rule with its file and value);
- :mod:`.package`: outside the sandbox: builds the package entry from store entries and checks it.
"""
