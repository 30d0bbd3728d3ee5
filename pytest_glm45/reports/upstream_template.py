"""The text of the pytest files `pytest-glm45 upstream` writes: vLLM's own parser-test shape, no server.

A generated file imports only pytest, vLLM and vLLM's tokenizer loader. It composes the parsers the server's
`--tool-call-parser glm45 --reasoning-parser glm45` compose (`ParserManager.get_parser`, as the chat server does),
lets them adjust the request (the structural tag of strict tool calling), and runs the model's output through
`Parser.parse` (non-streamed) and `Parser.parse_delta` token by token over the tokenizer's real token boundaries
(streamed). A grammar defect's file compiles the grammar the adjusted request carries with vLLM's xgrammar backend
and feeds it the model's tokens after the rendered prompt, as the engine does (the grammar starts where the
reasoning parser says reasoning ended), asserting it accepts every one. The tokenizer comes from
`$GLM45_TOKENIZER`, GLM-4.5's hub tokenizer by default; any tokenizer with GLM-4.5's special tokens shows the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: The tokenizer a generated test loads unless $GLM45_TOKENIZER names another (the kit's catalog's GLM-4.5-Air).
DEFAULT_TOKENIZER = "zai-org/GLM-4.5-Air"
#: The environment variable a generated test reads its tokenizer from.
TOKENIZER_ENV = "GLM45_TOKENIZER"

_HEAD = '''"""{docstring}
"""

from __future__ import annotations

import json
import os
import re

import pytest

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.parser.parser_manager import ParserManager
from vllm.tokenizers import get_tokenizer
'''

_COMMON = '''
TOKENIZER = os.environ.get("{env}", "{default_tokenizer}")
TOOL_PARSER = "{tool_parser}"
REASONING_PARSER = "{reasoning_parser}"

# The model output (what GLM-4.5 wrote), the request, and what the format and the API contract expect.
CASES = {cases}


# What the server ran with: strict tool calling (vLLM's default) or VLLM_ENFORCE_STRICT_TOOL_CALLING=0.
STRICT_TOOL_CALLING = {strict!r}


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer(TOKENIZER)


@pytest.fixture(autouse=True)
def strict_tool_calling(monkeypatch):
    monkeypatch.setenv("VLLM_ENFORCE_STRICT_TOOL_CALLING", "1" if STRICT_TOOL_CALLING else "0")


def messages(case):
    return [*case["history"], {{"role": "user", "content": "Go ahead."}}]


def make_request(case):
    body = {{"model": "glm-4.5", "messages": messages(case), "max_tokens": 2048}}
    if case["tools"]:
        body["tools"] = case["tools"]
        body["tool_choice"] = case["tool_choice"]
    if not case["thinking"]:
        body["chat_template_kwargs"] = {{"enable_thinking": False}}
    return ChatCompletionRequest(**body)


def make_parser(tokenizer, case):
    """The parser the chat server builds for this request, and the request it adjusted."""
    request = make_request(case)
    parser_cls = ParserManager.get_parser(
        tool_parser_name=TOOL_PARSER, reasoning_parser_name=REASONING_PARSER, enable_auto_tools=True
    )
    parser = parser_cls(tokenizer, request.tools, chat_template_kwargs=request.chat_template_kwargs or {{}})
    return parser, parser.adjust_request(request)


def output_ids(tokenizer, case):
    """The model's tokens: markup as its added token, or for the tags in case["as_text"] as ordinary text pieces."""
    if not case["as_text"]:
        return tokenizer.encode(case["script"], add_special_tokens=False)
    added = set(tokenizer.get_added_vocab().values())
    tags = "|".join(re.escape(tag) for tag in sorted(case["as_text"], key=len, reverse=True))
    ids = []
    for n, part in enumerate(re.split(f"({{tags}})", case["script"])):
        if not part:
            continue
        if n % 2 == 0:
            ids += tokenizer.encode(part, add_special_tokens=False)
            continue
        pieces = tokenizer.encode(part[:1], add_special_tokens=False) + tokenizer.encode(part[1:], add_special_tokens=False)
        assert not added & set(pieces) and tokenizer.decode(pieces) == part, f"cannot spell {{part!r}} as text pieces"
        ids += pieces
    return ids
'''

_PARSER_TESTS = '''

def parse_nonstreaming(tokenizer, case):
    parser, request = make_parser(tokenizer, case)
    ids = output_ids(tokenizer, case)
    reasoning, content, calls = parser.parse(
        tokenizer.decode(ids), request, enable_auto_tools=True, model_output_token_ids=ids
    )
    calls = [(c.name, json.loads(c.arguments)) for c in calls or []]
    return {"reasoning": reasoning or None, "content": content or None, "calls": calls}


