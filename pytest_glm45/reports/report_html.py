"""The run report as HTML a person reads, answering first: the verdict (what broke, what was fixed,
known failures with their reasons, unexpected passes, performance beyond noise), then every failure
with what was observed and its server's log, then the conformance matrix grouped by suite in
collapsible sections, then the throughput plots (inline SVG). A filter by configuration, API surface
and outcome is a small inline script; without script the page shows everything. No network."""

from __future__ import annotations

import html
import importlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_COLORS = {"passed": "#2e7d32", "failed": "#c62828", "error": "#c62828", "known failure": "#ef6c00",
           "unexpected pass": "#6a1b9a", "skipped": "#9e9e9e"}  # fmt: skip
_SYMBOL = {"passed": "✓", "failed": "✗", "error": "E", "known failure": "x", "unexpected pass": "X", "skipped": "s"}
_PLOT_COLORS = ("#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")
#: Outcomes that fail a run (a strict unexpected pass included) and those listed as failures.
_FAILING = ("failed", "error", "unexpected pass")
#: API surfaces a check id can name in its parameters (`[...-responses-...]`); a check naming none is `chat`.
SURFACES = ("chat", "completions", "responses", "messages")
_KNOWN_PREFIX = re.compile(r"^known failure on vLLM [^:]*?(?: \([^)]*\))?: ", re.S)

_STYLE = """body{font-family:sans-serif;margin:20px;max-width:1600px} table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ddd;padding:2px 6px} td.id{font-family:monospace} h2{margin-top:28px}
.plots{display:flex;flex-wrap:wrap;gap:16px} .plot{border:1px solid #ddd;padding:6px}
pre{white-space:pre-wrap;margin:0;font-size:11px;background:#f6f6f6;padding:4px}
#verdict{padding:10px 16px;border-radius:6px;color:#fff} #verdict.bad{background:#c62828} #verdict.good{background:#2e7d32}
#verdict h2{margin:0 0 6px 0;font-size:22px} #verdict a{color:#fff}
.answers{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:10px;margin:10px 0}
.answer li{overflow-wrap:anywhere} .chips{background:#fff;padding:4px 6px;border-radius:4px;display:inline-block}
.answer{border:1px solid #ddd;border-left:6px solid #9e9e9e;padding:6px 10px} .answer h3{margin:0 0 4px 0;font-size:15px}
.answer ul{margin:2px 0;padding-left:18px;font-size:13px} .answer.bad{border-left-color:#c62828}
.answer.warn{border-left-color:#ef6c00} .answer.good{border-left-color:#2e7d32}
.chip{color:#fff;padding:2px 6px;border-radius:3px;font-size:12px;white-space:nowrap}
.failure{border:1px solid #ddd;border-left:6px solid #c62828;margin:8px 0;padding:6px 10px}
.failure.known{border-left-color:#ef6c00} .failure h3{margin:0;font-size:13px;font-family:monospace}
details.suite{margin:6px 0} details.suite>summary{font-weight:bold;cursor:pointer}
#filters{border:1px solid #ddd;padding:6px 10px;margin:10px 0;font-size:13px} #filters fieldset{display:inline-block;border:0;margin:0 12px 0 0}
.muted{color:#666;font-size:13px}"""

#: Hides what the filter deselects; without script nothing is hidden.
_SCRIPT = """(function(){
var form=document.getElementById('filters'); if(!form) return;
function chosen(kind){var s={};form.querySelectorAll('input[data-kind="'+kind+'"]').forEach(function(i){if(i.checked)s[i.value]=1;});return s;}
function apply(){
 var c=chosen('config'),s=chosen('surface'),o=chosen('outcome');
 document.querySelectorAll('[data-col]').forEach(function(e){e.style.display=c[e.dataset.col]?'':'none';});
 document.querySelectorAll('tr[data-check]').forEach(function(r){
  var show=!!s[r.dataset.surface]&&Array.prototype.some.call(r.querySelectorAll('td[data-col]'),function(td){return c[td.dataset.col]&&o[td.dataset.outcome];});
  r.style.display=show?'':'none';});
 document.querySelectorAll('details.suite').forEach(function(d){
  var n=Array.prototype.filter.call(d.querySelectorAll('tr[data-check]'),function(r){return r.style.display!=='none';}).length;
  d.style.display=n?'':'none'; var k=d.querySelector('.shown'); if(k) k.textContent=n+' shown';});
 document.querySelectorAll('[data-item]').forEach(function(e){
  e.style.display=(c[e.dataset.config]&&s[e.dataset.surface]&&o[e.dataset.outcome])?'':'none';});
}
form.addEventListener('change',apply); apply();
})();"""


