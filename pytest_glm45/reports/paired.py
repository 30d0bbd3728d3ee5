"""Two servers measured interleaved, judged on paired ratios: is B slower than A, whatever the machine does?

    pytest-glm45 ab --a http://127.0.0.1:8001 --b http://127.0.0.1:8002 --model tiny --label-a 0.31.0 --label-b 0.32.0

A shared machine's speed drifts by tens of percent from one minute to the next. Two runs one after the other
(two reports, `compare`) cannot tell that drift from a change. Here both servers are up at once and each point
runs a round on A, then one on B, then B, then A (ABBA, so neither side always goes first), only the measured
server busy; each pair of rounds gives a ratio B/A per figure, and drift slower than a pair cancels in it. A
point adds pairs (within the budget) until every figure with a tolerance is decided on the interval of its
median ratio (`pytest_glm45.measure.noise`: the order-statistic interval of the median, `judge_change`): a
regression when even the interval's best case is worse than the tolerance (throughputs lower, latencies higher),
no regression when even its worst case is within it; a figure whose interval still straddles the tolerance when
the budget is spent is *not judged*. A pair in which either round was contended
(`pytest_glm45.measure.contention`) is set aside.

Each side's rounds also make an ordinary report point (`side_points`), so thresholds and `compare` can judge them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.clients.loadgen import LoadGenerator, Metrics, Shape, Workload, profile_points
from pytest_glm45.measure import noise
from pytest_glm45.measure.contention import RoundContention, RoundWatch, listener_pids, wait_quiet
from pytest_glm45.measure.throughput import Point, combine, measure_round
from pytest_glm45.reports.compare import DEFAULT_TOLERANCES, HIGHER_IS_BETTER


@dataclass
class Target:
    """One of the two servers: a label, where it answers, the model name it serves, and its processes here."""

    label: str
    base_url: str
    api_key: str | None
    model: str
    #: the server's processes (a proxy's too): its CPU is not a neighbour's. Default: the base URL's listener.
    pids: Sequence[int] = ()
    config_id: str = ""

    def __post_init__(self) -> None:
        self.config_id = self.config_id or self.label
        if not self.pids:
            self.pids = listener_pids(self.base_url)


@dataclass
class PairedPoint:
    """One point measured on both servers: each side's rounds, the pairs set aside, the ratios and the verdicts."""

    shape: Shape
    batch: int
    a: list[Metrics] = field(default_factory=list)
    b: list[Metrics] = field(default_factory=list)
    a_flags: list[RoundContention | None] = field(default_factory=list)
    b_flags: list[RoundContention | None] = field(default_factory=list)
    #: "AB" or "BA" per pair, in order
    order: list[str] = field(default_factory=list)
    #: figure -> B/A per clean pair
    ratios: dict[str, list[float]] = field(default_factory=dict)
    #: figure -> ("regression" | "improvement" | "within" | "not judged", the line that says so)
    verdicts: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: seconds waited, before each round on the other server, for the server just measured to go quiet
    settled_s: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        """`shape in/out xbatch`."""
        return f"{self.shape.name} {self.shape.input_len}/{self.shape.output_len} x{self.batch}"

    def contended(self) -> list[int]:
        """The pairs (1-based) set aside because a round of either side was contended."""
        return [n for n, (x, y) in enumerate(zip(self.a_flags, self.b_flags, strict=True), 1)
                if (x is not None and x.contended) or (y is not None and y.contended)]  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The report's form: every round of both sides, the order, the contention and the verdicts."""
        aside = set(self.contended())
        return {"shape": self.shape.name, "input_len": self.shape.input_len, "output_len": self.shape.output_len,
                "batch": self.batch, "pairs": len(self.order), "order": self.order, "set_aside": sorted(aside),
                "a_rounds": [m.flat() for m in self.a], "b_rounds": [m.flat() for m in self.b],
                "a_contention": [c.to_json() if c else None for c in self.a_flags],
                "b_contention": [c.to_json() if c else None for c in self.b_flags],
                "settled_s": [round(x, 2) for x in self.settled_s], "ratios": self.ratios, "spread": noise.spreads(self.ratios, {m: DEFAULT_TOLERANCES.get(m, 0.1) for m in self.ratios}),
                "verdicts": {m: {"verdict": v, "text": t} for m, (v, t) in self.verdicts.items()}}  # fmt: skip


