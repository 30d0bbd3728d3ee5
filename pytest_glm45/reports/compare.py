"""Compare two run reports: may we upgrade, may we accept this box?

The verdict answers first. A check that passed before and now fails, or now fails as a known
failure, is a *regression*: the upgrade breaks it, whether or not someone has recorded why.
Regressions that are all recorded known failures can be accepted deliberately
(`accept_known`); a new failure never can. A check that failed before and passes now is a fix.
Nothing unseen passes: a check that passed before and is skipped or absent now, a configuration or
a throughput point that one run has and the other has not (or measured with other lengths), and a
pair of runs that share nothing are *missing*, and block like a regression unless accepted
deliberately (`accept_missing`), each named. Performance is judged on the intervals of each run's
medians (`pytest_glm45.measure.noise.judge_runs`): a regression when even the best case of the change is worse
than the tolerance, none when even its worst case is within it, not judged when the interval straddles the
tolerance; a figure with too few rounds for an interval (one or two) falls back on its rounds' gap and is not
judged with one round, nor when a run could not measure it (every round contended). Two stored runs are judged
with the noise each measured on its own
day: drift between the days cannot be told from a change, and the verdict says so; two servers
measured interleaved (`pytest-glm45 ab`, `pytest_glm45.reports.paired`) cancel it.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_glm45.measure import noise
from pytest_glm45.records.verdict import FAILING

#: Default tolerances: a relative change beyond these (and beyond the rounds' spread) is a
#: regression. Throughputs regress when they fall, latencies when they rise.
DEFAULT_TOLERANCES = {
    "output_throughput": 0.10,
    "total_token_throughput": 0.10,
    "request_throughput": 0.10,
    "median_ttft_ms": 0.20,
    "p99_ttft_ms": 0.25,
    "median_tpot_ms": 0.15,
    "mean_tpot_ms": 0.15,
}
HIGHER_IS_BETTER = frozenset({"output_throughput", "total_token_throughput", "request_throughput"})


def _state(outcome: str) -> str:
    """passed (P), known failure (K), failing (F), skipped (S), absent (A)."""
    if outcome in ("passed", "unexpected pass"):
        return "P"
    if outcome == "known failure":
        return "K"
    if outcome in FAILING:
        return "F"
    return "A" if outcome == "absent" else "S"


@dataclass
class Comparison:
    """What changed from `old` to `new`, and whether that blocks the upgrade."""

    old_label: str
    new_label: str
    accept_known: bool = False
    #: passed before, failing now and not recorded (or failing otherwise than recorded)
    new_failures: list[str] = field(default_factory=list)
    #: passed before, a recorded known failure now
    known_regressions: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    #: failing before, recorded as a known failure now
    now_recorded: list[str] = field(default_factory=list)
    known_reworded: list[str] = field(default_factory=list)
    one_side_only: list[str] = field(default_factory=list)
    #: not compared: passed before and skipped or absent now, configurations and points in one run only or defined
    #: otherwise; they block unless `accept_missing`
    missing: list[str] = field(default_factory=list)
    accept_missing: bool = False
    other_changes: list[str] = field(default_factory=list)
    perf_regressions: list[str] = field(default_factory=list)
    perf_improvements: list[str] = field(default_factory=list)
    perf_not_judged: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        """Whether the comparison blocks: a new failure, a performance regression, or (unless accepted) a known one
        or something the new run did not see."""
        return bool(self.new_failures or self.perf_regressions or (self.known_regressions and not self.accept_known)
                    or (self.missing and not self.accept_missing))  # fmt: skip

    def verdict(self) -> str:
        """One line: what broke, what was fixed, whether performance moved beyond noise."""
        broke = len(self.new_failures) + len(self.known_regressions)
        parts = []
        if broke:
            parts.append(f"{self.new_label} breaks {broke} check(s) that pass on {self.old_label} "
                         f"({len(self.new_failures)} new, {len(self.known_regressions)} recorded as known failures"
                         + (", accepted" if self.accept_known and self.known_regressions else "") + ")")  # fmt: skip
        else:
            parts.append(f"no check that passes on {self.old_label} fails on {self.new_label}")
        parts.append(f"{len(self.fixes)} fixed")
        if self.missing:
            parts.append(f"{len(self.missing)} not compared (skipped, absent or measured otherwise"
                         + (", accepted)" if self.accept_missing else ")"))  # fmt: skip
        if self.perf_regressions:
            parts.append(f"performance: {len(self.perf_regressions)} regression(s) beyond the measured spread")
        elif self.perf_not_judged and not self.perf_improvements:
            parts.append(f"performance: {len(self.perf_not_judged)} figure(s) not judged (one round, or the machine's spread "
                         "over the tolerance), no regression among the rest")  # fmt: skip
        else:
            parts.append("performance: no regression beyond the measured spread")
        head = "❌ regression" if self.regressed else ("✅ accepted" if self.known_regressions else "✅ no regression")
        return f"{head}: " + "; ".join(parts)

    def markdown(self) -> str:
        """The summary for a CI comment: the verdict, then the lists, most important first."""
        lines = [f"### pytest-glm45: {self.old_label} → {self.new_label}", "", self.verdict(), ""]
        sections = (
            ("New failures (passed before, failing now, not as recorded)", self.new_failures),
            ("Regressions recorded as known failures" + (" (accepted)" if self.accept_known else ""), self.known_regressions),
            ("Performance regressions (the runs' closest rounds further apart than the tolerance)", self.perf_regressions),
            ("Not compared: passed before and skipped or absent now, or in one run only" + (" (accepted)" if self.accept_missing else ""),
             self.missing),
            ("Fixed", self.fixes),
            ("Failing before, recorded as known failures now", self.now_recorded),
            ("Checks in one run only", self.one_side_only),
            ("Other outcome changes", self.other_changes),
            ("Performance improvements", self.perf_improvements),
            ("Performance not judged (one round, or the machine's spread exceeded the tolerance; two stored runs are "
             "judged with each day's own noise: drift between them is not measured)", self.perf_not_judged),
            ("Known failures on both sides, recorded with another reason", self.known_reworded),
        )
        for title, items in sections:
            lines.append(f"**{title}** ({len(items)})")
            lines += [f"- {' '.join(item.split())}" for item in items] or ["- none"]  # one line per item
            lines.append("")
        return "\n".join(lines)


def _why(reason: str | None) -> str:
    """A known failure's reason without the "known failure on vLLM X.Y.Z (file#n): " prefix."""
    text = reason or ""
    return text.split(": ", 1)[1] if text.startswith("known failure on vLLM ") and ": " in text else text


