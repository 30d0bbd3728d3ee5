"""What runs on a decode-mode configuration (`pytest_glm45.engine.decode`): the checks of what the mode changes.

- A configuration without the replay processor (speculative decoding, which vLLM refuses it with, or `-noreplay`):
  what runs is exact parity, streaming agreement and the throughput points (the replay processor's cost is the
  -noreplay twin's points against the plain plan's); its replay checks are left out, saying why (counted in the
  terminal), and with `--glm45-profile full` each runs and skips with the reason (`replay_skip`).
- A stream interval (`-siN`): the replay suites that read what the parsers make of a stream (tool calling,
  reasoning, surfaces) at the profile's share, chosen by the same stable hash as the parser cases on other plans,
  with exact parity and streaming agreement; a one-boot regression guard.
- With `--glm45-profile full` (a share of 1) every check runs on every decode mode (replay checks still skip where
  nothing can replay).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_glm45.engine.matrix import Configuration

#: The fixtures through which a check replays a script: such a check cannot run where the replay processor is not loaded.
REPLAY_FIXTURES = ("glm45_replay", "glm45_batch")
#: The suites a stream interval runs at the profile's share: the ones that read what the parsers make of a stream.
STREAM_INTERVAL_SUITES = ("test_tool_calling.py", "test_reasoning.py", "test_surfaces.py")


def replays(item: pytest.Item) -> bool:
    """Whether the check replays a script (asks for the replay fixtures)."""
    return any(name in getattr(item, "fixturenames", ()) for name in REPLAY_FIXTURES)


def decode_check(item: pytest.Item, config: Configuration) -> bool:
    """A check of what `config`'s decode mode changes: marked `glm45_decode_mode` (parity, streaming agreement), or a
    throughput point where the replay processor is not loaded (speculation's speed, the processor's cost)."""
    if item.get_closest_marker("glm45_decode_mode") is not None:
        return True
    return "glm45_point" in getattr(item, "fixturenames", ()) and not config.plan.decode.replay


def replay_skip(item: pytest.Item, config: Configuration | None) -> str | None:
    """The skip reason of a replay check on a configuration that cannot replay, or None."""
    reason = config.plan.decode.no_replay_reason if config is not None else None
    return f"{config.id}: {reason}" if config is not None and reason is not None and replays(item) else None


def left_out(item: pytest.Item, config: Configuration, share: float, sampled: Callable[[pytest.Item, float], bool]) -> str | None:
    """Why `item` does not run on the decode-mode configuration `config` at the profile's `share` (None: it runs)."""
    decode = config.plan.decode
    if decode_check(item, config) or share >= 1:
        return None
    if not decode.replay:
        if replays(item):
            return ("replay checks on configurations without the replay processor (speculative decoding: vLLM refuses custom "
                    "logits processors with it; -noreplay: left out on purpose); --glm45-profile full runs each, skipping "
                    "with the reason")  # fmt: skip
        return ("checks other than parity, streaming agreement and throughput on configurations without the replay "
                "processor: what they send is what the plain plan's checks send (--glm45-profile full runs them)")  # fmt: skip
    if item.path.name in STREAM_INTERVAL_SUITES and sampled(item, share):
        return None
    return (f"checks on stream-interval configurations beyond a {share:.0%} share of tool calling, reasoning and "
            "surfaces (--glm45-profile full runs all)")
