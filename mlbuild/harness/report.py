"""A self-contained ``report.html``: tables plus inline SVG plots drawn here (no scripts, no
external resources): a latency histogram, completions over time, and per-class AP bars."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

W, H = 720, 260
ML, MR, MT, MB = 64, 16, 24, 44


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.3g}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=mag * 10)
    start = math.ceil(lo / step) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def _frame(
    title: str, xlabel: str, ylabel: str, xlo: float, xhi: float, ylo: float, yhi: float, body: str, xticks: bool = True
) -> str:
    pw, ph = W - ML - MR, H - MT - MB

    def sx(x: float) -> float:
        return ML + (x - xlo) / (xhi - xlo or 1) * pw

    def sy(y: float) -> float:
        return MT + ph - (y - ylo) / (yhi - ylo or 1) * ph

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for t in _ticks(ylo, yhi):
        y = sy(t)
        parts.append(f'<line x1="{ML}" y1="{y:.1f}" x2="{ML + pw}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{ML - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_fmt(t)}</text>')
    if xticks:
        for t in _ticks(xlo, xhi):
            x = sx(t)
            parts.append(f'<text x="{x:.1f}" y="{MT + ph + 14}" text-anchor="middle" font-size="10">{_fmt(t)}</text>')
    parts.append(
        f'<text x="{ML + pw / 2}" y="{H - 6}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{MT + ph / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 12 {MT + ph / 2})">{html.escape(ylabel)}</text>'
    )
    parts.append(body)
    parts.append("</svg>")
    return "\n".join(parts)


def histogram_svg(values: Sequence[float], title: str, xlabel: str, bins: int = 40) -> str:
    if not values:
        return f"<p>{html.escape(title)}: no data</p>"
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    top = max(counts)
    pw, ph = W - ML - MR, H - MT - MB
    bw = pw / bins
    rects = []
    for i, c in enumerate(counts):
        if not c:
            continue
        h = c / top * ph
        left, right = _fmt(lo + i * (hi - lo) / bins), _fmt(lo + (i + 1) * (hi - lo) / bins)
        rects.append(
            f'<rect x="{ML + i * bw:.1f}" y="{MT + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="#4c78a8"><title>{left}–{right}: {c}</title></rect>'
        )
    return _frame(title, xlabel, "samples", lo, hi, 0, top, "\n".join(rects))


def line_svg(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str) -> str:
    if not xs:
        return f"<p>{html.escape(title)}: no data</p>"
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = 0.0, max(ys) or 1.0
    if xhi == xlo:
        xhi = xlo + 1
    pw, ph = W - ML - MR, H - MT - MB
    pts = " ".join(
        f"{ML + (x - xlo) / (xhi - xlo) * pw:.1f},{MT + ph - (y - ylo) / (yhi - ylo) * ph:.1f}"
        for x, y in zip(xs, ys, strict=True)
    )
    body = f'<polyline points="{pts}" fill="none" stroke="#e45756" stroke-width="1.5"/>'
    return _frame(title, xlabel, ylabel, xlo, xhi, ylo, yhi, body)


def bars_svg(items: Sequence[tuple[str, float]], title: str, ylabel: str) -> str:
    if not items:
        return f"<p>{html.escape(title)}: no data</p>"
    n = len(items)
    width = max(W, ML + MR + n * 9)
    pw, ph = width - ML - MR, H - MT - MB - 60
    top = max(100.0, max(v for _, v in items))
    bw = pw / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{H}" viewBox="0 0 {width} {H}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f'{html.escape(title)}</text>',
        f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>',
    ]
    for t in _ticks(0, top):
        y = MT + ph - t / top * ph
        parts.append(f'<line x1="{ML}" y1="{y:.1f}" x2="{ML + pw}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{ML - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{_fmt(t)}</text>')
    for i, (name, v) in enumerate(items):
        h = v / top * ph
        x = ML + i * bw
        parts.append(
            f'<rect x="{x:.1f}" y="{MT + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="#54a24b"><title>{html.escape(name)}: {v:.1f}</title></rect>'
        )
        cx = x + bw / 2
        parts.append(
            f'<text x="{cx:.1f}" y="{MT + ph + 6}" font-size="8" text-anchor="end" '
            f'transform="rotate(-60 {cx:.1f} {MT + ph + 6})">{html.escape(name[:18])}</text>'
        )
    parts.append(
        f'<text x="12" y="{MT + ph / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 12 {MT + ph / 2})">{html.escape(ylabel)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_cell(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{cells}</table>"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_cell(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_cell(x)}" for k, x in sorted(v.items()))
    return "" if v is None else str(v)


def render(result: dict[str, Any], timelines: dict[str, Any]) -> str:
    """The report for one run. ``timelines`` maps a phase name to a ``sut.Timeline``."""
    params = result.get("params", {})
    metrics = result.get("metrics", {})
    kind = params.get("decoder") or params.get("model_kind") or "?"
    title = f"mlbuild run: {kind} {params.get('scenario', '?')} {params.get('mode', '?')}"
    sections = [f"<h1>{html.escape(title)}</h1>"]
    head = [
        ("mAP (%)", metrics.get("mAP")),
        ("samples/s", metrics.get("samples_per_second")),
        ("validity", metrics.get("validity")),
        ("scenario", params.get("scenario")),
        ("mode", params.get("mode")),
        ("samples", result.get("dataset", {}).get("samples")),
    ]
    sections.append("<h2>Headline</h2>" + _table([r for r in head if r[1] is not None]))
    perf = result.get("performance")
    if perf:
        lat = perf.get("latency_ns", {})
        rows = [(k, v) for k, v in perf.items() if not isinstance(v, (dict, list))]
        rows += [(f"latency {k} (ms)", v / 1e6) for k, v in lat.items()]
        sections.append("<h2>Performance (LoadGen summary)</h2>" + _table(rows))
    for phase, tl in timelines.items():
        if tl is None or not tl.completed:
            continue
        lat_ms = [(c - i) / 1e6 for i, c in zip(tl.issued, tl.completed, strict=True)]
        t0 = min(tl.issued)
        done = sorted((c - t0) / 1e9 for c in tl.completed)
        step = max(1, len(done) // 400)
        xs = [0.0, *done[::step], done[-1]]
        ys = [0.0] + [float(i + 1) for i in range(0, len(done), step)] + [float(len(done))]
        sections.append(f"<h2>{html.escape(phase)} run, as seen by the SUT</h2>")
        sections.append(
            histogram_svg(lat_ms, f"{phase}: latency distribution (query arrival → completion)", "latency (ms)")
        )
        sections.append(
            line_svg(xs, ys, f"{phase}: completed samples over time", "time since first query (s)", "samples completed")
        )
    acc = result.get("accuracy")
    if acc:
        per = sorted(((k, v) for k, v in acc.get("per_class_ap", {}).items() if v is not None), key=lambda kv: -kv[1])
        summary = [("mAP (%)", acc.get("mAP")), ("samples", acc.get("samples")), ("detections", acc.get("detections"))]
        sections.append("<h2>Accuracy (COCOeval bbox)</h2>" + _table(summary))
        sections.append(bars_svg(per, "AP per class (IoU 0.50:0.95, %)", "AP (%)"))
    sysinfo = result.get("system", {})
    rows = [(k, v) for k, v in sysinfo.items() if k not in ("libraries", "loadgen")]
    rows += [(f"lib {k}", v) for k, v in sorted(sysinfo.get("libraries", {}).items())]
    rows += [(f"loadgen {k}", v) for k, v in sorted(sysinfo.get("loadgen", {}).items()) if k != "loadgen_file_sha1"]
    sections.append("<h2>System</h2>" + _table(rows))
    sections.append("<h2>Parameters</h2>" + _table(sorted(params.items())))
    sections.append("<h2>Inputs</h2>" + _table(sorted(result.get("inputs", {}).items())))
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}"
        "th,td{border:1px solid #ddd;padding:2px 8px;text-align:left;font-size:13px}"
        "th{background:#f5f5f5;font-weight:normal}svg{display:block;margin:1em 0}"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
