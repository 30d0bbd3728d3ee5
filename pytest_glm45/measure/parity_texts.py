"""The texts logprob parity scores: prose, code, tool-call markup and JSON, drawn from a fixed seed, and their digest
(a recording made over other texts is not compared)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping

from pytest_glm45.glm.glm_format import render_call

#: Logprobs returned per position (vLLM's default --max-logprobs is 20).



#: Logprobs returned per position (vLLM's default --max-logprobs is 20).
TOP_K = 5
#: Greedy tokens generated after each text.
GREEDY_TOKENS = 8

_WORDS = ("the", "river", "city", "north", "light", "market", "winter", "stone", "bridge", "music", "garden",
          "letter", "morning", "engine", "harbor", "window", "silver", "road", "forest", "paper", "island")  # fmt: skip


def _prose(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 14))]
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", "?", "!"]))
    return " ".join(out)


def _code(rng: random.Random) -> str:
    lines = []
    for n in range(6):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        lines += [f"def step_{n}(values: list[int]) -> int:", f'    """Fold the values with {a} and {b}."""',
                  "    total = 0", "    for i, v in enumerate(values):",
                  f"        total += (v * {a} + i) % {b}", "    return total", ""]  # fmt: skip
    return "\n".join(lines)


def _tool_markup(rng: random.Random) -> str:
    turns = []
    for _ in range(4):
        city = rng.choice(["Paris", "Lima", "Osaka", "Cairo", "Oslo"])
        days = rng.randint(1, 7)
        turns.append(f"<|user|>\nWhat is the weather in {city} for {days} days?<|assistant|>\n<think></think>\n"
                     + render_call("get_weather", {"city": city, "days": days, "unit": rng.choice(["celsius", "fahrenheit"])})
                     + f"<|observation|>\n<tool_response>\n{json.dumps({'city': city, 'temp': rng.randint(-5, 35)})}\n</tool_response>")  # fmt: skip
    return "\n".join(turns)


def _json(rng: random.Random) -> str:
    rows = [{"id": i, "name": rng.choice(_WORDS), "value": round(rng.uniform(-100, 100), 3), "ok": rng.random() < 0.5}
            for i in range(12)]  # fmt: skip
    return json.dumps({"rows": rows}, indent=1)


def parity_texts() -> dict[str, str]:
    """The texts every configuration computes logprobs for, by name: seeded, the same on every machine."""
    rng = random.Random(1745)
    return {
        "prose": _prose(rng, 12),
        "code": _code(rng),
        "tool-call": _tool_markup(rng),
        "json": _json(rng),
        "long-filler": _prose(rng, 80),
    }


def texts_digest(texts: Mapping[str, str] | None = None) -> str:
    """A hash of the texts, requests included: two recordings are comparable only when it matches."""
    texts = parity_texts() if texts is None else texts
    payload = json.dumps({"texts": texts, "k": TOP_K, "greedy": GREEDY_TOKENS, "tokens": "by id"}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]

