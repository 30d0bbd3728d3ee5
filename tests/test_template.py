"""The tiny model's chat template against the GLM-4.5 conversation format (through transformers)."""

from __future__ import annotations

import json

import pytest

from pytest_glm45.engine.tinymodel import ensure_tiny_model

transformers = pytest.importorskip("transformers")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Météo d'une ville",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory):
    tiny = ensure_tiny_model(tmp_path_factory.mktemp("cache"))
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny.path))

    def _render(messages, **kw):
        kw.setdefault("add_generation_prompt", True)
        return tok.apply_chat_template(messages, tokenize=False, **kw)

    return _render


def test_plain_turn(render) -> None:
    assert render([{"role": "user", "content": "Hi"}]) == "[gMASK]<sop><|user|>\nHi<|assistant|>"


def test_system_and_content_parts(render) -> None:
    out = render([{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]}])  # fmt: skip
    assert out == "[gMASK]<sop><|system|>\nBe brief.<|user|>\nAB<|assistant|>"


def test_tools_block_comes_first_one_json_line_per_tool_unescaped(render) -> None:
    out = render([{"role": "user", "content": "Weather?"}], tools=TOOLS)
    assert out.startswith("[gMASK]<sop><|system|>\n# Tools\n\nYou may call one or more functions")
    block = out.split("<tools>\n", 1)[1].split("</tools>", 1)[0]
    lines = block.splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == TOOLS[0]["function"]
    assert "Météo" in lines[0]  # ensure_ascii off
    assert "<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>" in out
    assert out.endswith("</tool_call><|user|>\nWeather?<|assistant|>")


def test_thinking_off_appends_nothink_and_an_empty_think_block(render) -> None:
    out = render([{"role": "user", "content": "Hi"}], enable_thinking=False)
    assert out == "[gMASK]<sop><|user|>\nHi/nothink<|assistant|>\n<think></think>"
    typed = render([{"role": "user", "content": "Hi/nothink"}], enable_thinking=False)
    assert typed.count("/nothink") == 1


def test_multi_turn_tool_loop_with_typed_values_and_observations(render) -> None:
    messages = [
        {"role": "user", "content": "Plan"},
        {"role": "assistant", "content": "", "reasoning_content": "old thought",
         "tool_calls": [{"id": "1", "type": "function",
                         "function": {"name": "f", "arguments": {"s": "raw text", "n": 3, "b": True, "l": [1, 2], "o": {"a": 1}, "z": None}}}]},
        {"role": "tool", "tool_call_id": "1", "content": "R1"},
        {"role": "tool", "tool_call_id": "2", "content": "R2"},
        {"role": "assistant", "content": "Done.", "reasoning_content": "kept thought"},
    ]  # fmt: skip
    out = render(messages)
    call = (
        "<tool_call>f\n<arg_key>s</arg_key>\n<arg_value>raw text</arg_value>\n<arg_key>n</arg_key>\n<arg_value>3</arg_value>\n"
        "<arg_key>b</arg_key>\n<arg_value>true</arg_value>\n<arg_key>l</arg_key>\n<arg_value>[1, 2]</arg_value>\n"
        '<arg_key>o</arg_key>\n<arg_value>{"a": 1}</arg_value>\n<arg_key>z</arg_key>\n<arg_value>null</arg_value>\n</tool_call>'
    )
    assert out == (
        "[gMASK]<sop><|user|>\nPlan"
        "<|assistant|>\n<think>old thought</think>\n" + call
        + "<|observation|>\n<tool_response>\nR1\n</tool_response>\n<tool_response>\nR2\n</tool_response>"
        "<|assistant|>\n<think>kept thought</think>\nDone.<|assistant|>"
    )


def test_past_reasoning_is_dropped_before_the_last_user_turn(render) -> None:
    out = render([
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1", "reasoning_content": "secret thought"},
        {"role": "user", "content": "Q2"},
    ])  # fmt: skip
    assert "secret thought" not in out
    assert out == "[gMASK]<sop><|user|>\nQ1<|assistant|>\n<think></think>\nA1<|user|>\nQ2<|assistant|>"


def test_reasoning_inline_in_content_is_split_out(render) -> None:
    out = render([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>t</think>\nA"}],
                 add_generation_prompt=False)  # fmt: skip
    assert out.endswith("<|assistant|>\n<think>t</think>\nA")


# -- GLM-4.7's template (the tiny-4.7 model) ----------------------------------------------


@pytest.fixture(scope="module")
def render47(tmp_path_factory: pytest.TempPathFactory):
    from pytest_glm45.engine.tinymodel import tiny_sizes

    tiny = ensure_tiny_model(tmp_path_factory.mktemp("cache47"), tiny_sizes("4.7"))
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny.path))

    def _render(messages, **kw):
        kw.setdefault("add_generation_prompt", True)
        return tok.apply_chat_template(messages, tokenize=False, **kw)

    return _render


def test_glm47_opens_the_think_block_itself(render47) -> None:
    assert render47([{"role": "user", "content": "Hi"}]) == "[gMASK]<sop><|user|>\nHi<|assistant|><think>"
    off = render47([{"role": "user", "content": "Hi"}], enable_thinking=False)
    assert off == "[gMASK]<sop><|user|>\nHi<|assistant|></think>", "thinking off closes the block; no /nothink"


def test_glm47_writes_past_calls_compact_and_keeps_reasoning_only_after_the_last_user_turn(render47) -> None:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}}
    text = render47([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "reasoning_content": "Look it up.", "tool_calls": [call]},
        {"role": "tool", "content": "sunny"},
    ], tools=TOOLS)  # fmt: skip
    assert "<|assistant|><think>Look it up.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>" \
           "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call><|observation|>" in text
    assert "<tool_call>{function-name}<arg_key>{arg-key-1}</arg_key><arg_value>{arg-value-1}</arg_value>" in text
    earlier = render47([
        {"role": "user", "content": "A"}, {"role": "assistant", "content": "B", "reasoning_content": "old"},
        {"role": "user", "content": "C"},
    ])  # fmt: skip
    assert "<|assistant|></think>B<|user|>\nC<|assistant|><think>" in earlier and "old" not in earlier
