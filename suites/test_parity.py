"""Logprob parity: every configuration of a model computes the numbers its reference computes.

One batch of requests per configuration: each kit-generated text (prose, code, GLM-4.5 tool-call
markup, JSON, a long filler passage) with `prompt_logprobs` and a short greedy continuation. The
first configuration of each model is the reference (or --glm45-parity-reference, a report.json
from a known-good box); every later one must agree with it position by position within the
thresholds for what differs (`pytest_glm45.parity`; README, "Parity"). A wrong kernel, a broken
shard or a bad interconnect boots, answers and parses fine, and fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45 import parity
from pytest_glm45.chat import ChatClient
from pytest_glm45.pool import ServerHandle
from pytest_glm45.settings import Settings

pytestmark = pytest.mark.glm45_strict_irrelevant


def _recording(server: ServerHandle, chat: ChatClient, settings: Settings) -> parity.Recording:
    model = server.config.model if server.config is not None else settings.models[0]
    return parity.record(chat.post, server.served_name, config=server.config_id, model=parity.model_key(model),
                         precision=model.precision, plan=server.config.plan.id if server.config is not None else "remote",
                         vllm_version=server.vllm_version, engine=server.engine)  # fmt: skip


def test_logprobs_match_the_reference(glm45_server: ServerHandle, glm45_chat: ChatClient, glm45_settings: Settings,
                                      glm45_parity: Any) -> None:  # fmt: skip
    recording = _recording(glm45_server, glm45_chat, glm45_settings)
    result = glm45_parity.observe(recording)
    problems = parity.self_consistency(recording)
    assert not problems, f"{glm45_server.config_id}: the server's logprobs contradict themselves:\n" + "\n".join(problems)
    if result is None:
        return  # this configuration is its model's reference; the ones after it are compared with it
    assert result.passed, (f"{parity.summary(result)}\nbeyond the thresholds: {'; '.join(result.failures)}\n"
                           f"worst positions:\n{parity.worst_table(result)}")  # fmt: skip