def surface_of(check: Mapping[str, Any]) -> str:
    """The API surface a check record exercises: its `surface` key, else a surface named among its
    id's parameters (`test_x[one-call-responses-plain]`), else `chat`."""
    if check.get("surface"):
        return str(check["surface"])
    match = re.search(r"\[(.*)\]$", str(check.get("id", "")))
    parts = match.group(1).split("-") if match else []
    return next((p for p in parts if p in SURFACES), "chat")


def suite_of(check_id: str) -> str:
    """The suite a check belongs to: its test file (`test_tool_calling::test_x[...]` is in test_tool_calling)."""
    return check_id.split("::", 1)[0]


def known_why(reason: str | None) -> str:
    """A known failure's reason without the "known failure on vLLM X.Y.Z (file#n): " prefix."""
    return _KNOWN_PREFIX.sub("", reason or "", count=1)


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for one report (see pytest_glm45.reports.report)."""
    e = html.escape
    checks: list[Mapping[str, Any]] = list(report["checks"])
    configs = list(report["configurations"])
    for c in checks:
        if c["config"] not in configs:
            configs.append(c["config"])
    hw = report.get("hardware") or {}
    hw_text = ", ".join(f"{g.get('name')} ({g.get('memory_bytes', 0) / 2**30:.0f} GiB)" for g in hw.get("gpus", [])) or "no GPU (CPU engine)"
    versions = sorted({str(i.get("vllm_version")) for i in report["configurations"].values() if i.get("vllm_version")})
    meta = (f"{e(str(report.get('created')))} &middot; vLLM {e(', '.join(versions) or '?')} &middot; kit {e(str(report.get('kit_version')))}"
            f" &middot; profile {e(str(report.get('profile')))} &middot; hardware: {e(hw_text)}")  # fmt: skip
    parts = [
        '<!doctype html><html><head><meta charset="utf-8"><title>pytest-glm45 report</title>',
        f"<style>{_STYLE}</style></head><body>",
        f'<h1>pytest-glm45 run report</h1><p class="muted">{meta}</p>',
        _verdict(report, checks),
        _failures(checks),
        _filters(checks, configs),
        _configurations(report),
        _matrix(checks, configs),
        '<h2 id="throughput">Throughput</h2><div class="plots">' + ("".join(_plots(report["benchmarks"])) or "<p>No throughput points in this run.</p>") + "</div>"
        + _noise(report["benchmarks"]),
        _parity(report),
        f"<script>{_SCRIPT}</script></body></html>",
    ]  # fmt: skip
    return "\n".join(p for p in parts if p)


def _chip(outcome: str, text: str) -> str:
    return f'<span class="chip" style="background:{_COLORS.get(outcome, "#777")}">{html.escape(text)}</span>'


def _li(text: str, chars: int = 180) -> str:
    """A list item cut to `chars` (the whole text in its tooltip), so the verdict fits the first screen."""
    e = html.escape
    flat = " ".join(text.split())
    short = flat if len(flat) <= chars else flat[: chars - 1] + "…"
    return f'<li title="{e(flat)}">{e(short)}</li>'


def _answer(title: str, items: Sequence[str], tone: str, empty: str, limit: int = 5) -> str:
    """One box of the verdict: a title with a count and up to `limit` items (the rest folded)."""
    e = html.escape
    lis = "".join(_li(i) for i in items[:limit])
    more = f"<details><summary>{len(items) - limit} more</summary><ul>{''.join(_li(i) for i in items[limit:])}</ul></details>" if len(items) > limit else ""
    body = f"<ul>{lis}</ul>{more}" if items else f'<p class="muted">{e(empty)}</p>'
    return f'<div class="answer {tone if items else "good"}"><h3>{e(title)} ({len(items)})</h3>{body}</div>'


def _verdict(report: Mapping[str, Any], checks: Sequence[Mapping[str, Any]]) -> str:
    """The answer first: does the run fail, what broke, what was fixed, the known failures with their
    reasons, unexpected passes, performance beyond noise (from the embedded comparison, if any)."""
    counts: dict[str, int] = {}
    for c in checks:
        counts[c["outcome"]] = counts.get(c["outcome"], 0) + 1
    failing = [c for c in checks if c["outcome"] in _FAILING]
    cmp: Mapping[str, Any] = report.get("comparison") or {}
    regressed = bool(cmp.get("regressed"))
    bad = bool(failing) or regressed
    head = f"{len(failing)} check(s) fail the run" if failing else "No check fails the run"
    if cmp:
        head += f"; against {cmp.get('old_label', 'the reference run')}: {'a regression' if regressed else 'no regression'}"
    chips = " ".join(_chip(k, f"{_SYMBOL[k]} {k} {counts.get(k, 0)}") for k in _COLORS)
    # Against a reference run: what it broke (new failures, then regressions recorded as known failures);
    # then this run's own failures that the comparison did not already name.
    named = [str(x) for x in (cmp.get("new_failures") or [])]
    broke = [f"new: {x}" for x in named] + [f"recorded as a known failure: {x}" for x in cmp.get("known_regressions") or []]
    broke += [f"{c['id']} on {c['config']}: {c['outcome']}" for c in checks if c["outcome"] in ("failed", "error")
              and not any(x.startswith(f"`{c['id']}` on {c['config']}:") for x in named)]  # fmt: skip
    known: dict[str, list[str]] = {}
    for c in checks:
        if c["outcome"] == "known failure":
            known.setdefault(" ".join(known_why(c.get("reason")).split()), []).append(f"{c['id']} on {c['config']}")
    known_items = [f"{len(v)} check(s): {why}" for why, v in sorted(known.items(), key=lambda kv: -len(kv[1]))]
    unexpected = [f"{c['id']} on {c['config']}: {c.get('reason') or ''}".rstrip(": ") for c in checks if c["outcome"] == "unexpected pass"]
    no_ref = "no reference run embedded (run with --glm45-compare-to)"
    if cmp:
        fixed = list(cmp.get("fixes") or [])
        perf = [f"regression: {p}" for p in cmp.get("perf_regressions") or []] + [f"improvement: {p}" for p in cmp.get("perf_improvements") or []]
        perf_empty = "no change beyond the rounds' measured spread" + (
            f" ({len(cmp.get('perf_not_judged') or [])} single-round change(s) not judged)" if cmp.get("perf_not_judged") else "")
        cmp_line = f'<p>{html.escape(str(cmp.get("verdict") or "").lstrip("❌✅ "))}</p>'
    else:
        fixed, perf, perf_empty, cmp_line = [], [], no_ref, ""
    answers = "".join([
        _answer("What broke", broke, "bad", "nothing: no check failed or errored"),
        _answer("What was fixed", fixed, "good", "nothing fixed" if cmp else no_ref),
        _answer("Known failures, by reason", known_items, "warn", "none"),
        _answer("Unexpected passes", unexpected, "bad", "none: every known failure still fails as recorded"),
        _answer("Performance beyond noise", perf, "bad" if cmp.get("perf_regressions") else "warn", perf_empty),
    ])  # fmt: skip
    return (f'<section id="verdict" class="{"bad" if bad else "good"}"><h2>{html.escape(head)}</h2>'
            f'{cmp_line}<p class="chips">{chips}</p></section><div class="answers">{answers}</div>')  # fmt: skip


def _item_attrs(c: Mapping[str, Any]) -> str:
    e = html.escape
    return f'data-item data-config="{e(c["config"])}" data-surface="{e(surface_of(c))}" data-outcome="{e(c["outcome"])}"'


def _failure(c: Mapping[str, Any]) -> str:
    """One failing check: what was observed, the reason, its server's log excerpt and its reproducer."""
    e = html.escape
    observed = str(c.get("observed") or "")
    reason = str(c.get("reason") or "")
    body = [f'<div class="failure{" known" if c["outcome"] == "known failure" else ""}" {_item_attrs(c)}>',
            f"<h3>{e(c['id'])} on {e(c['config'])} {_chip(c['outcome'], c['outcome'])}</h3>",
            f"<p><b>Observed</b></p><pre>{e(observed[:3000]) if observed else '(no failure text recorded)'}</pre>"]  # fmt: skip
    if reason and reason.strip() != observed.strip():
        label = "Known failure" if c["outcome"] == "known failure" else "Why"
        body.append(f"<p><b>{label}</b>" + (f" ({e(str(c['known_entry']))})" if c.get("known_entry") else "") + f"</p><pre>{e(reason[:3000])}</pre>")
    excerpt = c.get("log_excerpt")
    if excerpt:
        n = len(str(excerpt).splitlines())
        body.append(f"<details class=log open><summary>Server log, last {n} lines</summary><pre>{e(str(excerpt))}</pre></details>")
    else:
        body.append('<p class="muted">No server log excerpt recorded.</p>')
    repro = c.get("reproducer")
    if isinstance(repro, Mapping) and (repro.get("curl") or repro.get("python")):
        blocks = "".join(f"<p><b>{name}</b></p><pre>{e(str(repro[key]))}</pre>" for key, name in (("curl", "curl"), ("python", "Python"))
                         if repro.get(key))  # fmt: skip
        body.append(f"<details class=reproducer><summary>Reproducer</summary>{blocks}</details>")
    body.append("</div>")
    return "".join(body)


