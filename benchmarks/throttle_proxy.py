"""A proxy in front of a real vLLM server that makes its streams slower per token, by a factor.

    python benchmarks/throttle_proxy.py --upstream http://127.0.0.1:8000 --port 8100 --stretch 1.3

Every request is forwarded as it is. In a streamed answer the first event goes out when it
arrives; each later event goes out at `stretch` times its upstream time since the first event
(never before it arrived). So TTFT stays, time per output token grows by the factor: a server
that is 30% slower per token, for testing the throughput gate both ways (benchmarks/gate_ab.py).
With --stretch 1 it only relays, so the A runs of an A/B pass through the same hop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}


def make_app(upstream: str, stretch: float) -> web.Application:
    async def stretched(up: Any, out: web.StreamResponse) -> None:
        """Events timestamped as they arrive (a reader of their own), sent on the stretched timeline."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def read() -> None:
            pending = b""
            async for data in up.content.iter_any():
                now = time.perf_counter()
                pending += data
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    queue.put_nowait((now, event + b"\n\n"))
            if pending:
                queue.put_nowait((time.perf_counter(), pending))
            queue.put_nowait(None)

        reader = asyncio.create_task(read())
        first_in = first_out = None
        while (item := await queue.get()) is not None:
            arrived, event = item
            if first_in is None or first_out is None:
                first_in, first_out = arrived, time.perf_counter()
            # Event i goes out at first_out + stretch * (its arrival - the first arrival), never earlier than now.
            delay = first_out + stretch * (arrived - first_in) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await out.write(event)
        await reader

    session: dict[str, ClientSession] = {}

    async def start(app: web.Application) -> None:
        # A new upstream connection per request: reusing one that the server closes as idle races with the
        # next request ("Server disconnected"), which the client would see as the server's fault.
        session["s"] = ClientSession(connector=TCPConnector(force_close=True, limit=0), timeout=ClientTimeout(total=3600),
                                     )  # fmt: skip

    async def stop(app: web.Application) -> None:
        await session["s"].close()

    async def relay(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with session["s"].request(request.method, upstream + request.path_qs, data=body, headers=headers) as up:
            out = web.StreamResponse(status=up.status, headers={k: v for k, v in up.headers.items() if k.lower() not in HOP_HEADERS})
            await out.prepare(request)
            streamed = "text/event-stream" in up.headers.get("Content-Type", "")
            if not streamed:
                async for data in up.content.iter_any():
                    await out.write(data)
            else:
                await stretched(up, out)
            with contextlib.suppress(ConnectionResetError):  # a client that stops reading at [DONE] has gone
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
