"""Chat answers, streamed or not, read into one shape; and the streaming protocol's rules.

Where these names have always been imported from: `ChatResult` lives in `pytest_glm45.clients.terms` (the
kit's terms, shared by every API), the rest in the Chat Completions adapter, `pytest_glm45.clients.chat_completions`.
"""

from __future__ import annotations

from pytest_glm45.clients.chat_completions import REASONING_FIELDS as REASONING_FIELDS
from pytest_glm45.clients.chat_completions import assemble as assemble
from pytest_glm45.clients.chat_completions import from_response as from_response
from pytest_glm45.clients.chat_completions import markup_leaks as markup_leaks
from pytest_glm45.clients.chat_completions import protocol_violations as protocol_violations
from pytest_glm45.clients.terms import ChatResult as ChatResult
