"""What the suites share: the tool their requests declare most."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.glm.toolcall import WEATHER


@pytest.fixture(scope="session")
def weather_tool() -> dict[str, Any]:
    """The `get_weather` tool as a request's `tools` entry (city required; days, unit optional)."""
    return WEATHER.schema()
