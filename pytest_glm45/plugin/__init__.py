"""The pytest plugin (the `pytest11` entry point): a folder of small rooms around one session object.

`options` (flags, ini keys), `configure` (the session's start and end), `scheduling` (the matrix as parameters,
check ids, profile shares, the order of checks, boots ahead), `fixtures`, `outcomes` (the verdict hooks,
reproducers, JUnit properties), `terminal` (progress lines and summaries) and `reporting` (report writing). The
run's state is one `RunState` in `config.stash` (`state`). pytest registers the hooks and fixtures of the module it
loads: this one gathers the rooms' hooks and fixtures under their names, so each keeps its own order
(tryfirst, trylast, wrapper) as it is declared in its room.

It imports neither vLLM, torch nor openai; fixtures import what they need when they run.
"""

from __future__ import annotations

from pytest_glm45.plugin.configure import pytest_configure, pytest_unconfigure
from pytest_glm45.plugin.fixtures import (
    _glm45_gate,
    _glm45_reproducer,
    glm45_async_client,
    glm45_batch,
    glm45_chat,
    glm45_client,
    glm45_examples,
    glm45_parity,
    glm45_replay,
    glm45_server,
    glm45_settings,
    glm45_throughput,
)
from pytest_glm45.plugin.options import OPTIONS, pytest_addoption
from pytest_glm45.plugin.outcomes import (
    REPRODUCED,
    pytest_itemcollected,
    pytest_runtest_call,
    pytest_runtest_makereport,
    pytest_runtest_makereport_known_failure,
    reproducer_text,
)
from pytest_glm45.plugin.reporting import pytest_sessionfinish, pytest_testnodedown
from pytest_glm45.plugin.scheduling import (
    order_run,
    plan_boots_ahead,
    pytest_collection_finish,
    pytest_collection_modifyitems,
    pytest_generate_tests,
    pytest_runtest_protocol,
    pytest_xdist_make_scheduler,
)
from pytest_glm45.plugin.state import CHECK_ID, RECORDER, STATE, RunState, check_id, state_of
from pytest_glm45.plugin.terminal import Reporter, pytest_report_header, pytest_terminal_summary

__all__ = [
    "CHECK_ID",
    "OPTIONS",
    "RECORDER",
    "REPRODUCED",
    "STATE",
    "Reporter",
    "RunState",
    "_glm45_gate",
    "_glm45_reproducer",
    "check_id",
    "glm45_async_client",
    "glm45_batch",
    "glm45_chat",
    "glm45_client",
    "glm45_examples",
    "glm45_parity",
    "glm45_replay",
    "glm45_server",
    "glm45_settings",
    "glm45_throughput",
    "order_run",
    "plan_boots_ahead",
    "pytest_addoption",
    "pytest_collection_finish",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_itemcollected",
    "pytest_report_header",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_runtest_makereport_known_failure",
    "pytest_runtest_protocol",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_testnodedown",
    "pytest_unconfigure",
    "pytest_xdist_make_scheduler",
    "reproducer_text",
    "state_of",
]
