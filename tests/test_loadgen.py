"""The load generator's metrics, defined as vllm bench serve defines them."""

from __future__ import annotations

import random

import pytest

from pytest_glm45.loadgen import RequestResult, compute_metrics, percentile, profile_points


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
