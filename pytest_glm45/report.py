"""Run reports: JSON a machine reads, HTML a person reads, and the comparison of two runs.

A report holds, per configuration, the vLLM version, engine and boot; the hardware inventory;
every check's stable id and outcome (passed, failed, known failure, unexpected pass, skipped,
error) with its reason; and every throughput point's metrics. `compare` says what changed
between two reports: new failures, fixes, known failures that changed, and performance
changes beyond a tolerance per metric.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = 1
FAILING = {"failed", "error"}
#: Default tolerances: a relative change beyond these is a regression. Throughputs regress
#: when they fall, latencies when they rise.
DEFAULT_TOLERANCES = {
    "output_throughput": 0.10,
    "total_token_throughput": 0.10,
    "request_throughput": 0.10,
    "median_ttft_ms": 0.20,
    "p99_ttft_ms": 0.25,
    "median_tpot_ms": 0.15,
    "mean_tpot_ms": 0.15,
}
HIGHER_IS_BETTER = {"output_throughput", "total_token_throughput", "request_throughput"}


def new_report(kit_version: str, profile: str, inventory: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kit_version": kit_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "hardware": dict(inventory),
        "configurations": {},
        "checks": [],
        "benchmarks": [],
    }


def write(report: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    """report.json and report.html in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json.dumps(report, indent=1, sort_keys=True, default=str), "utf-8")
    html_path.write_text(render_html(report), "utf-8")
    return json_path, html_path


def load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text("utf-8"))
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: report schema {data.get('schema')!r}, expected {SCHEMA}")
    return dict(data)


# -- HTML -------------------------------------------------------------------------------------

_COLORS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#c62828", "known failure": "#ef6c00",
           "unexpected pass": "#6a1b9a", "skipped": "#9e9e9e"}  # fmt: skip
_SYMBOL = {"passed": "✓", "failed": "✗", "error": "E", "known failure": "x", "unexpected pass": "X", "skipped": "s"}
_PLOT_COLORS = ("#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")


def render_html(report: Mapping[str, Any]) -> str:
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
        f"<td>{e(str(info.get('status')))}</td><td>{info.get('startup_seconds') or ''}</td></tr>"
        for cid, info in report["configurations"].items()
    )
    legend = " ".join(f'<span style="background:{col};color:#fff;padding:2px 6px">{_SYMBOL[k]} {k} ({counts.get(k, 0)})</span>'
                      for k, col in _COLORS.items())  # fmt: skip
    plots = "".join(_plots(report["benchmarks"]))
    hw = report.get("hardware") or {}
    hw_text = ", ".join(f"{g.get('name')} ({g.get('memory_bytes', 0) / 2**30:.0f} GiB)" for g in hw.get("gpus", [])) or "no GPU (CPU engine)"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>pytest-glm45 report</title>
