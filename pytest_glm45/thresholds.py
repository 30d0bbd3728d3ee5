"""Throughput thresholds: floors and ceilings per configuration pattern, shape and batch.

    [[threshold]]
    config = "tiny-bf16-*"        # fnmatch pattern on the configuration id
    shape = "*"                   # prompt-heavy, decode-heavy, balanced, or *
    batch = "*"                   # a batch size, or *
    min_output_throughput = 20.0  # min_<metric> is a floor, max_<metric> a ceiling
    max_p99_ttft_ms = 120000

Every entry that matches a point applies. A point that misses one gets a table of measured
against required; a bound on a figure the point could not measure validly is shown as such
and not judged. `save_baseline` writes the worst of each point's rounds, less a margin, as such
a file, so a clean re-run on the same server stays inside it; a bound that no measurement can
meet (a latency ceiling of 0 or below) is refused when a file is read.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Mapping, Sequence
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
    """One requirement that applies to a point: `kind` min is a floor, max a ceiling."""

    metric: str
    kind: str  # "min" or "max"
    limit: float
    source: str

    def holds(self, value: float) -> bool:
        """Whether a measured value meets the bound."""
        return value >= self.limit if self.kind == "min" else value <= self.limit


@dataclass(frozen=True)
class Entry:
    """One [[threshold]] block: where it applies and its bounds."""

    config: str
    shape: str
    batch: str
    bounds: tuple[Bound, ...]

    def matches(self, config_id: str, shape: str, batch: int) -> bool:
        """Whether the entry applies to this point."""
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
            if kind == "max" and BASELINE_METRICS.get(metric) == "max" and value <= 0:
                raise ThresholdsError(f"{path}: entry {n}: {key} = {value!r} is impossible (no latency is 0 or less); "
                                      "accepted: a positive ceiling. A baseline from a starved client writes such bounds: "
                                      "re-save it with this kit, which leaves invalid figures out")  # fmt: skip
            bounds.append(Bound(metric, kind, float(value), f"{path.name}#{n}"))
        entries.append(Entry(str(raw.get("config", "*")), str(raw.get("shape", "*")), str(raw.get("batch", "*")), tuple(bounds)))
    return entries


def bounds_for(entries: list[Entry], config_id: str, shape: str, batch: int) -> list[Bound]:
    """Every bound of every entry that applies to the point."""
    return [b for e in entries if e.matches(config_id, shape, batch) for b in e.bounds]


def check(bounds: list[Bound], measured: Mapping[str, Any], invalid: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(all hold, a table of measured against required); a bound on an invalid figure is not judged."""
    rows = [("metric", "measured", "required", "")]
    ok = True
    for b in bounds:
        if invalid and b.metric in invalid:
            rows.append((b.metric, "(invalid)", f"{'>=' if b.kind == 'min' else '<='} {b.limit:g}", "not judged: " + invalid[b.metric][:80]))
            continue
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


def baseline_entry(config_id: str, shape: str, batch: int, rounds: Mapping[str, Sequence[float]], margin: float) -> str:
    """One [[threshold]] block: floors at (1 - margin) x the worst round, ceilings at (1 + margin) x the worst round.

    Figures missing from `rounds` (invalid ones) get no bound; a latency of 0 or less is no measurement and gets none.
    """
    lines = ["[[threshold]]", f'config = "{config_id}"', f'shape = "{shape}"', f"batch = {batch}"]
    for metric, kind in BASELINE_METRICS.items():
        values = [float(v) for v in rounds.get(metric) or ()]
        if not values or (kind == "max" and min(values) <= 0):
            continue
        limit = min(values) * (1 - margin) if kind == "min" else max(values) * (1 + margin)
        lines.append(f"{kind}_{metric} = {limit:.4g}")
    return "\n".join(lines) + "\n"


def save_baseline(path: Path, points: list[tuple[str, str, int, Mapping[str, Sequence[float]]]], margin: float, note: str) -> None:
    """Write every measured point as a thresholds file for the next run."""
    header = (
        f"# Baseline written by pytest-glm45 ({note}).\n"
        f"# Floors are each point's worst round less {margin:.0%}, ceilings its worst round plus {margin:.0%};\n"
        "# figures a point could not measure validly get no bound.\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(baseline_entry(c, s, b, m, margin) for c, s, b, m in points), "utf-8")