def _label(report: Mapping[str, Any]) -> str:
    versions = sorted({str(c.get("vllm_version")) for c in report["configurations"].values()})
    return "vLLM " + "/".join(versions) if versions else str(report.get("created"))


def _rounds(point: Mapping[str, Any], metric: str) -> list[float]:
    values = (point.get("rounds") or {}).get(metric)
    if values:
        return [float(v) for v in values]
    return [float(point[metric])] if metric in point and point[metric] is not None else []


def _judge_checks(cmp: Comparison, old: Mapping[str, Any], new: Mapping[str, Any], shared: set[str]) -> None:
    before = {(c["id"], c["config"]): c for c in old["checks"] if c["config"] in shared}
    after = {(c["id"], c["config"]): c for c in new["checks"] if c["config"] in shared}
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key) or {}, after.get(key) or {}
        was, now = a.get("outcome", "absent"), b.get("outcome", "absent")
        s, t = _state(was), _state(now)
        name = f"`{key[0]}` on {key[1]}"
        seen = b.get("observed") or b.get("reason") or ""
        if s == "A" or t == "A":
            side = "only in the new run" if s == "A" else "only in the reference run"
            cmp.one_side_only.append(f"{name}: {side} ({now if s == 'A' else was})")
            if s == "A" and t == "F":
                cmp.new_failures.append(f"{name}: absent → {now}: {seen}")
            elif s == "P":
                cmp.missing.append(f"{name}: {was} → absent: the new run did not run it")
            continue
        if s == "P" and t == "S":
            cmp.missing.append(f"{name}: {was} → {now}: {seen}".rstrip(": "))
            continue
        if s == t:
            if t == "K" and _why(a.get("reason")) != _why(b.get("reason")):
                cmp.known_reworded.append(f"{name}: reason now: {b.get('reason')}")
            elif was != now:
                cmp.other_changes.append(f"{name}: {was} → {now}")
            continue
        if t == "F" and s in ("P", "K", "S"):
            cmp.new_failures.append(f"{name}: {was} → {now}: {seen}".rstrip(": "))
        elif t == "K" and s in ("P", "S"):
            cmp.known_regressions.append(f"{name}: {was} → known failure: {_why(b.get('reason'))}")
        elif s in ("F", "K") and t == "P":
            cmp.fixes.append(f"{name}: {was} → {now}")
        elif s == "F" and t == "K":
            cmp.now_recorded.append(f"{name}: {was} → known failure: {_why(b.get('reason'))}")
        else:
            cmp.other_changes.append(f"{name}: {was} → {now}")


