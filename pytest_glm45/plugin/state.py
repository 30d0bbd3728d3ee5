"""The run's state: one typed object in `config.stash` that every room of the plugin reads, and what a check is.

`RunState` holds what the session shares (settings, the server pool, the verdicts, the terminal's reporter, the
throughput and parity sessions once made, the batches, the boots ahead, what collection left out); a check's own
facts stay on its item (`CHECK_ID`, `RECORDER`, `SERVER_SAID`). `check_id` and `config_id_of` say which check and
which configuration an item is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.pool import ServerHandle, ServerPool
from pytest_glm45.records.ids import split_config_id
from pytest_glm45.records.verdict import Verdicts
from pytest_glm45.settings import Settings

if TYPE_CHECKING:
    from pytest_glm45.measure.parity_session import ParitySession
    from pytest_glm45.measure.throughput import ThroughputSession
    from pytest_glm45.plugin.terminal import Reporter
    from pytest_glm45.reports.compare import Comparison

T = TypeVar("T")


@dataclass
class RunState:
    """What one pytest session of the kit shares, made by `pytest_configure` once the settings resolve."""

    settings: Settings
    pool: ServerPool
    verdicts: Verdicts
    #: The one progress reporter of the session (the pool, the suites' progress and throughput write through it).
    reporter: Reporter
    #: config id -> (its Batch, the replayer its jobs share), while its server serves.
    batches: dict[str, Any] = field(default_factory=dict)
    #: check id -> the boots ahead to start at it: (configuration, the one it boots beside, before or after the check)
    ahead: dict[str, list[tuple[Configuration, str, str]]] = field(default_factory=dict)
    #: checks deselected at collection, counted by why (`scheduling._left_out`)
    sampled: dict[str, int] = field(default_factory=dict)
    #: (check, config id) -> its server's log tail when the check failed, for the report.
    log_excerpts: dict[tuple[str, str], str] = field(default_factory=dict)
    #: The handler SIGTERM had before the session (given back at its end), None when pytest's stayed.
    previous_sigterm: Any = None
    throughput: ThroughputSession | None = None
    #: The session's logprob parity, made by the `glm45_parity` fixture (or a worker's results, merged).
    parity: ParitySession | None = None
    comparison: Comparison | None = None


STATE = pytest.StashKey[RunState]()
#: A check's stable id (`check_id`), given at collection.
CHECK_ID = pytest.StashKey[str]()
#: The requests a check sent (`pytest_glm45.records.reproducer.Recorder`).
RECORDER = pytest.StashKey[Any]()
#: What a check's server logged about the check's failed requests, as the failure text carries it.
SERVER_SAID = pytest.StashKey[str]()


def state_of(config: pytest.Config) -> RunState:
    """The session's state (made by pytest_configure)."""
    return config.stash[STATE]


def maybe_state(config: pytest.Config) -> RunState | None:
    """The session's state, or None where the settings did not resolve (a usage error ends the session)."""
    return config.stash.get(STATE, None)


def configuration(item: pytest.Item) -> Configuration | None:
    """The configuration a booted server's check runs on (None for a remote server's or a plain test)."""
    callspec = getattr(item, "callspec", None)
    config = callspec.params.get("glm45_server") if callspec else None
    return config if isinstance(config, Configuration) else None


def config_id_of(item: pytest.Item, remote_id: str | None = None) -> str | None:
    """The id of the configuration a check runs on, or None for a test that asks for no server."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or "glm45_server" not in callspec.params:
        return None
    config = callspec.params["glm45_server"]
    if isinstance(config, Configuration):
        return config.id
    return remote_id or state_of(item.config).settings.remote.config_id  # type: ignore[union-attr]


def without_config_id(params_id: str, config_id: str | None) -> str:
    """A test's parameter ids without the configuration's id (`pytest_glm45.records.ids.split_config_id`)."""
    return split_config_id(params_id, [config_id] if config_id else [])[1]


def check_id(item: pytest.Item, remote_id: str | None = None) -> str:
    """A stable id per check: `module::test[params]` without the configuration part."""
    name = getattr(item, "originalname", item.name)
    base = f"{item.path.stem}::{name}"
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return base
    rest = without_config_id(callspec.id, config_id_of(item, remote_id))
    return f"{base}[{rest}]" if rest else base


def handle_of(item: pytest.Item) -> ServerHandle | None:
    """The server a check ran on, once its fixtures are set up."""
    handle = getattr(item, "funcargs", {}).get("glm45_server")
    return handle if isinstance(handle, ServerHandle) else None
