"""What the generated checks send at the smallest budgets: never a pass on nothing.

The tool-calling property check (suites/test_tool_calling.py) is run here without a server: its draws
go to a collector instead of the batch, at the example counts a smoke run gives each plan.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings
from suite_modules import suite_module

from pytest_glm45.settings import resolve_settings


def tool_calling_suite() -> ModuleType:
    """The tool-calling suite module (imported from its file once)."""
    return suite_module("test_tool_calling")


def smoke_budgets() -> list[int]:
    """The property check's example counts in a smoke run (--glm45-profile smoke), per configuration of the
    default CPU matrix: the profile's count on the first plan, its share on the others."""
    s = resolve_settings({"profile": "smoke"}, detected_gpus=lambda: 0, cpu_cores=2, rootdir=Path("/r"))
    return sorted({s.examples(s.profile.hypothesis_examples, c) for c in s.matrix})


def kinds(schema: dict[str, Any], value: Any) -> set[str]:
    """What one argument exercises: its declared type when the value has it (a non-empty string, array or
    object; a float for number), and `nullable` for a null sent to a union with null."""
    declared = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str) and v != "",
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, float),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list) and v != [],
        "object": lambda v: isinstance(v, dict) and v != {},
    }
    found = {declared} if isinstance(declared, str) and declared in checks and checks[declared](value) else set()
    if value is None and {"type": "null"} in schema.get("anyOf", []):
        found.add("nullable")
    return found


@pytest.mark.parametrize("fmt", ["native", "compact"])
@pytest.mark.parametrize("budget", [1, *smoke_budgets()])
def test_the_property_check_sends_every_value_type_at_smoke_budgets(budget: int, fmt: str) -> None:
    """At each smoke budget, the calls the check replays carry every value type and a call with several
    arguments: a strict server that refuses calls with arguments cannot pass it (issue 29, item 2: one
    draw of twenty zero-argument calls was an unexpected pass of a known failure)."""
    suite = tool_calling_suite()
    sent: list[Any] = []
    suite.round_trip_draws(budget, fmt, sent.extend, parent=settings(derandomize=True, database=None, deadline=None))
    exercised: set[str] = set()
    for case in sent:
        (name, args), = case.calls
        schema = case.tools[0]["function"]["parameters"]["properties"]
        assert name == "fuzz_tool" and set(args) <= set(schema), case
        assert case.format == fmt and case.script == suite.render_call(name, args, fmt)
        for key, value in args.items():
            exercised |= kinds(schema[key], value)
    assert exercised >= {"string", "integer", "number", "boolean", "array", "object", "nullable"}, sorted(exercised)
    assert any(len(case.calls[0][1]) >= 2 for case in sent), "no call with several arguments"
