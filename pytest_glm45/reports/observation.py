"""Observations for `pytest-glm45 reproduce`: what a recorded exchange and a curl's output are made of.

An observation keeps what a defect is made of (status, how the connection failed, the normalized error, the
answer in the kit's terms and its contract problems) and drops what varies between two runs of the same replay;
`pytest_glm45.reports.recheck` says in full what is kept and judges two observations against each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_glm45.records import reproducer
from pytest_glm45.records.error_events import error_event
from pytest_glm45.records.reproducer import Exchange

#: Each surface's endpoint.
SURFACE_OF = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/messages": "messages"}
#: The placeholder the openai client's hook records for a stream it did not read.
UNRECORDED_STREAM = "(streamed: the openai client's chunks are not recorded"
#: curl exit codes that mean the server answered and then closed the connection early, or never answered.
CLOSED_MID_ANSWER, NO_ANSWER = (18, 56, 92), (52,)

_LEFT_OUT = re.compile(r"^\.\.\. \[(\d+) chunks left out\]$")
_CUT = re.compile(r"\.\.\. \[(\d+) more characters\]\Z")
TRAILER = re.compile(r"\nHTTP (\d{3})\n?\Z")
_VOLATILE = [
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b(chatcmpl|cmpl|call|resp|msg|rs|fc|toolu|req|item)([-_])(?:[a-z]+-)?(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{8,}\b"), r"\1\2<id>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"\b1\d{9}(?:\d{3})?(?:\.\d+)?\b"), "<time>"),
]


def normalize(text: str) -> str:
    """`text` with what differs between two runs of the same request (ids, hex runs, uuids, timestamps) replaced."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def normalize_problem(text: str) -> str:
    """A contract problem without what chunk boundaries change: event numbers, a per-event `(got ...)`, sequence lists."""
    per_event = re.match(r"(event|chunk) \d+", text) is not None
    text = re.sub(r"\b(event|chunk) \d+", r"\1 #", text)
    text = re.sub(r"(sequence_number does not count 0, 1, 2, \.\.\.):.*", r"\1", text, flags=re.DOTALL)
    text = re.sub(r"(at event\(s\)) \[[^\]]*\]", r"\1 [#]", text)
    if per_event:
        text = re.sub(r" \(got .*\)\Z", "", text, flags=re.DOTALL)
    return normalize(text)


# -- observations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Atom:
    """A piece of what a stream says, in order: `kind` (content, reasoning, name, args, finish) of
    item `index` (a tool call's), and its text. Adjacent atoms of one kind and index join, so they
    read the same however the server cut the stream into chunks."""

    kind: str
    index: Any
    text: str


@dataclass
class Observation:
    """What one answer to a request says, as far as a defect is concerned."""

    status: int | None = None
    #: how the connection failed: "closed mid-answer", "no answer", "timeout", "unreachable"; None when it did not
    transport: str | None = None
    #: a non-200 answer's error message or a stream's first error event, normalized
    error: str | None = None
    #: content, reasoning, tool_calls [[name, arguments]], finish_reason
    answer: dict[str, Any] | None = None
    #: a surface's contract and schema problems, normalized, sorted, unique
    problems: list[str] | None = None
    #: the normalized body (other paths, or an answer that does not parse)
    body: str | None = None
    #: False when the record kept only part of the answer (then `segments`, `cut` and `prefix` say what)
    complete: bool = True
    #: the answer's text was left to sampling: only status and error are compared
    sampled: bool = False
    notes: list[str] = field(default_factory=list)
    #: a stream's atoms: one list for a whole stream, one per stretch a record kept of it
    segments: list[list[Atom]] = field(default_factory=list)
    #: for each segment: (starts at the stream's start, ends at its end)
    anchors: list[tuple[bool, bool]] = field(default_factory=list)
    #: a record's chunks cut at BODY_CHARS characters: their kept text, normalized
    cut: list[str] = field(default_factory=list)
    #: a stream's events as text, normalized (what a cut chunk is matched against)
    events: list[str] = field(default_factory=list)
    #: a cut body's kept text (record) or the whole body (curl), normalized
    prefix: str | None = None

    def compared(self) -> dict[str, Any]:
        """The fields a verdict compares (a sampled answer's text and problems left out)."""
        out: dict[str, Any] = {"status": self.status, "transport": self.transport, "error": self.error}
        if not self.sampled:
            if self.answer is not None:
                out.update(self.answer)
            out["problems"] = self.problems
            out["body"] = self.body
        return out