def parse_streaming(tokenizer, case):
    """One delta per token, as the engine hands them to the server."""
    parser, request = make_parser(tokenizer, case)
    ids = output_ids(tokenizer, case)
    reasoning, content, calls, previous = "", "", {}, ""
    for i, token in enumerate(ids):
        text = tokenizer.decode(ids[: i + 1])
        delta_text, previous = text[len(previous):], text
        delta = parser.parse_delta(delta_text, [token], request, None, finished=i == len(ids) - 1)
        if delta is None:
            continue
        reasoning += delta.reasoning or ""
        content += delta.content or ""
        for call in delta.tool_calls or []:
            name, args = calls.get(call.index, ("", ""))
            if call.function is not None:
                name += call.function.name or ""
                args += call.function.arguments or ""
            calls[call.index] = (name, args)
    parsed = [(name, json.loads(args) if args else {}) for _, (name, args) in sorted(calls.items())]
    return {"reasoning": reasoning or None, "content": content or None, "calls": parsed}


def problems(case, result):
    """What in `result` breaks the case's expectation (empty: none)."""
    expect, found = case["expect"], []
    calls = [[name, args] for name, args in result["calls"]]
    if expect["kind"] == "exact":
        if calls != expect["calls"]:
            found.append(f"tool calls {calls}, expected {expect['calls']}")
        for field in ("content", "reasoning"):
            got, want = result[field], expect[field]
            if expect.get("strip"):
                got, want = (got or "").strip() or None, (want or "").strip() or None
            if got != want:
                found.append(f"{field} {result[field]!r}, expected {expect[field]!r}")
    elif expect["kind"] == "alternatives":
        if [calls, result["content"]] not in expect["accepted"]:
            found.append(f"(calls, content) = ({calls}, {result['content']!r}): neither the call nor the model's text "
                         f"came back as written; accepted: {expect['accepted']}")
    elif expect["kind"] == "as_text":  # markup spelled as text: the split the tag means, or the text as written
        found += as_text_problems(case, result, calls)
    else:  # keep: nothing the model wrote is lost; the calls parse or stay as their text
        said = (result["reasoning"] or "") + (result["content"] or "")
        lost = [piece for piece in expect["pieces"] if piece not in said]
        if lost:
            found.append(f"text the model wrote was lost: {lost}")
        if calls and calls != expect["calls"]:
            found.append(f"tool calls {calls}, expected {expect['calls']} or their text")
        if not (result["content"] or "").strip().endswith(expect["content_endswith"]):
            found.append(f"the answer {expect['content_endswith']!r} is not in content")
    return found


def as_text_problems(case, result, calls):
    expect, script = case["expect"], case["script"]
    reasoning, content = (result["reasoning"] or "").strip(), (result["content"] or "").strip()
    if expect["calls"]:
        text = script.split("</think>", 1)[1]
        if reasoning != expect["reasoning"].strip():
            return [f"reasoning {result['reasoning']!r}, expected {expect['reasoning']!r}"]
        if calls and (calls != expect["calls"] or content):
            return [f"tool calls {calls} with content {result['content']!r}, expected {expect['calls']} and no content"]
        if not calls and content != text.strip():
            return [f"the call neither parsed nor came back as its text: content {result['content']!r}"]
        return []
    split = (result["reasoning"] is not None and reasoning == expect["reasoning"].strip()
             and result["content"] is not None and content == (expect["content"] or "").strip())
    said = ((result["reasoning"] or "") + (result["content"] or "")).strip()
    kept = said in (script.strip(), script.removeprefix("<think>").strip())
    if not (split or kept):
        return [f"neither split at the tag nor kept as the model wrote it: reasoning {result['reasoning']!r}, "
                f"content {result['content']!r}"]
    return [f"tool calls {calls}, expected none"] if calls else []


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_nonstreaming(tokenizer, case):
    result = parse_nonstreaming(tokenizer, case)
    found = problems(case, result)
    assert not found, f"model output {case['script']!r}: " + "; ".join(found) + f"\\ngot: {result}"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_streaming(tokenizer, case):
    streamed = parse_streaming(tokenizer, case)
    found = problems(case, streamed)
    plain = parse_nonstreaming(tokenizer, case)
    if streamed != plain:
        found.append(f"streamed and non-streamed results differ: non-streamed {plain}")
    assert not found, f"model output {case['script']!r}, streamed: " + "; ".join(found) + f"\\ngot: {streamed}"
'''

_GRAMMAR_HEAD = '''
import types

from vllm.config import StructuredOutputsConfig
from vllm.v1.structured_output.backend_types import StructuredOutputOptions
from vllm.v1.structured_output.backend_xgrammar import XgrammarBackend
'''

_GRAMMAR_TESTS = '''

