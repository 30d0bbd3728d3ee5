"""The APIs GLM-4.5's users call, in the kit's own terms: Chat Completions, Responses, Anthropic Messages.

A check states its request once, in Chat Completions' terms (messages, tools, tool_choice,
max_tokens, chat_template_kwargs, vllm_xargs), and its expectation once, as a `ChatResult`
(content, reasoning, calls with typed arguments, finish reason). Each API has one adapter holding its
request, its answer assembly and its contract (`chat_completions`, `responses`, `messages`), over one
transport (`transport`). This module picks the adapter by the surface's name: `call` and `request`
go down to it and never come back up. Stop reasons map as the APIs define them:

=============  ============================  ==========================================
kit            Responses                     Messages
=============  ============================  ==========================================
tool_calls     completed, function_call out  stop_reason tool_use
stop           completed, no function_call   stop_reason end_turn (or stop_sequence)
length         incomplete: max_output_tokens stop_reason max_tokens
=============  ============================  ==========================================

The adapters' functions are named here too (`from_responses`, `assemble_messages`, `schema_problems`,
`stream_error`, ...), where the suites and users have always imported them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from pytest_glm45.clients import chat_completions, responses
from pytest_glm45.clients import messages as anthropic_messages
from pytest_glm45.clients.chat_completions import assert_chat_schema as assert_chat_schema
from pytest_glm45.clients.chat_completions import chat_schema_problems as chat_schema_problems
from pytest_glm45.clients.messages import BLOCK_DELTAS as BLOCK_DELTAS
from pytest_glm45.clients.messages import MESSAGES_STOP as MESSAGES_STOP
from pytest_glm45.clients.messages import assemble_messages as assemble_messages
from pytest_glm45.clients.messages import from_messages as from_messages
from pytest_glm45.clients.messages import messages_input as messages_input
from pytest_glm45.clients.responses import assemble_responses as assemble_responses
from pytest_glm45.clients.responses import from_responses as from_responses
from pytest_glm45.clients.responses import responses_finish as responses_finish
from pytest_glm45.clients.responses import responses_input as responses_input
from pytest_glm45.clients.schemas import schema_problems as schema_problems
from pytest_glm45.clients.terms import FIELDS as FIELDS
from pytest_glm45.clients.terms import SurfaceAnswer as SurfaceAnswer
from pytest_glm45.clients.transport import Event as Event
from pytest_glm45.clients.transport import Transport
from pytest_glm45.clients.transport import parse_sse as parse_sse
from pytest_glm45.clients.transport import stream_error as stream_error

#: Each surface's adapter, by the name check ids carry.
ADAPTERS: dict[str, ModuleType] = {m.NAME: m for m in (chat_completions, responses, anthropic_messages)}
#: The surfaces, by the name check ids carry.
SURFACES = tuple(ADAPTERS)
#: Each surface's endpoint.
PATHS = {name: str(m.PATH) for name, m in ADAPTERS.items()}


def adapter(surface: str) -> ModuleType:
    """The adapter of `surface`; ValueError names the surfaces there are."""
    if surface not in ADAPTERS:
        raise ValueError(f"surface {surface!r} is not known; accepted: {', '.join(SURFACES)}")
    return ADAPTERS[surface]


def request(surface: str, model: str, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The body of `surface`'s request for a conversation and fields stated in Chat Completions' terms."""
    body: dict[str, Any] = adapter(surface).request(model, messages, **fields)
    return body


def call(client: Transport, surface: str, messages: list[dict[str, Any]], stream: bool = False,
         native: dict[str, Any] | None = None, **fields: Any) -> SurfaceAnswer:
    """Send one conversation to `surface`, streamed or not; its answer as a ChatResult and its problems.
    `native` holds fields in the surface's own terms (Anthropic's `thinking`), added as they are."""
    answer: SurfaceAnswer = adapter(surface).call(client, messages, stream=stream, native=native, **fields)
    return answer


def stream_events(client: Transport, path: str, body: dict[str, Any]) -> list[Event]:
    """`Transport.stream_events`: every event of a streamed answer with its name; error events raise HttpError."""
    return client.stream_events(path, body)
