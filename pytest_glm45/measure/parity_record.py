"""Recording a configuration's logprobs for parity: the requests and how their answers are read.

One `/v1/completions` request per parity text: `prompt_logprobs` (top-k at every prompt position,
teacher-forced) and a short greedy continuation with `logprobs`. Every token is read by its id:

- prompt positions come keyed by token id (`{"434": {"logprob", "rank", "decoded_token"}}`);
- the continuation's `logprobs` are the legacy completions format, which keys `top_logprobs` by token
  *text*: two tokens that decode to one text (two partial UTF-8 byte tokens both decode to "", say)
  collapse into one entry holding the later one's value, while `token_logprobs` holds the chosen
  token's own, so a position can contradict itself with no fault in the server's numbers. The request
  asks for `return_tokens_as_token_ids` (vLLM: tokens come back as "token_id:1234"), and an answer
  that ignored it is refused rather than read by text.

A token's text (for tables) is what any prompt position decoded it to; a generated token that no
prompt position showed is named by its id (`#1234`). No pytest import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pytest_glm45.measure.parity import GREEDY_TOKENS, TOP_K, Recording, TextRecord, parity_texts

#: How vLLM spells a token under `return_tokens_as_token_ids` (`format_token_id_placeholder`).
TOKEN_ID_PREFIX = "token_id:"


def completion_request(model: str, prompt: str) -> dict[str, Any]:
    """The one request per text: teacher-forced prompt logprobs and a greedy continuation, tokens by id."""
    return {"model": model, "prompt": prompt, "max_tokens": GREEDY_TOKENS, "temperature": 0.0, "logprobs": TOP_K,
            "prompt_logprobs": TOP_K, "ignore_eos": True, "return_tokens_as_token_ids": True}  # fmt: skip


def token_id(token: str, where: str) -> int:
    """The id of a generated token as `return_tokens_as_token_ids` spells it ("token_id:1234"); a
    ValueError naming `where` for a token spelled by its text."""
    digits = token[len(TOKEN_ID_PREFIX) :] if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX) else ""
    if not digits.isdigit():
        raise ValueError(f"{where}: the token {token!r} is not spelled 'token_id:<id>': the server ignored the request's "
                         "`return_tokens_as_token_ids` (a vLLM request field). By text, two tokens of one text are one "
                         "entry of the top-k (holding the later one's value), so parity reads tokens by id only; "
                         "accepted: a server that honours the field")  # fmt: skip
    return int(digits)


def parse_completion(body: Mapping[str, Any], strings: dict[int, str]) -> TextRecord:
    """A /v1/completions answer (with `prompt_logprobs`, and `logprobs` by token id) as a TextRecord;
    the prompt positions' decoded tokens go into `strings` (id -> text)."""
    choice = body["choices"][0]
    prompt = choice.get("prompt_logprobs")
    if not isinstance(prompt, list):
        raise ValueError("the answer has no prompt_logprobs: the server ignored the request's `prompt_logprobs`")
    tokens, logprobs, tops = [], [], []
    for entry in prompt[1:]:  # position 0 has no context, hence no logprob
        entries = {int(k): v for k, v in entry.items()}
        # vLLM lists the prompt's own token first, then the top-k (which may hold it too).
        actual = next(iter(entries))
        ranked = {t: v for t, v in entries.items() if int(v.get("rank", 0)) <= TOP_K}
        for t, v in entries.items():
            if v.get("decoded_token") is not None:
                strings.setdefault(t, str(v["decoded_token"]))
        tokens.append(actual)
        logprobs.append(float(entries[actual]["logprob"]))
        tops.append({t: float(v["logprob"]) for t, v in sorted(ranked.items(), key=lambda kv: int(kv[1].get("rank", 0)))})
    generated_from = len(tokens)
    lp = choice.get("logprobs") or {}
    steps = zip(lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("top_logprobs") or [], strict=False)
    for n, (token, logprob, top) in enumerate(steps):
        where = f"generated position {n}"
        tokens.append(token_id(token, where))
        logprobs.append(float(logprob))
        # The chosen token comes first, then the top-k (without ranks here): when the chosen one is not
        # among the top-k (never, greedily), it is left out, as on the prompt's positions.
        ordered = sorted(((token_id(k, where), float(v)) for k, v in (top or {}).items()), key=lambda kv: -kv[1])
        tops.append(dict(ordered[:TOP_K]))
    return TextRecord(tokens, logprobs, tops, generated_from)


def record(post: Callable[[str, dict[str, Any]], dict[str, Any]], served_name: str, *, config: str, model: str,
           precision: str, plan: str, vllm_version: str | None = None, engine: str | None = None,
           concurrency: int = 8) -> Recording:  # fmt: skip
    """Send every parity text at once (one batch) and return the Recording."""
    texts = parity_texts()
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(texts)))) as pool:
        bodies = list(pool.map(lambda prompt: post("/v1/completions", completion_request(served_name, prompt)), texts.values()))
    rec = Recording(config=config, model=model, precision=precision, plan=plan, vllm_version=vllm_version, engine=engine)
    for name, body in zip(texts, bodies, strict=True):
        try:
            rec.texts[name] = parse_completion(body, rec.strings)
        except ValueError as exc:
            raise ValueError(f"{config}: the parity text {name!r}: {exc}") from None
    return rec
