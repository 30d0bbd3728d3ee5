"""Throughput per workload shape: does this configuration still reach its numbers?

The recipe's shapes (prompt-heavy 8000/1000, decode-heavy 1000/8000, balanced 1000/1000) at
its batch sizes, random prompts of exact length, ignore_eos, all requests at once, prefix
caching off. The `full` profile runs the recipe's matrix; `standard` and `smoke` scale every
length down (by 10 and 40) and run fewer batches so the embedded default finishes in minutes.
Each point is a pytest-benchmark benchmark whose extra_info holds every metric, and a
`vllm bench serve --save-result` JSON in --glm45-bench-dir.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.loadgen import Shape, profile_points
from pytest_glm45.session import ServerHandle

pytestmark = pytest.mark.glm45_strict_irrelevant


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "point" in metafunc.fixturenames:
        from pytest_glm45.plugin import SETTINGS

        points = profile_points(metafunc.config.stash[SETTINGS].profile.name)
        metafunc.parametrize("point", points, ids=[f"{s.name}-{s.input_len}x{s.output_len}-bs{b}" for s, b in points])


def test_throughput(glm45_server: ServerHandle, glm45_throughput: Any, benchmark: Any, point: tuple[Shape, int]) -> None:
    shape, batch = point
    glm45_server.check_alive()

    def run() -> Any:
        return glm45_throughput.run(glm45_server.base_url, glm45_server.api_key, glm45_server.served_name,
                                    glm45_server.config_id, shape, batch)  # fmt: skip

    benchmark.group = f"{glm45_server.config_id} {shape.name}"
    metrics = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    measured = metrics.flat()
    benchmark.extra_info.update(
        config=glm45_server.config_id, shape=shape.name, input_len=shape.input_len, output_len=shape.output_len,
        batch=batch, vllm_version=glm45_server.vllm_version, engine=glm45_server.engine, **measured,
    )  # fmt: skip
    assert metrics.failed == 0, f"{metrics.failed} of {batch} requests failed: {metrics.errors[:3]}"
    assert metrics.completed == batch
    assert metrics.total_output_tokens == batch * shape.output_len, "ignore_eos requests must produce max_tokens each"
    assert metrics.total_input_tokens == batch * shape.input_len, "prompts must be exactly input_len tokens"
    ok, table, _applied = glm45_throughput.check(glm45_server.config_id, shape, batch, measured)
    assert ok, f"{glm45_server.config_id} {shape.name} x{batch} misses its thresholds:\n{table}"
