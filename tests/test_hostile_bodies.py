"""The robustness suite's hostile requests can all be sent: each body is JSON (a non-finite float is no JSON at all,
and httpx refuses to encode it, so a full-profile run lost 4 of its 5 hostile batches to one)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

SUITE = Path(__file__).resolve().parent.parent / "suites" / "test_robustness.py"


def robustness_suite() -> ModuleType:
    name = "glm45_suite_robustness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SUITE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_every_hostile_body_of_a_full_profile_run_is_json() -> None:
    suite = robustness_suite()
    count = 1000  # the full profile's per-batch count (5000 in five batches)
    for batch in suite.hostile_batches(count):
        for _kind, body in batch:
            if isinstance(body, bytes):
                continue  # sent raw on purpose (malformed JSON is one of the hostile kinds)
            json.dumps(body, allow_nan=False)  # raises on what httpx could not send