def _failures(checks: Sequence[Mapping[str, Any]]) -> str:
    """Every check that fails the run, open; then the known failures, folded (each with its evidence)."""
    failing = [c for c in checks if c["outcome"] in _FAILING]
    known = [c for c in checks if c["outcome"] == "known failure"]
    if not failing and not known:
        return ""
    out = ['<section id="failures"><h2>Failures</h2>']
    out += [_failure(c) for c in failing] or ['<p class="muted">No check fails the run.</p>']
    if known:
        out.append(f"<details id=known-failures><summary>Known failures ({len(known)}), each with what was observed</summary>"
                   + "".join(_failure(c) for c in known) + "</details>")  # fmt: skip
    out.append("</section>")
    return "".join(out)


def _boxes(kind: str, values: Iterable[str], counts: Mapping[str, int] | None = None) -> str:
    e = html.escape
    return "".join(f'<label><input type="checkbox" data-kind="{kind}" value="{e(v)}" checked> {e(v)}'
                   + (f" ({counts.get(v, 0)})" if counts is not None else "") + "</label> " for v in values)  # fmt: skip


def _filters(checks: Sequence[Mapping[str, Any]], configs: Sequence[str]) -> str:
    """Checkboxes by configuration, surface and outcome (the script hides what is unchecked)."""
    outcomes: dict[str, int] = {}
    surfaces: dict[str, int] = {}
    for c in checks:
        outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1
        surfaces[surface_of(c)] = surfaces.get(surface_of(c), 0) + 1
    ordered = [k for k in _COLORS if k in outcomes] + sorted(k for k in outcomes if k not in _COLORS)
    return ('<form id="filters"><b>Filter</b> '
            f"<fieldset><legend>configuration</legend>{_boxes('config', configs)}</fieldset>"
            f"<fieldset><legend>surface</legend>{_boxes('surface', sorted(surfaces), surfaces)}</fieldset>"
            f"<fieldset><legend>outcome</legend>{_boxes('outcome', ordered, outcomes)}</fieldset>"
            '<noscript><p class="muted">The filter needs script; everything is shown.</p></noscript></form>')  # fmt: skip


