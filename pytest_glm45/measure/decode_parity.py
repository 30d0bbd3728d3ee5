"""Exact parity of decode modes: the same greedy tokens, by id, with and without the mode.

Speculative decoding is lossless under greedy decoding: the target model verifies every drafted token, so a
server with speculation must write exactly the tokens the same flags write without it. A stream interval and the
replay processor (on a request that does not replay) change nothing about the tokens either. Each decode-mode
configuration is compared with its *exact twin*, the first of these in the run (`twins`):

- speculative (`tp1-ngram2`, `tp8-mtp1`): the same flags without speculation and without the replay processor
  (`tp1-noreplay`), else the same flags with it (`tp1`): the processor does nothing to a request that does not
  replay, which `tp1-noreplay` against `tp1` checks in the default run;
- `-noreplay`: the same flags with the replay processor;
- `-siN`: the plan without the interval.

The request: each parity text (`parity_texts`) on `/v1/completions`, greedy, DECODE_TOKENS tokens with
`ignore_eos`, tokens by id. The continuation is longer than logprob parity's, since speculation acts only while
decoding. No pytest import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from pytest_glm45.engine.decode import Decode
from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.measure.parity_record import token_id
from pytest_glm45.measure.parity_texts import parity_texts

#: Greedy tokens generated after each text: enough steps for several drafts to be accepted or refused.
DECODE_TOKENS = 48
#: Characters of each parity text sent (the long filler passage is cut: the decode steps are what matter).
PROMPT_CHARS = 2000
#: Differences shown per text in a failure.
SHOWN = 3


def greedy_request(model: str, prompt: str, max_tokens: int = DECODE_TOKENS) -> dict[str, Any]:
    """A greedy continuation of `prompt`, its tokens by id (`return_tokens_as_token_ids` with `logprobs` 1)."""
    return {"model": model, "prompt": prompt[:PROMPT_CHARS], "max_tokens": max_tokens, "temperature": 0.0,
            "ignore_eos": True, "logprobs": 1, "return_tokens_as_token_ids": True}  # fmt: skip


def greedy_tokens(body: Mapping[str, Any], where: str) -> list[int]:
    """The generated token ids of a /v1/completions answer to `greedy_request`."""
    logprobs = body["choices"][0].get("logprobs") or {}
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list):
        raise ValueError(f"{where}: the answer has no logprobs.tokens: the server ignored the request's `logprobs`")
    return [token_id(t, f"{where}, generated position {n}") for n, t in enumerate(tokens)]


def record_greedy(post: Callable[[str, dict[str, Any]], dict[str, Any]], served_name: str, concurrency: int = 8) -> dict[str, list[int]]:
    """Every parity text's greedy continuation (token ids), sent at once."""
    texts = parity_texts()
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(texts)))) as pool:
        bodies = list(pool.map(lambda prompt: post("/v1/completions", greedy_request(served_name, prompt)), texts.values()))
    return {name: greedy_tokens(body, f"parity text {name!r}") for name, body in zip(texts, bodies, strict=True)}


def twin_decodes(decode: Decode) -> list[Decode]:
    """The decode modes a configuration with `decode` is compared with exactly, in order of preference (empty for the
    default decoding, which is compared with nothing here)."""
    if decode.is_default:
        return []
    if decode.speculative:
        return list(dict.fromkeys([decode.twin(), replace(decode.twin(), replay_requested=True)]))
    if not decode.replay_requested:
        return [replace(decode, replay_requested=True)]
    return [Decode()]


def twins(config: Configuration, matrix: Sequence[Configuration]) -> list[Configuration]:
    """The configurations of `matrix` that `config` is compared with exactly, best first: the same model and parallel
    plan with a twin decode mode (`twin_decodes`), strict tools preferred (strictness does not touch the tokens)."""
    out = []
    for decode in twin_decodes(config.plan.decode):
        plan = replace(config.plan.parallel, decode=decode)
        found = [c for c in matrix if c.model == config.model and c.plan == plan]
        out += sorted(found, key=lambda c: not c.strict_tools)[:1]
    return out


def twin_of(config: Configuration, matrix: Sequence[Configuration]) -> list[Configuration]:
    """The configurations of `matrix` that name `config` as their first exact twin: those compared with it."""
    return [c for c in matrix if c != config and twins(c, matrix)[:1] == [config]]


def differences(reference: Mapping[str, list[int]], candidate: Mapping[str, list[int]]) -> list[str]:
    """Where the candidate's greedy tokens differ from the reference's: per text, the first positions that differ
    and a length that differs; empty when they are the same token for token."""
    out = []
    for name in reference:
        ref, cand = reference[name], candidate.get(name)
        if cand is None:
            out.append(f"{name}: no continuation recorded")
            continue
        diff = [n for n, (a, b) in enumerate(zip(ref, cand, strict=False)) if a != b]
        for n in diff[:SHOWN]:
            out.append(f"{name}: position {n}: token {cand[n]} where the twin wrote {ref[n]}")
        if len(diff) > SHOWN:
            out.append(f"{name}: {len(diff) - SHOWN} more positions differ")
        if len(ref) != len(cand):
            out.append(f"{name}: {len(cand)} tokens where the twin wrote {len(ref)}")
    return out


def verdict(config: str, twin: str, reference: Mapping[str, list[int]], candidate: Mapping[str, list[int]]) -> tuple[bool, str]:
    """(passed, message) of `config`'s greedy tokens against its twin's."""
    found = differences(reference, candidate)
    tokens = sum(len(t) for t in candidate.values())
    if not found:
        return True, f"{config}: {tokens} greedy tokens over {len(candidate)} texts, the same ids as {twin}'s"
    return False, (f"{config} wrote other greedy tokens than its exact twin {twin} (a decode mode must not change what "
                   "greedy decoding writes; speculative decoding is lossless):\n" + "\n".join(found))  # fmt: skip


def streamed_differences(plain: Mapping[str, Any], streamed: Mapping[str, Any]) -> list[str]:
    """Where a streamed answer's essence (content, reasoning, tool calls, finish reason, completion tokens) differs from
    the non-streamed one's; empty when they agree."""
    return [f"{key}: streamed {streamed.get(key)!r}, not streamed {plain.get(key)!r}"
            for key in dict.fromkeys([*plain, *streamed]) if plain.get(key) != streamed.get(key)]  # fmt: skip
