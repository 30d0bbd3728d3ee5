"""`pytest-glm45 reproduce`: the judge that says whether a printed curl shows the same defect as the
record (pytest_glm45.reports.recheck), on each surface and mode, both ways, and the command end to end with
`curl` replaced by a script on PATH that prints a canned answer. No vLLM: the answers are what vLLM
0.32.0 sent (tests/fixtures/surfaces), re-identified, re-chunked and altered here.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.records import reproducer
from pytest_glm45.records.reproducer import Exchange, curl_command, keep_chunks
from pytest_glm45.reports import recheck
from pytest_glm45.reports import report as report_module
from pytest_glm45.reports.recheck import CurlRun, judge, normalize

FIXTURES = Path(__file__).parent / "fixtures" / "surfaces"
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
CITY = {"city": "Paris", "days": 3}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))


def reidentified(value: Any, seed: int = 1) -> Any:
    """`value` as a second run of the same replay sends it: every id and timestamp new (consistently)."""
    rng = random.Random(seed)
    text = json.dumps(value)
    seen: dict[str, str] = {}

    def fresh(match: re.Match[str]) -> str:
        old = match.group(0)
        if old not in seen:
            seen[old] = str(int(old) + rng.randint(1, 999)) if old.isdigit() else "".join(rng.choice("0123456789abcdef") for _ in old)
        return seen[old]

    text = re.sub(r"\b(?=[0-9a-f]*\d)[0-9a-f]{16,32}\b|\b17\d{8}\b", fresh, text)
    return json.loads(text)


def payload(surface: str, data: dict[str, Any]) -> str:
    """A chunk as the record keeps it: chat's payload as vLLM wrote it, a surface's event as json.dumps."""
    return json.dumps(data, separators=(",", ":")) if surface == "chat" else json.dumps(data, ensure_ascii=False)


def recorded(surface: str, request: dict[str, Any], *, stream: bool, status: int = 200, body: Any = None,
             events: list[tuple[str | None, dict[str, Any]]] | None = None, error: str | None = None) -> Exchange:  # fmt: skip
    """The exchange a check recorded."""
    sent = {**request, "stream": True} if stream else request
    exchange = Exchange("POST", PATHS.get(surface, surface), sent, stream=stream, status=status, error=error)
    if events is not None:
        chunks = [payload(surface, d) for _, d in events] + (["[DONE]"] if surface == "chat" else [])
        exchange.chunks, exchange.chunks_total = keep_chunks(chunks), len(chunks)
    else:
        exchange.response = reproducer.truncated(body if isinstance(body, str) else json.dumps(body, separators=(",", ":")))
    return exchange


def printed(surface: str, *, status: int = 200, body: Any = None, events: list[tuple[str | None, dict[str, Any]]] | None = None,
            exit_code: int = 0, done: bool = True) -> CurlRun:  # fmt: skip
    """What the report's curl prints: the body (or the SSE stream), then `\\nHTTP <code>\\n`."""
    if events is not None:
        text = "".join((f"event: {name}\n" if name else "") + f"data: {payload(surface, d)}\n\n" for name, d in events)
        text += "data: [DONE]\n\n" if surface == "chat" and done else ""
    else:
        text = body if isinstance(body, str) else json.dumps(body)
    return CurlRun(exit_code, f"{text}\nHTTP {status}\n", "", 0.1)


