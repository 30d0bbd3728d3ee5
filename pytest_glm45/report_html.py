"""The run report as HTML a person reads: the verdict first, then the configurations, the
conformance matrix and the throughput plots (inline SVG, no script, no network)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

_COLORS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#c62828", "known failure": "#ef6c00",
           "unexpected pass": "#6a1b9a", "skipped": "#9e9e9e"}  # fmt: skip
_SYMBOL = {"passed": "✓", "failed": "✗", "error": "E", "known failure": "x", "unexpected pass": "X", "skipped": "s"}
_PLOT_COLORS = ("#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for one report (see pytest_glm45.report)."""
    configs = list(report["configurations"])
    checks = sorted({c["id"] for c in report["checks"]})
    cell = {(c["id"], c["config"]): c for c in report["checks"]}
    counts: dict[str, int] = {}
    for c in report["checks"]:
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    e = html.escape
    rows = []
    for check in checks:
        tds = []
        for config in configs:
            c = cell.get((check, config))
            if c is None:
                tds.append("<td></td>")
                continue
            outcome = c["outcome"]
            tds.append(f'<td style="background:{_COLORS.get(outcome, "#fff")};color:#fff;text-align:center" '
                       f'title="{e(outcome)}: {e(c.get("reason") or "")}">{_SYMBOL.get(outcome, "?")}</td>')  # fmt: skip
        rows.append(f"<tr><td class=id>{e(check)}</td>{''.join(tds)}</tr>")
    conf_rows = "".join(
        f"<tr><td>{e(cid)}</td><td>{e(str(info.get('vllm_version')))}</td><td>{e(str(info.get('engine')))}</td>"
        f"<td>{e(str(info.get('status')))}</td><td>{info.get('startup_seconds') or ''}</td><td>{e(str(info.get('distribution') or ''))}</td></tr>"
        for cid, info in report["configurations"].items()
    )
    legend = " ".join(f'<span style="background:{col};color:#fff;padding:2px 6px">{_SYMBOL[k]} {k} ({counts.get(k, 0)})</span>'
                      for k, col in _COLORS.items())  # fmt: skip
    plots = "".join(_plots(report["benchmarks"]))
    failing = [c for c in report["checks"] if c["outcome"] in ("failed", "error", "unexpected pass")]
    verdict = (f'<p class="verdict bad">{len(failing)} check(s) fail the run</p>' if failing
               else '<p class="verdict good">No check fails the run</p>')  # fmt: skip
    failures = "".join(
        f"<tr><td class=id>{e(c['id'])}</td><td>{e(c['config'])}</td><td>{e(c['outcome'])}</td>"
        f"<td><pre>{e((c.get('observed') or c.get('reason') or '')[:1500])}</pre></td></tr>"
        for c in failing
    )
    hw = report.get("hardware") or {}
    hw_text = ", ".join(f"{g.get('name')} ({g.get('memory_bytes', 0) / 2**30:.0f} GiB)" for g in hw.get("gpus", [])) or "no GPU (CPU engine)"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>pytest-glm45 report</title>
<style>body{{font-family:sans-serif;margin:20px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ddd;padding:2px 6px}} td.id{{font-family:monospace}} h2{{margin-top:28px}}
.plots{{display:flex;flex-wrap:wrap;gap:16px}} .verdict{{font-size:18px;font-weight:bold}} .bad{{color:#c62828}} .good{{color:#2e7d32}}
pre{{white-space:pre-wrap;margin:0;font-size:11px}} .plot{{border:1px solid #ddd;padding:6px}}</style></head><body>
<h1>pytest-glm45 run report</h1>
{verdict}{f'<table id="failures"><tr><th>check</th><th>configuration</th><th>outcome</th><th>observed</th></tr>{failures}</table>' if failures else ''}
<p>{e(report['created'])} &middot; kit {e(report['kit_version'])} &middot; profile {e(report['profile'])} &middot; hardware: {e(hw_text)}</p>
<h2>Configurations</h2><table><tr><th>configuration</th><th>vLLM</th><th>engine</th><th>status</th><th>startup s</th><th>distribution</th></tr>{conf_rows}</table>
<h2>Conformance matrix</h2><p>{legend}</p>
<table id="matrix"><tr><th>check</th>{''.join(f'<th>{e(c)}</th>' for c in configs)}</tr>{''.join(rows)}</table>
<h2>Throughput</h2><div class="plots">{plots or '<p>No throughput points in this run.</p>'}</div>
</body></html>"""


def _plots(points: list[Mapping[str, Any]]) -> list[str]:
    shapes = sorted({p["shape"] for p in points})
    out = []
    for metric, label in (("output_throughput", "output tokens/s"), ("median_ttft_ms", "median TTFT, ms"),
                          ("median_tpot_ms", "median TPOT, ms")):  # fmt: skip
        for shape in shapes:
            series: dict[str, list[tuple[int, float]]] = {}
            for p in points:
                if p["shape"] == shape and metric in p and metric not in (p.get("invalid") or {}):
                    series.setdefault(p["config"], []).append((int(p["batch"]), float(p[metric])))
            if series:
                out.append(_svg(f"{shape}: {label} by batch", series))
    return out


def _svg(title: str, series: Mapping[str, list[tuple[int, float]]], w: int = 360, h: int = 220) -> str:
    pad_l, pad_b, pad_t, pad_r = 50, 30, 24, 10
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ymax = max((y for pts in series.values() for _, y in pts), default=1.0) or 1.0
    xpos = {x: pad_l + (i + 0.5) * (w - pad_l - pad_r) / len(xs) for i, x in enumerate(xs)}

    def ypos(y: float) -> float:
        return h - pad_b - (y / ymax) * (h - pad_b - pad_t)

    parts = [f'<text x="{w / 2}" y="14" text-anchor="middle" font-size="12">{html.escape(title)}</text>',
             f'<line x1="{pad_l}" y1="{h - pad_b}" x2="{w - pad_r}" y2="{h - pad_b}" stroke="#444"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{h - pad_b}" stroke="#444"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 4}" text-anchor="end" font-size="10">{ymax:.3g}</text>',
             f'<text x="{pad_l - 4}" y="{h - pad_b}" text-anchor="end" font-size="10">0</text>']  # fmt: skip
    for x in xs:
        parts.append(f'<text x="{xpos[x]}" y="{h - pad_b + 14}" text-anchor="middle" font-size="10">{x}</text>')
    for n, (name, pts) in enumerate(sorted(series.items())):
        color = _PLOT_COLORS[n % len(_PLOT_COLORS)]
        pts = sorted(pts)
        path = " ".join(f"{xpos[x]:.1f},{ypos(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts += [f'<circle cx="{xpos[x]:.1f}" cy="{ypos(y):.1f}" r="3" fill="{color}"><title>{html.escape(name)} batch {x}: {y:.4g}</title></circle>' for x, y in pts]
        parts.append(f'<text x="{w - pad_r}" y="{pad_t + 12 * (n + 1)}" text-anchor="end" font-size="10" fill="{color}">{html.escape(name)}</text>')
    return f'<div class="plot"><svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg></div>'
