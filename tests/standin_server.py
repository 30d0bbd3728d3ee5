"""A stand-in for vLLM's API server, for fault injection in the kit's own tests only.

It takes vLLM's command line (it reads --port, --host and --served-model-name, ignores the
rest) and serves /health, /v1/models, /version, /v1/completions and /v1/chat/completions
just well enough for the kit's lifecycle. Its behaviour comes from STANDIN_MODE:

  ok              serve normally (completions echo the replay script, so replay is "loaded")
  crash-at-boot   print a traceback and exit 3 before listening
  hang            never answer /health
  die-after=N     exit 7 after answering N chat requests
  ignore-sigterm  ignore SIGTERM (stop must SIGKILL)
  spawn-child     start a grandchild in the same process group (stop must reap it)
  slow=S          sleep S seconds before listening
  port-taken      exit 1 with "address already in use" on the first try (STANDIN_STATE file)
  no-replay       serve, but completions ignore the replay script (a server without the processor)
  log-and-exit=F  write file F as its log (`{pid}` there becomes its pid) and exit 1 before listening:
                  a recorded vLLM failure, such as tests/fixtures/vllm-0.32-speculative-boot-failure.log

STANDIN_DEATH_LOG=F: with die-after=N, write file F (the same way) before dying.

Never used in place of vLLM by the suites.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def write_log(path: str) -> None:
    """A recorded log as this process's output, its pids this process's."""
    sys.stdout.flush()
    with open(path, "rb") as f:
        sys.stdout.buffer.write(f.read().replace(b"{pid}", str(os.getpid()).encode()))
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--served-model-name", default="standin")
    parser.add_argument("--max-model-len", type=int, default=8192)
    args, _unknown = parser.parse_known_args()
    mode = os.environ.get("STANDIN_MODE", "ok")
    api_key = os.environ.get("VLLM_API_KEY")
    print(f"standin: mode={mode} port={args.port} pid={os.getpid()}", flush=True)

    if mode == "crash-at-boot":
        print("Traceback (most recent call last):\nRuntimeError: standin crashed at boot", flush=True)
        sys.exit(3)
    if mode.startswith("log-and-exit="):
        write_log(mode.split("=", 1)[1])
        sys.exit(1)
    if mode == "port-taken":
        state = os.environ["STANDIN_STATE"]
        if not os.path.exists(state):
            open(state, "w").close()
            print("OSError: [Errno 98] Address already in use", flush=True)
            sys.exit(1)
    if mode.startswith("slow="):
        time.sleep(float(mode.split("=", 1)[1]))
    if mode == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "spawn-child":
        child = subprocess.Popen([sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])
        print(f"standin: child pid={child.pid}", flush=True)
    die_after = int(mode.split("=", 1)[1]) if mode.startswith("die-after=") else None
    served = {"chat": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *a: object) -> None:
            print("standin: " + fmt % a, flush=True)

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if api_key and self.headers.get("Authorization") != f"Bearer {api_key}":
                self._send(401, {"error": {"message": "Unauthorized", "code": 401}})
                return False
            return True

        def do_GET(self) -> None:
            if self.path == "/health":
                if mode == "hang":
                    time.sleep(3600)
                self._send(200, {})
            elif self.path == "/version":
                self._send(200, {"version": "0.0.0-standin"})
            elif self.path == "/v1/models":
                if self._authorized():
                    self._send(200, {"data": [{"id": args.served_model_name, "max_model_len": args.max_model_len}]})
            else:
                self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            if not self._authorized():
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            script = (body.get("vllm_xargs") or {}).get("glm45_replay", "hello")
            if self.path == "/v1/completions":
                text = "noise from a model that does not replay" if mode == "no-replay" else script
                self._send(200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}]})
            elif self.path == "/v1/chat/completions":
                served["chat"] += 1
                if die_after is not None and served["chat"] > die_after:
                    print("standin: dying as asked", flush=True)
                    if os.environ.get("STANDIN_DEATH_LOG"):
                        write_log(os.environ["STANDIN_DEATH_LOG"])
                    os._exit(7)
                message = {"role": "assistant", "content": script}
                self._send(200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})  # fmt: skip
            else:
                self._send(404, {"error": {"message": "not found"}})

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print("standin: listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