def prompt_ids(tokenizer, case):
    ids = tokenizer.apply_chat_template(
        messages(case), tools=case["tools"] or None, add_generation_prompt=True, tokenize=True,
        enable_thinking=case["thinking"],
    )
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def compile_grammar(tokenizer, structured_outputs):
    """The grammar vLLM's xgrammar backend compiles for the request (None: the request carries none)."""
    if structured_outputs is None:
        return None
    for option, spec in ((StructuredOutputOptions.STRUCTURAL_TAG, structured_outputs.structural_tag),
                         (StructuredOutputOptions.JSON, structured_outputs.json),
                         (StructuredOutputOptions.GRAMMAR, structured_outputs.grammar),
                         (StructuredOutputOptions.REGEX, structured_outputs.regex)):
        if spec is not None:
            config = types.SimpleNamespace(
                structured_outputs_config=StructuredOutputsConfig(), model_config=None, speculative_config=None
            )
            backend = XgrammarBackend(config, tokenizer=tokenizer, vocab_size=len(tokenizer))
            return backend.compile_grammar(option, spec if isinstance(spec, str) else json.dumps(spec))
    return None


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_grammar_accepts_model_output(tokenizer, case):
    """The grammar vLLM builds for the request must accept what GLM-4.5 writes (it rejects it: HTTP 500)."""
    parser, request = make_parser(tokenizer, case)
    grammar = compile_grammar(tokenizer, request.structured_outputs)
    if grammar is None:
        return  # no grammar constrains this request: nothing can reject the model's output
    reasoner = parser.reasoning_parser
    reasoning_ended = reasoner is None or reasoner.is_reasoning_end(prompt_ids(tokenizer, case))
    ids = output_ids(tokenizer, case)
    stop = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]  # the model then ends its turn
    for i, token in enumerate([*ids, *stop]):
        if not reasoning_ended:  # the engine constrains from where the reasoning parser says reasoning ended
            end = reasoner.find_reasoning_end([token])
            if end is None:
                continue
            reasoning_ended = True
            if not end.implicit:
                continue
        assert grammar.accept_tokens("glm45-upstream", [token]), (
            f"the grammar rejected token {token} ({tokenizer.decode([token])!r}) after "
            f"{tokenizer.decode(ids[:i])!r}; the model output is {case['script']!r}"
        )
'''


def render_test(*, title: str, body: str, checks: Sequence[str], filename: str, tool_parser: str, reasoning_parser: str,
                classes: str, cases: Sequence[Mapping[str, Any]], grammar: bool, strict: bool = True) -> str:  # fmt: skip
    """A generated test file: the docstring naming the defect, the cases as data, and the tests (the parser
    tests, or for a grammar defect the grammar test)."""
    fields = {"env": TOKENIZER_ENV, "default_tokenizer": DEFAULT_TOKENIZER, "tool_parser": tool_parser,
              "reasoning_parser": reasoning_parser}  # fmt: skip
    how = (", then compiles the grammar the adjusted request carries (strict tool calling's structural tag) with vLLM's "
           "xgrammar backend and feeds it the model's tokens") if grammar else \
        ", non-streamed (`Parser.parse`) and streamed token by token (`Parser.parse_delta`)"  # fmt: skip
    docstring = "\n\n".join([
        title, body,
        wrap(f"Found by pytest-glm45 ({', '.join(checks)}). No server: the model output below goes through the parsers "
             f"that `--tool-call-parser {tool_parser} --reasoning-parser {reasoning_parser}` compose ({classes}), as "
             f"vLLM's chat server does{how}."),
        wrap(f"Run: {TOKENIZER_ENV}=<tokenizer path or hub name> pytest {filename} (default: {DEFAULT_TOKENIZER}; any "
             "tokenizer with GLM-4.5's special tokens shows the same)"),
    ])  # fmt: skip
    head = _HEAD.format(docstring=docstring.replace("\\", "\\\\").replace('"""', "'''"))
    common = _COMMON.format(cases=python_literal([dict(c) for c in cases]), strict=strict, **fields)
    return head + (_GRAMMAR_HEAD if grammar else "") + common + (_GRAMMAR_TESTS if grammar else _PARSER_TESTS)


def wrap(text: str, width: int = 110) -> str:
    """`text` with each paragraph's words wrapped at `width` characters."""
    out: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            if line and len(line) + 1 + len(word) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        out.append(line)
    return "\n".join(out)


def python_literal(value: Any, indent: int = 0) -> str:
    """A JSON-shaped value as a Python literal in vLLM's style (double quotes; one dict entry or list item a line
    once it passes 100 characters)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    flat = json.dumps(value, ensure_ascii=False)
    pad, inner = " " * indent, " " * (indent + 4)
    if isinstance(value, Mapping):
        items = [f"{json.dumps(str(k))}: {python_literal(v, indent + 4)}" for k, v in value.items()]
        opening, closing = "{", "}"
    else:
        items = [python_literal(v, indent + 4) for v in value]
        opening, closing = "[", "]"
    one_line = opening + ", ".join(items) + closing
    if len(flat) + indent <= 100 and "\n" not in one_line:
        return one_line
    return opening + "\n" + "".join(f"{inner}{item},\n" for item in items) + pad + closing
