"""The plugin's fixtures: settings, servers (one per configuration), clients, replay, batches, parity, throughput.

Each imports what it needs when it runs (openai, httpx): importing the plugin imports neither."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.measure.throughput import ThroughputSession
from pytest_glm45.plugin.state import RECORDER, config_id_of, maybe_state, state_of
from pytest_glm45.settings import Settings


def ensure_alive(handle: ServerHandle) -> None:
    """Fail the check at once, with the exit code and the log tail, when its server has died."""
    from pytest_glm45.engine.server import ServerDiedError

    try:
        handle.check_alive()
    except ServerDiedError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def glm45_settings(request: pytest.FixtureRequest) -> Settings:
    """The session's resolved settings (models, plans, profile, timeouts)."""
    return state_of(request.config).settings


@pytest.fixture(scope="session")
def glm45_server(request: pytest.FixtureRequest) -> Iterator[ServerHandle | None]:
    """A ready vLLM server for one configuration of the matrix, booted once per session.

    Gives the base URL, configuration id, served model name, log path, startup seconds,
    vLLM version, engine and distribution. With --glm45-base-url, the server already running there.
    A server that fails to start, or that the kit booted and does not replay, fails every check of
    its configuration: the first with the whole story and the log tail, the others with a pointer to it.
    """
    from pytest_glm45.engine.server import ServerError

    pool = state_of(request.config).pool
    config: Configuration | None = getattr(request, "param", None)
    try:
        handle = pool.acquire(config)
    except ServerError:
        yield None  # the boot gate below fails each check, saying why
        return
    yield handle
    close_batch(request.config, handle.config_id)
    pool.release(handle)


@pytest.fixture(autouse=True)
def _glm45_gate(request: pytest.FixtureRequest) -> None:
    """Before each check on a server: fail when its server did not come up; skip a live check
    (@pytest.mark.glm45_live) unless the server has real GLM-4.x weights."""
    if "glm45_server" not in request.fixturenames:
        return
    handle: ServerHandle | None = request.getfixturevalue("glm45_server")
    if handle is None:
        callspec = getattr(request.node, "callspec", None)
        config = callspec.params.get("glm45_server") if callspec else None
        pool = state_of(request.config).pool
        pytest.fail(pool.failure(config.id if isinstance(config, Configuration) else None), pytrace=False)
    if request.node.get_closest_marker("glm45_live") is None or handle.real_weights:
        return
    if handle.booted:
        pytest.skip("needs real GLM-4.5 weights: the tiny model's seeded random weights emit noise")
    pytest.skip(f"needs real GLM-4.x weights: {handle.served_name} at {handle.base_url} is not declared as such; "
                "add --glm45-model with its alias (air-fp8, fp8, ...) if it is")  # fmt: skip


@pytest.fixture(autouse=True)
def _glm45_reproducer(request: pytest.FixtureRequest) -> Iterator[None]:
    """Record the requests each check sends (the kit's clients and its batch report them), so that a
    failing or known-failing check carries its reproducer (pytest_glm45.records.reproducer)."""
    if "glm45_server" not in request.fixturenames:
        yield
        return
    from pytest_glm45.records.reproducer import Recorder, recording

    recorder = request.node.stash[RECORDER] = Recorder()
    with recording(recorder):
        yield
    recorder.clear()  # the check's call phase is judged by now; a session keeps no request past its check


@pytest.fixture(scope="session")
def glm45_parity(request: pytest.FixtureRequest) -> Any:
    """The session's logprob parity (`pytest_glm45.measure.parity_session.ParitySession`): the reference recording of
    each model (its first configuration, or --glm45-parity-reference) and every pair compared."""
    return parity_of(request.config)


@pytest.fixture
def glm45_examples(glm45_server: ServerHandle, glm45_settings: Settings) -> Callable[[int], int]:
    """How many generated examples a property check draws here: `n` on a model's first parallel
    plan, the profile's `other_plans_share` of it on the others (all of it in the full profile)."""
    return lambda n: glm45_settings.examples(n, glm45_server.config)


