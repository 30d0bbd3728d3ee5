"""Logprob parity: every configuration of a model computes the numbers its reference computes.

One batch of requests per configuration: each kit-generated text (prose, code, GLM-4.5 tool-call
markup, JSON, a long filler passage) with `prompt_logprobs` and a short greedy continuation, every
token read by its id. The first configuration of each model in the run is the reference (or
--glm45-parity-reference, a report.json from a known-good box): checked for self-consistency, then
kept, compared with nothing (its check is a skip that says so). Every later configuration must
agree with it position by position within the thresholds for what differs (`pytest_glm45.measure.parity`;
README, "Parity"); if the reference failed, they fail naming it. A wrong kernel, a broken shard or a
bad interconnect boots, answers and parses fine, and fails here. Under `pytest -n` a configuration
whose reference ran on another worker is judged by the controller once the workers are done.

Decode modes (`tp1-si4`, `tp1-ngram2`, `tp1-noreplay`, `tp8-mtp1`): each writes the same greedy tokens, id for id, as
its exact twin (speculation is lossless under greedy decoding), and on every configuration a streamed answer is the
non-streamed one (`pytest_glm45.measure.decode_parity`; docs/decode-modes.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.clients.chat import ChatClient
from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.measure import decode_parity, parity
from pytest_glm45.measure.parity_record import record
from pytest_glm45.measure.parity_session import CANDIDATE
from pytest_glm45.plugin import CHECK_ID
from pytest_glm45.settings import Settings

pytestmark = [pytest.mark.glm45_strict_irrelevant, pytest.mark.glm45_decode_mode]


def _recording(server: ServerHandle, chat: ChatClient, settings: Settings) -> parity.Recording:
    model = server.model
    if model is None:
        pytest.skip(f"{server.served_name} at {server.base_url}: which GLM-4.x it serves was not declared, so no parity "
                    "reference applies; add --glm45-model with its alias (air-fp8, fp8, glm-4.7, ...)")  # fmt: skip
    return record(chat.post, server.served_name, config=server.config_id, model=parity.model_key(model),
                  precision=model.precision, plan=server.config.plan.id if server.config is not None else "remote",
                  vllm_version=server.vllm_version, engine=server.engine)  # fmt: skip


def _order(session: pytest.Session) -> list[tuple[str, str]]:
    """(configuration, parity model) of every parity check of the run, in the order they run: the first of
    a model is its reference, the same on every pytest-xdist worker (each collects every item)."""
    out = []
    for item in session.items:
        config = getattr(item, "callspec", None) and item.callspec.params.get("glm45_server")  # type: ignore[attr-defined]
        if getattr(item, "obj", None) is test_logprobs_match_the_reference and isinstance(config, Configuration):
            out.append((config.id, parity.model_key(config.model)))
    return out


def test_logprobs_match_the_reference(glm45_server: ServerHandle, glm45_chat: ChatClient, glm45_settings: Settings,
                                      glm45_parity: Any, request: pytest.FixtureRequest) -> None:  # fmt: skip
    glm45_parity.plan(_order(request.session))
    try:
        recording = _recording(glm45_server, glm45_chat, glm45_settings)
    except Exception as exc:
        glm45_parity.recording_failed(glm45_server.config_id, f"{type(exc).__name__}: {exc}")
        raise
    outcome = glm45_parity.check(recording, request.node.stash.get(CHECK_ID, request.node.nodeid))
    assert not outcome.failed, outcome.message()
    if outcome.role != CANDIDATE:
        pytest.skip(outcome.message())  # the reference, or a candidate the controller judges (pytest -n)


# -- decode modes: exact greedy parity and streaming agreement (pytest_glm45.measure.decode_parity) --------------------


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
def test_streamed_answer_matches_the_plain_one(glm45_server: ServerHandle, glm45_chat: ChatClient, n: int,
                                              weather_tool: dict[str, Any]) -> None:  # fmt: skip
    """A streamed greedy answer is the non-streamed one: content, reasoning, tool calls, finish reason and completion
    tokens (several tokens a step, from a stream interval or accepted drafts, must not change what the parsers make)."""
    messages, fields = AGREEMENT_REQUESTS[n]
    fields = dict(fields)
    if fields.pop("with_tools", False):
        fields["tools"] = [weather_tool]
    request = dict(max_tokens=decode_parity.DECODE_TOKENS, temperature=0.0, ignore_eos=True, **fields)
    plain = glm45_chat.chat(messages, **request)
    streamed = glm45_chat.chat(messages, stream=True, **request)
    essence = [{**r.essence(), "completion_tokens": (r.usage or {}).get("completion_tokens")} for r in (plain, streamed)]
    found = decode_parity.streamed_differences(essence[0], essence[1])
    assert not found, f"{glm45_server.config_id}: the streamed answer differs from the plain one:\n" + "\n".join(found)
