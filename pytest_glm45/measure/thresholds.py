"""Throughput thresholds: floors and ceilings per configuration pattern, shape and batch.

    [[threshold]]
    config = "tiny-bf16-*"        # a pattern on the configuration id (pytest_glm45.records.ids)
    shape = "*"                   # prompt-heavy, decode-heavy, balanced, or *
    batch = "*"                   # a batch size, or *
    input_len = 800               # optional: the lengths the bounds were measured at (a saved baseline
    output_len = 100              #   writes them); a point of other lengths is refused, not judged
    min_output_throughput = 20.0  # min_<metric> is a floor, max_<metric> a ceiling
    max_p99_ttft_ms = 120000

Every entry that matches a point applies. A point that misses one gets a table of measured
against required; a bound on a figure the point could not measure validly is shown as such
and not judged. `save_baseline` writes the worst of each point's rounds, less a margin, as such
a file, so a clean re-run on the same server stays inside it, from the points whose checks passed
only; a bound that no measurement can meet (a latency ceiling of 0 or below) is refused when a file
is read. A profile scales a shape's lengths, so a baseline names the lengths of each point: an entry
measured at other lengths than the point's does not apply, and the point fails saying so.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_glm45.measure import noise
from pytest_glm45.records.ids import matches

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
    #: the lengths the bounds were measured at, when the entry says (a saved baseline does)
    input_len: int | None = None
    output_len: int | None = None
    source: str = ""

    def matches(self, config_id: str, shape: str, batch: int) -> bool:
        """Whether the entry applies to this point (by name: `measured_otherwise` says whether its lengths agree)."""
        return (
            matches(config_id, self.config)
            and matches(shape, self.shape)
            and (self.batch == "*" or str(self.batch) == str(batch))
        )

    def measured_otherwise(self, input_len: int, output_len: int) -> str | None:
        """How the entry's lengths differ from a point's (`input_len 800 here 200`), or None when they agree."""
        diff = [f"{name} {mine} (the point: {theirs})" for name, mine, theirs in
                (("input_len", self.input_len, input_len), ("output_len", self.output_len, output_len))
                if mine is not None and mine != theirs]  # fmt: skip
        return ", ".join(diff) or None


def load(path: Path) -> list[Entry]:
    """Parse a thresholds file; raise ThresholdsError naming the entry and the key."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ThresholdsError(f"{path}: {exc}") from exc
    entries = []
    for n, raw in enumerate(data.get("threshold", []), 1):
        bounds = []
        lengths = {}
        for key in ("input_len", "output_len"):
            if key in raw and (not isinstance(raw[key], int) or raw[key] < 1):
                raise ThresholdsError(f"{path}: entry {n}: {key} = {raw[key]!r}; accepted: a whole number of tokens")
            lengths[key] = raw.get(key)
        for key, value in raw.items():
            if key in ("config", "shape", "batch", "input_len", "output_len"):
                continue
            kind, _, metric = key.partition("_")
            if kind not in ("min", "max") or not metric or not isinstance(value, (int, float)):
                raise ThresholdsError(f"{path}: entry {n}: {key} = {value!r}; accepted: min_<metric> or max_<metric> = a number")
            if kind == "max" and BASELINE_METRICS.get(metric) == "max" and value <= 0:
                raise ThresholdsError(f"{path}: entry {n}: {key} = {value!r} is impossible (no latency is 0 or less); "
                                      "accepted: a positive ceiling. A baseline from a starved client writes such bounds: "
                                      "re-save it with this kit, which leaves invalid figures out")  # fmt: skip
            bounds.append(Bound(metric, kind, float(value), f"{path.name}#{n}"))
        entries.append(Entry(str(raw.get("config", "*")), str(raw.get("shape", "*")), str(raw.get("batch", "*")), tuple(bounds),
                             lengths["input_len"], lengths["output_len"], f"{path.name}#{n}"))  # fmt: skip
    return entries


def bounds_for(entries: list[Entry], config_id: str, shape: str, batch: int) -> list[Bound]:
    """Every bound of every entry that applies to the point (by name; see `measured_otherwise`)."""
    return [b for e in entries if e.matches(config_id, shape, batch) for b in e.bounds]


def measured_otherwise(entries: list[Entry], config_id: str, shape: str, batch: int, input_len: int, output_len: int) -> list[str]:
    """The entries that name this point but were measured at other lengths (a baseline of another profile), each
    saying what differs: such bounds cannot judge the point."""
    return [f"{e.source}: {diff}" for e in entries if e.matches(config_id, shape, batch)
            and (diff := e.measured_otherwise(input_len, output_len)) is not None]  # fmt: skip


