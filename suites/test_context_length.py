"""Context length: the window is enforced to the token, over-long requests get a clean 400, and
the server keeps serving; long prompts still parse.

Every count comes from the server's own tokenizer (`/tokenize`). The window is the
configuration's max model length (8192 on the embedded default, 65536 or 131072 on GPUs).
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.clients.chat import ChatClient, HttpError, Replayer
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.engine.server import ServerProcess, ServerStartError
from pytest_glm45.glm.glm_format import render_call
from pytest_glm45.glm.toolcall import WEATHER as WEATHER_TOOL
from pytest_glm45.settings import Settings

UNIT = " the"  # one token per repetition in GLM's tokenizers and in the tiny one (checked below)
pytestmark = pytest.mark.glm45_strict_irrelevant
WEATHER = WEATHER_TOOL.schema()


@pytest.fixture
def window(glm45_server: ServerHandle) -> int:
    """The max model length the server reports."""
    assert glm45_server.max_model_len, "/v1/models did not report max_model_len"
    return int(glm45_server.max_model_len)


def completion_prompt(chat: ChatClient, tokens: int) -> str:
    """A text prompt that is exactly `tokens` tokens for this server's /v1/completions."""
    text = UNIT * tokens
    counted = int(chat.post("/tokenize", {"model": chat.model, "prompt": text})["count"])
    extra = counted - tokens  # what the tokenizer adds around a prompt (a BOS, say)
    if extra:
        text = UNIT * (tokens - extra)
        counted = int(chat.post("/tokenize", {"model": chat.model, "prompt": text})["count"])
    assert counted == tokens, f"could not build a {tokens}-token prompt: /tokenize counts {counted}"
    return text


def chat_messages(chat: ChatClient, tokens: int, **fields: Any) -> list[dict[str, Any]]:
    """One user message whose rendered chat prompt (template, tools block included) is exactly `tokens`."""
    base = int(chat.tokenize_chat([{"role": "user", "content": ""}], add_generation_prompt=True, **fields)["count"])
    messages = [{"role": "user", "content": UNIT * (tokens - base)}]
    counted = int(chat.tokenize_chat(messages, add_generation_prompt=True, **fields)["count"])
    assert counted == tokens, f"could not build a {tokens}-token chat prompt: /tokenize counts {counted}"
    return messages


def assert_context_error(exc: HttpError) -> None:
    assert exc.status == 400, f"expected HTTP 400 for an over-long request, got {exc.status}: {exc.message}"
    assert "context length" in exc.message.lower() or "maximum" in exc.message.lower(), exc.message


def assert_still_serving(chat: ChatClient) -> None:
    body = chat.post("/v1/completions", {"model": chat.model, "prompt": "Hello", "max_tokens": 2})
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_unit_is_one_token(glm45_chat: ChatClient) -> None:
    assert glm45_chat.count_tokens(UNIT * 100) == 100


def test_models_reports_the_configured_max_model_len(glm45_server: ServerHandle, window: int) -> None:
    if glm45_server.config is not None:
        assert window == glm45_server.config.max_model_len


def test_completion_leaving_exactly_one_token_is_accepted(glm45_chat: ChatClient, window: int) -> None:
    prompt = completion_prompt(glm45_chat, window - 1)
    body = glm45_chat.post("/v1/completions", {"model": glm45_chat.model, "prompt": prompt, "max_tokens": 1})
    assert body["usage"]["prompt_tokens"] == window - 1
    assert body["usage"]["completion_tokens"] == 1


def test_completion_one_token_over_is_a_clean_400(glm45_chat: ChatClient, window: int) -> None:
    prompt = completion_prompt(glm45_chat, window)
    with pytest.raises(HttpError) as err:
        glm45_chat.post("/v1/completions", {"model": glm45_chat.model, "prompt": prompt, "max_tokens": 1})
    assert_context_error(err.value)
    assert_still_serving(glm45_chat)


@pytest.mark.parametrize("tools", ["no-tools", "tools"])
def test_chat_leaving_exactly_one_token_is_accepted(glm45_chat: ChatClient, window: int, tools: str) -> None:
    """The count includes the template and the tools block."""
    fields = {"tools": [WEATHER]} if tools == "tools" else {}
    result = glm45_chat.chat(chat_messages(glm45_chat, window - 1, **fields), max_tokens=1, **fields)
    assert result.usage is not None and result.usage["prompt_tokens"] == window - 1


@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("tools", ["no-tools", "tools"])
def test_chat_one_token_over_is_a_clean_400(glm45_chat: ChatClient, window: int, tools: str, mode: str) -> None:
    fields = {"tools": [WEATHER]} if tools == "tools" else {}
    over = chat_messages(glm45_chat, window, **fields)
    with pytest.raises(HttpError) as err:
        glm45_chat.chat(over, max_tokens=1, stream=mode == "stream", **fields)
    assert_context_error(err.value)
    assert_still_serving(glm45_chat)


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_prompt_longer_than_the_window_is_a_clean_400(glm45_chat: ChatClient, window: int, endpoint: str) -> None:
    if endpoint == "completions":
        request = {"model": glm45_chat.model, "prompt": completion_prompt(glm45_chat, window + 50), "max_tokens": 1}
        with pytest.raises(HttpError) as err:
            glm45_chat.post("/v1/completions", request)
    else:
        with pytest.raises(HttpError) as err:
            glm45_chat.chat(chat_messages(glm45_chat, window + 50), max_tokens=1)
    assert_context_error(err.value)
    assert_still_serving(glm45_chat)