def merged(surface: str, events: list[tuple[str | None, dict[str, Any]]]) -> list[tuple[str | None, dict[str, Any]]]:
    """The same stream as a loaded server sends it: each run of text deltas merged into one event."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    for name, data in copy.deepcopy(events):
        if out:
            last = out[-1][1]
            if surface == "chat" and data.get("choices") and last.get("choices"):
                a, b = last["choices"][0], data["choices"][0]
                keys = set(a["delta"]) | set(b["delta"])
                if a["finish_reason"] is None and b["finish_reason"] is None and len(keys) == 1 and keys <= {"reasoning", "content"}:
                    key = keys.pop()
                    a["delta"][key] = a["delta"].get(key, "") + b["delta"].get(key, "")
                    continue
                if a["finish_reason"] is None and b["finish_reason"] is None and keys == {"tool_calls"} \
                        and "id" not in b["delta"]["tool_calls"][0]:  # fmt: skip
                    a["delta"]["tool_calls"][0]["function"]["arguments"] = (
                        a["delta"]["tool_calls"][0]["function"].get("arguments", "") + b["delta"]["tool_calls"][0]["function"]["arguments"])
                    continue
            if surface == "messages" and data["type"] == last["type"] == "content_block_delta" \
                    and data["delta"]["type"] == last["delta"]["type"] != "signature_delta":  # fmt: skip
                key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}[data["delta"]["type"]]
                last["delta"][key] += data["delta"][key]
                continue
            if surface == "responses" and data["type"] == last["type"] and data["type"].endswith(".delta"):
                last["delta"] += data["delta"]
                continue
        out.append((name, data))
    if surface == "responses":
        for n, (_, data) in enumerate(out):
            data["sequence_number"] = n
    assert len(out) < len(events), "nothing merged"
    return out


def fixture_events(name: str) -> tuple[dict[str, Any], list[tuple[str | None, dict[str, Any]]], dict[str, Any]]:
    record = load(name)
    return record["request"], [(n, d) for n, d in record["events"]], record["plain"]


def retarget(events: list[tuple[str | None, dict[str, Any]]], old: str, new: str) -> list[tuple[str | None, dict[str, Any]]]:
    """`events` with `old` replaced by `new` in every string (a server that says something else)."""
    return [(n, json.loads(json.dumps(d).replace(old, new))) for n, d in events]


# -- normalization ---------------------------------------------------------------------------------


def test_volatile_tokens_normalize_and_the_rest_stays() -> None:
    text = ("chatcmpl-9f67d291f3b3c74c call_1a2b3c4d5e6f resp_acdc9b25b1dce4b1 msg_01AbCdEf23456789 toolu_01XyZ9876543210 "
            "chatcmpl-tool-a7fddab5fa2290d5 123e4567-e89b-12d3-a456-426614174000 1795926779 2026-11-29T06:46:34Z "
            "sig 98a70924e2dc4f6396dbf0db0df2b324 get_weather call_home max_tokens 8192")  # fmt: skip
    assert normalize(text) == ("chatcmpl-<id> call_<id> resp_<id> msg_<id> toolu_<id> chatcmpl-<id> <uuid> <time> <time> "
                               "sig <hex> get_weather call_home max_tokens 8192")  # fmt: skip


def test_problems_lose_event_numbers_and_per_event_values() -> None:
    assert recheck.normalize_problem('event 7 (content_block_delta): delta.text: Field required (got {"x": "ab"})') == \
        "event # (content_block_delta): delta.text: Field required"  # fmt: skip
    assert recheck.normalize_problem("sequence_number does not count 0, 1, 2, ...: [0, 2, 3]") == "sequence_number does not count 0, 1, 2, ..."
    assert "(got" in recheck.normalize_problem('the assembled message: content.0: Field required (got {"a": 1})')


# -- chat completions -------------------------------------------------------------------------------


def test_chat_plain_same_answer_under_new_ids_reproduces_and_another_argument_differs() -> None:
    request, _, plain = fixture_events("chat-reasoning-call")
    exchange = recorded("chat", request, stream=False, body=plain)
    assert judge(exchange, printed("chat", body=reidentified(plain)))[0] == "reproduces"
    other = json.loads(json.dumps(reidentified(plain)).replace("Paris", "Lyon"))
    verdict, diffs, _ = judge(exchange, printed("chat", body=other))
    assert verdict == "differs"
    assert diffs == [["tool_calls", [["get_weather", CITY]], [["get_weather", {**CITY, "city": "Lyon"}]]]]


def test_chat_stream_merged_chunks_and_new_ids_still_reproduce() -> None:
    request, events, _ = fixture_events("chat-reasoning-call")
    exchange = recorded("chat", request, stream=True, events=events)
    again = merged("chat", reidentified(events))
    assert judge(exchange, printed("chat", events=again)) == ("reproduces", [], [])


def test_chat_stream_with_a_different_argument_or_finish_differs() -> None:
    request, events, _ = fixture_events("chat-reasoning-call")
    exchange = recorded("chat", request, stream=True, events=events)
    verdict, diffs, _ = judge(exchange, printed("chat", events=retarget(events, '3}', '4}')))
    assert verdict == "differs" and [d[0] for d in diffs] == ["tool_calls"] and diffs[0][2] == [["get_weather", {**CITY, "days": 4}]]
    verdict, diffs, _ = judge(exchange, printed("chat", events=retarget(events, '"tool_calls", "stop_reason"', '"stop", "stop_reason"')))
    assert verdict == "differs" and diffs == [["finish_reason", "tool_calls", "stop"]]


def error_chunk(message: str) -> tuple[None, dict[str, Any]]:
    return None, {"error": {"message": message, "type": "InternalServerError", "param": None, "code": 500}}


def test_chat_stream_error_event_reproduces_with_its_volatile_ids_and_differs_by_message() -> None:
    request, events, _ = fixture_events("chat-reasoning-call")
    head = events[:5]
    exchange = recorded("chat", request, stream=True, events=[*head, error_chunk("request chatcmpl-a9dad82a6b196c3a failed: boom")])
    again = [*merged("chat", reidentified(head)), error_chunk("request chatcmpl-0123456789abcdef failed: boom")]
    assert judge(exchange, printed("chat", events=again))[0] == "reproduces"
    verdict, diffs, _ = judge(exchange, printed("chat", events=[*head, error_chunk("request chatcmpl-0123456789abcdef failed: bang")]))
    assert verdict == "differs" and diffs[0][0] == "error" and diffs[0][2].endswith("failed: bang")
    verdict, diffs, _ = judge(exchange, printed("chat", events=events))  # fixed: no error event any more
    assert verdict == "differs" and diffs[0] == ["error", "InternalServerError: request chatcmpl-<id> failed: boom", None]


def test_a_500_reproduces_as_a_500_and_not_as_a_200() -> None:
    request, _, plain = fixture_events("chat-reasoning-call")
    body = {"error": {"message": "Internal server error", "type": "InternalServerError", "param": None, "code": 500}}
    for stream in (False, True):
        exchange = recorded("chat", request, stream=stream, status=500, body=body)
        assert judge(exchange, printed("chat", status=500, body=body))[0] == "reproduces"
        verdict, diffs, _ = judge(exchange, printed("chat", status=200, body=plain))
        assert verdict == "differs" and diffs[0] == ["status", 500, 200]


def test_a_left_out_middle_is_partial_when_what_was_kept_matches_and_differs_when_not() -> None:
    request, events, _ = fixture_events("chat-reasoning-call")
    long_text = [(None, {"id": "chatcmpl-a9dad82a6b196c3a", "object": "chat.completion.chunk", "created": 1795926779,
                         "model": "glm45-tiny", "choices": [{"index": 0, "delta": {"content": f"w{n} "}, "logprobs": None,
                                                             "finish_reason": None}]}) for n in range(reproducer.HEAD_CHUNKS + 16)]  # fmt: skip
    stream = [*events[:2], *long_text, *events[2:]]
    exchange = recorded("chat", request, stream=True, events=stream)
    left = (exchange.chunks_total or 0) - reproducer.HEAD_CHUNKS - reproducer.TAIL_CHUNKS  # [DONE] counted
    assert any("chunks left out" in c for c in exchange.chunks or [])
    verdict, diffs, notes = judge(exchange, printed("chat", events=merged("chat", reidentified(stream))))
    assert (verdict, diffs) == ("partial", []) and f"left out {left} chunks in the middle" in notes[0]
    changed = retarget(stream, "w3 ", "x3 ")  # inside the kept head
    assert judge(exchange, printed("chat", events=changed))[0] == "differs"
    changed = retarget(stream, '3}', '4}')  # inside the kept tail
    assert judge(exchange, printed("chat", events=changed))[0] == "differs"


def test_a_left_out_middle_inside_one_text_is_partial() -> None:
    """The kept head and tail both lie inside one long content: the tail goes on inside the atom the head ended in."""
    request = fixture_events("chat-text")[0]
    words = [(None, {"id": "chatcmpl-a9dad82a6b196c3a", "object": "chat.completion.chunk", "created": 1795926779, "model": "glm45-tiny",
                     "choices": [{"index": 0, "delta": {"content": f"w{n} "}, "logprobs": None, "finish_reason": None}]})
             for n in range(60)]  # fmt: skip
    stop = (None, {"id": "chatcmpl-a9dad82a6b196c3a", "object": "chat.completion.chunk", "created": 1795926779, "model": "glm45-tiny",
                   "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})  # fmt: skip
    stream = [*words, stop]
    exchange = recorded("chat", request, stream=True, events=stream)
    assert judge(exchange, printed("chat", events=merged("chat", reidentified(stream))))[:2] == ("partial", [])
    verdict, diffs, _ = judge(exchange, printed("chat", events=retarget(stream, "w58 ", "w58! ")))
    assert verdict == "differs" and diffs[0][0] == "stream (end)"


def test_a_stream_broken_off_the_same_way_may_differ_only_by_what_was_in_flight() -> None:
    """vLLM's strict grammar fails mid-stream: how much text reached the client before the error event
    depends on how the engine batched its steps into deltas, so the text before the break is compared as a prefix."""
    request, events, _ = fixture_events("chat-reasoning-call")
    text = [(None, {"id": "chatcmpl-a9dad82a6b196c3a", "object": "chat.completion.chunk", "created": 1795926779, "model": "glm45-tiny",
                    "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]})
            for piece in ("<tool_call>", "get", "_weather")]  # fmt: skip
    boom = error_chunk("Internal server error")
    exchange = recorded("chat", request, stream=True, events=[*events[:4], *text[:2], boom])
    verdict, diffs, notes = judge(exchange, printed("chat", events=[*events[:4], *text, boom]))
    assert (verdict, diffs) == ("reproduces", []) and "broke off the same way" in notes[-1]
    assert judge(exchange, printed("chat", events=[*events[:4], text[0], boom]))[0] == "reproduces"  # less in flight
    verdict, diffs, _ = judge(exchange, printed("chat", events=retarget([*events[:4], *text, boom], "get", "put")))
    assert verdict == "differs" and diffs[0][0] == "stream before the break"
    verdict, diffs, _ = judge(exchange, printed("chat", events=[*events[:4], *text]))  # no break: the defect is gone
    assert verdict == "differs" and diffs[0][0] == "error"


def test_a_responses_stream_closed_mid_answer_compares_its_problems_without_the_quoted_text() -> None:
    request, events, _ = fixture_events("responses-reasoning-call")
    cut_at = next(i for i, (name, _) in enumerate(events) if name == "response.function_call_arguments.delta") + 1
    error = "RemoteProtocolError: peer closed connection without sending complete message body (incomplete chunked read)"
    exchange = recorded("responses", request, stream=True, events=events[:cut_at], error=error)
    assert any("deltas join to" in p or "never got" in p for p in recheck.observe_record(exchange).problems or [])
    verdict, diffs, _ = judge(exchange, printed("responses", events=events[: cut_at + 1], exit_code=18))
    assert (verdict, diffs) == ("reproduces", [])
    assert judge(exchange, printed("responses", events=events, exit_code=0))[0] == "differs"


def test_a_sampled_answer_is_judged_by_status_only() -> None:
    request = {"model": "glm45-tiny", "messages": [{"role": "wizard", "content": "x"}], "max_tokens": 4}
    answer = {"id": "chatcmpl-abebe9198d00bc69", "object": "chat.completion", "created": 1795928065, "model": "glm45-tiny",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "reasoning": "\u00024668 write 57"},
                           "finish_reason": "length"}]}  # fmt: skip
    exchange = recorded("chat", request, stream=False, body=answer)
    other = json.loads(json.dumps(answer).replace("4668 write 57", "zq froth"))
    verdict, _, notes = judge(exchange, printed("chat", body=other))
    assert verdict == "reproduces" and "sampling" in notes[0]
    assert judge(exchange, printed("chat", status=400, body={"error": {"message": "unknown role"}}))[0] == "differs"


def test_a_stream_the_server_broke_off_reproduces_only_when_curl_sees_it_break() -> None:
    request, events, _ = fixture_events("chat-reasoning-call")
    error = "RemoteProtocolError: peer closed connection without sending complete message body (incomplete chunked read)"
    exchange = recorded("chat", request, stream=True, events=events[:6], error=error)
    exchange.chunks = exchange.chunks[:-1]  # no [DONE]: the server never got there
    assert judge(exchange, printed("chat", events=events[:6], exit_code=18, done=False))[0] == "reproduces"
    verdict, diffs, _ = judge(exchange, printed("chat", events=events))
    assert verdict == "differs" and diffs[0] == ["transport", "closed mid-answer", None]


# -- Responses and Anthropic Messages ---------------------------------------------------------------


@pytest.mark.parametrize("surface", ["responses", "messages"])
def test_surface_plain_reproduces_under_new_ids_and_differs_by_argument(surface: str) -> None:
    request, _, plain = fixture_events(f"{surface}-reasoning-call")
    exchange = recorded(surface, request, stream=False, body=plain)
    assert judge(exchange, printed(surface, body=reidentified(plain)))[0] == "reproduces"
    verdict, diffs, _ = judge(exchange, printed(surface, body=json.loads(json.dumps(plain).replace("Paris", "Lyon"))))
    assert verdict == "differs" and "tool_calls" in [d[0] for d in diffs]


@pytest.mark.parametrize("surface", ["responses", "messages"])
def test_surface_stream_merged_renumbered_and_named_reproduces(surface: str) -> None:
    request, events, _ = fixture_events(f"{surface}-reasoning-call")
    exchange = recorded(surface, request, stream=True, events=events)  # the record keeps data only, no names
    assert all(len(c) < reproducer.BODY_CHARS for c in exchange.chunks or [])
    verdict, diffs, _ = judge(exchange, printed(surface, events=merged(surface, reidentified(events))))
    assert (verdict, diffs) == ("reproduces", [])


@pytest.mark.parametrize("surface", ["responses", "messages"])
def test_surface_stream_with_another_argument_differs(surface: str) -> None:
    request, events, _ = fixture_events(f"{surface}-reasoning-call")
    exchange = recorded(surface, request, stream=True, events=events)
    verdict, diffs, _ = judge(exchange, printed(surface, events=retarget(events, "3}", "4}")))
    assert verdict == "differs" and "tool_calls" in [d[0] for d in diffs]
    assert [d[2] for d in diffs if d[0] == "tool_calls"] == [[["get_weather", {**CITY, "days": 4}]]]


def test_messages_malformed_events_are_part_of_the_defect() -> None:
    """vLLM 0.32.0's thinking block starts without `signature`: the same problem again reproduces; a
    server that sends it (the defect fixed) differs, even with the same answer."""
    request, events, _ = fixture_events("messages-reasoning-call")
    exchange = recorded("messages", request, stream=True, events=events)
    assert recheck.observe_record(exchange).problems, "the fixture shows vLLM 0.32.0's missing signature"
    fixed = copy.deepcopy(events)
    for _, data in fixed:
        if (data.get("content_block") or {}).get("type") == "thinking":
            data["content_block"]["signature"] = ""
    verdict, diffs, _ = judge(exchange, printed("messages", events=fixed))
    assert verdict == "differs" and [d[0] for d in diffs] == ["problems"] and diffs[0][2] == []


def test_responses_final_output_that_disagrees_is_compared_with_ids_normalized() -> None:
    request, events, _ = fixture_events("responses-reasoning-call")
    broken = copy.deepcopy(events)
    broken[-1][1]["response"]["output"] = broken[-1][1]["response"]["output"][:1]  # the call missing from the final response
    exchange = recorded("responses", request, stream=True, events=broken)
    problems = recheck.observe_record(exchange).problems or []
    assert any("differs from the items streamed" in p and "chatcmpl-<id>" in p for p in problems)
    assert judge(exchange, printed("responses", events=merged("responses", reidentified(broken))))[0] == "reproduces"
    assert judge(exchange, printed("responses", events=events))[0] == "differs"


def test_a_cut_event_makes_the_verdict_partial() -> None:
    request, events, _ = fixture_events("responses-reasoning-call")
    request = {**request, "instructions": "x" * (reproducer.BODY_CHARS + 500)}  # echoed in created/in_progress/completed: cut
    events = [(n, {**d, "response": {**d["response"], "instructions": request["instructions"]}} if "response" in d else d) for n, d in events]
    exchange = recorded("responses", request, stream=True, events=events)
    assert sum(c.endswith("more characters]") for c in exchange.chunks or []) == 3
    verdict, diffs, notes = judge(exchange, printed("responses", events=merged("responses", reidentified(events))))
    assert (verdict, diffs) == ("partial", []) and "cut 3 chunk(s)" in notes[0]
    other = [(n, {**d, "response": {**d["response"], "instructions": "y" * (reproducer.BODY_CHARS + 500)}} if "response" in d else d) for n, d in events]
    verdict, diffs, _ = judge(exchange, printed("responses", events=other))
    assert verdict == "differs" and diffs[0][0] == "cut chunk"


def test_a_cut_body_is_compared_by_its_prefix() -> None:
    request, _, plain = fixture_events("responses-reasoning-call")
    plain = {**plain, "user": "x" * (reproducer.BODY_CHARS + 500)}  # after the output: the kept characters hold the answer
    exchange = recorded("responses", request, stream=False, body=plain)
    assert (exchange.response or "").endswith("more characters]")
    again = json.dumps(reidentified(plain), separators=(",", ":"))
    assert judge(exchange, printed("responses", body=again))[:2] == ("partial", [])
    other = json.dumps(json.loads(json.dumps(plain).replace("Need the weather", "Need the forecast")), separators=(",", ":"))
    assert judge(exchange, printed("responses", body=other))[0] == "differs"


def test_a_stream_the_openai_client_did_not_record_is_partial() -> None:
    exchange = Exchange("POST", "/v1/chat/completions", {"model": "m", "messages": [], "stream": True}, stream=True, status=200,
                        response="(streamed: the openai client's chunks are not recorded; the curl command prints them)")  # fmt: skip
    _, events, _ = fixture_events("chat-text")
    assert judge(exchange, printed("chat", events=events))[0] == "partial"


# -- other paths, and the curl failing ------------------------------------------------------------


def test_other_paths_compare_status_and_normalized_body() -> None:
    error = {"error": {"message": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)", "type": "BadRequestError",
                       "param": "max_tokens", "code": 400}}  # fmt: skip
    exchange = recorded("/v1/completions", {"model": "m", "prompt": "the", "max_tokens": 1}, stream=False, status=400, body=error)
    assert judge(exchange, printed("other", status=400, body=error))[0] == "reproduces"
    verdict, diffs, _ = judge(exchange, printed("other", status=400, body=json.loads(json.dumps(error).replace("got 0", "got -1"))))
    assert verdict == "differs" and diffs[0][0] == "error"
    tokens = {"count": 3, "max_model_len": 8192, "tokens": [1, 2, 3]}
    exchange = recorded("/tokenize", {"model": "m", "prompt": "abc"}, stream=False, body=tokens)
    assert judge(exchange, printed("other", body=tokens))[0] == "reproduces"
    assert judge(exchange, printed("other", body={**tokens, "count": 4}))[0] == "differs"


def test_a_curl_that_cannot_connect_or_hangs_is_an_error() -> None:
    request, _, plain = fixture_events("chat-text")
    exchange = recorded("chat", request, stream=False, body=plain)
    verdict, _, notes = judge(exchange, CurlRun(7, "\nHTTP 000\n", "", 0.0))
    assert verdict == "error" and "could not connect" in notes[0]
    verdict, _, notes = judge(exchange, CurlRun(None, "", "", 5.0, timed_out=True))
    assert verdict == "error" and "did not finish in 5 s" in notes[0]


def test_run_curl_sends_the_rebuilt_request_without_a_shell_and_with_only_path(tmp_path: Path) -> None:
    request, _, plain = fixture_events("chat-text")
    exchange = Exchange("POST", "/v1/chat/completions", request)
    shim = fake_curl(tmp_path, {"": (0, json.dumps(plain) + "\nHTTP 200\n")})
    env = recheck.curl_env("http://127.0.0.1:9/", {"PATH": f"{shim}:{os.environ['PATH']}", "GLM45_API_KEY": "k-1", "HOME": "/x"})
    assert env == {"PATH": f"{shim}:{os.environ['PATH']}", "GLM45_BASE_URL": "http://127.0.0.1:9", "GLM45_API_KEY": "k-1"}
    argv, stdin = reproducer.curl_argv(exchange, env)
    run = recheck.run_curl(argv, env, 30, stdin)
    assert run.exit_code == 0 and json.loads(run.stdout.rsplit("\nHTTP", 1)[0]) == plain
    argv = (shim / "argv").read_text().split("\0")
    assert "http://127.0.0.1:9/v1/chat/completions" in argv and "Authorization: Bearer k-1" in argv
    assert json.loads(argv[argv.index("-d") + 1]) == request
    assert (shim / "env").read_text() == "PATH", "curl's environment is PATH alone: no key, no HOME"


# -- the command ----------------------------------------------------------------------------------


def fake_curl(tmp_path: Path, answers: dict[str, tuple[int, str]], sleep: float = 0) -> Path:
    """A `curl` on PATH that records its argv and prints the answer whose key occurs in its arguments
    (the longest key that does), exiting with that answer's code."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "answers.json").write_text(json.dumps(answers))
    script = f"""#!{sys.executable}
import json, os, sys, time
here = {str(shim)!r}
with open(os.path.join(here, "argv"), "w") as f:
    f.write("\\0".join(sys.argv[1:]))
with open(os.path.join(here, "env"), "w") as f:
    f.write(" ".join(sorted(k for k in os.environ if k not in ("PWD", "SHLVL", "_", "LC_CTYPE"))))
time.sleep({sleep})
answers = json.load(open(os.path.join(here, "answers.json")))
joined = " ".join(sys.argv[1:])
key = max((k for k in answers if k in joined), key=len)
code, text = answers[key]
sys.stdout.write(text)
sys.exit(code)
"""
    (shim / "curl").write_text(script)
    (shim / "curl").chmod(0o755)
    return shim