def _parsers(info: Mapping[str, Any]) -> str:
    """`glm45 → glm47_moe_tool_parser.Glm47MoeModelToolParser` for each parser, or empty."""
    parsers = info.get("parsers") or {}
    return "<br>".join(
        f"{html.escape(str(parsers.get(kind + '_parser')))} → {html.escape(str(parsers.get(kind + '_parser_class') or 'not registered'))}"
        for kind in ("tool_call", "reasoning") if parsers.get(kind + "_parser")
    )  # fmt: skip


def _configurations(report: Mapping[str, Any]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(cid)}</td><td>{e(str(info.get('vllm_version')))}</td><td>{e(str(info.get('engine')))}</td>"
        f"<td>{e(str(info.get('status')))}</td><td>{info.get('startup_seconds') or ''}</td><td>{e(str(info.get('distribution') or ''))}</td>"
        f"<td class=small>{_parsers(info)}</td><td>{e(str(info.get('log') or ''))}</td></tr>"
        for cid, info in report["configurations"].items()
    )
    return ('<h2 id="configurations">Configurations</h2><table><tr><th>configuration</th><th>vLLM</th><th>engine</th>'
            f"<th>status</th><th>startup s</th><th>distribution</th><th>parsers (name → class)</th><th>log</th></tr>{rows}</table>")  # fmt: skip


