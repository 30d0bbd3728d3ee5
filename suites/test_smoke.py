"""Smoke: the server boots, says what it serves, answers a chat, and parses a replayed tool call."""

from __future__ import annotations

import json
from typing import Any

from pytest_glm45.clients.chat import ChatClient, Replayer
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.engine.probes import http_get


def test_models_lists_served_name_and_max_model_len(glm45_server: ServerHandle) -> None:
    status, body = http_get(glm45_server.base_url + "/v1/models", glm45_server.api_key)
    assert status == 200, body
    models = {m["id"]: m for m in json.loads(body)["data"]}
    assert glm45_server.served_name in models, f"/v1/models lists {sorted(models)}"
    expected = glm45_server.config.max_model_len if glm45_server.config else glm45_server.max_model_len
    assert models[glm45_server.served_name]["max_model_len"] == expected


def test_chat_completion_returns(glm45_chat: ChatClient) -> None:
    result = glm45_chat.chat([{"role": "user", "content": "Say hello."}], max_tokens=8)
    assert result.finish_reason in ("stop", "length")
    assert result.usage is not None and 0 < result.usage["completion_tokens"] <= 8


def test_replayed_tool_call_is_parsed(glm45_replay: Replayer, weather_tool: dict[str, Any]) -> None:
    script = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value><arg_key>days</arg_key><arg_value>3</arg_value></tool_call>"
    result = glm45_replay.chat(script, tools=[weather_tool], chat_template_kwargs={"enable_thinking": False})
    assert result.finish_reason == "tool_calls"
    assert result.calls() == [("get_weather", {"city": "Paris", "days": 3})]
