"""Can a run's latency figures be trusted? Arrivals per token, read from bench-serve JSON exports.

    python benchmarks/arrivals.py .glm45/bench            # one directory
    python benchmarks/arrivals.py before/bench after/bench # side by side

For each exported point: output tokens, distinct arrivals (reads that carried text: a gap of 0
between two chunks means they came in one read), their share of the tokens, and the median TTFT
and TPOT the point reported. A share under the kit's MIN_ARRIVAL_SHARE marks a client that was
not reading as the server sent (pytest_glm45.clients.loadgen.arrival_problem).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from pytest_glm45.clients.loadgen import MIN_ARRIVAL_SHARE


def rows(directory: Path) -> dict[str, tuple[int, int, float, float]]:
    out = {}
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        tokens = sum(n for n, ok in zip(data["output_lens"], data["errors"], strict=False) if not ok)
        arrivals = sum(1 + sum(1 for gap in itl if gap > 0) for itl, ok in zip(data["itls"], data["errors"], strict=False) if not ok)
        out[path.stem] = (tokens, arrivals, float(data.get("median_ttft_ms", 0.0)), float(data.get("median_tpot_ms", 0.0)))
    return out


def main() -> None:
    dirs = [Path(a) for a in sys.argv[1:]] or [Path(".glm45/bench")]
    tables = [rows(d) for d in dirs]
    print(f"minimum share of arrivals per token for valid latency figures: {MIN_ARRIVAL_SHARE:.0%}")
    for name in sorted(set().union(*tables)):
        cells = []
        for table in tables:
            if name not in table:
                cells.append("-")
                continue
            tokens, arrivals, ttft, tpot = table[name]
            share = arrivals / tokens if tokens else 0.0
            cells.append(f"{arrivals}/{tokens} arrivals ({share:.0%}{'' if share >= MIN_ARRIVAL_SHARE else ' INVALID'}), "
                         f"TTFT {ttft:.1f} ms, TPOT {tpot:.2f} ms")  # fmt: skip
        print(f"{name}: " + "  |  ".join(cells))
    shares = [[t[1] / t[0] for t in table.values() if t[0]] for table in tables]
    print("median share per directory: " + ", ".join(f"{statistics.median(s):.0%}" if s else "-" for s in shares))


if __name__ == "__main__":
    main()
