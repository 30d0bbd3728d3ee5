"""A session's throughput points: run each over its rounds, export, check against thresholds,
save as a baseline.

No pytest here: the plugin hands the suite a `ThroughputSession` through a fixture. A point's
figure is the median over its rounds; every round's value is kept so that thresholds and
`compare` can judge a change against the spread the rounds measured. A figure invalid in any
round (see `pytest_glm45.clients.loadgen.arrival_problem`) is invalid for the point.

A point takes at least the profile's rounds and adds more, up to its budget, until the median of every figure
with a tolerance is known to within half of it (`pytest_glm45.measure.noise`); a figure still not known then is
*not judged*, with the reason. Each round is watched for a noisy neighbour (`pytest_glm45.measure.contention`):
a contended round is kept in the report with why, and set aside from the figures and the verdict. Each shape
and batch gets one warm-up round on each server before its counted rounds.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.clients.loadgen import LoadGenerator, Metrics, RequestResult, Shape, Workload, bench_serve_json
from pytest_glm45.engine import gpulease
from pytest_glm45.measure import noise, thresholds
from pytest_glm45.measure.contention import RoundContention, RoundWatch, listener_pids


@dataclass
class Point:
    """One measured point: medians over its rounds, each round's values, and what is invalid."""

    config_id: str
    shape: Shape
    batch: int
    metrics: dict[str, Any]
    rounds: dict[str, list[float]] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    #: its check's every assertion held (no failed or short request, its thresholds met): a baseline takes it
    passed: bool = False
    #: figure -> why its median is not known to within its tolerance (the machine's spread): not judged
    not_judged: dict[str, str] = field(default_factory=dict)
    #: figure -> {spread, tolerance, rounds, known} (`noise.spreads`)
    spread: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every round's evidence of a noisy neighbour, in order (`RoundContention.to_json`); empty when not watched
    contention: list[dict[str, Any]] = field(default_factory=list)
    #: figure -> the values of the rounds set aside as contended (not in `rounds`, not in the figures)
    set_aside: dict[str, list[float]] = field(default_factory=dict)


def round_values(runs: Sequence[Metrics], invalid: Mapping[str, str]) -> dict[str, list[float]]:
    """Each valid numeric figure's value per round (figures some round lacks are left out)."""
    flats = [m.flat() for m in runs]
    if not flats:
        return {}
    return {k: [float(f[k]) for f in flats] for k in flats[-1] if k not in invalid and all(k in f for f in flats)
            and isinstance(flats[-1][k], (int, float))}  # fmt: skip


#: The tolerance at which a figure that thresholds bound but `compare` does not judge (p99 ITL) must be known: a
#: tail latency's, as compare's p99 TTFT.
TAIL_TOLERANCE = 0.25


def noise_tolerances(tolerances: Mapping[str, float]) -> dict[str, float]:
    """The tolerance each judged figure's median must be known to: compare's (and --glm45-tolerance), and
    TAIL_TOLERANCE for the other figures a baseline bounds."""
    return {**{m: TAIL_TOLERANCE for m in thresholds.BASELINE_METRICS}, **tolerances}


def combine(config_id: str, shape: Shape, batch: int, runs: Sequence[Metrics],
            contention: Sequence[RoundContention | None] = (), tolerances: Mapping[str, float] | None = None) -> Point:  # fmt: skip
    """The point from its rounds: counts summed per round are taken from the last round, figures as medians of the
    rounds not set aside as contended; with `tolerances`, each figure's spread and the figures not judged."""
    invalid: dict[str, str] = {}
    for m in runs:
        invalid.update(m.invalid)
    flags = [c for c in contention] + [None] * (len(runs) - len(contention))
    clean = [m for m, c in zip(runs, flags, strict=True) if c is None or not c.contended]
    aside = [m for m, c in zip(runs, flags, strict=True) if c is not None and c.contended]
    rounds = round_values(clean, invalid)
    metrics: dict[str, Any] = {k: statistics.median(v) for k, v in rounds.items()}
    for key in ("completed", "failed", "total_input_tokens", "total_output_tokens"):
        metrics[key] = runs[-1].flat()[key]
    metrics["rounds"] = len(clean)
    point = Point(config_id, shape, batch, metrics, rounds, invalid)
    point.set_aside = round_values(aside, invalid)
    point.contention = [c.to_json() for c in flags if c is not None]
    if not clean and tolerances:
        point.not_judged = {m: f"every one of the {len(runs)} rounds was contended ({flags[-1].why if flags[-1] else ''})"
                            for m in noise_tolerances(tolerances) if m not in invalid}  # fmt: skip
    elif tolerances:
        judged = noise_tolerances(tolerances)
        point.spread = noise.spreads(rounds, judged)
        point.not_judged = {m: why for m, values in rounds.items() if m in judged
                            and (why := noise.not_known(values, judged[m])) is not None}  # fmt: skip
    return point


