"""The stream assembler and the streaming protocol checker, on hand-made chunks."""

from __future__ import annotations

from pytest_glm45.clients.answers import assemble, from_response, protocol_violations


def delta(finish=None, **d):
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def call(index, args=None, id=None, name=None):
    tc = {"index": index, "function": {}}
    if id:
        tc["id"], tc["type"] = id, "function"
    if name:
        tc["function"]["name"] = name
    if args is not None:
        tc["function"]["arguments"] = args
    return tc


GOOD = [
    delta(role="assistant"),
    delta(reasoning="think "),
    delta(reasoning="more"),
    delta(tool_calls=[call(0, id="a", name="f")]),
    delta(tool_calls=[call(0, '{"x": ')]),
    delta(tool_calls=[call(0, "1}")]),
    delta(tool_calls=[call(1, "{}", id="b", name="g")]),
    delta(finish="tool_calls"),
]


def test_assembled_stream_equals_the_non_streamed_response() -> None:
    streamed = assemble(GOOD)
    plain = from_response({"choices": [{"finish_reason": "tool_calls", "message": {
        "content": None, "reasoning": "think more",
        "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                       {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}}]})  # fmt: skip
    assert streamed.essence() == plain.essence()
    assert streamed.calls() == [("f", {"x": 1}), ("g", {})]
    assert streamed.reasoning_field == plain.reasoning_field == "reasoning"
    assert protocol_violations(GOOD) == []


def test_old_reasoning_field_name_is_accepted_and_reported() -> None:
    result = assemble([delta(reasoning_content="r"), delta(content="c", finish="stop")])
    assert (result.reasoning, result.content, result.reasoning_field) == ("r", "c", "reasoning_content")


def test_each_protocol_break_is_named() -> None:
    cases = {
        "repeats name": [delta(tool_calls=[call(0, id="a", name="f")]), delta(tool_calls=[call(0, "{}", name="f")]), delta(finish="tool_calls")],
        "lacks id": [delta(tool_calls=[call(0, "{}", name="f")]), delta(finish="tool_calls")],
        "do not join into JSON": [delta(tool_calls=[call(0, '{"x": ', id="a", name="f")]), delta(finish="tool_calls")],
        "not an object": [delta(tool_calls=[call(0, "[1]", id="a", name="f")]), delta(finish="tool_calls")],
        "exactly one finish_reason": [delta(content="x", finish="stop"), delta(finish="stop")],
        "under tool_choice auto": [delta(tool_calls=[call(0, "{}", id="a", name="f")]), delta(finish="stop")],
        "leaked into content": [delta(content="<tool_call>f"), delta(finish="stop")],
        "are not 0..": [delta(tool_calls=[call(1, "{}", id="a", name="f")]), delta(finish="tool_calls")],
    }  # fmt: skip
    for expected, chunks in cases.items():
        problems = protocol_violations(chunks)
        assert any(expected in p for p in problems), (expected, problems)


def test_content_stays_none_when_never_sent() -> None:
    result = assemble([delta(tool_calls=[call(0, "{}", id="a", name="f")]), delta(finish="tool_calls")])
    assert result.content is None and result.reasoning is None


def test_every_request_gets_a_connection_of_its_own() -> None:
    """The conformance client asks for a connection per request (`Connection: close`, pytest_glm45.clients.chat.CLOSE),
    so none sits idle to race the server's keep-alive: a server that would keep them alive sees one per request."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pytest_glm45.clients.chat import ChatClient

    ports: list[int] = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps connections open unless the client closes them

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            ports.append(self.client_address[1])
            body = json.dumps({"ok": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ChatClient(f"http://127.0.0.1:{server.server_address[1]}", None, "m") as client:
            for _ in range(3):
                assert client.post("/v1/chat/completions", {"messages": []}) == {"ok": True}
    finally:
        server.shutdown()
        server.server_close()
    assert len(set(ports)) == 3, ports
