"""A proxy in front of a real vLLM server that makes its streams slower per token, by a factor.

    python benchmarks/throttle_proxy.py --upstream http://127.0.0.1:8000 --port 8100 --stretch 1.3

Every request is forwarded as it is. In a streamed answer the first event goes out when it
arrives; each later event goes out `stretch` times its upstream gap after the one before it
(never before it arrived). So TTFT stays, time per output token grows by the factor: a server
that is 30% slower per token, for testing the throughput gate both ways (benchmarks/gate_ab.py).
With --stretch 1 it only relays, so the A runs of an A/B pass through the same hop.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import ClientSession, ClientTimeout, web

HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}


def make_app(upstream: str, stretch: float) -> web.Application:
    session: dict[str, ClientSession] = {}

    async def start(app: web.Application) -> None:
        session["s"] = ClientSession(timeout=ClientTimeout(total=3600), auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await session["s"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with session["s"].request(request.method, upstream + request.path_qs, data=body, headers=headers) as up:
            out = web.StreamResponse(status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in HOP_HEADERS})
            await out.prepare(request)
            streamed = "text/event-stream" in up.headers.get("Content-Type", "")
            last_in = last_out = None
            pending = b""
            async for data in up.content.iter_any():
                if not streamed:
                    await out.write(data)
                    continue
                pending += data
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    now = time.perf_counter()
                    if last_in is not None and last_out is not None:
                        due = last_out + stretch * (now - last_in)
                        if due > now:
                            await asyncio.sleep(due - now)
                    last_in, last_out = now, time.perf_counter()
                    await out.write(event + b"\n\n")
            if pending:
                await out.write(pending)
            await out.write_eof()
            return out

    app = web.Application(client_max_size=64 * 2**20)
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{tail:.*}", relay)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the vLLM server's base URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stretch", type=float, default=1.0, help="factor on each gap between streamed events. Default: 1.")
    args = parser.parse_args()
    web.run_app(make_app(args.upstream.rstrip("/"), args.stretch), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
