"""The robustness suite's hostile requests can all be sent: each body is JSON (a non-finite float is no JSON at all,
and httpx refuses to encode it, so a full-profile run lost 4 of its 5 hostile batches to one)."""

from __future__ import annotations

import json

from suite_modules import suite_module


def test_every_hostile_body_of_a_full_profile_run_is_json() -> None:
    suite = suite_module("test_robustness")
    count = 1000  # the full profile's per-batch count (5000 in five batches)
    for batch in suite.hostile_batches(count):
        for _kind, body in batch:
            if isinstance(body, bytes):
                continue  # sent raw on purpose (malformed JSON is one of the hostile kinds)
            json.dumps(body, allow_nan=False)  # raises on what httpx could not send