#: What defines a throughput point besides its configuration, shape name and batch: two points compare only when
#: these agree (a profile scales a shape's lengths: `standard`'s prompt-heavy is not `full`'s).
POINT_DEFINITION = ("input_len", "output_len")


def point_key(point: Mapping[str, Any]) -> tuple[str, str, int]:
    """How a point is named across runs: (configuration, shape, batch)."""
    return (str(point["config"]), str(point["shape"]), int(point["batch"]))


def definition_differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    """What differs between two points of one name (their lengths), or None when they measure the same thing."""
    diff = [f"{k} {old.get(k)} → {new.get(k)}" for k in POINT_DEFINITION if old.get(k) != new.get(k)]
    return ", ".join(diff) or None


def _judge_performance(cmp: Comparison, old: Mapping[str, Any], new: Mapping[str, Any], shared: set[str],
                       tolerances: Mapping[str, float]) -> None:  # fmt: skip
    old_points = {point_key(p): p for p in old["benchmarks"] if p["config"] in shared}
    new_points = {point_key(p): p for p in new["benchmarks"] if p["config"] in shared}
    profiles = f" (profiles {old.get('profile')} → {new.get('profile')})" if old.get("profile") != new.get("profile") else ""
    for key in sorted(set(old_points) - set(new_points)):
        cmp.missing.append(f"point {key[0]} {key[1]} x{key[2]}: only in the reference run: not measured now{profiles}")
    for key in sorted(set(new_points) - set(old_points)):
        cmp.missing.append(f"point {key[0]} {key[1]} x{key[2]}: only in the new run: nothing to compare it with{profiles}")
    for key, p in new_points.items():
        q = old_points.get(key)
        if q is None:
            continue
        differs = definition_differs(q, p)
        if differs is not None:
            cmp.missing.append(f"point {key[0]} {key[1]} x{key[2]}: measured otherwise ({differs}){profiles}: not compared")
            continue
        invalid = set(p.get("invalid") or {}) | set(q.get("invalid") or {})
        unknown = {**(q.get("not_judged") or {}), **(p.get("not_judged") or {})}
        for metric, limit in tolerances.items():
            if metric in invalid:
                continue
            before, after = _rounds(q, metric), _rounds(p, metric)
            verdict, worse_span = noise.judge_runs(before, after, limit, metric in HIGHER_IS_BETTER)
            if worse_span is not None:  # both runs' medians have an interval: judged on them, whatever each run knew
                _judge_intervals(cmp, p, metric, limit, before, after, verdict, worse_span,
                                 f"; {metric} not judged ({'this run' if metric in (p.get('not_judged') or {}) else 'the reference run'}): "
                                 f"{unknown[metric]}" if metric in unknown else "")  # fmt: skip
                continue
            if metric in unknown:
                side = "this run" if metric in (p.get("not_judged") or {}) else "the reference run"
                cmp.perf_not_judged.append(f"{p['config']} {p['shape']} x{p['batch']}: {metric} not judged ({side}): "
                                           f"{unknown[metric]}")  # fmt: skip
                continue
            if not before or not after or not statistics.median(before):
                continue
            b, a = statistics.median(before), statistics.median(after)
            change = (a - b) / b
            worse = -change if metric in HIGHER_IS_BETTER else change
            if abs(worse) <= limit:
                continue
            # The gap between the two runs' rounds: how far apart even their closest rounds are.
            if metric in HIGHER_IS_BETTER:
                gap_worse, gap_better = (min(before) - max(after)) / b, (min(after) - max(before)) / b
            else:
                gap_worse, gap_better = (min(after) - max(before)) / b, (min(before) - max(after)) / b
            text = (f"{p['config']} {p['shape']} x{p['batch']}: {metric} {b:.4g} → {a:.4g} ({change:+.1%}; rounds "
                    f"{_span(before)} → {_span(after)}, {max(gap_worse, gap_better, 0.0):.1%} apart; tolerance {limit:.0%})")  # fmt: skip
            if len(before) < 2 or len(after) < 2:
                cmp.perf_not_judged.append(text)
            elif gap_worse > limit:
                cmp.perf_regressions.append(text)
            elif gap_better > limit:
                cmp.perf_improvements.append(text)