def test_max_tokens_beyond_the_window_is_pinned(glm45_server: ServerHandle, glm45_chat: ChatClient, window: int,
                                                record_property: Any) -> None:  # fmt: skip
    """vLLM may reject a max_tokens larger than what is left, or cap it: which one is pinned per version."""
    prompt = completion_prompt(glm45_chat, window - 10)
    request = {"model": glm45_chat.model, "prompt": prompt, "max_tokens": 100,
               "vllm_xargs": {"glm45_replay": "word " * 200}}  # fmt: skip
    try:
        body = glm45_chat.post("/v1/completions", request)
        observed = "cap"
        assert body["usage"]["completion_tokens"] <= 10 and body["choices"][0]["finish_reason"] == "length"
    except HttpError as exc:
        observed = "reject"
        assert_context_error(exc)
    record_property("max_tokens_over_window", observed)
    pin = glm45_server.known.pins.get("max_tokens_over_window")
    assert pin is not None, (
        f"vLLM {glm45_server.vllm_version} {observed}s a max_tokens beyond the window; pin it: add "
        f'[pins] max_tokens_over_window = "{observed}" to vllm-{glm45_server.vllm_version}.toml'
    )
    assert observed == pin, f"vLLM {glm45_server.vllm_version} now {observed}s (pinned: {pin})"
    assert_still_serving(glm45_chat)


def test_without_max_tokens_generation_stops_at_the_window(glm45_replay: Replayer, glm45_chat: ChatClient, window: int) -> None:
    left = 12
    messages = chat_messages(glm45_chat, window - left)
    result = glm45_replay.chat("word " * 100, messages=messages, max_tokens=None, chat_template_kwargs={"enable_thinking": False})
    assert result.finish_reason == "length"
    assert result.usage is not None and result.usage["prompt_tokens"] + result.usage["completion_tokens"] == window


def test_conversation_grown_past_the_limit_gets_a_clean_400_on_the_crossing_turn(glm45_chat: ChatClient, window: int) -> None:
    turn = UNIT * (window // 5)
    messages: list[dict[str, Any]] = []
    for n in range(1, 12):
        messages.append({"role": "user", "content": turn})
        rendered = int(glm45_chat.tokenize_chat(messages, add_generation_prompt=True)["count"])
        try:
            result = glm45_chat.chat(messages, max_tokens=4)
        except HttpError as exc:
            assert rendered + 4 > window, f"turn {n} ({rendered} tokens + 4) fits the window {window} but was refused"
            assert_context_error(exc)
            assert_still_serving(glm45_chat)
            return
        assert rendered + 4 <= window, f"turn {n}: {rendered} tokens + 4 exceed the window {window} but were accepted"
        messages.append({"role": "assistant", "content": result.content or "ok"})
    pytest.fail(f"the conversation never crossed the window {window}")


@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("kind", ["tool-call", "reasoning"])
def test_replay_still_parses_at_90_percent_of_the_window(glm45_replay: Replayer, glm45_chat: ChatClient, window: int,
                                                         kind: str, mode: str) -> None:  # fmt: skip
    fields: dict[str, Any] = {"tools": [WEATHER]} if kind == "tool-call" else {}
    messages = chat_messages(glm45_chat, int(window * 0.9), **fields)
    if kind == "tool-call":
        script = render_call("get_weather", {"city": "Paris", "days": 3}, "compact")
        result = glm45_replay.chat(script, messages, stream=mode == "stream", chat_template_kwargs={"enable_thinking": False},
                                   max_tokens=256, **fields)  # fmt: skip
        assert result.calls() == [("get_weather", {"city": "Paris", "days": 3})]
    else:
        result = glm45_replay.chat("<think>Long context, short thought.</think>Answer.", messages, stream=mode == "stream", max_tokens=256)
        assert (result.reasoning, result.content) == ("Long context, short thought.", "Answer.")


@pytest.mark.glm45_boot
def test_boot_above_max_position_embeddings_is_refused(glm45_server: ServerHandle, glm45_settings: Settings, tmp_path: Any) -> None:
    """A boot-configuration check: vLLM must refuse --max-model-len above the model's maximum."""
    if not glm45_server.booted or glm45_server.server is None or glm45_server.config is None:
        pytest.skip("the server runs elsewhere: the kit boots nothing to check")
    if glm45_server.config.plan.tp > 1 or not glm45_server.config.strict_tools:
        pytest.skip("checked once per model, on its first plan")
    from dataclasses import replace

    from pytest_glm45.engine.recipe import spec_for

    config = glm45_server.config
    too_long = replace(config, max_model_len=config.model.max_position_embeddings + 1)
    spec = spec_for(too_long, glm45_settings.server_args, glm45_settings.cache_dir)
    bad = replace(spec, config_id=config.id + "-too-long")
    server = ServerProcess(bad, tmp_path / "too-long.log", startup_timeout=600)
    with pytest.raises(ServerStartError) as err:
        server.start()
    assert "exited with code" in str(err.value), str(err.value)
    assert "max_model_len" in str(err.value).lower() or "max-model-len" in str(err.value).lower() or "131072" in str(err.value)
    assert not server.alive()


@pytest.mark.glm45_live
@pytest.mark.parametrize("depth", [0.25, 0.5, 0.9])
def test_live_needle_retrieval(glm45_chat: ChatClient, window: int, depth: float) -> None:
    needle = "The secret passphrase is VIOLET-HARBOR-42."
    filler_tokens = int(min(window, 32768) * 0.8)
    filler = "The sky was clear and the market was quiet that day. " * (filler_tokens // 12)
    cut = int(len(filler) * depth)
    prompt = filler[:cut] + "\n" + needle + "\n" + filler[cut:] + "\n\nWhat is the secret passphrase? Answer with it only."
    result = glm45_chat.chat([{"role": "user", "content": prompt}], max_tokens=4096, temperature=0)
    assert "VIOLET-HARBOR-42" in (result.content or "")