def check_record(check: str, config: str, outcome: str, exchange: Exchange | None) -> dict[str, Any]:
    repro = None
    if exchange is not None:
        repro = {"requests": [{**exchange.to_dict(), "reproduced": True}], "curl": curl_command(exchange), "python": ""}
    return {"id": check, "config": config, "outcome": outcome, "known_entry": "vllm-0.32.0.toml#1" if outcome == "known failure" else None,
            "reason": "", "observed": "", "reproducer": repro}  # fmt: skip


@pytest.fixture
def tiny_report(tmp_path: Path) -> tuple[Path, Path]:
    """A report with a chat stream that will reproduce, a Messages answer that will differ, a plain
    failure, a known failure without a reproducer and one on another configuration; and its fake curl."""
    chat_request, chat_events, _ = fixture_events("chat-reasoning-call")
    msg_request, _, msg_plain = fixture_events("messages-reasoning-call")
    chat_request = {**chat_request, "vllm_xargs": {"glm45_replay": "stream-case"}}
    msg_request = {**msg_request, "vllm_xargs": {"glm45_replay": "messages-case"}}
    error = {"error": {"message": "Internal server error", "type": "InternalServerError", "param": None, "code": 500}}
    fail_request = {"model": "glm45-tiny", "messages": [], "vllm_xargs": {"glm45_replay": "failed-case"}}
    checks = [
        check_record("test_a::test_stream[x]", "tiny-bf16-tp1", "known failure", recorded("chat", chat_request, stream=True, events=chat_events)),
        check_record("test_b::test_messages", "tiny-bf16-tp1", "known failure", recorded("messages", msg_request, stream=False, body=msg_plain)),
        check_record("test_c::test_plain", "tiny-bf16-tp1", "failed", recorded("chat", fail_request, stream=False, status=500, body=error)),
        check_record("test_d::test_none", "tiny-bf16-tp1", "known failure", None),
        check_record("test_e::test_plain_other", "tiny-bf16-tp1-nostrict", "known failure",
                     recorded("chat", fail_request, stream=False, status=500, body=error)),
        check_record("test_f::test_fine", "tiny-bf16-tp1", "passed", None),
    ]  # fmt: skip
    report = tmp_path / "report"
    data = {**report_module.new_report("0.1.0", "standard", {}), "checks": checks}
    report_module.write(data, report)  # as a run writes it: keys sorted, the curls as the checks sent them
    stream_text = "".join(f"data: {payload('chat', d)}\n\n" for _, d in merged("chat", reidentified(chat_events))) + "data: [DONE]\n\n"
    answers = {
        "stream-case": (0, stream_text + "\nHTTP 200\n"),
        "messages-case": (0, json.dumps(reidentified(msg_plain)).replace("Paris", "Lyon") + "\nHTTP 200\n"),
        "failed-case": (0, json.dumps(error) + "\nHTTP 500\n"),
    }
    return report, fake_curl(tmp_path, answers)


