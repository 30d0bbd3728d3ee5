"""A session's throughput points: run, export, check against thresholds, save as a baseline.

No pytest here: the plugin hands the suite a `ThroughputSession` through a fixture.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45 import thresholds
from pytest_glm45.loadgen import LoadGenerator, Metrics, Shape, Workload, bench_serve_json


@dataclass
class Point:
    config_id: str
    shape: Shape
    batch: int
    metrics: dict[str, Any]


@dataclass
class ThroughputSession:
    """Collects every point of the session."""

    export_dir: Path
    thresholds_file: Path | None = None
    progress: Callable[[str, bool], None] | None = None
    points: list[Point] = field(default_factory=list)
    _entries: list[thresholds.Entry] | None = None

    def entries(self) -> list[thresholds.Entry]:
        if self._entries is None:
            self._entries = thresholds.load(self.thresholds_file) if self.thresholds_file else []
        return self._entries

    def run(self, base_url: str, api_key: str | None, model: str, config_id: str, shape: Shape, batch: int,
            request_rate: float = math.inf, endpoint: str = "completions") -> Metrics:  # fmt: skip
        """Run one point, show live progress, export it as `vllm bench serve` JSON, remember it."""
        workload = Workload(shape=shape, num_prompts=batch, request_rate=request_rate, endpoint=endpoint)
        label = f"{config_id} {shape.name} {shape.input_len}/{shape.output_len} x{batch}"

        def on_progress(done: int, total: int, tokens: int, elapsed: float) -> None:
            if self.progress is not None:
                rate = tokens / elapsed if elapsed > 0 else 0.0
                # A permanent line at each quarter (what a CI log keeps); live rewrites in between.
                milestone = done == total or (done * 4 // total) != ((done - 1) * 4 // total)
                self.progress(f"glm45 throughput: {label}: {done}/{total} requests, {rate:,.0f} output tok/s", milestone)

        metrics, results = LoadGenerator(base_url, api_key, model).run(workload, on_progress)
        self.points.append(Point(config_id, shape, batch, metrics.flat()))
        self.export_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{config_id}-{shape.name}-{batch}") + ".json"
        (self.export_dir / name).write_text(json.dumps(bench_serve_json(workload, metrics, results, model, config_id), indent=1))
        return metrics

    def check(self, config_id: str, shape: Shape, batch: int, measured: dict[str, Any]) -> tuple[bool, str, int]:
        """(every matching bound holds, the table, how many bounds applied)."""
        bounds = thresholds.bounds_for(self.entries(), config_id, shape.name, batch)
        ok, table = thresholds.check(bounds, measured)
        return ok, table, len(bounds)

    def save_baseline(self, path: Path, margin: float, note: str) -> None:
        thresholds.save_baseline(path, [(p.config_id, p.shape.name, p.batch, p.metrics) for p in self.points], margin, note)