@pytest.fixture(scope="session")
def glm45_throughput(request: pytest.FixtureRequest) -> ThroughputSession:
    """The session's throughput points (`pytest_glm45.measure.throughput.ThroughputSession`): run, export, check."""
    return throughput_of(request.config)


@pytest.fixture
def glm45_chat(glm45_server: ServerHandle) -> Iterator[Any]:
    """A raw-JSON chat client (`pytest_glm45.clients.chat.ChatClient`) for the server; never retries."""
    from pytest_glm45.clients.chat import ChatClient

    ensure_alive(glm45_server)
    with ChatClient(glm45_server.base_url, glm45_server.api_key, glm45_server.served_name) as client:
        yield client


def _http_options(httpx: Any) -> dict[str, Any]:
    """A connection per request (chat.CLOSE: none races the server's keep-alive), and the kit's one shared
    TLS context (chat.tls_context)."""
    from pytest_glm45.clients.chat import CLOSE, tls_context

    return {"timeout": 120.0, "headers": CLOSE, "verify": tls_context()}


@pytest.fixture
def glm45_client(glm45_server: ServerHandle) -> Iterator[Any]:
    """An `openai.OpenAI` client for the server: max_retries=0, 120 s timeout."""
    import httpx
    import openai

    from pytest_glm45.records.reproducer import httpx_event_hooks

    ensure_alive(glm45_server)
    # Its requests are recorded for a failing check's reproducer (pytest_glm45.records.reproducer).
    http_client = httpx.Client(event_hooks=httpx_event_hooks(), **_http_options(httpx))
    client = openai.OpenAI(base_url=glm45_server.base_url + "/v1", api_key=glm45_server.api_key or "none",
                           max_retries=0, timeout=120.0, http_client=http_client)  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def glm45_async_client(glm45_server: ServerHandle) -> Any:
    """An `openai.AsyncOpenAI` client for the server: max_retries=0, 120 s timeout."""
    import httpx
    import openai

    from pytest_glm45.records.reproducer import async_httpx_event_hooks

    ensure_alive(glm45_server)
    http_client = httpx.AsyncClient(event_hooks=async_httpx_event_hooks(), **_http_options(httpx))
    return openai.AsyncOpenAI(base_url=glm45_server.base_url + "/v1", api_key=glm45_server.api_key or "none",
                              max_retries=0, timeout=120.0, http_client=http_client)  # fmt: skip


@pytest.fixture
def glm45_replay(glm45_server: ServerHandle, glm45_chat: Any) -> Any:
    """Replays a scripted GLM-4.5 output: `glm45_replay.chat(script, stream=...)`, `.both(script)`.

    A remote server without the replay processor skips, naming the flag to add (a server the kit
    booted always replays: one that does not is an error at boot).
    """
    from pytest_glm45.clients.chat import Replayer
    from pytest_glm45.glm.replay import REPLAY_PROCESSOR

    reason = glm45_server.config.plan.decode.no_replay_reason if glm45_server.config is not None else None
    if reason is not None:
        pytest.skip(f"{glm45_server.config_id}: {reason}")
    if not glm45_server.replay_loaded:
        pytest.skip(f"{glm45_server.config_id}: the server does not replay scripts; "
                    f"start it with --logits-processors {REPLAY_PROCESSOR}")  # fmt: skip
    return Replayer(glm45_chat, opens_think=glm45_server.opens_think)


