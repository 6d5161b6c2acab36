"""Running short tests with our module in the pytest process."""

from __future__ import annotations

from pathlib import Path


def settings(lg, scenario="Offline", mode="PerformanceOnly", **kw):
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, scenario)
    s.mode = getattr(lg.TestMode, mode)
    s.min_duration_ms = 0
    defaults = {
        "SingleStream": dict(min_query_count=200),
        "MultiStream": dict(min_query_count=700),
        "Server": dict(min_query_count=500, server_target_qps=20000.0),
        "Offline": dict(min_query_count=1000),
    }[scenario]
    for k, v in {**defaults, **kw}.items():
        setattr(s, k, v)
    return s


def log_settings(lg, outdir: Path):
    ls = lg.LogSettings()
    ls.log_output.outdir = str(outdir)
    ls.enable_trace = False
    return ls


def null_qsl(lg, total=256, perf=64, load=None, unload=None):
    return lg.ConstructQSL(total, perf, load or (lambda ix: None), unload or (lambda ix: None))


def result(outdir: Path) -> str:
    for line in (Path(outdir) / "mlperf_log_summary.txt").read_text().splitlines():
        if line.startswith("Result is :"):
            return line.split(":", 1)[1].strip()
    return ""
