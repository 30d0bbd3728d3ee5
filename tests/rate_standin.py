"""A stand-in that streams completions at a fixed rate, for the kit's own measurement logic (never conformance).

    python tests/rate_standin.py --port 8123 --tpot-ms 4 [--speed-file F]

Every whitespace-separated word is one token (/tokenize counts them, so the load generator's prompts are exact).
A streamed /v1/completions answer sends its first token after --ttft-ms and token i at i x --tpot-ms after it,
each on an absolute schedule (a late wake-up does not push the later tokens back), both times multiplied by the
number in --speed-file when it exists (read at each request's start): the test's "machine" getting slower.
With --jitter, every other streamed answer is three times slower: a machine too noisy to judge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from aiohttp import web


def make_app(tpot_ms: float, ttft_ms: float, speed_file: Path | None, jitter: bool = False) -> web.Application:
    served = [0]

    def factor() -> float:
        try:
            return float(speed_file.read_text()) if speed_file is not None else 1.0
        except (OSError, ValueError):
            return 1.0

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"count": len(str(body.get("prompt", "")).split())})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        tokens = int(body.get("max_tokens") or 16)
        prompt_tokens = len(str(body.get("prompt", "")).split())
        k = factor()
        if jitter and tokens > 4:  # not the load generator's 4-token test request
            served[0] += 1
            k *= 3.0 if served[0] % 2 else 1.0
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await out.prepare(request)
        start = time.perf_counter()
        for i in range(tokens):
            due = start + k * (ttft_ms + i * tpot_ms) / 1000.0
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await out.write(b"data: " + json.dumps({"choices": [{"index": 0, "text": " x"}]}).encode() + b"\n\n")
        usage = {"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens}}
        await out.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
        await out.write_eof()
        return out

    app = web.Application()
    app.router.add_post("/tokenize", tokenize)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tpot-ms", type=float, required=True)
    parser.add_argument("--ttft-ms", type=float, default=5.0)
    parser.add_argument("--speed-file", default=None)
    parser.add_argument("--jitter", action="store_true")
    args = parser.parse_args()
    speed = Path(args.speed_file) if args.speed_file else None
    web.run_app(make_app(args.tpot_ms, args.ttft_ms, speed, args.jitter), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