@pytest.fixture
def glm45_batch(request: pytest.FixtureRequest, glm45_server: ServerHandle) -> Any:
    """This check's share of its configuration's concurrent traffic (`pytest_glm45.clients.batch.Checks`):
    `glm45_batch.answer(job)` runs `job(replayer, params)` for every selected item of this check
    function on this configuration at once (--glm45-concurrency in flight) and returns this item's
    answer; `.each(jobs_for)` does the same for checks made of many requests. The replayer's client
    lives as long as the server (a check that replays asks for `glm45_replay` too, which skips on a
    server without the replay processor)."""
    from pytest_glm45.clients.batch import Checks

    ensure_alive(glm45_server)

    batch, replayer = _batch_for(request.config, glm45_server)
    node = request.node
    function = getattr(node, "originalname", node.name)
    group = (str(node.path), function)
    # The siblings matter only to the first item of the group, which starts them all.
    siblings = [] if batch.started(group) else [
        _own_params(item) for item in request.session.items
        if getattr(item, "originalname", None) == function and item.path == node.path
        and config_id_of(item) == glm45_server.config_id]  # fmt: skip
    twin = node.get_closest_marker("glm45_twin")
    if twin is not None:  # the twins the items will ask for go out with them, not one by one when asked
        siblings += [{**params, **twin.kwargs} for params in siblings]
    return Checks(batch, group, _own_params(node), siblings, replayer)


def _own_params(item: Any) -> dict[str, Any]:
    callspec = getattr(item, "callspec", None)
    return {k: v for k, v in callspec.params.items() if k != "glm45_server"} if callspec else {}


def _batch_for(config: pytest.Config, handle: ServerHandle) -> tuple[Any, Any]:
    """The configuration's Batch and the replayer its jobs share (one client, kept while it serves)."""
    from pytest_glm45.clients.batch import Batch
    from pytest_glm45.clients.chat import ChatClient, Replayer

    batches = state_of(config).batches
    if handle.config_id not in batches:
        in_flight = state_of(config).settings.concurrency
        client = ChatClient(handle.base_url, handle.api_key, handle.served_name, max_connections=in_flight + 4)
        batches[handle.config_id] = (Batch(handle.config_id, in_flight), Replayer(client, opens_think=handle.opens_think))
    return batches[handle.config_id]  # type: ignore[no-any-return]


def close_batch(config: pytest.Config, config_id: str) -> None:
    """Close a configuration's batch and its replayer's client, once its server is released."""
    state = maybe_state(config)
    entry = state.batches.pop(config_id, None) if state is not None else None
    if entry is not None:
        batch, replayer = entry
        batch.close()
        replayer.client.close()


def parity_of(config: pytest.Config) -> Any:
    """The session's ParitySession, made on first use (a pytest-xdist worker's leaves candidates whose
    reference ran elsewhere to the controller's)."""
    from pytest_glm45.measure.parity import thresholds_from_file
    from pytest_glm45.measure.parity_session import ParitySession, load_references

    state = state_of(config)
    if state.parity is None:
        path = state.settings.parity_reference
        try:
            table = thresholds_from_file(state.settings.thresholds)
        except ValueError as exc:
            raise pytest.UsageError(f"--glm45-thresholds: {exc}") from None
        deferred = hasattr(config, "workerinput")
        try:
            state.parity = (ParitySession(load_references(path), str(path), table=table, deferred=deferred) if path
                            else ParitySession(table=table, deferred=deferred))  # fmt: skip
        except ValueError as exc:
            raise pytest.UsageError(f"--glm45-parity-reference: {exc}") from None
    return state.parity


def throughput_of(config: pytest.Config) -> ThroughputSession:
    """The session's ThroughputSession, made on first use."""
    state = state_of(config)
    if state.throughput is None:
        settings = state.settings
        from pytest_glm45.reports.compare import DEFAULT_TOLERANCES

        state.throughput = ThroughputSession(settings.bench_dir, settings.thresholds, settings.profile.rounds,
                                             state.reporter.progress, most_rounds=settings.profile.max_rounds,
                                             tolerances={**DEFAULT_TOLERANCES, **settings.tolerances})  # fmt: skip
    return state.throughput