@dataclass
class ThroughputSession:
    """Collects every point of the session."""

    export_dir: Path
    thresholds_file: Path | None = None
    #: the least rounds a point takes
    rounds: int = 1
    progress: Callable[[str, bool], None] | None = None
    points: list[Point] = field(default_factory=list)
    #: (server, shape, batch) that have had their warm-up round
    warmed: set[tuple[str, str, int, int, int]] = field(default_factory=set)
    #: the most rounds a point takes while a figure's median is not known to within its tolerance (None: `rounds`)
    most_rounds: int | None = None
    #: figure -> the tolerance it is judged at (compare's defaults and --glm45-tolerance); empty: no noise judged
    tolerances: dict[str, float] = field(default_factory=dict)
    #: watch each round for a noisy neighbour and set contended rounds aside
    watch_contention: bool = True
    _entries: list[thresholds.Entry] | None = None

    def entries(self) -> list[thresholds.Entry]:
        """The thresholds that apply this session."""
        if self._entries is None:
            self._entries = thresholds.load(self.thresholds_file) if self.thresholds_file else []
        return self._entries

    def budget(self) -> noise.Budget:
        """The rounds a point takes: at least `rounds`, at most `most_rounds`."""
        return noise.Budget(self.rounds, max(self.most_rounds or self.rounds, self.rounds))

    def run(self, base_url: str, api_key: str | None, model: str, config_id: str, shape: Shape, batch: int,
            request_rate: float = math.inf, endpoint: str = "completions", client_cpus: Sequence[int] | None = None,
            server_pids: Sequence[int] = ()) -> tuple[Point, list[Metrics]]:  # fmt: skip
        """Run one point over its rounds, show live progress, export it as `vllm bench serve` JSON.

        `server_pids` are the measured server's processes (with their descendants); by default the process that
        listens on the base URL's port here, if any. The point holds the host-wide throughput lock
        (`pytest_glm45.engine.gpulease.alone`): configurations that run side by side never measure at the same time."""
        label = f"{config_id} {shape.name} x{batch}"
        on_wait = None if self.progress is None else (lambda text: self.progress(text, True))  # type: ignore[misc]
        with gpulease.alone(label, on_wait=on_wait):
            return self._run(base_url, api_key, model, config_id, shape, batch, request_rate, endpoint, client_cpus,
                             list(server_pids) or listener_pids(base_url))  # fmt: skip

    def _run(self, base_url: str, api_key: str | None, model: str, config_id: str, shape: Shape, batch: int,
             request_rate: float, endpoint: str, client_cpus: Sequence[int] | None, server_pids: Sequence[int],
             ) -> tuple[Point, list[Metrics]]:  # fmt: skip
        workload = Workload(shape=shape, num_prompts=batch, request_rate=request_rate, endpoint=endpoint)
        generator = LoadGenerator(base_url, api_key, model)
        watch = RoundWatch(server_pids, enabled=self.watch_contention)
        self.warm(generator, workload, config_id, base_url, client_cpus)
        budget = self.budget()
        runs: list[Metrics] = []
        flags: list[RoundContention | None] = []
        exported: dict[str, Any] | None = None
        for n in range(1, budget.most + 1):
            label = f"{config_id} {shape.name} {shape.input_len}/{shape.output_len} x{batch} round {n}/{budget.least}..{budget.most}"
            metrics, results, flag = measure_round(generator, workload, watch, self._on_progress(label), client_cpus)
            runs.append(metrics)
            flags.append(flag)
            if flag is not None and flag.contended and self.progress is not None:
                self.progress(f"glm45 throughput: {label}: contended, set aside: {flag.why}", True)
            exported = bench_serve_json(workload, metrics, results, model, config_id)  # the last round's
            clean = [m for m, c in zip(runs, flags, strict=True) if c is None or not c.contended]
            if len(clean) >= budget.least and (not self.tolerances or noise.all_known(round_values(clean, {}), noise_tolerances(self.tolerances))):
                break
        point = combine(config_id, shape, batch, runs, flags, self.tolerances or None)
        self.points.append(point)
        self.export_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config_id}-{shape.name}-{batch}") + ".json"
        (self.export_dir / name).write_text(json.dumps(exported, indent=1))
        return point, runs

    def warm(self, generator: LoadGenerator, workload: Workload, config_id: str, base_url: str,
             client_cpus: Sequence[int] | None) -> None:  # fmt: skip
        """One round, not counted, the first time this server runs this shape and batch: a fresh server's first
        round of a shape pays one-off costs (kernel selection and JIT on the CPU engine, graph capture on GPUs)."""
        shape = workload.shape
        key = (f"{config_id}@{base_url}", shape.name, shape.input_len, shape.output_len, workload.num_prompts)
        if key in self.warmed:
            return
        if self.progress is not None:
            self.progress(f"glm45 throughput: {config_id} {shape.name} x{workload.num_prompts}: warm-up round (not counted)", True)
        generator.run(workload, None, cpus=client_cpus)
        self.warmed.add(key)

    def _on_progress(self, label: str) -> Callable[[int, int, int, float], None]:
        def on_progress(done: int, total: int, tokens: int, elapsed: float) -> None:
            if self.progress is not None:
                from pytest_glm45.engine.pool import clock

                rate = tokens / elapsed if elapsed > 0 else 0.0
                left = f", ~{clock(elapsed / done * (total - done))} left" if 0 < done < total else ""
                self.progress(f"glm45 throughput: {label}: {done}/{total} requests, {rate:,.0f} output tok/s, "
                              f"{clock(elapsed)} elapsed{left}", done == total)  # fmt: skip

        return on_progress

    def unjudged(self, point: Point) -> str | None:
        """Why none of the bounds that apply to the point could be judged (each figure's median not known to within
        its tolerance), or None when one could, or none apply."""
        bounds = thresholds.bounds_for(self.entries(), point.config_id, point.shape.name, point.batch)
        judged = [b for b in bounds if b.metric not in point.invalid
                  and (thresholds.beyond_noise(b, point.rounds.get(b.metric)) is not None
                       or (b.metric not in point.not_judged and noise.median_interval(point.rounds.get(b.metric) or []) is None))]  # fmt: skip
        if not bounds or judged:
            return None
        reasons = sorted({f"{b.metric}: {point.not_judged.get(b.metric) or 'the median interval straddles the limit'}"
                          for b in bounds if b.metric not in point.invalid})  # fmt: skip
        return "not judged: " + ("; ".join(reasons) or "every bound is on an invalid figure")

    def check(self, point: Point) -> tuple[bool, str, int]:
        """(every matching bound holds, the table, how many bounds applied). Bounds measured at other lengths than
        the point's (a baseline of another profile) fail the point, saying what differs."""
        entries = self.entries()
        otherwise = thresholds.measured_otherwise(entries, point.config_id, point.shape.name, point.batch,
                                                  point.shape.input_len, point.shape.output_len)  # fmt: skip
        if otherwise:
            return False, ("thresholds measured at other lengths name this point, so they cannot judge it (a baseline "
                           "of another profile? save one under this profile):\n  " + "\n  ".join(otherwise)), 0  # fmt: skip
        bounds = thresholds.bounds_for(entries, point.config_id, point.shape.name, point.batch)
        ok, table = thresholds.check(bounds, point.metrics, point.invalid, point.not_judged, point.rounds)
        if point.not_judged:
            table += ("\n(judged with the noise measured in this run: a stored baseline's own day's noise is not known; "
                      "figures marked 'not judged' were too noisy here to hold to a bound)")  # fmt: skip
        return ok, table, len(bounds)

    def mark_passed(self, point: Point) -> None:
        """Its check's assertions all held: a saved baseline may take the point."""
        point.passed = True

    def save_baseline(self, path: Path, margin: float, note: str) -> None:
        """Write the points whose checks passed as a thresholds file (worst round less the margin)."""
        thresholds.save_baseline(path, [thresholds.BaselinePoint(p.config_id, p.shape.name, p.batch, p.shape.input_len,
                                                                 p.shape.output_len, p.rounds, p.passed)
                                        for p in self.points], margin, note)  # fmt: skip