<style>body{{font-family:sans-serif;margin:20px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ddd;padding:2px 6px}} td.id{{font-family:monospace}} h2{{margin-top:28px}}
.plots{{display:flex;flex-wrap:wrap;gap:16px}} .plot{{border:1px solid #ddd;padding:6px}}</style></head><body>
<h1>pytest-glm45 run report</h1>
<p>{e(report['created'])} &middot; kit {e(report['kit_version'])} &middot; profile {e(report['profile'])} &middot; hardware: {e(hw_text)}</p>
<h2>Configurations</h2><table><tr><th>configuration</th><th>vLLM</th><th>engine</th><th>status</th><th>startup s</th></tr>{conf_rows}</table>
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
                if p["shape"] == shape and metric in p:
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


# -- compare ----------------------------------------------------------------------------------


@dataclass
class Comparison:
    """What changed from `old` to `new`."""

    old_label: str
    new_label: str
    new_failures: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    known_changed: list[str] = field(default_factory=list)
    #: still a known failure on both sides, recorded with another reason (a reworded entry, or a defect that changed form)
    known_reworded: list[str] = field(default_factory=list)
    other_changes: list[str] = field(default_factory=list)
    perf_regressions: list[str] = field(default_factory=list)
    perf_improvements: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.new_failures or self.perf_regressions)

    def markdown(self) -> str:
        head = "❌ regression" if self.regressed else "✅ no regression"
        lines = [f"### pytest-glm45: {self.old_label} → {self.new_label}: {head}", ""]
        for title, items in (("New failures", self.new_failures), ("Performance regressions", self.perf_regressions),
                             ("Fixed", self.fixes), ("Known failures that changed", self.known_changed),
                             ("Other outcome changes", self.other_changes), ("Performance improvements", self.perf_improvements),
                             ("Known failures on both sides, recorded with another reason", self.known_reworded)):  # fmt: skip
            lines.append(f"**{title}** ({len(items)})")
            lines += [f"- {' '.join(item.split())}" for item in items] or ["- none"]  # one line per item, whatever the reason holds
            lines.append("")
        return "\n".join(lines)


def _why(reason: str | None) -> str:
    """A known failure's reason without the "known failure on vLLM X.Y.Z: " prefix that names the version."""
    text = reason or ""
    return text.split(": ", 1)[1] if text.startswith("known failure on vLLM ") and ": " in text else text


def _label(report: Mapping[str, Any]) -> str:
    versions = sorted({str(c.get("vllm_version")) for c in report["configurations"].values()})
    return "vLLM " + "/".join(versions) if versions else str(report.get("created"))


def compare(old: Mapping[str, Any], new: Mapping[str, Any], tolerances: Mapping[str, float] | None = None) -> Comparison:
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    cmp = Comparison(_label(old), _label(new))
    # Only configurations both runs have are compared; the others are named, not diffed check by check.
    shared = set(old["configurations"]) & set(new["configurations"])
    for side, report_ in (("only in the reference run", old), ("only in the new run", new)):
        for config_id in sorted(set(report_["configurations"]) - shared):
            cmp.other_changes.append(f"configuration {config_id} {side}: not compared")
    before = {(c["id"], c["config"]): c for c in old["checks"] if c["config"] in shared}
    after = {(c["id"], c["config"]): c for c in new["checks"] if c["config"] in shared}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        was, now = (a or {}).get("outcome", "absent"), (b or {}).get("outcome", "absent")
        name = f"`{key[0]}` on {key[1]}"
        if was == now:
            if now == "known failure" and _why((a or {}).get("reason")) != _why((b or {}).get("reason")):
                cmp.known_reworded.append(f"{name}: reason now: {(b or {}).get('reason')}")
            continue
        if now in FAILING and was not in FAILING:
            cmp.new_failures.append(f"{name}: {was} → {now}: {(b or {}).get('reason') or ''}".rstrip(": "))
        elif was in FAILING and now not in FAILING:
            cmp.fixes.append(f"{name}: {was} → {now}")
        elif "known failure" in (was, now) or "unexpected pass" in (was, now):
            cmp.known_changed.append(f"{name}: {was} → {now}" + (f": {b.get('reason')}" if b and b.get("reason") else ""))
        else:
            cmp.other_changes.append(f"{name}: {was} → {now}")
    old_points = {(p["config"], p["shape"], p["batch"]): p for p in old["benchmarks"] if p["config"] in shared}
    for p in new["benchmarks"]:
        q = old_points.get((p["config"], p["shape"], p["batch"]))
        if q is None:
            continue
        for metric, limit in tol.items():
            if metric not in p or metric not in q or not q[metric]:
                continue
            change = (float(p[metric]) - float(q[metric])) / float(q[metric])
            worse = -change if metric in HIGHER_IS_BETTER else change
            text = f"{p['config']} {p['shape']} x{p['batch']}: {metric} {float(q[metric]):.4g} → {float(p[metric]):.4g} ({change:+.1%}, tolerance {limit:.0%})"
            if worse > limit:
                cmp.perf_regressions.append(text)
            elif -worse > limit:
                cmp.perf_improvements.append(text)
    return cmp