def surface_of(path: str) -> str:
    """The surface a request path is on ("chat", "responses", "messages"), else "other"."""
    return SURFACE_OF.get(path.split("?", 1)[0].rstrip("/"), "other")


def is_sampled(exchange: Exchange) -> bool:
    """Whether a generating request leaves its answer to sampling: no replay script, no temperature 0, no seed."""
    if surface_of(exchange.path) == "other" and exchange.path.split("?", 1)[0] != "/v1/completions":
        return False
    body = exchange.body if isinstance(exchange.body, dict) else {}
    xargs = body.get("vllm_xargs")
    scripted = isinstance(xargs, dict) and bool(xargs.get("glm45_replay"))
    return not (scripted or body.get("temperature") == 0 or body.get("seed") is not None)


def error_message(data: Any) -> str:
    """An error answer's message (and type), wherever its body put them."""
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            kind = err.get("type")
            return f"{kind}: {err.get('message')}" if kind else str(err.get("message"))
        if isinstance(err, str):
            return err
        if "message" in data:
            return str(data["message"])
    return json.dumps(data, ensure_ascii=False) if not isinstance(data, str) else data


def _answer(result: Any) -> dict[str, Any]:
    """A ChatResult's comparable fields."""
    calls = []
    for call in result.tool_calls:
        try:
            args = call.parsed()
        except ValueError:
            args = call.arguments
        calls.append([call.name, args])
    return {"content": result.content, "reasoning": result.reasoning, "tool_calls": calls, "finish_reason": result.finish_reason}


def _problems(lines: Iterable[str]) -> list[str]:
    return sorted({normalize_problem(p) for p in lines if "SSE event name" not in p})


def _body_text(data: Any) -> str:
    return normalize(json.dumps(data, ensure_ascii=False, sort_keys=True))


def observe_body(obs: Observation, surface: str, text: str, sampled: bool) -> None:
    """Fill `obs` from a whole non-streamed answer `text` (or a stream refused with a status)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if obs.status != 200:
        obs.error = normalize(error_message(data if data is not None else text))
        return
    if data is None or not isinstance(data, dict):
        obs.body = normalize(text)
        return
    try:
        if surface == "chat":
            from pytest_glm45.clients.answers import from_response

            obs.answer = _answer(from_response(data))
        elif surface in ("responses", "messages"):
            from pytest_glm45.clients import surfaces

            parsed = surfaces.from_responses(data) if surface == "responses" else surfaces.from_messages(data)
            obs.answer = _answer(parsed)
            obs.problems = _problems(_schema_problems(surface, data))
        else:
            obs.body = _body_text(data)
    except (KeyError, IndexError, TypeError, AttributeError):
        obs.answer, obs.body = None, _body_text(data)


def _schema_problems(kind: str, document: Any) -> list[str]:
    try:
        from pytest_glm45.clients.surfaces import schema_problems

        return schema_problems(kind, document)
    except ImportError as exc:  # the SDKs are not installed: both sides say so alike
        return [f"schema not checked: {exc}"]


# -- streams --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One streamed data payload as text, with its SSE `event:` name when known."""

    name: str | None
    payload: str


@dataclass(frozen=True)
class Cut:
    """A recorded chunk cut at BODY_CHARS characters: its kept text."""

    kept: str


@dataclass(frozen=True)
class Gap:
    """Chunks a record left out in the middle."""

    count: int


def recorded_items(chunks: Sequence[str]) -> list[Chunk | Cut | Gap]:
    """A record's chunks as payloads, cut chunks and the left-out middle."""
    items: list[Chunk | Cut | Gap] = []
    for chunk in chunks:
        left = _LEFT_OUT.match(chunk)
        cut = _CUT.search(chunk)
        if left:
            items.append(Gap(int(left.group(1))))
        elif cut:
            items.append(Cut(chunk[: cut.start()]))
        else:
            items.append(Chunk(None, chunk))
    return items


def sse_items(text: str) -> list[Chunk | Cut | Gap]:
    """Server-sent events as printed by curl: each `data:` payload with the `event:` name before it
    (lines split on newlines only: JSON carries U+2028 raw)."""
    items: list[Chunk | Cut | Gap] = []
    name: str | None = None
    data: list[str] = []
    for line in [*text.split("\n"), ""]:
        line = line.rstrip("\r")
        if not line:
            if data:
                items.append(Chunk(name, "\n".join(data)))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    return items


def _chat_error(data: dict[str, Any]) -> str | None:
    if error_event(data) is not None:
        return error_message(data)
    return None


