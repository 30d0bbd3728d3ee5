"""How well a point's median is known: a distribution-free confidence interval from its rounds.

The interval is the order-statistic interval of the median: for n rounds sorted x(1) <= ... <= x(n), the
interval [x(k), x(n+1-k)] holds the true median with probability 1 - 2 P(Binomial(n, 1/2) <= k - 1), whatever
the rounds' distribution (no normality, no resampling, so the same rounds always give the same answer). We take
the narrowest such interval whose coverage is at least CONFIDENCE (90%: five rounds are the fewest that reach it,
with [min, max] at 93.75%); with three or four rounds, the only interval there is, [min, max], at 75% or 87.5%,
and the coverage is shown. Its half-width relative to the median is the point's *spread*.

A figure is *known* at a tolerance when its spread is at most half the tolerance: then a change the size of
the tolerance moves the median further than the noise the rounds measured. A point adds rounds (up to its
budget) until every judged figure is known, or stops at the budget and is *not judged* for the figures that
are not: "the machine's spread (X%) exceeds the tolerance (Y%)".

A *change* (B against A, or a run against a stored one) is judged on its interval, not on its median alone
(`judge_change`): a regression when even the interval's best case is worse than the tolerance, no regression
when even its worst case is within it, not judged when the interval straddles the tolerance. So a noisy figure
far from the tolerance is still decided, and a figure near it waits for rounds that can tell.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The interval's coverage we ask for when the rounds allow it.
CONFIDENCE = 0.90
#: Fewer rounds than this give no interval at all: the point cannot be judged.
MIN_ROUNDS_FOR_SPREAD = 3


def coverage(n: int, k: int) -> float:
    """P(x(k) <= median <= x(n+1-k)) for n samples of a continuous distribution (1-based k)."""
    tail = float(sum(math.comb(n, i) for i in range(k))) / float(2**n)
    return 1.0 - 2.0 * tail


@dataclass(frozen=True)
class Interval:
    """The median, its order-statistic interval, the interval's coverage and relative half-width."""

    median: float
    low: float
    high: float
    coverage: float

    @property
    def spread(self) -> float:
        """Half the interval's width over the median (inf for a median of 0)."""
        return (self.high - self.low) / 2 / abs(self.median) if self.median else math.inf


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval | None:
    """The narrowest order-statistic interval of the median with at least `confidence` coverage; [min, max] when
    the rounds are too few for it (3 or 4); None for fewer than MIN_ROUNDS_FOR_SPREAD."""
    n = len(values)
    if n < MIN_ROUNDS_FOR_SPREAD:
        return None
    xs = sorted(float(v) for v in values)
    k = 1
    while k + 1 <= n // 2 and coverage(n, k + 1) >= confidence:
        k += 1
    return Interval(statistics.median(xs), xs[k - 1], xs[n - k], coverage(n, k))


def not_known(values: Sequence[float], tolerance: float) -> str | None:
    """Why a figure's median is not known to within `tolerance` (the spread over half of it), or None when it is."""
    interval = median_interval(values)
    if interval is None:
        return f"{len(values)} round(s): too few to measure the machine's spread (at least {MIN_ROUNDS_FOR_SPREAD})"
    if interval.spread > tolerance / 2:
        return (f"the machine's spread ({interval.spread:.1%}) exceeds the tolerance ({tolerance:.0%}): the median is known "
                f"only to ±{interval.spread:.1%} ({interval.coverage:.0%} interval over {len(values)} rounds), and a figure "
                f"is judged when known to ±{tolerance / 2:.1%}")  # fmt: skip
    return None


def spreads(rounds: Mapping[str, Sequence[float]], tolerances: Mapping[str, float]) -> dict[str, dict[str, float | int | bool]]:
    """Per judged figure: its spread, its tolerance, the rounds and whether it is known (for the report)."""
    out: dict[str, dict[str, float | int | bool]] = {}
    for metric, tolerance in tolerances.items():
        values = rounds.get(metric)
        if not values:
            continue
        interval = median_interval(values)
        spread = interval.spread if interval is not None else math.inf
        out[metric] = {"spread": round(spread, 4) if math.isfinite(spread) else -1.0, "tolerance": tolerance,
                       "rounds": len(values), "known": spread <= tolerance / 2}  # fmt: skip
    return out


def all_known(rounds: Mapping[str, Sequence[float]], tolerances: Mapping[str, float]) -> bool:
    """Whether every figure that has rounds and a tolerance is known to within it (rounds may stop)."""
    return all(not_known(values, tolerances[m]) is None for m, values in rounds.items() if m in tolerances and values)


@dataclass(frozen=True)
class Budget:
    """How many rounds a point takes: at least `least`, more while a judged figure is not known, at most `most`."""

    least: int
    most: int

    def __post_init__(self) -> None:
        if self.least < 1 or self.most < self.least:
            raise ValueError(f"a rounds budget of {self.least}..{self.most}; accepted: 1 <= least <= most")


#: The outcomes of a judged change.
REGRESSION, IMPROVEMENT, WITHIN, NOT_JUDGED = "regression", "improvement", "within", "not judged"


def judge_change(worse_low: float, worse_high: float, tolerance: float) -> str:
    """A change whose relative worsening lies in [worse_low, worse_high] (0.1: 10% worse; negative: better),
    judged at `tolerance`: a regression when even the best case is worse than the tolerance, an improvement when
    even the worst case is better than it, within when the worst case is no worse than the tolerance (and the
    best case not beyond it), else not judged (the interval straddles the tolerance)."""
    if worse_low > tolerance:
        return REGRESSION
    if worse_high < -tolerance:
        return IMPROVEMENT
    if worse_high <= tolerance:
        return WITHIN
    return NOT_JUDGED


def worsening(ratio_low: float, ratio_high: float, higher_is_better: bool) -> tuple[float, float]:
    """The relative worsening interval of a ratio interval new/old: 1 - ratio for a throughput, ratio - 1 for a
    latency."""
    return (1 - ratio_high, 1 - ratio_low) if higher_is_better else (ratio_low - 1, ratio_high - 1)


def judge_ratios(values: Sequence[float], tolerance: float, higher_is_better: bool) -> tuple[str, Interval | None]:
    """Paired ratios B/A of one figure judged on their median's interval (`judge_change`); not judged with too
    few pairs for an interval."""
    interval = median_interval(values)
    if interval is None:
        return NOT_JUDGED, None
    return judge_change(*worsening(interval.low, interval.high, higher_is_better), tolerance), interval


def judge_runs(before: Sequence[float], after: Sequence[float], tolerance: float,
               higher_is_better: bool) -> tuple[str, tuple[float, float] | None]:  # fmt: skip
    """Two runs' rounds of one figure judged on the ratio of their medians' intervals (the worst and best cases:
    after's low over before's high, after's high over before's low); not judged without an interval on a side."""
    a, b = median_interval(before), median_interval(after)
    if a is None or b is None or a.low <= 0 or a.high <= 0:
        return NOT_JUDGED, None
    low, high = worsening(b.low / a.high, b.high / a.low, higher_is_better)
    return judge_change(low, high, tolerance), (low, high)