def clean_ratios(point: PairedPoint, tolerances: Mapping[str, float]) -> dict[str, list[float]]:
    """B/A per figure with a tolerance, over the pairs whose rounds were both clean and valid on both sides."""
    aside = set(point.contended())
    out: dict[str, list[float]] = {}
    for n, (x, y) in enumerate(zip(point.a, point.b, strict=True), 1):
        if n in aside:
            continue
        fa, fb = x.flat(), y.flat()
        for metric in tolerances:
            va, vb = fa.get(metric), fb.get(metric)
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va > 0:
                out.setdefault(metric, []).append(float(vb) / float(va))
    return out


def judge_ratios(ratios: Mapping[str, Sequence[float]], tolerances: Mapping[str, float], a: str = "A",
                 b: str = "B") -> dict[str, tuple[str, str]]:  # fmt: skip
    """Per figure: regression, improvement, within the tolerance, or not judged, on the median ratio's interval
    (`noise.judge_ratios`: a regression when even its best case is worse than the tolerance, within when even its
    worst case is not, not judged when it straddles the tolerance), with the line that says so."""
    out: dict[str, tuple[str, str]] = {}
    for metric, tolerance in tolerances.items():
        values = ratios.get(metric)
        if not values:
            continue
        verdict, interval = noise.judge_ratios(values, tolerance, metric in HIGHER_IS_BETTER)
        r = statistics.median(values)
        worse = (1 - r) if metric in HIGHER_IS_BETTER else (r - 1)
        if interval is None:
            out[metric] = (noise.NOT_JUDGED, f"{metric}: not judged: {len(values)} pair(s), too few for an interval "
                                             f"(at least {noise.MIN_ROUNDS_FOR_SPREAD})")  # fmt: skip
            continue
        low, high = noise.worsening(interval.low, interval.high, metric in HIGHER_IS_BETTER)
        text = (f"{metric} {b}/{a} = {r:.3f} ({'worse' if worse > 0 else 'better'} by {abs(worse):.1%}; {low:+.1%}..{high:+.1%} "
                f"worse, {interval.coverage:.0%} interval over {len(values)} pairs; tolerance {tolerance:.0%})")  # fmt: skip
        if verdict == noise.NOT_JUDGED:
            text = (f"{metric}: not judged: the machine's spread (±{interval.spread:.1%}) leaves the change between "
                    f"{low:+.1%} and {high:+.1%} worse, across the tolerance ({tolerance:.0%}); " + text)  # fmt: skip
        out[metric] = (verdict, text)
    return out


def all_decided(ratios: Mapping[str, Sequence[float]], tolerances: Mapping[str, float]) -> bool:
    """Whether every figure with a tolerance and ratios is judged (its interval clear of the tolerance): pairs may stop."""
    return all(judge_ratios({m: v}, {m: tolerances[m]})[m][0] != noise.NOT_JUDGED
               for m, v in ratios.items() if m in tolerances and v)  # fmt: skip


