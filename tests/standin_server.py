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
  chat-500=MSG    chat completions answer HTTP 500 with MSG as the error message (a dead engine, say)
  grammar-500     chat completions log vLLM's grammar rejection for the request's X-Request-Id, then answer
                  HTTP 500 "Internal server error", as vLLM 0.32's strict grammar does on GLM-4.5's native format
  log-and-exit=F  write file F as its log (`{pid}` there becomes its pid) and exit 1 before listening:
                  a recorded vLLM failure, such as tests/fixtures/vllm-0.32-speculative-boot-failure.log

STANDIN_DEATH_LOG=F: with die-after=N, write file F (the same way) before dying.

A /v1/completions request with `prompt_logprobs` gets logprobs (`parity_answer`): seeded by the
prompt, the same on every stand-in, with vLLM's shapes (prompt positions keyed by id, the greedy
continuation's top_logprobs keyed by text, or by "token_id:N" under `return_tokens_as_token_ids`).
STANDIN_PARITY="ARG=behaviour;..." changes them on a server whose command line holds ARG:
  skew=S          logits moved by seeded noise of std S (0.001 passes parity, 1.5 fails it)
  contradict      one prompt position's logprob above 0 (the logprobs contradict themselves)
  fail            answer 500
  collapse        the first greedy token and the third candidate are two ids of one text ("")

Never used in place of vLLM by the suites.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parity_rules(argv: list[str]) -> dict[str, str]:
    """STANDIN_PARITY's behaviours for a server whose command line is `argv`."""
    line = " ".join(argv)
    out = {}
    for rule in filter(None, os.environ.get("STANDIN_PARITY", "").split(";")):
        arg, _, behaviour = rule.partition("=")
        if arg in line:
            name, _, value = behaviour.partition("=")
            out[name] = value
    return out


def _tid(piece: str) -> int:
    return 10 + int.from_bytes(hashlib.sha256(piece.encode()).digest()[:4], "little") % 40000


def _step(context: list[int], pool: list[int], skew: float) -> list[tuple[int, float]]:
    """Five candidates and their logprobs after `context`, best first (seeded by its last tokens)."""
    seed = hashlib.sha256(repr((len(context), context[-3:])).encode()).digest()
    rng = random.Random(seed)
    ids = rng.sample(pool, 5) if len(pool) >= 5 else [*pool, *range(1000, 1005 - len(pool))]
    logits = [rng.gauss(0.0, 1.5) for _ in ids]
    if skew:
        noise = random.Random(seed + b"skew")
        logits = [x + noise.gauss(0.0, skew) for x in logits]
    total = math.log(sum(math.exp(x) for x in logits) + math.exp(1.0))  # the rest of the vocabulary holds some mass
    return sorted(((t, x - total) for t, x in zip(ids, logits, strict=True)), key=lambda e: -e[1])


def parity_answer(body: dict, rules: dict[str, str]) -> dict:
    """A /v1/completions answer with prompt_logprobs and a greedy continuation's logprobs, as vLLM shapes them."""
    pieces = re.findall(r"\s*\S+|\s+", str(body["prompt"]))
    ids = [_tid(p) for p in pieces]
    text = dict(zip(ids, pieces, strict=True))
    pool = sorted(set(ids))
    skew = float(rules.get("skew") or 0)
    prompt_logprobs: list = [None]
    for n in range(1, len(ids)):
        top = _step(ids[:n], pool, skew)
        actual = ids[n]
        entry = {str(actual): None}
        for rank, (t, lp) in enumerate(top, 1):
            entry[str(t)] = {"logprob": lp, "rank": rank, "decoded_token": text.get(t, "")}
        if entry[str(actual)] is None:
            entry[str(actual)] = {"logprob": top[-1][1] - 1.0, "rank": 6 + n % 50, "decoded_token": text[actual]}
        if "contradict" in rules and n == 3:
            entry[str(actual)]["logprob"] = 0.5
        prompt_logprobs.append(entry)
    by_id = bool(body.get("return_tokens_as_token_ids"))
    text.update({1: "", 2: ""})
    tokens, token_logprobs, top_logprobs, context = [], [], [], list(ids)
    for n in range(int(body.get("max_tokens") or 8)):
        top = _step(context, pool, skew)
        if "collapse" in rules and n == 0:
            top = [(1, top[0][1]), top[1], (2, top[2][1]), *top[3:]]
        greedy = top[0][0]

        def key(t: int) -> str:
            return f"token_id:{t}" if by_id else text.get(t, "")

        tokens.append(key(greedy))
        token_logprobs.append(top[0][1])
        top_logprobs.append({key(t): lp for t, lp in top})  # by text, two tokens of one text are one entry
        context.append(greedy)
    return {"object": "text_completion", "model": body.get("model"),
            "choices": [{"index": 0, "text": "".join(text.get(t, "") for t in context[len(ids):]), "finish_reason": "length",
                         "prompt_logprobs": prompt_logprobs,
                         "logprobs": {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs,
                                      "text_offset": list(range(len(tokens)))}}]}

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
            if self.path == "/v1/completions" and body.get("prompt_logprobs") is not None:
                rules = parity_rules(sys.argv)
                if "fail" in rules:
                    self._send(500, {"error": {"message": "standin: parity answer failed as asked", "code": 500}})
                else:
                    self._send(200, parity_answer(body, rules))
            elif self.path == "/v1/completions":
                text = "noise from a model that does not replay" if mode == "no-replay" else script
                self._send(200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop"}]})
            elif self.path == "/v1/chat/completions":
                served["chat"] += 1
                if die_after is not None and served["chat"] > die_after:
                    print("standin: dying as asked", flush=True)
                    if os.environ.get("STANDIN_DEATH_LOG"):
                        write_log(os.environ["STANDIN_DEATH_LOG"])
                    os._exit(7)
                if mode.startswith("chat-500="):
                    self._send(500, {"error": {"message": mode.split("=", 1)[1], "type": "InternalServerError", "code": 500}})
                    return
                if mode == "grammar-500":
                    rid = self.headers.get("X-Request-Id", "none")
                    print(f"(EngineCore pid={os.getpid()}) ERROR [scheduler.py:2189] Unexpected: grammar rejected tokens "
                          f"[198] for request chatcmpl-{rid}-1a2b3c4d. Terminating request.", flush=True)  # fmt: skip
                    self._send(500, {"error": {"message": "Internal server error", "type": "InternalServerError", "code": 500}})
                    return
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
