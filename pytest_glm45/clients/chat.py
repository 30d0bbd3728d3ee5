"""The chat client the fixtures hand out, and the replay helper on top.

`ChatClient` is the transport (`pytest_glm45.clients.transport.Transport`: JSON posted as it is, every chunk
kept, never a retry) with Chat Completions' own calls on top, sent through that API's adapter
(`pytest_glm45.clients.chat_completions`). `Replayer` sends a GLM-4.5 script through replay.
"""

from __future__ import annotations

from typing import Any

from pytest_glm45.clients import chat_completions
from pytest_glm45.clients.terms import ChatResult
from pytest_glm45.clients.transport import CLOSE as CLOSE
from pytest_glm45.clients.transport import HttpError as HttpError
from pytest_glm45.clients.transport import Transport
from pytest_glm45.clients.transport import curl_line as curl_line
from pytest_glm45.clients.transport import request_id_header as request_id_header
from pytest_glm45.clients.transport import sse_lines as sse_lines
from pytest_glm45.clients.transport import tls_context as tls_context
from pytest_glm45.glm.replay import replay_extra_body, replayed_script


class ChatClient(Transport):
    """Posts to one OpenAI-compatible server; returns raw JSON or ChatResult."""

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chat ----------------------------------------------------------------------------

    def chat_body(self, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """The JSON body of a chat completion request (fields that are None are left out)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        body.update({k: v for k, v in fields.items() if v is not None})
        return body

    def chat(self, messages: list[dict[str, Any]], stream: bool = False, **fields: Any) -> ChatResult:
        """One chat completion, streamed or not, as a ChatResult."""
        body = self.chat_body(messages, **fields)
        if stream:
            body.setdefault("stream_options", {"include_usage": True})
        return chat_completions.answer(self, body, stream)

    def tokenize_chat(self, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """What the server's template renders for these messages: token count and token strings."""
        body = self.chat_body(messages, return_token_strs=True, **fields)
        return self.post("/tokenize", body)

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` is in the served tokenizer, without special tokens."""
        return int(self.post("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False})["count"])


DEFAULT_USER = [{"role": "user", "content": "Go ahead."}]


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class Replayer:
    """Sends a script through replay and returns the parsed result, streamed or not."""

    def __init__(self, client: ChatClient, max_tokens: int = 1024, opens_think: bool = False) -> None:
        self.client = client
        self.max_tokens = max_tokens
        #: The model's template opens the think block itself when thinking is on (GLM-4.7): a GLM-4.5 script is
        #: replayed as GLM-4.7 writes the same answer: its leading `<think>` is already in the prompt, and a script
        #: without a think block is an empty one (`</think>` first).
        self.opens_think = opens_think

    def chat(
        self,
        script: str,
        messages: list[dict[str, Any]] | None = None,
        stream: bool = False,
        **fields: Any,
    ) -> ChatResult:
        """Replay `script` as the assistant's output for `messages` (a one-line user turn by default)."""
        fields.setdefault("max_tokens", self.max_tokens)
        thinking = (fields.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        script = replayed_script(script, self.opens_think, thinking)
        fields.update(replay_extra_body(script, {"vllm_xargs": fields.pop("vllm_xargs", None)}))
        return self.client.chat(messages or DEFAULT_USER, stream=stream, **fields)

    def both(self, script: str, messages: list[dict[str, Any]] | None = None, **fields: Any) -> tuple[ChatResult, ChatResult]:
        """The same replay, non-streamed then streamed."""
        return (
            self.chat(script, messages, stream=False, **fields),
            self.chat(script, messages, stream=True, **fields),
        )
