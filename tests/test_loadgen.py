"""The load generator's metrics, defined as vllm bench serve defines them, and its runs against a prefix cache."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.clients.loadgen import (
    PREFIX_CACHE_HITS,
    LoadGenerator,
    RequestResult,
    Shape,
    Workload,
    cache_problem,
    compute_metrics,
    counter_total,
    percentile,
    profile_points,
)
from pytest_glm45.measure.throughput import ThroughputSession


def test_percentile_interpolates_like_numpy() -> None:
    np = pytest.importorskip("numpy")
    rng = random.Random(1)
    for n in (1, 2, 7, 100):
        values = [rng.random() for _ in range(n)]
        for p in (0, 50, 90, 99, 100):
            assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))
    assert percentile([], 99) == 0.0


def test_metrics_follow_vllm_bench_serve_definitions() -> None:
    results = [
        RequestResult(True, prompt_len=10, output_tokens=5, ttft=0.1, latency=0.5, itl=[0.1, 0.1, 0.1, 0.1]),
        RequestResult(True, prompt_len=10, output_tokens=3, ttft=0.2, latency=0.4, itl=[0.1, 0.1]),
        RequestResult(False, prompt_len=10, error="HTTP 500"),
    ]
    m = compute_metrics(results, duration=2.0)
    assert (m.completed, m.failed, m.total_input_tokens, m.total_output_tokens) == (2, 1, 20, 8)
    assert m.request_throughput == 1.0 and m.output_throughput == 4.0 and m.total_token_throughput == 14.0
    # TPOT = (latency - ttft) / (output - 1): 0.1 and 0.1 s
    assert m.latencies["mean_tpot_ms"] == pytest.approx(100.0)
    assert m.latencies["mean_ttft_ms"] == pytest.approx(150.0)
    assert m.latencies["median_itl_ms"] == pytest.approx(100.0)
    assert m.latencies["p99_e2el_ms"] == pytest.approx(percentile([500.0, 400.0], 99))
    assert m.errors == ["HTTP 500"]


def test_profiles_scale_the_recipe() -> None:
    full = profile_points("full")
    assert len(full) == 21 and full[0][0].input_len == 8000 and {b for _, b in full} == {1, 16, 32, 64, 128, 256, 512}
    standard = profile_points("standard")
    assert {(s.name, s.input_len, s.output_len) for s, _ in standard} == {
        ("prompt-heavy", 800, 100), ("decode-heavy", 100, 800), ("balanced", 100, 100)}  # fmt: skip
    assert {b for _, b in standard} == {1, 8}
    on_cpu = profile_points("standard", "cpu")
    assert {(s.name, s.input_len, s.output_len) for s, _ in on_cpu} == {
        ("prompt-heavy", 200, 25), ("decode-heavy", 25, 200), ("balanced", 25, 25)}  # fmt: skip
    assert {b for _, b in on_cpu} == {1, 8}


def test_a_stream_read_in_one_piece_cannot_support_latency_figures() -> None:
    """A starved client read 100 tokens in 2 reads: TTFT, TPOT and ITL are invalid; throughputs and E2EL stand."""
    starved = [RequestResult(True, prompt_len=10, output_tokens=100, ttft=0.9, latency=1.0, itl=[0.0] * 99, arrivals=2)]
    m = compute_metrics(starved, duration=1.0)
    assert m.invalid and all(("_ttft_" in k or "_tpot_" in k or "_itl_" in k) for k in m.invalid)
    assert "median_tpot_ms" in m.invalid and "2 distinct arrivals" in m.invalid["median_tpot_ms"]
    flat = m.flat()
    assert "median_tpot_ms" not in flat and "p99_itl_ms" not in flat and "median_ttft_ms" not in flat
    assert flat["output_throughput"] == 100.0 and "median_e2el_ms" in flat


def test_a_stream_read_as_it_was_sent_keeps_its_figures() -> None:
    steady = [RequestResult(True, prompt_len=10, output_tokens=100, ttft=0.05, latency=1.0, itl=[0.0095] * 99, arrivals=100)]
    m = compute_metrics(steady, duration=1.0)
    assert m.invalid == {} and m.flat()["median_tpot_ms"] > 0


# -- a server with a prefix cache ------------------------------------------------------------------------------


class CachingServer:
    """An aiohttp stand-in that streams completions and has a prefix cache as vLLM's: a prompt seen before
    under the same `cache_salt` is served from it (every one of its tokens a hit), and /metrics says so.
    `honors_salt=False` is a cache that ignores salts; `caching=False` a server without one."""

    def __init__(self) -> None:
        self.caching = True
        self.honors_salt = True
        self.seen: set[tuple[str | None, str]] = set()
        self.hits = 0
        self.bodies: list[dict[str, Any]] = []

    def app(self) -> Any:
        from aiohttp import web

        async def tokenize(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response({"count": len(body["prompt"].split())})

        async def completions(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            self.bodies.append(body)
            prompt = body["prompt"]
            key = (body.get("cache_salt") if self.honors_salt else None, prompt)
            if self.caching and key in self.seen:
                self.hits += len(prompt.split())
            self.seen.add(key)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for _ in range(body["max_tokens"]):
                await resp.write(b'data: {"choices": [{"text": " x"}]}\n\n')
                await asyncio.sleep(0.001)
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": body["max_tokens"]}
            await resp.write(f'data: {{"choices": [], "usage": {json.dumps(usage)}}}\n\ndata: [DONE]\n\n'.encode())
            return resp

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text=f'vllm:cache_config_info{{block_size="16",enable_prefix_caching="{self.caching}"}} 1.0\n'
                                     f'vllm:prefix_cache_hits_total{{engine="0",model_name="m"}} {self.hits}.0\n')  # fmt: skip

        app = web.Application()
        app.router.add_post("/tokenize", tokenize)
        app.router.add_post("/v1/completions", completions)
        app.router.add_get("/metrics", metrics)
        return app


@pytest.fixture
def caching_server() -> Iterator[tuple[str, CachingServer]]:
    from aiohttp import web

    server = CachingServer()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", server
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


SHAPE = Shape("balanced", 12, 3)


def test_rounds_on_a_server_with_a_prefix_cache_each_get_a_salt_of_their_own(caching_server: tuple[str, CachingServer], tmp_path: Path) -> None:
    """The same prompts every round, as bench serve sends them; the cache serves none of them."""
    url, server = caching_server
    session = ThroughputSession(tmp_path, rounds=3)
    point, runs = session.run(url, None, "m", "caching-tp1", SHAPE, 2)
    assert point.invalid == {} and all(m.invalid == {} for m in runs) and point.metrics["output_throughput"] > 0
    assert server.hits == 0
    # warm-up and 3 rounds, each a test request (max_tokens 4) and the batch: one salt per run, another for its test
    salts = [b["cache_salt"] for b in server.bodies]
    assert len(server.bodies) == 4 * 3 and len(set(salts)) == 8
    assert len({b["prompt"] for b in server.bodies}) == 2, "every round sends the same prompts"


def test_a_run_the_prefix_cache_served_has_every_figure_invalid(caching_server: tuple[str, CachingServer]) -> None:
    url, server = caching_server
    server.honors_salt = False  # a cache that does not key by the salt serves the second run's prompts
    generator = LoadGenerator(url, None, "m")
    first, _ = generator.run(Workload(SHAPE, 4))  # the test request left its prompt (the run's first) in the cache
    assert "prefix cache served 12 of the run's 48 prompt tokens" in first.invalid["output_throughput"]
    repeat, _ = generator.run(Workload(SHAPE, 4))
    for figure in ("output_throughput", "request_throughput", "mean_ttft_ms", "median_tpot_ms", "p99_itl_ms"):
        assert "prefix cache served 48 of the run's 48 prompt tokens" in repeat.invalid[figure], figure
    flat = repeat.flat()
    assert "output_throughput" not in flat and "mean_ttft_ms" not in flat
    assert flat["completed"] == 4 and flat["total_output_tokens"] == 12  # the counts stay true


def test_a_server_without_a_prefix_cache_gets_bench_serves_request_unchanged(caching_server: tuple[str, CachingServer]) -> None:
    url, server = caching_server
    server.caching = False
    metrics, _ = LoadGenerator(url, None, "m").run(Workload(SHAPE, 2))
    assert metrics.invalid == {} and all("cache_salt" not in b for b in server.bodies)


def test_counter_total_sums_a_counter_over_its_labels() -> None:
    text = ('# HELP vllm:prefix_cache_hits Prefix cache hits, in terms of number of cached tokens.\n'
            'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 128.0\n'
            'vllm:prefix_cache_hits_total{engine="1",model_name="m"} 256.0\n'
            'vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.79e+09\n'
            'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 4096.0\n')  # fmt: skip
    assert counter_total(text, PREFIX_CACHE_HITS) == 384.0
    assert counter_total("# nothing here\n", PREFIX_CACHE_HITS) is None
    assert cache_problem(0.0, 100) is None and cache_problem(None, 100) is None
