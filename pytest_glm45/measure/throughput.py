"""A session's throughput points: run each over its rounds, export, check against thresholds,
save as a baseline.

No pytest here: the plugin hands the suite a `ThroughputSession` through a fixture. A point's
figure is the median over its rounds; every round's value is kept so that thresholds and
`compare` can judge a change against the spread the rounds measured. A figure invalid in any
round (see `pytest_glm45.clients.loadgen.arrival_problem`) is invalid for the point.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.clients.loadgen import LoadGenerator, Metrics, Shape, Workload, bench_serve_json
from pytest_glm45.engine import gpulease
from pytest_glm45.measure import thresholds


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


def combine(config_id: str, shape: Shape, batch: int, runs: Sequence[Metrics]) -> Point:
    """The point from its rounds: counts summed per round are taken from the last round, figures as medians."""
    invalid: dict[str, str] = {}
    for m in runs:
        invalid.update(m.invalid)
    flats = [m.flat() for m in runs]
    rounds = {k: [float(f[k]) for f in flats] for k in flats[-1] if k not in invalid and all(k in f for f in flats)
              and isinstance(flats[-1][k], (int, float))}  # fmt: skip
    metrics: dict[str, Any] = {k: statistics.median(v) for k, v in rounds.items()}
    for key in ("completed", "failed", "total_input_tokens", "total_output_tokens"):
        metrics[key] = flats[-1][key]
    metrics["rounds"] = len(runs)
    return Point(config_id, shape, batch, metrics, rounds, invalid)


@dataclass
class ThroughputSession:
    """Collects every point of the session."""

    export_dir: Path
    thresholds_file: Path | None = None
    rounds: int = 1
    progress: Callable[[str, bool], None] | None = None
    points: list[Point] = field(default_factory=list)
    #: configurations whose first point has had its warm-up round
    warmed: set[str] = field(default_factory=set)
    _entries: list[thresholds.Entry] | None = None

    def entries(self) -> list[thresholds.Entry]:
        """The thresholds that apply this session."""
        if self._entries is None:
            self._entries = thresholds.load(self.thresholds_file) if self.thresholds_file else []
        return self._entries

    def run(self, base_url: str, api_key: str | None, model: str, config_id: str, shape: Shape, batch: int,
            request_rate: float = math.inf, endpoint: str = "completions", client_cpus: Sequence[int] | None = None,
            ) -> tuple[Point, list[Metrics]]:  # fmt: skip
        """Run one point over the session's rounds, show live progress, export it as `vllm bench serve` JSON.

        The point holds the host-wide throughput lock (`pytest_glm45.engine.gpulease.alone`): configurations
        that run side by side never measure at the same time."""
        label = f"{config_id} {shape.name} x{batch}"
        on_wait = None if self.progress is None else (lambda text: self.progress(text, True))  # type: ignore[misc]
        with gpulease.alone(label, on_wait=on_wait):
            return self._run(base_url, api_key, model, config_id, shape, batch, request_rate, endpoint, client_cpus)

    def _run(self, base_url: str, api_key: str | None, model: str, config_id: str, shape: Shape, batch: int,
             request_rate: float, endpoint: str, client_cpus: Sequence[int] | None) -> tuple[Point, list[Metrics]]:  # fmt: skip
        workload = Workload(shape=shape, num_prompts=batch, request_rate=request_rate, endpoint=endpoint)
        generator = LoadGenerator(base_url, api_key, model)
        if config_id not in self.warmed:
            # One round before a configuration's first point, not counted: the first round after a boot (or
            # a client's start) measured slower than the rest (A/A on the embedded default, 2026-11-28).
            if self.progress is not None:
                self.progress(f"glm45 throughput: {config_id}: warm-up round (not counted)", True)
            generator.run(workload, None, cpus=client_cpus)
            self.warmed.add(config_id)
        runs: list[Metrics] = []
        exported: dict[str, Any] | None = None
        for n in range(1, self.rounds + 1):
            label = f"{config_id} {shape.name} {shape.input_len}/{shape.output_len} x{batch} round {n}/{self.rounds}"

            def on_progress(done: int, total: int, tokens: int, elapsed: float, label: str = label) -> None:
                if self.progress is not None:
                    from pytest_glm45.engine.pool import clock

                    rate = tokens / elapsed if elapsed > 0 else 0.0
                    left = f", ~{clock(elapsed / done * (total - done))} left" if 0 < done < total else ""
                    self.progress(f"glm45 throughput: {label}: {done}/{total} requests, {rate:,.0f} output tok/s, "
                                  f"{clock(elapsed)} elapsed{left}", done == total)  # fmt: skip

            metrics, results = generator.run(workload, on_progress, cpus=client_cpus)
            runs.append(metrics)
            exported = bench_serve_json(workload, metrics, results, model, config_id)  # the last round's
        point = combine(config_id, shape, batch, runs)
        self.points.append(point)
        self.export_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config_id}-{shape.name}-{batch}") + ".json"
        (self.export_dir / name).write_text(json.dumps(exported, indent=1))
        return point, runs

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
        ok, table = thresholds.check(bounds, point.metrics, point.invalid)
        return ok, table, len(bounds)

    def mark_passed(self, point: Point) -> None:
        """Its check's assertions all held: a saved baseline may take the point."""
        point.passed = True

    def save_baseline(self, path: Path, margin: float, note: str) -> None:
        """Write the points whose checks passed as a thresholds file (worst round less the margin)."""
        thresholds.save_baseline(path, [thresholds.BaselinePoint(p.config_id, p.shape.name, p.batch, p.shape.input_len,
                                                                 p.shape.output_len, p.rounds, p.passed)
                                        for p in self.points], margin, note)  # fmt: skip
