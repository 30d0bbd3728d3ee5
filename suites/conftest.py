"""What the suites share: the tool their requests declare most, and the non-streamed answers that
each `stream` twin compares against (one request saved per case and configuration)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pytest_glm45.toolcall import WEATHER


@pytest.fixture(scope="session")
def weather_tool() -> dict[str, Any]:
    """The `get_weather` tool as a request's `tools` entry (city required; days, unit optional)."""
    return WEATHER.schema()


class AnswerCache:
    """Answers kept by (configuration, suite, case): the `plain` check's answer, reused by its `stream` twin."""

    def __init__(self) -> None:
        self._answers: dict[tuple[str, ...], Any] = {}

    def get(self, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
        """The answer under `key`, made (once) by `make` when there is none yet."""
        if key not in self._answers:
            self._answers[key] = make()
        return self._answers[key]


@pytest.fixture(scope="session")
def plain_answers() -> AnswerCache:
    """The session's cache of non-streamed answers."""
    return AnswerCache()
