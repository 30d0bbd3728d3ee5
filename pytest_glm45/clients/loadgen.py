"""The load generator: `vllm bench serve`'s workload and metrics, with a client that keeps up.

Prompts are random sequences of words that are one token each in the server's tokenizer, so a
prompt of N words is exactly N tokens (every response's `usage.prompt_tokens` is checked).
Requests go out all at once (the recipe's infinite rate) or at a Poisson rate, with
`ignore_eos` and `max_tokens` set to the output length, streamed. The stream is read with
aiohttp and parsed with orjson, one dict per chunk: no pydantic object per chunk, so at 512
streams the client is not what limits the numbers.

Metrics are defined as `vllm bench serve` defines them (vllm/benchmarks/serve.py,
calculate_metrics): throughputs over the benchmark's wall time; TTFT from send to the first
chunk with text; TPOT = (latency - TTFT) / (output tokens - 1); ITL = the gaps between chunks;
E2EL = latency. Percentiles interpolate linearly, as numpy.percentile does.

A figure the measurement cannot support is marked invalid, not reported: when the client reads
a stream in fewer distinct arrivals than MIN_ARRIVAL_SHARE of its tokens (a client starved of
CPU reads a whole answer at once: TTFT becomes the request's length, ITL 0), its TTFT, TPOT and
ITL figures say nothing about the server and are dropped with the reason. So is every figure of a
run that vLLM's prefix cache served prompt tokens to (`cache_problem`, from the server's /metrics):
the recipe benchmarks prefill, not the cache. Every round sends the same prompts, as bench serve's
rounds do; on a server whose /metrics says prefix caching is on, each run's requests carry a
`cache_salt` of their own (vLLM keys its cache by it), so no round is served what an earlier one left.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; json keeps the module importable
    import json

    loads = json.loads  # type: ignore[assignment]

#: Candidate words for prompts; those that are one token in the served tokenizer are kept.
CANDIDATE_WORDS = tuple(
    " " + w
    for w in ["the", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part"]
)

#: A stream must arrive in at least this share of its tokens' worth of distinct reads for its
#: latency figures to count (vLLM sends a chunk per decode step; detokenization may merge a few).
MIN_ARRIVAL_SHARE = 0.5
#: Latency figures that the arrival rule invalidates (throughputs and E2EL stand).
ARRIVAL_METRICS = ("ttft", "tpot", "itl")
#: vLLM's counter of prompt tokens its prefix cache served (V1 metrics; summed over engines).
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
#: What vLLM's /metrics says when the server has a prefix cache (its cache_config_info labels).
PREFIX_CACHE_ON = 'enable_prefix_caching="True"'


@dataclass(frozen=True)
class Shape:
    """A workload shape: input and output tokens per request."""

    name: str
    input_len: int
    output_len: int


@dataclass(frozen=True)
class Workload:
    """One throughput point."""

    shape: Shape
    num_prompts: int
    request_rate: float = math.inf  # requests per second; inf sends all at once
    endpoint: str = "completions"  # or "chat"
    seed: int = 0


RECIPE_SHAPES = (Shape("prompt-heavy", 8000, 1000), Shape("decode-heavy", 1000, 8000), Shape("balanced", 1000, 1000))
RECIPE_BATCHES = (1, 16, 32, 64, 128, 256, 512)


#: How much `standard` divides the recipe's lengths by, per engine. On GPUs by 10; on the CPU
#: engine by 40, as `smoke` does: at 10, the embedded default's decode-heavy points (100 in, 800
#: out) took 127 s of tp2's 175 s of throughput and 4.6 of the run's 17 minutes (2026-11-29).
STANDARD_DIVISOR = {"gpu": 10, "remote": 10, "cpu": 40}


def profile_points(profile: str, engine: str = "gpu") -> list[tuple[Shape, int]]:
    """(shape, batch) per profile. `full` is the recipe's matrix; `standard` divides every length
    by 10 (by 40 on the CPU engine: STANDARD_DIVISOR) and runs batches 1 and 8; `smoke` divides
    by 40 and runs batches 1 and 4. The scaled profiles keep each shape's ratio."""
    if profile == "full":
        return [(s, b) for s in RECIPE_SHAPES for b in RECIPE_BATCHES]
    div, batches = (STANDARD_DIVISOR.get(engine, 10), (1, 8)) if profile == "standard" else (40, (1, 4))
    return [(Shape(s.name, s.input_len // div, s.output_len // div), b) for s in RECIPE_SHAPES for b in batches]


@dataclass
class RequestResult:
    """One request as the client saw it (times in seconds, perf_counter based)."""

    success: bool
    prompt_len: int
    output_tokens: int = 0
    start_time: float = 0.0
    ttft: float = 0.0
    ttfat: float | None = None  # time to first answer (content) token, chat endpoint
    latency: float = 0.0
    arrivals: int = 0  # distinct reads that carried text
    itl: list[float] = field(default_factory=list)
    error: str = ""


def percentile(values: Sequence[float], p: float) -> float:
    """numpy.percentile(values, p) with linear interpolation; 0 for no values (as vllm bench does)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi:
        return float(ordered[int(k)])
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo))


def _stats(prefix: str, seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {
        f"mean_{prefix}_ms": statistics.fmean(ms) if ms else 0.0,
        f"median_{prefix}_ms": statistics.median(ms) if ms else 0.0,
        f"std_{prefix}_ms": statistics.pstdev(ms) if ms else 0.0,
        f"p99_{prefix}_ms": percentile(ms, 99),
    }


@dataclass
class Metrics:
    """A point's figures, named as `vllm bench serve --save-result` names them."""

    duration: float
    completed: int
    failed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    latencies: dict[str, float]
    errors: list[str]
    #: metric -> why it cannot be trusted (absent from `flat()`)
    invalid: dict[str, str] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """Every valid figure by its `vllm bench serve` name."""
        out = {k: v for k, v in asdict(self).items() if k not in ("latencies", "errors", "invalid", *self.invalid)}
        out.update({k: v for k, v in self.latencies.items() if k not in self.invalid})
        return out


def arrival_problem(results: Sequence[RequestResult]) -> str | None:
    """Why these streams cannot support latency figures, or None when they can."""
    ok = [r for r in results if r.success and r.output_tokens > 1]
    tokens = sum(r.output_tokens for r in ok)
    arrivals = sum(r.arrivals for r in ok)
    if tokens and arrivals < MIN_ARRIVAL_SHARE * tokens:
        return (f"the client read {tokens} tokens in {arrivals} distinct arrivals (< {MIN_ARRIVAL_SHARE:.0%} of the tokens): "
                "it was not reading as the server sent (starved of CPU?), so TTFT, TPOT and ITL would measure the client")
    return None


def counter_total(metrics_text: str, name: str) -> float | None:
    """The sum of a Prometheus counter's samples over its labels; None when the text has none."""
    total = None
    for line in metrics_text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


#: Figures a prefix-cache hit invalidates: all but the counts (what was sent and received stays true).
CACHE_FIGURES = ("request_throughput", "output_throughput", "total_token_throughput")


def cache_problem(hits: float | None, prompt_tokens: int) -> str | None:
    """Why a run's figures cannot stand when the server's prefix cache served `hits` of its prompt tokens."""
    if not hits:
        return None
    return (f"the server's prefix cache served {hits:.0f} of the run's {prompt_tokens} prompt tokens: its figures "
            "would measure the cache, not prefill (the recipe benchmarks with --no-enable-prefix-caching)")


def compute_metrics(results: Sequence[RequestResult], duration: float) -> Metrics:
    """`vllm bench serve`'s calculate_metrics, for our RequestResults."""
    ok = [r for r in results if r.success]
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itls = [gap for r in ok for gap in r.itl]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    lat: dict[str, float] = {}
    lat.update(_stats("ttft", [r.ttft for r in ok]))
    lat.update(_stats("tpot", tpots))
    lat.update(_stats("itl", itls))
    lat.update(_stats("e2el", [r.latency for r in ok]))
    ttfat = [r.ttfat for r in ok if r.ttfat is not None]
    if ttfat:
        lat.update(_stats("ttfat", ttfat))
    problem = arrival_problem(results)
    invalid = {k: problem for k in lat if problem and any(f"_{m}_" in k for m in ARRIVAL_METRICS)}
    return Metrics(
        duration=duration,
        completed=len(ok),
        failed=len(results) - len(ok),
        total_input_tokens=total_in,
        total_output_tokens=total_out,
        request_throughput=len(ok) / duration if duration else 0.0,
        output_throughput=total_out / duration if duration else 0.0,
        total_token_throughput=(total_in + total_out) / duration if duration else 0.0,
        latencies=lat,
        errors=[r.error for r in results if not r.success][:20],
        invalid=invalid,
    )


class LoadGenerator:
    """Runs workloads against one server."""

    def __init__(self, base_url: str, api_key: str | None, model: str, timeout: float = 3600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        self._words: list[str] | None = None

    # -- prompts -------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    async def _tokenize_count(self, session: Any, text: str) -> int:
        async with session.post(self.base_url + "/tokenize", json={"model": self.model, "prompt": text,
                                "add_special_tokens": False}, headers=self._headers()) as resp:  # fmt: skip
            raw = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/tokenize answered {resp.status}: {raw[:300]!r}")
            return int(loads(raw)["count"])

    async def one_token_words(self, session: Any) -> list[str]:
        """The candidate words that are one token each here (asked once per generator)."""
        if self._words is None:
            counts = await asyncio.gather(*(self._tokenize_count(session, w) for w in CANDIDATE_WORDS))
            self._words = [w for w, n in zip(CANDIDATE_WORDS, counts, strict=False) if n == 1]
            if len(self._words) < 20:
                raise RuntimeError(f"only {len(self._words)} one-token words in this tokenizer; prompts cannot be exact")
        return self._words

    async def prompts(self, session: Any, workload: Workload) -> list[str]:
        """num_prompts random prompts of exactly input_len tokens, checked once with /tokenize."""
        words = await self.one_token_words(session)
        rng = random.Random(workload.seed)
        out = ["".join(rng.choice(words) for _ in range(workload.shape.input_len)) for _ in range(workload.num_prompts)]
        counted = await self._tokenize_count(session, out[0])
        if counted != workload.shape.input_len:
            raise RuntimeError(f"prompt of {workload.shape.input_len} words is {counted} tokens on this server")
        return out

    # -- requests ------------------------------------------------------------------------

    def _body(self, workload: Workload, prompt: str, max_tokens: int | None = None,
              cache_salt: str | None = None) -> tuple[str, dict[str, Any]]:  # fmt: skip
        common = {"model": self.model, "max_tokens": max_tokens or workload.shape.output_len, "ignore_eos": True, "stream": True,
                  "stream_options": {"include_usage": True}, "temperature": 0.0}  # fmt: skip
        if cache_salt is not None:
            common["cache_salt"] = cache_salt
        if workload.endpoint == "chat":
            return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}]}
        return "/v1/completions", {**common, "prompt": prompt}

    async def _one(self, session: Any, workload: Workload, prompt: str, on_done: Callable[[RequestResult], None],
                   max_tokens: int | None = None, cache_salt: str | None = None) -> RequestResult:  # fmt: skip
        path, body = self._body(workload, prompt, max_tokens, cache_salt)
        result = RequestResult(success=False, prompt_len=workload.shape.input_len)
        start = time.perf_counter()
        result.start_time = start
        last = start
        try:
            async with session.post(self.base_url + path, json=body, headers=self._headers()) as resp:
                if resp.status != 200:
                    result.error = f"HTTP {resp.status}: {(await resp.read())[:300]!r}"
                    return result
                # Whatever bytes arrived, at once (one await per read, not per line: at 512 streams
                # the per-line awaits were what held the client back), split into SSE lines here.
                pending, finished = b"", False
                async for data in resp.content.iter_any():
                    now = time.perf_counter()
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            finished = True
                            break
                        chunk = loads(payload)
                        if chunk.get("usage"):
                            result.output_tokens = int(chunk["usage"].get("completion_tokens") or 0)
                            result.prompt_len = int(chunk["usage"].get("prompt_tokens") or result.prompt_len)
                        choices = chunk.get("choices")
                        if not choices:
                            continue
                        c = choices[0]
                        delta = c.get("delta") or {}
                        text = c.get("text") or delta.get("content") or delta.get("reasoning") or delta.get("reasoning_content")
                        if not text:
                            continue
                        if now != last or result.arrivals == 0:
                            result.arrivals += 1
                        if result.ttft == 0.0:
                            result.ttft = now - start
                        else:
                            result.itl.append(now - last)
                        if delta.get("content") and result.ttfat is None:
                            result.ttfat = now - start
                        last = now
                    if finished:  # the stream's end, as the server marks it: latency stops here
                        break
            result.latency = time.perf_counter() - start
            result.success = result.ttft > 0.0
            if not result.success:
                result.error = "the stream carried no text"
        except Exception as exc:  # a load test counts failures; it does not stop at the first
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            on_done(result)
        return result

    async def run_async(self, workload: Workload, on_progress: Callable[[int, int, int, float], None] | None = None) -> tuple[Metrics, list[RequestResult]]:
        """Run one workload: build its prompts, send one test request, then every request; the metrics and each result."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        # Prompts are built on a session of their own: its many /tokenize connections stay out of the
        # measured run's pool.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64), timeout=timeout) as prep:
            prompts = await self.prompts(prep, workload)
            metrics_text = await self.metrics_text(prep)
        # A server with a prefix cache gets a salt per run (and another for the test request): its cache
        # cannot serve this run what the test request or an earlier round left.
        salted = metrics_text is not None and PREFIX_CACHE_ON in metrics_text
        run_salt, test_salt = (f"glm45-{uuid.uuid4().hex}", f"glm45-{uuid.uuid4().hex}") if salted else (None, None)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, read_bufsize=2**18) as session:
            # One short request first, as `vllm bench serve` starts with its single-prompt test run:
            # a wrong endpoint or model fails here with the server's answer instead of N times under
            # load, and the run starts, like bench serve's, with one warm connection.
            test = await self._one(session, workload, prompts[0], lambda r: None, max_tokens=4, cache_salt=test_salt)
            if not test.success:
                raise RuntimeError(f"the test request before the run failed: {test.error}")
            hits_before = counter_total(await self.metrics_text(session) or "", PREFIX_CACHE_HITS)
            done = [0, 0]  # requests, output tokens
            started = time.perf_counter()

            def on_done(r: RequestResult) -> None:
                done[0] += 1
                done[1] += r.output_tokens
                if on_progress is not None:
                    on_progress(done[0], workload.num_prompts, done[1], time.perf_counter() - started)

            rng = random.Random(workload.seed + 1)
            tasks = []
            for prompt in prompts:
                tasks.append(asyncio.create_task(self._one(session, workload, prompt, on_done, cache_salt=run_salt)))
                if math.isfinite(workload.request_rate):
                    await asyncio.sleep(rng.expovariate(workload.request_rate))
            results = await asyncio.gather(*tasks)
            duration = time.perf_counter() - started
            hits_after = counter_total(await self.metrics_text(session) or "", PREFIX_CACHE_HITS)
        metrics = compute_metrics(results, duration)
        hits = None if hits_before is None or hits_after is None else hits_after - hits_before
        problem = cache_problem(hits, metrics.total_input_tokens)
        if problem:
            metrics.invalid.update({k: problem for k in (*CACHE_FIGURES, *metrics.latencies)})
        return metrics, list(results)

    async def metrics_text(self, session: Any) -> str | None:
        """The server's Prometheus /metrics, or None when it has none."""
        try:
            async with session.get(self.base_url + "/metrics", headers=self._headers()) as resp:
                return await resp.text() if resp.status == 200 else None
        except Exception:  # a server without /metrics (a stand-in) cannot say; nothing to judge
            return None

    def run(self, workload: Workload, on_progress: Callable[[int, int, int, float], None] | None = None,
            cpus: Sequence[int] | None = None) -> tuple[Metrics, list[RequestResult]]:  # fmt: skip
        """Run one workload to completion (its own event loop), on `cpus` when given (the calling
        thread's affinity is restored afterwards)."""
        previous = None
        if cpus and hasattr(os, "sched_setaffinity"):
            previous = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(cpus))
        try:
            return run_loop(self.run_async(workload, on_progress))
        finally:
            if previous is not None:
                os.sched_setaffinity(0, previous)


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on a fresh event loop: uvloop's when it is installed (vLLM brings it), else asyncio's.

    The client's work per stream chunk is event-loop work; uvloop does it in C and lets one core
    take in more chunks per second than the server can send (benchmarks/loadgen_vs_bench_serve.py capacity).
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)  # type: ignore[no-any-return]
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def bench_serve_json(workload: Workload, metrics: Metrics, results: Sequence[RequestResult], model: str, config_id: str) -> dict[str, Any]:
    """A point in the JSON shape of `vllm bench serve --save-result`."""
    ok = [r for r in results if r.success]
    return {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "backend": "openai-chat" if workload.endpoint == "chat" else "vllm",
        "label": config_id,
        "model_id": model,
        "tokenizer_id": model,
        "num_prompts": workload.num_prompts,
        "request_rate": "inf" if math.isinf(workload.request_rate) else workload.request_rate,
        "burstiness": 1.0,
        "max_concurrency": None,
        "duration": metrics.duration,
        "completed": metrics.completed,
        "failed": metrics.failed,
        "total_input_tokens": metrics.total_input_tokens,
        "total_output_tokens": metrics.total_output_tokens,
        "request_throughput": metrics.request_throughput,
        "request_goodput": None,
        "output_throughput": metrics.output_throughput,
        "total_token_throughput": metrics.total_token_throughput,
        "input_lens": [r.prompt_len for r in results],
        "output_lens": [r.output_tokens for r in results],
        "ttfts": [r.ttft for r in results],
        "itls": [r.itl for r in results],
        "generated_texts": ["" for _ in results],
        "errors": [r.error for r in results],
        **metrics.latencies,
        "random_input_len": workload.shape.input_len,
        "random_output_len": workload.shape.output_len,
        "ignore_eos": True,
        "completed_ok": len(ok),
    }
