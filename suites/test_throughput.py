"""Throughput per workload shape: does this configuration still reach its numbers?

The recipe's shapes (prompt-heavy 8000/1000, decode-heavy 1000/8000, balanced 1000/1000) at
its batch sizes, random prompts of exact length, ignore_eos, all requests at once, prefix
caching off. The `full` profile runs the recipe's matrix; `standard` and `smoke` scale every
length down (by 10 and 40) and run fewer batches so the embedded default finishes in minutes.
Each point runs the profile's rounds (its figures are the medians) and is a pytest-benchmark
benchmark whose extra_info holds every figure, each round's values and the figures marked
invalid; a point whose thresholds were all too noisy to judge (the rounds' spread over half the
tolerance at the profile's most rounds) is skipped as "not judged", saying why; the last round is also a `vllm bench serve --save-result` JSON in --glm45-bench-dir.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.clients.loadgen import Shape
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.engine.recipe import client_cores

pytestmark = pytest.mark.glm45_strict_irrelevant


def test_throughput(glm45_server: ServerHandle, glm45_throughput: Any, benchmark: Any, glm45_point: tuple[Shape, int]) -> None:
    shape, batch = glm45_point
    glm45_server.check_alive()
    window = glm45_server.max_model_len
    if window is not None and shape.input_len + shape.output_len > window:
        pytest.skip(f"{shape.name} needs {shape.input_len} + {shape.output_len} tokens; {glm45_server.config_id}'s window is "
                    f"{window} (--glm45-max-model-len): this point cannot run here")  # fmt: skip

    def run() -> Any:
        return glm45_throughput.run(glm45_server.base_url, glm45_server.api_key, glm45_server.served_name,
                                    glm45_server.config_id, shape, batch,
                                    client_cpus=client_cores(glm45_server.config))  # fmt: skip

    benchmark.group = f"{glm45_server.config_id} {shape.name}"
    with glm45_server.measuring():  # a CPU server's floating threads off the load generator's core
        measured, runs = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        config=glm45_server.config_id, shape=shape.name, input_len=shape.input_len, output_len=shape.output_len,
        batch=batch, vllm_version=glm45_server.vllm_version, engine=glm45_server.engine,
        distribution=glm45_server.distribution, **measured.metrics, per_round=measured.rounds, invalid=measured.invalid,
        not_judged=measured.not_judged, spread=measured.spread, contention=measured.contention,
    )  # fmt: skip
    for n, m in enumerate(runs, 1):
        assert m.failed == 0, f"round {n}: {m.failed} of {batch} requests failed: {m.errors[:3]}"
        assert m.completed == batch
        assert m.total_output_tokens == batch * shape.output_len, f"round {n}: ignore_eos requests must produce max_tokens each"
        assert m.total_input_tokens == batch * shape.input_len, f"round {n}: prompts must be exactly input_len tokens"
    ok, table, _applied = glm45_throughput.check(measured)
    assert ok, f"{glm45_server.config_id} {shape.name} x{batch} misses its thresholds:\n{table}"
    unjudged = glm45_throughput.unjudged(measured)
    if unjudged:  # neither a pass nor a failure: the machine was too noisy to hold the point to its bounds
        pytest.skip(f"{glm45_server.config_id} {shape.name} x{batch}: {unjudged}")
    glm45_throughput.mark_passed(measured)  # last: a saved baseline takes only points whose checks passed