def measure_round(generator: LoadGenerator, workload: Workload, watch: RoundWatch | None,
                  on_progress: Callable[[int, int, int, float], None] | None = None,
                  client_cpus: Sequence[int] | None = None) -> tuple[Metrics, list[RequestResult], RoundContention | None]:  # fmt: skip
    """One counted round, watched for a noisy neighbour from its first request to its last answer."""
    if watch is not None:
        watch.start()
    metrics, results = generator.run(workload, on_progress, cpus=client_cpus)
    flag = watch.stop() if watch is not None else None
    return metrics, results, flag


def summary(points: Sequence[Point]) -> list[str]:
    """The terminal's lines on the throughput points' noise: how many figures were not judged and why, and the
    rounds set aside as contended."""
    lines = []
    unjudged = [p for p in points if p.not_judged]
    if unjudged:
        lines.append(f"glm45 throughput: {len(unjudged)} of {len(points)} point(s) with figures not known to within half "
                     "their tolerance (too few clean rounds, or the machine's spread): a bound or a comparison is judged on "
                     "such a figure only where its interval clears the limit, else 'not judged', neither passed nor failed:")  # fmt: skip
        for p in unjudged:
            first = next(iter(p.not_judged.items()))
            lines.append(f"    {p.config_id} {p.shape.name} x{p.batch}: {len(p.not_judged)} figure(s), e.g. {first[0]}: {first[1]}")
    aside = [(p, sum(1 for c in p.contention if c.get("contended"))) for p in points]
    if any(n for _, n in aside):
        lines.append(f"glm45 throughput: {sum(n for _, n in aside)} round(s) set aside as contended (a noisy neighbour): "
                     + ", ".join(f"{p.config_id} {p.shape.name} x{p.batch}: {n}" for p, n in aside if n))  # fmt: skip
    return lines