def reproduce(shim: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "GLM45_API_KEY": "k-test"}
    env.pop("GLM45_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "reproduce", *args], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip


def test_reproduce_judges_each_known_failure_and_sums_up_per_configuration(tiny_report: tuple[Path, Path], tmp_path: Path) -> None:
    report, shim = tiny_report
    out_json = tmp_path / "verdicts.json"
    done = reproduce(shim, str(report / "report.json"), "--config", "tiny-bf16-tp1", "--base-url", "http://127.0.0.1:9",
                     "--json", str(out_json))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(re.match(r"reproduces +tiny-bf16-tp1  test_a::test_stream\[x\]$", line) for line in lines), done.stdout
    assert any(re.match(r"differs +tiny-bf16-tp1  test_b::test_messages$", line) for line in lines), done.stdout
    assert any(re.match(r"no reproducer +tiny-bf16-tp1  test_d::test_none$", line) for line in lines), done.stdout
    assert "    tool_calls: recorded " in done.stdout and '"Lyon"' in done.stdout
    assert "test_c::" not in done.stdout and "test_e::" not in done.stdout
    assert lines[-1] == "1 of 3 known failures on tiny-bf16-tp1 reproduce with the printed curl (0 partial, 1 differ, 1 without a reproducer)"
    argv = (shim / "argv").read_text().split("\0")
    assert "http://127.0.0.1:9/v1/messages" in argv and "Authorization: Bearer k-test" in argv
    data = json.loads(out_json.read_text())
    assert {c["check"]: c["verdict"] for c in data["checks"]} == {
        "test_a::test_stream[x]": "reproduces", "test_b::test_messages": "differs", "test_d::test_none": "no reproducer"}
    assert data["summary"]["tiny-bf16-tp1"] == {"total": 3, "reproduces": 1, "partial": 0, "differs": 1, "error": 0, "no reproducer": 1}
    assert data["base_url"] == "http://127.0.0.1:9"
    differing = next(c for c in data["checks"] if c["verdict"] == "differs")
    assert '"Lyon"' in differing["printed"] and differing["printed"].endswith("\nHTTP 200\n")


def test_reproduce_filters_quiet_and_other_outcomes(tiny_report: tuple[Path, Path]) -> None:
    report, shim = tiny_report
    done = reproduce(shim, str(report), "--check", "test_a::*", "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "1 of 1 known failures on tiny-bf16-tp1 reproduce with the printed curl (0 partial, 0 differ)\n"
    done = reproduce(shim, str(report), "--outcome", "failed", "-q")
    assert done.returncode == 0 and done.stdout == "1 of 1 failures on tiny-bf16-tp1 reproduce with the printed curl (0 partial, 0 differ)\n"
    done = reproduce(shim, str(report), "--outcome", "all", "--check", "*::test_plain*", "-q")
    assert done.stdout.splitlines() == [
        "1 of 1 failing or known-failing checks on tiny-bf16-tp1 reproduce with the printed curl (0 partial, 0 differ)",
        "1 of 1 failing or known-failing checks on tiny-bf16-tp1-nostrict reproduce with the printed curl (0 partial, 0 differ)"]
    assert "2 configurations" in done.stderr and "--config picks one" in done.stderr


def test_reproduce_times_a_hanging_curl_out_as_an_error(tmp_path: Path, tiny_report: tuple[Path, Path]) -> None:
    report, _ = tiny_report
    shim = fake_curl(tmp_path, {"": (0, "")}, sleep=30)
    done = reproduce(shim, str(report), "--check", "test_a::*", "--timeout", "1")
    assert done.returncode == 1
    assert "error         tiny-bf16-tp1  test_a::test_stream[x]" in done.stdout and "did not finish in 1 s" in done.stdout
    assert done.stdout.splitlines()[-1].endswith("(0 partial, 0 differ, 1 error)")


@pytest.mark.parametrize(("args", "message"), [
    (["missing.json"], "cannot read the report missing.json"),
    (["bad.json"], "cannot read the report bad.json"),
    (["old.json"], "report schema 99; accepted"),
    (["report", "--config", "tiny-bf16-tp9"], "--config 'tiny-bf16-tp9' matches no configuration"),
    (["report", "--timeout", "0"], "argument --timeout: '0' is not accepted: a number of seconds above 0"),
    (["report", "--outcome", "broken"], "invalid choice: 'broken' (choose from 'known', 'failed', 'all')"),
])  # fmt: skip
def test_reproduce_usage_errors_exit_2_naming_what_is_accepted(tiny_report: tuple[Path, Path], args: list[str], message: str) -> None:
    report, _ = tiny_report
    (report.parent / "bad.json").write_text("{not json")
    (report.parent / "old.json").write_text('{"schema": 99, "checks": []}')
    done = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "reproduce", *args], capture_output=True, text=True,
                          cwd=report.parent, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr, done.stderr
    if args[0] == "report" and "--config" in args:
        assert "it has: tiny-bf16-tp1, tiny-bf16-tp1-nostrict" in done.stderr


def altered_reports(report: Path, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Copies of the report, each with one check's reproducer altered: name -> (path, what the refusal says)."""
    data = json.loads((report / "report.json").read_text())
    pwned = tmp_path / "pwned"

    def append_command(repro: dict[str, Any]) -> None:
        repro["curl"] += f"; touch {pwned}"

    def other_host(repro: dict[str, Any]) -> None:
        repro["requests"][0]["path"] = "@evil.example/v1/chat/completions"
        repro["curl"] = curl_command(reproducer.exchange_from(repro["requests"][0]))

    def other_body(repro: dict[str, Any]) -> None:
        repro["requests"][0]["body"]["messages"] = [{"role": "user", "content": "something else"}]

    out = {}
    for name, alter, says in [
        ("command", append_command, "its stored curl is not the command this kit builds from its recorded request"),
        ("host", other_host, "its recorded path '@evil.example/v1/chat/completions' is not one the kit sends"),
        ("body", other_body, "its stored curl is not the command this kit builds from its recorded request"),
    ]:
        copy_ = copy.deepcopy(data)
        alter(copy_["checks"][0]["reproducer"])
        path = tmp_path / f"altered-{name}.json"
        path.write_text(json.dumps(copy_))
        out[name] = (str(path), says)
    return out


@pytest.mark.parametrize("alteration", ["command", "host", "body"])
def test_reproduce_refuses_a_report_whose_curl_it_did_not_build_and_runs_nothing(tiny_report: tuple[Path, Path], tmp_path: Path,
                                                                                 alteration: str) -> None:  # fmt: skip
    """Issue 29, item 9: the stored curl with `; touch ...` appended, a request moved to another host (the key
    would go there), or a body changed under its curl: refused before anything runs, naming the check."""
    report, shim = tiny_report
    path, says = altered_reports(report, tmp_path)[alteration]
    done = reproduce(shim, path, "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    assert f"refused {path}: the report was altered, or comes from another kit version" in done.stderr
    assert "nothing was run" in done.stderr
    assert f"tiny-bf16-tp1  test_a::test_stream[x]: {says}" in done.stderr, done.stderr
    assert "test_b::" not in done.stderr, "only the altered check is named"
    assert not (shim / "argv").exists(), "curl ran"
    assert not (tmp_path / "pwned").exists()


def test_reproduce_with_an_altered_check_left_out_runs_the_rest(tiny_report: tuple[Path, Path], tmp_path: Path) -> None:
    """What is refused is what would run: --check picks the checks whose curl is the kit's."""
    report, shim = tiny_report
    path, _ = altered_reports(report, tmp_path)["command"]
    done = reproduce(shim, path, "--check", "test_b::*", "-q")
    assert done.returncode == 1 and "0 of 1 known failures on tiny-bf16-tp1" in done.stdout, done.stdout + done.stderr
    assert not (tmp_path / "pwned").exists()