def _matrix(checks: Sequence[Mapping[str, Any]], configs: Sequence[str]) -> str:
    """Checks x configurations, one collapsible table per suite; a suite with a failure starts open."""
    e = html.escape
    cell = {(c["id"], c["config"]): c for c in checks}
    by_suite: dict[str, list[str]] = {}
    for cid in sorted({c["id"] for c in checks}):
        by_suite.setdefault(suite_of(cid), []).append(cid)
    head = "".join(f'<th data-col="{e(c)}">{e(c)}</th>' for c in configs)
    sections = []
    for suite, ids in by_suite.items():
        counts: dict[str, int] = {}
        rows = []
        for cid in ids:
            tds = []
            surface = "chat"
            for config in configs:
                c = cell.get((cid, config))
                if c is None:
                    tds.append(f'<td data-col="{e(config)}" data-outcome="absent"></td>')
                    continue
                surface = surface_of(c)
                outcome = c["outcome"]
                counts[outcome] = counts.get(outcome, 0) + 1
                tds.append(f'<td data-col="{e(config)}" data-outcome="{e(outcome)}" style="background:{_COLORS.get(outcome, "#fff")};color:#fff;text-align:center" '
                           f'title="{e(outcome)}: {e(c.get("reason") or "")}">{_SYMBOL.get(outcome, "?")}</td>')  # fmt: skip
            short = cid.split("::", 1)[1] if "::" in cid else cid
            rows.append(f'<tr data-check="{e(cid)}" data-surface="{e(surface)}"><td class=id>{e(short)}</td>{"".join(tds)}</tr>')
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: list(_COLORS).index(kv[0]) if kv[0] in _COLORS else 99))
        is_open = " open" if any(k in counts for k in _FAILING) else ""
        sections.append(f'<details class="suite" data-suite="{e(suite)}"{is_open}><summary>{e(suite)}: {len(ids)} checks; {e(summary)} '
                        f'<span class="shown muted"></span></summary><table><tr><th>check</th>{head}</tr>{"".join(rows)}</table></details>')  # fmt: skip
    legend = " ".join(_chip(k, f"{_SYMBOL[k]} {k}") for k in _COLORS)
    return f'<h2 id="matrix">Conformance matrix</h2><p>{legend}</p>{"".join(sections)}'


def _parity(report: Mapping[str, Any]) -> str:
    """The parity section, when the kit has one (`pytest_glm45.measure.parity.render_parity_section`)."""
    try:
        parity = importlib.import_module("pytest_glm45.measure.parity")
    except ImportError:
        return ""
    render = getattr(parity, "render_parity_section", None)
    return str(render(report)) if render is not None else ""


def _noise(points: list[Mapping[str, Any]]) -> str:
    """Per point: its rounds of output throughput, each judged figure's spread against its tolerance, the figures not
    judged and why, and the rounds set aside as contended with why (reports without these fields show nothing)."""
    e = html.escape
    rows = []
    for p in points:
        if not any(k in p for k in ("spread", "contention", "not_judged")):
            continue
        rounds = (p.get("rounds") or {}).get("output_throughput") or []
        aside = [c for c in p.get("contention") or [] if c and c.get("contended")]
        spread = "; ".join(f"{m} ±{v['spread']:.1%} (tolerance {v['tolerance']:.0%}{'' if v['known'] else ', not known'})"
                           for m, v in (p.get("spread") or {}).items() if v.get("spread", -1) >= 0)  # fmt: skip
        unknown = "; ".join(f"{m}: {why}" for m, why in (p.get("not_judged") or {}).items())
        why = "; ".join(f"round {n}: {c.get('why')}" for n, c in enumerate(p.get("contention") or [], 1) if c and c.get("contended"))
        rows.append(f"<tr><td>{e(str(p['config']))} {e(str(p['shape']))} x{e(str(p['batch']))}</td>"
                    f"<td>{e(', '.join(f'{v:.4g}' for v in rounds))}</td><td>{e(spread)}</td><td>{e(unknown) or 'none'}</td>"
                    f"<td>{len(aside)}{': ' + e(why) if why else ''}</td></tr>")  # fmt: skip
    if not rows:
        return ""
    return ('<h3 id="noise">Rounds, spread and rounds set aside</h3><table><tr><th>point</th><th>output tok/s per round '
            "(used)</th><th>spread of the median</th><th>not judged</th><th>set aside as contended</th></tr>"
            + "".join(rows) + "</table>")  # fmt: skip


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
