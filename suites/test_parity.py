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
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.clients.chat import ChatClient
from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.measure import parity
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
