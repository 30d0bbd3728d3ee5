"""Top-level conftest: Hypothesis profiles that follow the kit's --glm45-profile."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # the plugin works without Hypothesis; only property tests need it
        return
    from pytest_glm45.plugin import SETTINGS

    kit = config.stash.get(SETTINGS, None)
    examples = kit.profile.hypothesis_examples if kit else 100
    # Each example is a round trip to a real server: no deadline, a fixed seed per run
    # (derandomize) so a failure reproduces, and a health check that tolerates slow data.
    settings.register_profile(
        "glm45",
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )
    settings.load_profile("glm45")