def _atoms(surface: str, data: dict[str, Any]) -> list[Atom]:
    """What one chunk or event adds to the answer, in order."""
    out: list[Atom] = []
    if surface == "chat":
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            for name in ("reasoning", "reasoning_content"):
                if delta.get(name):
                    out.append(Atom("reasoning", None, str(delta[name])))
                    break
            if delta.get("content"):
                out.append(Atom("content", None, str(delta["content"])))
            for tc in delta.get("tool_calls") or []:
                fn = tc.get("function") or {}
                if fn.get("name"):
                    out.append(Atom("name", tc.get("index"), str(fn["name"])))
                if fn.get("arguments"):
                    out.append(Atom("args", tc.get("index"), str(fn["arguments"])))
            if choice.get("finish_reason") is not None:
                out.append(Atom("finish", None, str(choice["finish_reason"])))
        return out
    if surface == "other":  # /v1/completions and the like: each choice's text
        for choice in data.get("choices") or []:
            if choice.get("text"):
                out.append(Atom("content", None, str(choice["text"])))
            if choice.get("finish_reason") is not None:
                out.append(Atom("finish", None, str(choice["finish_reason"])))
        return out
    kind = data.get("type")
    if surface == "responses":
        if kind == "response.reasoning_text.delta":
            out.append(Atom("reasoning", None, str(data.get("delta") or "")))
        elif kind == "response.output_text.delta":
            out.append(Atom("content", None, str(data.get("delta") or "")))
        elif kind == "response.function_call_arguments.delta":
            out.append(Atom("args", data.get("output_index"), str(data.get("delta") or "")))
        elif kind == "response.output_item.added" and (data.get("item") or {}).get("type") == "function_call":
            out.append(Atom("name", data.get("output_index"), str(data["item"].get("name"))))
        elif kind in ("response.completed", "response.incomplete"):
            response = data.get("response") or {}
            reason = (response.get("incomplete_details") or {}).get("reason")
            out.append(Atom("finish", None, f"{response.get('status')}" + (f":{reason}" if reason else "")))
    elif surface == "messages":
        if kind == "content_block_start" and (data.get("content_block") or {}).get("type") == "tool_use":
            out.append(Atom("name", data.get("index"), str(data["content_block"].get("name"))))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            field_of = {"text_delta": ("content", "text"), "thinking_delta": ("reasoning", "thinking"),
                        "input_json_delta": ("args", "partial_json")}  # fmt: skip
            if delta.get("type") in field_of:
                what, key = field_of[str(delta.get("type"))]
                out.append(Atom(what, data.get("index") if what == "args" else None, str(delta.get(key) or "")))
        elif kind == "message_delta":
            out.append(Atom("finish", None, str((data.get("delta") or {}).get("stop_reason"))))
    return [a for a in out if a.text]


def join_atoms(atoms: Iterable[Atom]) -> list[Atom]:
    """Adjacent atoms of one kind and index joined into one."""
    out: list[Atom] = []
    for atom in atoms:
        if out and (out[-1].kind, out[-1].index) == (atom.kind, atom.index):
            out[-1] = Atom(atom.kind, atom.index, out[-1].text + atom.text)
        else:
            out.append(atom)
    return out


def _sequence_free(text: str) -> str:
    """`text` without Responses' sequence numbers (merged deltas shift them)."""
    return re.sub(r'"sequence_number": ?\d+', '"sequence_number": #', text)


def _event_text(surface: str, item: Chunk, data: Any) -> str:
    """A chunk as a record keeps it, normalized: chat's payload as sent, a surface's event as `json.dumps` of its data."""
    text = json.dumps(data, ensure_ascii=False) if surface in ("responses", "messages") else item.payload
    return _sequence_free(normalize(text))