def beyond_noise(bound: Bound, values: Sequence[float] | None) -> bool | None:
    """Whether the bound holds whatever the noise: True when the median's whole interval (`noise.median_interval`)
    lies on the bound's good side, False when it lies wholly on the other, None when it straddles the limit (or
    there are too few rounds for an interval). A figure too noisy to know to its tolerance is still decided by a
    bound far from it: a floor of 20 tok/s against rounds of 240..330 holds."""
    interval = noise.median_interval(values) if values else None
    if interval is None:
        return None
    good, bad = (interval.low, interval.high) if bound.kind == "min" else (interval.high, interval.low)
    if bound.holds(good):
        return True
    if not bound.holds(bad):
        return False
    return None


def check(bounds: list[Bound], measured: Mapping[str, Any], invalid: Mapping[str, str] | None = None,
          not_known: Mapping[str, str] | None = None, rounds: Mapping[str, Sequence[float]] | None = None) -> tuple[bool, str]:  # fmt: skip
    """(all hold, a table of measured against required); a bound on an invalid figure is not judged; a figure with
    `rounds` enough for an interval (three or more) is judged on its median's whole interval (`beyond_noise`): held
    when it lies within the limit, missed when it lies beyond, else not judged (neither held nor missed), the reason
    being the figure's `not_known` one when the rounds did not know it to within its tolerance. A figure without
    such rounds is judged on its median."""
    rows = [("metric", "measured", "required", "")]
    ok = True
    for b in bounds:
        if invalid and b.metric in invalid:
            rows.append((b.metric, "(invalid)", f"{'>=' if b.kind == 'min' else '<='} {b.limit:g}", "not judged: " + invalid[b.metric][:80]))
            continue
        values = (rounds or {}).get(b.metric)
        if (not_known and b.metric in not_known) or noise.median_interval(values or []) is not None:
            value = measured.get(b.metric)
            shown = f"{float(value):.2f}" if isinstance(value, (int, float)) else "(not measured)"
            required = f"{'>=' if b.kind == 'min' else '<='} {b.limit:g}"
            decided = beyond_noise(b, values)
            if decided is None:
                why = (not_known or {}).get(b.metric) or "the median's interval straddles the limit"
                rows.append((b.metric, shown, required, "not judged: " + why[:90]))
                continue
            interval = noise.median_interval(values or [])
            span = f"{interval.low:.2f}..{interval.high:.2f}" if interval is not None else "?"
            ok = ok and decided
            rows.append((b.metric, shown, required, ("ok" if decided else "MISSED") + f" (beyond the noise: the median's interval {span})"))
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


def baseline_entry(config_id: str, shape: str, batch: int, rounds: Mapping[str, Sequence[float]], margin: float,
                   lengths: tuple[int, int] | None = None) -> str:  # fmt: skip
    """One [[threshold]] block: floors at (1 - margin) x the worst round, ceilings at (1 + margin) x the worst round,
    with the point's (input, output) lengths when given.

    Figures missing from `rounds` (invalid ones) get no bound; a latency of 0 or less is no measurement and gets none.
    """
    lines = ["[[threshold]]", f'config = "{config_id}"', f'shape = "{shape}"', f"batch = {batch}"]
    if lengths is not None:
        lines += [f"input_len = {lengths[0]}", f"output_len = {lengths[1]}"]
    for metric, kind in BASELINE_METRICS.items():
        values = [float(v) for v in rounds.get(metric) or ()]
        if not values or (kind == "max" and min(values) <= 0):
            continue
        limit = min(values) * (1 - margin) if kind == "min" else max(values) * (1 + margin)
        lines.append(f"{kind}_{metric} = {limit:.4g}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BaselinePoint:
    """A measured point as a baseline takes it: its name, lengths, rounds, and whether its check passed."""

    config_id: str
    shape: str
    batch: int
    input_len: int
    output_len: int
    rounds: Mapping[str, Sequence[float]]
    passed: bool

    @property
    def label(self) -> str:
        """`config shape xbatch`, for messages."""
        return f"{self.config_id} {self.shape} x{self.batch}"


def save_baseline(path: Path, points: Sequence[BaselinePoint], margin: float, note: str) -> None:
    """Write the points whose checks passed as a thresholds file for the next run; the file names those left out.

    A point whose check failed (a request failed, short outputs, a threshold missed) would lower the floors that
    later runs are held to: it is left out. Raises ValueError when no point passed (nothing to write)."""
    kept = [p for p in points if p.passed]
    left_out = [p.label for p in points if not p.passed]
    if not kept:
        raise ValueError(f"no throughput point passed its check ({len(points)} measured): a baseline is written from "
                         "passing points only")  # fmt: skip
    header = (
        f"# Baseline written by pytest-glm45 ({note}).\n"
        f"# From the {len(kept)} point(s) whose checks passed"
        + (f"; left out, their checks failed: {', '.join(left_out)}" if left_out else "") + ".\n"
        f"# Floors are each point's worst round less {margin:.0%}, ceilings its worst round plus {margin:.0%};\n"
        "# figures a point could not measure validly get no bound; each entry names the lengths it was measured at.\n\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(baseline_entry(p.config_id, p.shape, p.batch, p.rounds, margin, (p.input_len, p.output_len))
                                       for p in kept), "utf-8")  # fmt: skip
