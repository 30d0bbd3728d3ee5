"""The session's start and end: settings resolved once, the run's state made (`RunState`), servers stopped."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.engine.pool import ServerPool
from pytest_glm45.plugin.fixtures import close_batch
from pytest_glm45.plugin.options import raw_values
from pytest_glm45.plugin.state import STATE, RunState, maybe_state
from pytest_glm45.plugin.terminal import Reporter, SuiteProgress
from pytest_glm45.records.verdict import Verdicts
from pytest_glm45.settings import Settings, SettingsError, resolve_settings


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the settings once, apply the profile to Hypothesis, and make the session's server pool."""
    config.addinivalue_line("markers", "glm45_live: needs real GLM-4.5 weights; skipped on the tiny model")
    config.addinivalue_line("markers", "glm45_boot: checks how a server booted; skipped against --glm45-base-url")
    config.addinivalue_line("markers", "glm45_parser_case: a replayed parser case; a model's other plans run the profile's share")
    config.addinivalue_line("markers", "glm45_surfaces: a check of /v1/responses or /v1/messages; left out with --glm45-surfaces chat")
    config.addinivalue_line("markers", "glm45_no_tools: a request without tools, the same on a strict and a lax server; runs on strict twins")
    config.addinivalue_line("markers", "glm45_first_plan: API-server code alone; runs on a model's first plan (every plan with --glm45-profile full)")
    config.addinivalue_line("markers", "glm45_surface_replay: a replay case on /v1/responses or /v1/messages; a strict twin runs the profile's share")
    config.addinivalue_line("markers", "glm45_long_answer: runs after its configuration's other checks (its requests, "
                                       "sent with its siblings', run beside them); a scripted long answer is one too")  # fmt: skip
    config.addinivalue_line("markers", "glm45_twin(**params): each batched item also asks for its parameters with these values "
                                       "(a streamed check's plain twin); they are sent with its siblings")  # fmt: skip
    config.addinivalue_line("markers", "glm45_decode_mode: a check of what a decode mode changes (exact parity, streaming "
                                       "agreement): runs on every decode-mode configuration (tp1-si4, tp1-ngram2, ...)")  # fmt: skip
    config.addinivalue_line(
        "markers",
        "glm45_strict_irrelevant: tool-calling strictness cannot change what these checks measure; "
        "the -nostrict twin of a configuration is skipped, saying so",
    )
    from pytest_glm45.engine.inventory import InventoryError, gpu_count, read_inventory
    from pytest_glm45.engine.recipe import cpu_cores

    try:
        settings = resolve_settings(raw_values(config), detected_gpus=gpu_count, cpu_cores=len(cpu_cores()),
                                    rootdir=Path(str(config.rootpath)), inventory=read_inventory)  # fmt: skip
    except (SettingsError, InventoryError) as exc:
        raise pytest.UsageError(str(exc)) from None
    reporter = Reporter(config)
    state = config.stash[STATE] = RunState(settings, ServerPool(settings, reporter=reporter),
                                           Verdicts(strict_known_failures=settings.strict_known_failures), reporter)  # fmt: skip
    config.pluginmanager.register(SuiteProgress(reporter), "glm45-suite-progress")
    numprocesses = getattr(config.option, "numprocesses", None) or 0
    if numprocesses and not hasattr(config, "workerinput"):
        from pytest_glm45.measure.sidebyside import SideBySideError, distribution_mode

        try:
            config.option.dist = distribution_mode(settings.engine, int(numprocesses), config.option.dist)
        except SideBySideError as exc:
            raise pytest.UsageError(str(exc)) from None
    _apply_hypothesis_profile(config, settings)
    state.previous_sigterm = _terminate_on_sigterm()


def _apply_hypothesis_profile(config: pytest.Config, settings: Settings) -> None:
    """The profile's example count for every property check, unless the user chose a Hypothesis profile.

    Each example is a round trip to a real server: no deadline, a fixed seed per run
    (derandomize) so a failure reproduces, and a health check that tolerates slow data.
    """
    try:
        from hypothesis import HealthCheck
        from hypothesis import settings as hypothesis_settings
    except ImportError:  # only the property checks need Hypothesis
        return
    if config.getoption("hypothesis_profile", None):
        return
    hypothesis_settings.register_profile(
        "glm45",
        max_examples=settings.profile.hypothesis_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )
    hypothesis_settings.load_profile("glm45")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop every server still running and give SIGTERM back its previous handler."""
    state = maybe_state(config)
    if state is None:
        return
    for config_id in list(state.batches):
        close_batch(config, config_id)
    state.pool.stop_all()
    if state.previous_sigterm is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, state.previous_sigterm)


def _terminate_on_sigterm() -> Any:
    """Turn SIGTERM into KeyboardInterrupt so fixtures tear down and servers stop; returns the
    handler it replaced (None when it left pytest's alone)."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Not possible outside the main thread (pytester in a thread, say): then pytest's default stays.
    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:
        return None
    return previous
