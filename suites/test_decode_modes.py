"""Decode modes: the same greedy tokens with and without the mode, and streamed answers equal to plain ones.

Each decode-mode configuration (`tp1-si4`, `tp1-ngram2`, `tp1-noreplay`, `tp8-mtp1`) writes the same greedy tokens,
id for id, as its exact twin in the run (speculation is lossless under greedy decoding; a stream interval and the
replay processor on a request that does not replay change no token), and on every configuration a streamed greedy
answer is the non-streamed one: content, reasoning, tool calls, finish reason and completion tokens. Nothing here
replays, so a speculative configuration (booted without the replay processor, which vLLM refuses with speculation)
runs it (`pytest_glm45.measure.decode_parity`; docs/decode-modes.md).
"""

from __future__ import annotations

import pytest

from pytest_glm45.clients.chat import ChatClient
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.glm.toolcall import WEATHER
from pytest_glm45.measure import decode_parity
from pytest_glm45.settings import Settings

pytestmark = [pytest.mark.glm45_strict_irrelevant, pytest.mark.glm45_decode_mode]


@pytest.fixture(scope="session")
def greedy_recordings() -> dict[str, dict[str, list[int]] | str]:
    """Each configuration's greedy tokens in this process, by configuration id (a str: why it recorded none)."""
    return {}


def test_greedy_tokens_match_the_exact_twin(glm45_server: ServerHandle, glm45_chat: ChatClient, glm45_settings: Settings,
                                            greedy_recordings: dict[str, dict[str, list[int]] | str]) -> None:  # fmt: skip
    """A decode mode writes the greedy tokens its exact twin writes, id for id: speculation is lossless under greedy
    decoding, and neither a stream interval nor the replay processor (on a request that does not replay) touches them."""
    config = glm45_server.config
    if config is None:
        pytest.skip(f"{glm45_server.config_id}: a server given by URL has no twin in the run to compare its tokens with")
    matrix = glm45_settings.matrix
    twins, compared_with_it = decode_parity.twins(config, matrix), decode_parity.twin_of(config, matrix)
    if not twins and not compared_with_it:
        pytest.skip(f"{config.id}: no decode mode of this plan in the run, so no exact twin to compare greedy tokens with")
    try:
        greedy_recordings[config.id] = decode_parity.record_greedy(glm45_chat.post, glm45_server.served_name)
    except Exception as exc:
        greedy_recordings[config.id] = f"{type(exc).__name__}: {exc}"
        raise
    if not twins:
        pytest.skip(f"{config.id} records the greedy tokens that {', '.join(c.id for c in compared_with_it)} must write")
    recorded = [(c, greedy_recordings.get(c.id)) for c in twins]
    failed = [f"{c.id}: {r}" for c, r in recorded if isinstance(r, str)]
    found = next(((c, r) for c, r in recorded if isinstance(r, dict)), None)
    if found is None:
        assert not failed, f"{config.id}: no exact verdict: its twins recorded no greedy tokens: {'; '.join(failed)}"
        pytest.skip(f"{config.id}: its exact twins ({', '.join(c.id for c in twins)}) recorded nothing in this process "
                    "(not run yet, or run on another pytest-xdist worker)")  # fmt: skip
    twin, reference = found
    passed, message = decode_parity.verdict(config.id, twin.id, reference, greedy_recordings[config.id])  # type: ignore[arg-type]
    assert passed, message


#: (messages, request fields) of the streaming-agreement requests: thinking on and off, with and without tools.
AGREEMENT_REQUESTS = (
    ([{"role": "user", "content": "What is the weather in Paris and in Rome this week?"}], {"with_tools": True}),
    ([{"role": "user", "content": "Write a short note about the river city."}], {"chat_template_kwargs": {"enable_thinking": False}}),
    ([{"role": "user", "content": "List three garden plants."}], {}),
)


@pytest.mark.parametrize("n", range(len(AGREEMENT_REQUESTS)), ids=["tools", "thinking-off", "plain"])
def test_streamed_answer_matches_the_plain_one(glm45_server: ServerHandle, glm45_chat: ChatClient, n: int) -> None:
    """A streamed greedy answer is the non-streamed one: content, reasoning, tool calls, finish reason and completion
    tokens (several tokens a step, from a stream interval or accepted drafts, must not change what the parsers make)."""
    messages, fields = AGREEMENT_REQUESTS[n]
    fields = dict(fields)
    if fields.pop("with_tools", False):
        fields["tools"] = [WEATHER.schema()]
    request = dict(max_tokens=decode_parity.DECODE_TOKENS, temperature=0.0, ignore_eos=True, **fields)
    plain = glm45_chat.chat(messages, **request)
    streamed = glm45_chat.chat(messages, stream=True, **request)
    essence = [{**r.essence(), "completion_tokens": (r.usage or {}).get("completion_tokens")} for r in (plain, streamed)]
    found = decode_parity.streamed_differences(essence[0], essence[1])
    assert not found, f"{glm45_server.config_id}: the streamed answer differs from the plain one:\n" + "\n".join(found)
