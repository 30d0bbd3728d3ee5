"""Throughput thresholds: floors and ceilings per configuration pattern, shape and batch.

    [[threshold]]
    config = "tiny-bf16-*"        # fnmatch pattern on the configuration id
    shape = "*"                   # prompt-heavy, decode-heavy, balanced, or *
    batch = "*"                   # a batch size, or *
    min_output_throughput = 20.0  # min_<metric> is a floor, max_<metric> a ceiling
    max_p99_ttft_ms = 120000

Every entry that matches a point applies. A point that misses one gets a table of measured
against required. `save_baseline` writes measured figures, less a margin, as such a file.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: Metrics a baseline records: higher is better for throughputs, lower for latencies.
BASELINE_METRICS = {
    "output_throughput": "min",
    "total_token_throughput": "min",
    "request_throughput": "min",
    "median_ttft_ms": "max",
    "p99_ttft_ms": "max",
    "median_tpot_ms": "max",
    "p99_itl_ms": "max",
}


class ThresholdsError(ValueError):
    """A thresholds file that does not have the documented shape."""


@dataclass(frozen=True)
class Bound:
    """One requirement that applies to a point."""

    metric: str
    kind: str  # "min" or "max"
    limit: float
    source: str

    def holds(self, value: float) -> bool:
        return value >= self.limit if self.kind == "min" else value <= self.limit


@dataclass(frozen=True)
class Entry:
    config: str
    shape: str
    batch: str
    bounds: tuple[Bound, ...]

    def matches(self, config_id: str, shape: str, batch: int) -> bool:
        return (
            fnmatch.fnmatchcase(config_id, self.config)
            and fnmatch.fnmatchcase(shape, self.shape)
            and (self.batch == "*" or str(self.batch) == str(batch))
        )


def load(path: Path) -> list[Entry]:
    """Parse a thresholds file; raise ThresholdsError naming the entry and the key."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ThresholdsError(f"{path}: {exc}") from exc
    entries = []
    for n, raw in enumerate(data.get("threshold", []), 1):
        bounds = []
        for key, value in raw.items():
            if key in ("config", "shape", "batch"):
                continue
            kind, _, metric = key.partition("_")
            if kind not in ("min", "max") or not metric or not isinstance(value, (int, float)):
                raise ThresholdsError(f"{path}: entry {n}: {key} = {value!r}; accepted: min_<metric> or max_<metric> = a number")
            bounds.append(Bound(metric, kind, float(value), f"{path.name}#{n}"))
        entries.append(Entry(str(raw.get("config", "*")), str(raw.get("shape", "*")), str(raw.get("batch", "*")), tuple(bounds)))
    return entries


def bounds_for(entries: list[Entry], config_id: str, shape: str, batch: int) -> list[Bound]:
    return [b for e in entries if e.matches(config_id, shape, batch) for b in e.bounds]


def check(bounds: list[Bound], measured: Mapping[str, Any]) -> tuple[bool, str]:
    """(all hold, a table of measured against required)."""
    rows = [("metric", "measured", "required", "")]
    ok = True
    for b in bounds:
        value = measured.get(b.metric)
        if value is None:
            rows.append((b.metric, "(not measured)", f"{'>=' if b.kind == 'min' else '<='} {b.limit:g}", "MISSING"))
            ok = False
            continue
        holds = b.holds(float(value))
        ok = ok and holds
        rows.append((b.metric, f"{float(value):.2f}", f"{'>=' if b.kind == 'min' else '<='} {b.limit:g}", "ok" if holds else "MISSED"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    table = "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows)
    return ok, table


def baseline_entry(config_id: str, shape: str, batch: int, measured: Mapping[str, Any], margin: float) -> str:
    """One [[threshold]] block: floors at (1 - margin) x measured, ceilings at (1 + margin) x measured."""
    lines = ["[[threshold]]", f'config = "{config_id}"', f'shape = "{shape}"', f"batch = {batch}"]
    for metric, kind in BASELINE_METRICS.items():
        if metric not in measured:
            continue
        value = float(measured[metric])
        limit = value * (1 - margin) if kind == "min" else value * (1 + margin)
        lines.append(f"{kind}_{metric} = {limit:.4g}")
    return "\n".join(lines) + "\n"


def save_baseline(path: Path, points: list[tuple[str, str, int, Mapping[str, Any]]], margin: float, note: str) -> None:
    """Write every measured point as a thresholds file for the next run."""
    header = (
        f"# Baseline written by pytest-glm45 ({note}).\n"
        f"# Floors are the measured figures less {margin:.0%}, ceilings the measured figures plus {margin:.0%}.\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(baseline_entry(c, s, b, m, margin) for c, s, b, m in points), "utf-8")