def observe_stream(obs: Observation, surface: str, items: list[Chunk | Cut | Gap], named: bool) -> None:
    """Fill `obs` from a 200 stream's items (cut at the first error event, as the kit stops there).

    `named`: the items carry their SSE event names (the curl's); a record's do not, so a Messages
    event's name is taken to be its type."""
    from pytest_glm45.clients import surfaces

    datas: list[dict[str, Any]] = []
    events: list[surfaces.Event] = []
    current: list[Atom] = []
    at_start = True
    for item in items:
        if not isinstance(item, Chunk):  # a cut chunk or the left-out middle: the stretch before it ends there
            obs.complete = False
            if isinstance(item, Cut):
                obs.cut.append(_sequence_free(normalize(item.kept)))
            if current:
                obs.segments.append(join_atoms(current))
                obs.anchors.append((at_start, False))
            current, at_start = [], False
            continue
        if item.payload.strip() == "[DONE]":
            continue
        try:
            data = json.loads(item.payload)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            obs.error = normalize(f"a data payload that is not a JSON object: {item.payload[:200]}")
            break
        obs.events.append(_event_text(surface, item, data))
        if surface == "chat" or surface == "other":
            error = _chat_error(data)
        else:
            found = surfaces.stream_error(surfaces.Event(item.name, data))
            error = found[1] if found else None
        if error is not None:
            obs.error = normalize(error)
            break
        datas.append(data)
        name = item.name if named else (data.get("type") if surface == "messages" else None)
        events.append(surfaces.Event(name, data))
        current += _atoms(surface, data)
    if current or not obs.segments:
        obs.segments.append(join_atoms(current))
        obs.anchors.append((at_start, True))
    if not obs.complete:
        return
    try:
        if surface == "chat":
            from pytest_glm45.clients.answers import assemble

            obs.answer = _answer(assemble(datas))
        elif surface == "responses":
            result, problems = surfaces.assemble_responses(events)
            obs.answer, obs.problems = _answer(result), _problems(problems)
        elif surface == "messages":
            result, problems = surfaces.assemble_messages(events)
            obs.answer, obs.problems = _answer(result), _problems(problems)
        else:
            atoms = obs.segments[0]
            finishes = [a.text for a in atoms if a.kind == "finish"]
            obs.answer = {"content": "".join(a.text for a in atoms if a.kind == "content") or None,
                          "finish_reason": finishes[-1] if finishes else None}  # fmt: skip
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        obs.problems = [normalize(f"the stream does not assemble: {type(exc).__name__}: {exc}")]


def transport_of(error: str) -> str:
    """How a client's error says the connection failed, in terms curl's exit codes also have."""
    if "ConnectError" in error or "ConnectTimeout" in error:
        return "unreachable"
    if "Timeout" in error:
        return "timeout"
    if "without sending a response" in error:
        return "no answer"
    return "closed mid-answer"


def observe_record(exchange: Exchange) -> Observation:
    """The observation of a recorded exchange (its `complete` False where the record kept only part)."""
    surface = surface_of(exchange.path)
    obs = Observation(status=exchange.status, sampled=is_sampled(exchange))
    if exchange.error is not None:
        obs.transport = transport_of(exchange.error)
    if exchange.stream and exchange.status == 200 and exchange.chunks is None:
        obs.complete = False
        if (exchange.response or "").startswith(UNRECORDED_STREAM):
            obs.notes.append("the openai client's hook did not record the stream: only its status is compared")
        return obs
    if exchange.stream and exchange.status == 200:
        observe_stream(obs, surface, recorded_items(exchange.chunks or []), named=False)
        if not obs.complete:
            left = sum(int(m.group(1)) for m in map(_LEFT_OUT.match, exchange.chunks or []) if m)
            said = ([f"left out {left} chunks in the middle"] if left else []) + ([f"cut {len(obs.cut)} chunk(s) at {reproducer.BODY_CHARS} characters"] if obs.cut else [])
            obs.notes.append("the record " + " and ".join(said) + ": what it kept is compared")
        return obs
    if exchange.status is None:
        return obs
    text = exchange.response or ""
    cut = _CUT.search(text)
    if cut:
        obs.complete = False
        obs.prefix = normalize(text[: cut.start()])
        obs.notes.append(f"the record cut the body at {cut.start()} characters")
        if obs.status != 200:
            obs.error = None  # compared as the body's prefix
        return obs
    observe_body(obs, surface, text, obs.sampled)
    return obs


@dataclass
class CurlRun:
    """What running a curl command printed."""

    exit_code: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def observe_output(exchange: Exchange, run: CurlRun) -> Observation:
    """The observation of what the curl printed for `exchange`'s request."""
    surface = surface_of(exchange.path)
    obs = Observation(sampled=is_sampled(exchange))
    trailer = TRAILER.search(run.stdout)
    body = run.stdout[: trailer.start()] if trailer else run.stdout
    code = int(trailer.group(1)) if trailer else 0
    obs.status = code or None
    if run.timed_out:
        obs.transport = "timeout"
    elif run.exit_code in CLOSED_MID_ANSWER:
        obs.transport = "closed mid-answer"
    elif run.exit_code in NO_ANSWER:
        obs.transport = "no answer"
    elif run.exit_code == 7:
        obs.transport = "unreachable"
    obs.prefix = normalize(body)
    if obs.status is None:
        return obs
    if exchange.stream and obs.status == 200:
        observe_stream(obs, surface, sse_items(body), named=True)
    else:
        observe_body(obs, surface, body, obs.sampled)
    return obs