def run_point(a: Target, b: Target, shape: Shape, batch: int, budget: noise.Budget, tolerances: Mapping[str, float],
              watch: bool = True, client_cpus: Sequence[int] | None = None,
              progress: Callable[[str], None] | None = None) -> PairedPoint:  # fmt: skip
    """Warm both servers on this shape and batch, then pairs of rounds (ABBA) until every figure is decided or the
    budget is spent; judged."""
    workload = Workload(shape=shape, num_prompts=batch)
    generators = {t.label: LoadGenerator(t.base_url, t.api_key, t.model) for t in (a, b)}
    watches = {t.label: RoundWatch(t.pids, enabled=watch) for t in (a, b)}
    point = PairedPoint(shape, batch)
    last: Target | None = None
    for t in (a, b):  # one warm-up round per server, shape and batch, not counted
        if last is not None and (others := [p for p in last.pids if p not in t.pids]):
            wait_quiet(others)
        generators[t.label].run(workload, None, cpus=client_cpus)
        last = t
    for n in range(1, budget.most + 1):
        order = "AB" if n % 2 else "BA"
        point.order.append(order)
        got: dict[str, tuple[Metrics, RoundContention | None]] = {}
        for side in order:
            t = a if side == "A" else b
            if last is not None and last is not t and (others := [p for p in last.pids if p not in t.pids]):
                # only the measured server busy: the other one's threads may spin on after its last answer
                point.settled_s.append(wait_quiet(others))
            last = t
            metrics, _results, flag = measure_round(generators[t.label], workload, watches[t.label], None, client_cpus)
            got[side] = (metrics, flag)
        point.a.append(got["A"][0])
        point.a_flags.append(got["A"][1])
        point.b.append(got["B"][0])
        point.b_flags.append(got["B"][1])
        point.ratios = clean_ratios(point, tolerances)
        clean = n - len(point.contended())
        if progress is not None:
            out = point.ratios.get("output_throughput") or [math.nan]
            flag_text = "; contended, set aside" if n in point.contended() else ""
            progress(f"{point.label}: pair {n}/{budget.least}..{budget.most} ({order}): output tok/s {b.label}/{a.label} "
                     f"{out[-1]:.3f}{flag_text}")  # fmt: skip
        if clean >= budget.least and all_decided(point.ratios, tolerances):
            break
    point.verdicts = judge_ratios(point.ratios, tolerances, a.label, b.label)
    if not point.ratios:
        point.verdicts = {m: ("not judged", f"{m}: not judged: every one of the {len(point.order)} pairs was contended "
                              "or invalid") for m in tolerances}  # fmt: skip
    return point


def side_points(point: PairedPoint, config_a: str, config_b: str, tolerances: Mapping[str, float]) -> tuple[Point, Point]:
    """Each side's rounds as an ordinary throughput point (as a run's report holds it), for thresholds and compare."""
    return (combine(config_a, point.shape, point.batch, point.a, point.a_flags, tolerances),
            combine(config_b, point.shape, point.batch, point.b, point.b_flags, tolerances))  # fmt: skip


@dataclass
class PairedRun:
    """Every point of an interleaved comparison and the verdict over them."""

    a: str
    b: str
    points: list[PairedPoint] = field(default_factory=list)

    def lines(self, kind: str) -> list[str]:
        """`point: text` for every figure judged `kind`."""
        return [f"{p.label}: {text}" for p in self.points for v, text in p.verdicts.values() if v == kind]

    @property
    def regressed(self) -> bool:
        """Whether a figure regressed beyond its tolerance."""
        return bool(self.lines("regression"))

    def verdict(self) -> str:
        """One line: regressions, improvements, figures not judged (and why), pairs set aside."""
        reg, imp, unknown = self.lines("regression"), self.lines("improvement"), self.lines("not judged")
        aside = sum(len(p.contended()) for p in self.points)
        pairs = sum(len(p.order) for p in self.points)
        head = "❌ regression" if reg else "✅ no regression"
        parts = [f"{self.b} against {self.a}, measured interleaved ({pairs} pairs over {len(self.points)} points)",
                 f"{len(reg)} regression(s) beyond the tolerance", f"{len(imp)} improvement(s)"]  # fmt: skip
        if unknown:
            parts.append(f"{len(unknown)} figure(s) not judged: the machine's spread exceeded the tolerance (neither "
                         "passed nor failed; see below)")  # fmt: skip
        if aside:
            parts.append(f"{aside} pair(s) set aside as contended (a noisy neighbour)")
        return f"{head}: " + "; ".join(parts)

    def markdown(self) -> str:
        """The verdict, then each section."""
        out = [f"### pytest-glm45 ab: {self.a} → {self.b} (interleaved)", "", self.verdict(), ""]
        for title, kind in (("Performance regressions", "regression"), ("Not judged", "not judged"),
                            ("Improvements", "improvement"), ("Within the tolerance", "within")):  # fmt: skip
            items = self.lines(kind)
            out += [f"**{title}** ({len(items)})", *([f"- {i}" for i in items] or ["- none"]), ""]
        aside = [f"- {p.label} pair {n}: " + "; ".join(c.why for c in (p.a_flags[n - 1], p.b_flags[n - 1]) if c and c.contended)
                 for p in self.points for n in p.contended()]  # fmt: skip
        out += [f"**Pairs set aside as contended** ({len(aside)})", *(aside or ["- none"]), ""]
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        """The JSON the `ab` command writes."""
        return {"a": self.a, "b": self.b, "verdict": self.verdict(), "regressed": self.regressed,
                "points": [p.to_json() for p in self.points]}  # fmt: skip