def _judge_intervals(cmp: Comparison, p: Mapping[str, Any], metric: str, limit: float, before: Sequence[float],
                     after: Sequence[float], verdict: str, worse_span: tuple[float, float], known: str = "") -> None:  # fmt: skip
    """A figure both runs measured over enough rounds for an interval: a regression when even the best case of
    the change is worse than the tolerance, not judged when its interval straddles the tolerance."""
    b, a = statistics.median(before), statistics.median(after)
    text = (f"{p['config']} {p['shape']} x{p['batch']}: {metric} {b:.4g} → {a:.4g} ({(a - b) / b:+.1%}; rounds "
            f"{_span(before)} → {_span(after)}; the change is {worse_span[0]:+.1%}..{worse_span[1]:+.1%} worse at the "
            f"medians' intervals; tolerance {limit:.0%})")  # fmt: skip
    if verdict == noise.REGRESSION:
        cmp.perf_regressions.append(text)
    elif verdict == noise.IMPROVEMENT:
        cmp.perf_improvements.append(text)
    elif verdict == noise.NOT_JUDGED:
        cmp.perf_not_judged.append(text + ": the machine's spread straddles the tolerance" + known)


def _span(values: Sequence[float]) -> str:
    return f"{min(values):.4g}..{max(values):.4g}" if len(values) > 1 else f"{values[0]:.4g} (one)"


def compare(old: Mapping[str, Any], new: Mapping[str, Any], tolerances: Mapping[str, float] | None = None,
            accept_known: bool = False, accept_missing: bool = False) -> Comparison:  # fmt: skip
    """What changed from the reference report `old` to `new`."""
    cmp = Comparison(_label(old), _label(new), accept_known=accept_known, accept_missing=accept_missing)
    # Only configurations both runs have are compared check by check; the others are not compared, and say so.
    shared = set(old["configurations"]) & set(new["configurations"])
    if not shared:
        cmp.missing.append(f"nothing compared: the runs share no configuration (reference: "
                           f"{', '.join(sorted(old['configurations'])) or 'none'}; this run: "
                           f"{', '.join(sorted(new['configurations'])) or 'none'}); compare against a reference "
                           "that ran the same model, precision and plan")  # fmt: skip
    for side, report_ in (("only in the reference run", old), ("only in the new run", new)):
        for config_id in sorted(set(report_["configurations"]) - shared):
            cmp.missing.append(f"configuration {config_id} {side}: not compared")
    _judge_checks(cmp, old, new, shared)
    _judge_performance(cmp, old, new, shared, {**DEFAULT_TOLERANCES, **(tolerances or {})})
    return cmp
