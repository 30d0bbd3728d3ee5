"""The HTML report's parity section: per pair its verdict, its figures against the thresholds, a plot
of |Δlogprob| by position and the worst positions; each model's reference and what became of it.

Reads report['parity'] as `pytest_glm45.measure.parity_session.ParitySession.to_report` writes it (a report
written before `configurations` and `failed_references` were kept renders without them). No pytest import.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any


def _svg(pair: Mapping[str, Any], width: int = 720, height: int = 160) -> str:
    """|Δlogprob| by position over every text, one after another, with the threshold as a line."""
    series: Mapping[str, Sequence[float]] = pair.get("series") or {}
    values = [v for s in series.values() for v in s]
    limit = float(pair["thresholds"].get("max_p99_dlogprob", pair["thresholds"]["max_abs_dlogprob"]))
    top = max([limit * 1.2, *values]) or 1.0
    n = max(1, len(values))
    x0, y0, w, h = 40, 10, width - 50, height - 30

    def x(i: int) -> float:
        return x0 + w * i / n

    def y(v: float) -> float:
        return y0 + h * (1 - min(v, top) / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="|Δlogprob| by position, {html.escape(pair["candidate"])} against {html.escape(pair["reference"])}">',
             f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>']  # fmt: skip
    i = 0
    for name, s in series.items():
        parts.append(f'<text x="{x(i) + 2:.1f}" y="{y0 + h + 14}" font-size="10" fill="#555">{html.escape(name)}</text>')
        parts.append(f'<line x1="{x(i):.1f}" y1="{y0}" x2="{x(i):.1f}" y2="{y0 + h}" stroke="#eee"/>')
        pts = " ".join(f"{x(i + j):.1f},{y(v):.1f}" for j, v in enumerate(s))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{"#2a7" if pair["passed"] else "#c33"}" stroke-width="1"/>')
        i += len(s)
    parts.append(f'<line x1="{x0}" y1="{y(limit):.1f}" x2="{x0 + w}" y2="{y(limit):.1f}" stroke="#c33" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="2" y="{y(limit) + 3:.1f}" font-size="10" fill="#c33">{limit:g}</text>')
    parts.append(f'<text x="2" y="{y0 + 8}" font-size="10" fill="#555">{top:.2g}</text></svg>')
    return "".join(parts)


def render_parity_section(report: Mapping[str, Any]) -> str:
    """The HTML report's parity section: each model's reference (or why it has none), per configuration
    without a pair why, per pair its verdict, figures against thresholds, a plot of |Δlogprob| by
    position, and the worst positions. Empty when the run had no parity data."""
    parity = report.get("parity") or {}
    pairs = parity.get("pairs") or []
    failed_refs: Mapping[str, str] = parity.get("failed_references") or {}
    if not pairs and not parity.get("references") and not failed_refs:
        return ""
    out = ["<section id='parity'><h2>Logprob parity</h2>",
           f"<p>References: {html.escape(', '.join(r['config'] for r in (parity.get('references') or {}).values()) or 'none')} "
           f"({html.escape(str(parity.get('reference_source', 'this session')))}; a reference is compared with nothing).</p>"]  # fmt: skip
    out += [f"<p><b>No reference for {html.escape(model)}</b>: {html.escape(why)}</p>" for model, why in sorted(failed_refs.items())]
    paired = {p["candidate"] for p in pairs}
    for config, seen in sorted((parity.get("configurations") or {}).items()):
        if config not in paired and seen.get("outcome") not in ("reference", "passed"):
            out.append(f"<p>{html.escape(config)}: {html.escape(str(seen.get('outcome')))}: "
                       f"{html.escape(str(seen.get('no_verdict') or '; '.join(seen.get('self_consistency') or [])))}</p>")  # fmt: skip
    for pair in pairs:
        t = pair["thresholds"]
        verdict = "passed" if pair["passed"] else "FAILED: " + "; ".join(pair["failures"])
        out.append(f"<h3>{html.escape(pair['candidate'])} against {html.escape(pair['reference'])}: {html.escape(verdict)}</h3>")
        problems = ((parity.get("configurations") or {}).get(pair["candidate"]) or {}).get("self_consistency") or []
        if problems:
            out.append(f"<p>Its logprobs contradict themselves too: {html.escape('; '.join(problems))}</p>")
        out.append(f"<p>{html.escape(', '.join(pair['differs']) or 'nothing differs')}; thresholds <b>{html.escape(t['name'])}</b>. "
                   f"{pair['positions']} positions: top-1 agreement {pair['top1_agreement']:.4f} (min {t['min_top1_agreement']}), "
                   f"p99 |Δlogprob| {pair.get('p99_dlogprob', 0):.4f} (max {t.get('max_p99_dlogprob')}), "
                   f"max |Δlogprob| {pair['max_abs_dlogprob']:.4f} (max {t['max_abs_dlogprob']}), "
                   f"mean KL {pair['mean_kl']:.2e} (max {t.get('max_mean_kl')}), "
                   f"max KL {pair['max_kl']:.5f} (max {t['max_kl']}).</p>")  # fmt: skip
        out.append(_svg(pair))
        rows = "".join(f"<tr><td>{html.escape(w['text'])}</td><td>{w['position']}</td>"
                       f"<td>{html.escape(json.dumps(w.get('ref_top1_text', w['ref_top1']), ensure_ascii=False))}</td>"
                       f"<td>{html.escape(json.dumps(w.get('cand_top1_text', w['cand_top1']), ensure_ascii=False))}</td>"
                       f"<td>{w['dlogprob']:.3f}</td><td>{w['kl']:.4f}</td></tr>"
                       for w in pair.get("worst", [])[:6])  # fmt: skip
        out.append("<table><tr><th>text</th><th>position</th><th>reference top-1</th><th>candidate top-1</th>"
                   f"<th>|Δlogprob|</th><th>KL</th></tr>{rows}</table>")  # fmt: skip
    out.append("</section>")
    return "\n".join(out)