def run_paired(a: Target, b: Target, points: Sequence[tuple[Shape, int]], budget: noise.Budget,
               tolerances: Mapping[str, float] | None = None, watch: bool = True, client_cpus: Sequence[int] | None = None,
               progress: Callable[[str], None] | None = None) -> PairedRun:  # fmt: skip
    """Every point measured interleaved on A and B and judged on the paired ratios."""
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    run = PairedRun(a.label, b.label)
    for shape, batch in points:
        run.points.append(run_point(a, b, shape, batch, budget, tol, watch, client_cpus, progress))
    return run


def add_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    """The `ab` subcommand's arguments (`func` runs it: the command's, which resolves the profile and tolerances)."""
    ab = sub.add_parser("ab", help="Measure two running servers interleaved and judge the paired ratios; exits 1 on a "
                        "performance regression")  # fmt: skip
    ab.add_argument("--a", required=True, help="The reference server's base URL (the old vLLM).")
    ab.add_argument("--b", required=True, help="The candidate server's base URL (the new vLLM).")
    ab.add_argument("--model", required=True, help="The served model name (both serve it).")
    ab.add_argument("--label-a", default="A", help="A's name in the verdict. Default: A.")
    ab.add_argument("--label-b", default="B", help="B's name in the verdict. Default: B.")
    ab.add_argument("--profile", default="standard", choices=("smoke", "standard", "full"),
                    help="Which shapes and batches, and the rounds budget (the suite's profiles). Default: standard.")
    ab.add_argument("--engine", default="gpu", choices=("cpu", "gpu"), help="Scales the standard profile's lengths as the "
                    "suite does for this engine. Default: gpu.")  # fmt: skip
    ab.add_argument("--tolerance", action="append", default=None, help="metric=fraction or metric=N%%, as compare's.")
    ab.add_argument("--client-cpus", default=None, help="Cores for the load generator, e.g. 1 or 2,3. Default: any.")
    ab.add_argument("--no-watch", action="store_true", help="Do not watch for noisy neighbours (no round set aside).")
    ab.add_argument("--json", default=None, help="Write the full result (every round) here.")
    ab.add_argument("--markdown", default=None, help="Write the summary here.")
    ab.set_defaults(func=func)


def run_command(args: argparse.Namespace, tolerances: Mapping[str, float], budget: noise.Budget) -> int:
    """Run the interleaved comparison; print the verdict and the sections; 1 on a regression."""
    key = os.environ.get("GLM45_API_KEY")
    a = Target(args.label_a, args.a, key, args.model)
    b = Target(args.label_b, args.b, key, args.model)
    cpus = [int(c) for c in args.client_cpus.split(",")] if args.client_cpus else None
    run = run_paired(a, b, profile_points(args.profile, args.engine), budget, tolerances, watch=not args.no_watch, client_cpus=cpus,
                     progress=lambda text: print(f"glm45 ab: {text}", file=sys.stderr, flush=True))  # fmt: skip
    text = run.markdown()
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, "utf-8")
    if args.json:
        Path(args.json).write_text(json.dumps(run.to_json(), indent=1), "utf-8")
    return 1 if run.regressed else 0

