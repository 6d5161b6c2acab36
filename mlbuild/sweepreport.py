"""The HTML report of a sweep: the table of points, the best point, and two inline SVG plots
(throughput against p99 latency with the Pareto front; throughput per point). Self-contained:
no network, no scripts; a function of ``sweep.json`` alone."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

W, H, PAD = 640, 360, 56


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _label(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _num(v: Any, fmt: str) -> str:
    return fmt.format(v) if isinstance(v, (int, float)) else "-"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / (n - 1)
    return [lo + k * step for k in range(n)]


def scatter(points: Sequence[Mapping[str, Any]], front: Sequence[int], best: int | None) -> str:
    """samples/s (y) against p99 latency in ms (x); the Pareto front joined by a line."""
    xy = [(i, p["metrics"].get("latency_p99_ms"), p["metrics"].get("samples_per_second"))
          for i, p in enumerate(points) if p.get("error") is None]
    xy = [(i, float(x), float(y)) for i, x, y in xy if isinstance(x, (int, float)) and isinstance(y, (int, float))]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             'role="img" aria-label="throughput against p99 latency">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>']
    if not xy:
        parts.append(f'<text x="{W // 2}" y="{H // 2}" text-anchor="middle">no point with both figures</text></svg>')
        return "".join(parts)
    xs, ys = [x for _, x, _ in xy], [y for _, _, y in xy]
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    y0, y1 = 0.0, max(ys) * 1.1 or 1.0

    def px(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(y: float) -> float:
        return H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)

    parts.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>')
    parts.append(f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{px(t):.1f}" y="{H - PAD + 16}" font-size="11" text-anchor="middle">{t:.0f}</text>')
    for t in _ticks(y0, y1):
        parts.append(f'<text x="{PAD - 6}" y="{py(t) + 4:.1f}" font-size="11" text-anchor="end">{t:.0f}</text>')
    parts.append(f'<text x="{W / 2}" y="{H - 12}" font-size="12" text-anchor="middle">p99 latency (ms)</text>')
    parts.append(f'<text x="14" y="{H / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 14 {H / 2})">samples/s</text>')
    coords = {i: (px(x), py(y)) for i, x, y in xy}
    line = [coords[i] for i in front if i in coords]
    if len(line) > 1:
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in line)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="#d62728" stroke-width="1.5" '
                     'stroke-dasharray="4 3"/>')
    for i, (cx, cy) in coords.items():
        p = points[i]
        color = "#2ca02c" if i == best else ("#d62728" if i in front else "#1f77b4")
        ok = p.get("validity") in (None, "VALID")
        fill = color if ok else "#fff"
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{6 if i == best else 4}" fill="{fill}" '
                     f'stroke="{color}" stroke-width="1.5"><title>{_esc(_label(p["settings"]))}: '
                     f'{_num(p["metrics"].get("samples_per_second"), "{:.1f}")} samples/s, p99 '
                     f'{_num(p["metrics"].get("latency_p99_ms"), "{:.1f}")} ms, {_esc(p.get("validity"))}'
                     '</title></circle>')
        parts.append(f'<text x="{cx + 7:.1f}" y="{cy - 6:.1f}" font-size="10">{i + 1}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars(points: Sequence[Mapping[str, Any]], best: int | None) -> str:
    """samples/s of every point (failed points: an empty slot)."""
    n = max(1, len(points))
    bw = (W - 2 * PAD) / n
    vals = [p["metrics"].get("samples_per_second") if p.get("error") is None else None for p in points]
    top = max([float(v) for v in vals if isinstance(v, (int, float))] or [1.0]) * 1.1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             'role="img" aria-label="throughput per point">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>']
    for t in _ticks(0.0, top):
        y = H - PAD - t / top * (H - 2 * PAD)
        parts.append(f'<text x="{PAD - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{t:.0f}</text>')
    for i, v in enumerate(vals):
        x = PAD + i * bw
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{H - PAD + 16}" font-size="11" '
                     f'text-anchor="middle">{i + 1}</text>')
        if not isinstance(v, (int, float)):
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{H - PAD - 6}" font-size="10" '
                         'text-anchor="middle">failed</text>')
            continue
        h = float(v) / top * (H - 2 * PAD)
        color = "#2ca02c" if i == best else "#1f77b4"
        parts.append(f'<rect x="{x + bw * 0.15:.1f}" y="{H - PAD - h:.1f}" width="{bw * 0.7:.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{_esc(_label(points[i]["settings"]))}: '
                     f'{float(v):.1f} samples/s</title></rect>')
    parts.append(f'<text x="{W / 2}" y="{H - 12}" font-size="12" text-anchor="middle">point</text></svg>')
    return "".join(parts)


def render(doc: Mapping[str, Any]) -> str:
    spec = doc["spec"]
    points = doc["points"]
    best, front = doc.get("best"), list(doc.get("pareto") or [])
    axes = list(spec["axes"])
    rows = []
    for i, p in enumerate(points):
        m = p["metrics"]
        mark = " ".join(x for x, on in (("best", i == best), ("pareto", i in front)) if on)
        status = p.get("validity") or ("FAILED" if p.get("error") else "-")
        note = _esc(p["error"]) if p.get("error") else _esc("; ".join(p.get("violations") or []))
        cells = [str(i + 1), *(_esc(p["settings"].get(a)) for a in axes), _esc(status),
                 _num(m.get("samples_per_second"), "{:.1f}"), _num(m.get("latency_p50_ms"), "{:.2f}"),
                 _num(m.get("latency_p90_ms"), "{:.2f}"), _num(m.get("latency_p99_ms"), "{:.2f}"),
                 _num(m.get("mAP"), "{:.3f}"), mark, f"<code>{_esc(p.get('entry') or '')}</code>", note]
        cls = ' class="best"' if i == best else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = ["#", *axes, "validity", "samples/s", "p50 ms", "p90 ms", "p99 ms", "mAP %", "", "entry", "notes"]
    if best is None:
        best_text = "no point is VALID and meets the constraints"
    else:
        b = points[best]
        best_text = (f"point {best + 1}: {_esc(_label(b['settings']))}, "
                     f"{_esc(spec['objective'])} = {_esc(b['metrics'].get(spec['objective']))}")
    base = _esc(_label(spec.get("base") or {})) or "none"
    cons = _esc(", ".join(spec.get("constraints") or [])) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sweep {_esc(spec['name'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}tr.best{{background:#e8f5e9}}
figure{{display:inline-block;margin:1em}}</style></head><body>
<h1>Sweep <code>{_esc(spec['name'])}</code> of <code>{_esc(spec['target'])}</code></h1>
<p>Fixed settings: {base}. Objective: {_esc(spec['objective'])}. Constraints: {cons}.</p>
<p><strong>Best:</strong> {best_text}</p>
<table><thead><tr>{''.join(f'<th>{_esc(h)}</th>' for h in head)}</tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<figure>{scatter(points, front, best)}<figcaption>samples/s against p99 latency; dashed: Pareto front;
green: best; hollow: not VALID</figcaption></figure>
<figure>{bars(points, best)}<figcaption>samples/s per point (numbers as in the table)</figcaption></figure>
</body></html>
"""
