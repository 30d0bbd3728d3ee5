"""The run's scheduling: the matrix as parameters, check ids, what runs where (profile shares), the order of a
configuration's checks (long answers, then throughput points, last) and the boots ahead."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Sequence
from typing import Any

import pytest

from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.pool import ServerPool
from pytest_glm45.plugin.decode_scope import left_out as decode_left_out
from pytest_glm45.plugin.decode_scope import replay_skip
from pytest_glm45.plugin.state import CHECK_ID, T, check_id, configuration, maybe_state, state_of
from pytest_glm45.settings import Settings


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `glm45_server` with the matrix, once per session, with readable ids; and
    `glm45_point` with the profile's throughput points (shape, batch)."""
    settings = state_of(metafunc.config).settings
    if "glm45_point" in metafunc.fixturenames:
        from pytest_glm45.clients.loadgen import profile_points

        points = profile_points(settings.profile.name, settings.engine)
        metafunc.parametrize("glm45_point", points, ids=[f"{s.name}-{s.input_len}x{s.output_len}-bs{b}" for s, b in points])
    if "glm45_server" not in metafunc.fixturenames:
        return
    if settings.remote is not None:
        metafunc.parametrize("glm45_server", [None], indirect=True, scope="session", ids=[settings.remote.config_id])
        return
    strict_irrelevant = metafunc.definition.get_closest_marker("glm45_strict_irrelevant") is not None
    params = []
    for c in settings.matrix:
        reason = c.skip_reason
        if reason is None and strict_irrelevant and not c.strict_tools:
            reason = "tool-calling strictness does not change what this check measures; it runs on the strict twin"
        params.append(pytest.param(c, id=c.id, marks=[pytest.mark.skip(reason=f"{c.id}: {reason}")] if reason else []))
    metafunc.parametrize("glm45_server", params, indirect=True, scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every item its stable check id; on a model's other parallel plans, keep the profile's share of the
    parser cases (`glm45_parser_case`); run each configuration's long answers after its other checks, and its
    throughput points last (`order_run`)."""
    settings = state_of(config).settings
    remote = settings.remote
    for item in items:
        item.stash[CHECK_ID] = check_id(item, remote.config_id if remote else None)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    why: dict[str, int] = {}
    for item in items:
        reason = _left_out(item, settings)
        (kept if reason is None else dropped).append(item)
        if reason is not None:
            why[reason] = why.get(reason, 0) + 1
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        state_of(config).sampled = why
    for item in kept:  # replay checks where nothing can replay (speculative decoding, -noreplay) skip, saying why
        reason = replay_skip(item, configuration(item))
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
    items[:] = order_run(kept, configuration, rank)


def order_run(items: Sequence[T], config_of: Callable[[T], Any], rank: Callable[[T], int]) -> list[T]:
    """Each configuration's run of checks ordered by `rank`, a stable sort: its conformance (0), then the
    checks of long answers (1: `_long_answer`), then its throughput points (2). A long answer is sent
    with its siblings when the first of them asks, so by the time its own check runs, the rest of the
    configuration's traffic has kept the server busy beside it instead of the server decoding it alone.
    The boots ahead have all of the conformance to finish in before the first point (which waits for
    them), and the next boots as soon as the points are done."""
    out: list[T] = []
    run: list[T] = []
    for item in [*items, None]:
        if run and (item is None or config_of(item) is None or config_of(item) != config_of(run[0])):
            out += sorted(run, key=rank)
            run = []
        if item is not None:
            (run if config_of(item) is not None else out).append(item)
    return out


def rank(item: pytest.Item) -> int:
    """A check's place in its configuration's run: conformance (0), long answers (1), throughput points (2)."""
    return 2 if _measures(item) else 1 if _long_answer(item) else 0


def _long_answer(item: pytest.Item) -> bool:
    """Whether a check waits for a long answer: marked `glm45_long_answer`, or a batched check whose case
    scripts one (`pytest_glm45.clients.batch.LONG_ANSWER_CHARS`)."""
    from pytest_glm45.clients.batch import LONG_ANSWER_CHARS, answer_chars

    if item.get_closest_marker("glm45_long_answer") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    return ("glm45_batch" in getattr(item, "fixturenames", ()) and callspec is not None
            and answer_chars(callspec.params) >= LONG_ANSWER_CHARS)  # fmt: skip


def _sampled(item: pytest.Item, share: float) -> bool:
    """Whether `item` is in a `share` of its kind, chosen by a stable hash of its check id."""
    every = max(1, round(1 / share))
    return int(hashlib.sha256(item.stash[CHECK_ID].encode()).hexdigest()[:8], 16) % every == 0


def _left_out(item: pytest.Item, settings: Settings) -> str | None:
    """Why this item does not run here (it is deselected and counted), or None when it runs.

    - The Responses and Messages surfaces (`glm45_surfaces`) run unless --glm45-surfaces chat.
    - A request without tools (`glm45_no_tools`) is the same on a strict and a lax server (strict tool
      calling is a grammar for calls): it runs on the strict twin only.
    - A surface replay (`glm45_surface_replay`) on a strict twin whose lax twin runs too: the profile's share
      (`standard`: a quarter, by a stable hash). The grammar decides before any surface converts an answer,
      and the chat suites check it case by case on the strict twin; what is the surface's own there (how a
      refusal reaches its client: an HTTP 500, a cut stream, an error event) is one path for every refused
      case, and the conversion of an admitted answer is the lax twin's, which runs every case.
    - Checks of API-server code alone (`glm45_first_plan`: the surfaces' conversions) run on a model's
      first plan, and on every plan with `--glm45-profile full`.
    - A parser case (`glm45_parser_case`: a replayed script checked against what the API server's parsers
      make of it, the same code whatever the parallel plan) runs on a model's first plan, and on its other
      plans in the profile's share (`standard`: a quarter, chosen by a stable hash of the check id; `full`: all).
    - On a decode-mode configuration (`tp1-si4`, `tp1-ngram2`, `tp1-noreplay`): the checks of what the mode changes
      and a share of the replay suites (`pytest_glm45.plugin.decode_scope`)."""
    if item.get_closest_marker("glm45_surfaces") is not None and settings.surfaces != "all":
        return "the Responses and Messages surfaces (left out by --glm45-surfaces chat)"
    config = configuration(item)
    if config is None:
        return None
    if item.get_closest_marker("glm45_no_tools") is not None and not config.strict_tools:
        return "requests without tools on lax twins (the same as on the strict twin)"
    share = settings.profile.other_plans_share
    if not config.plan.decode.is_default:  # a decode mode runs the checks of what it changes (plugin.decode_scope)
        return decode_left_out(item, config, share, _sampled)
    if (item.get_closest_marker("glm45_surface_replay") is not None and config.strict_tools and share < 1
            and any(c.model == config.model and c.plan == config.plan and not c.strict_tools for c in settings.matrix)
            and not _sampled(item, share)):  # fmt: skip
        return (f"surface replays on strict twins beyond a {share:.0%} sample (the lax twin runs them all; the chat "
                f"suites check the grammar case by case; --glm45-profile full runs all)")
    other_plan = bool(settings.plans) and config.plan != settings.plans[0]
    if not other_plan or share >= 1:
        return None
    if item.get_closest_marker("glm45_first_plan") is not None:
        return "the surfaces' conversions on models' other plans (API-server code; --glm45-profile full runs them)"
    if item.get_closest_marker("glm45_parser_case") is None:
        return None
    if _sampled(item, share):
        return None
    return (f"parser cases on models' other plans beyond the {share:.0%} that profile "
            f"{settings.profile.name} runs there (--glm45-profile full runs all)")


def _measures(item: pytest.Item) -> bool:
    """A timing-sensitive check that will run: a throughput point not marked to skip."""
    return "glm45_point" in getattr(item, "fixturenames", ()) and item.get_closest_marker("skip") is None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Plan the boots ahead: every later configuration boots beside the first as the session starts (a
    tiny server's boot keeps about one core busy: its processes import vLLM one after another; a server
    booted and idle is quiet). A throughput point never measures while a boot runs: it waits for boots
    ahead to end (`pytest_runtest_protocol`), and each configuration's points run after its other checks
    (`order_run`), so the boots have the first configuration's conformance to finish in. When the
    session starts with a point, a configuration boots after the last point before it instead. Measured
    on the 2-core machine, the default run: 8:58 with the second booting beside the first and the third
    after the first's last point, 8:45 with both beside the first."""
    settings = state_of(session.config).settings
    plan: dict[str, list[tuple[Configuration, str, str]]] = {}
    state_of(session.config).ahead = plan
    if settings.remote is not None or hasattr(session.config, "workerinput") or len(settings.matrix) < 2:
        return
    runs: list[tuple[Configuration, list[tuple[str, bool]]]] = []
    for item in session.items:
        config = configuration(item)
        if config is None:
            continue
        if not runs or runs[-1][0].id != config.id:
            runs.append((config, []))
        runs[-1][1].append((item.nodeid, _measures(item)))
    plan.update(plan_boots_ahead(runs))


def plan_boots_ahead(runs: Sequence[tuple[Any, Sequence[tuple[str, bool]]]]) -> dict[str, list[tuple[Any, str, str]]]:
    """check id -> [(configuration, the one it boots beside, "before" or "after" the check)], from the
    session's runs of checks per configuration, each check as (id, whether it is a throughput point):
    every configuration before the first check, unless that check is a point; then each once the last
    point before it is done (or at the previous configuration's first check when no point came yet)."""
    plan: dict[str, list[tuple[Any, str, str]]] = {}
    seen: set[str] = set()
    last_point: str | None = None  # the last throughput point so far
    for n, (current, run) in enumerate(runs[:-1]):
        seen.add(current.id)
        measured = [nodeid for nodeid, measures in run if measures]
        last_point = measured[-1] if measured else last_point
        following = runs[n + 1][0]
        if following.skip_reason or following.id in seen:  # nothing to boot, or booted already
            continue
        if not runs[0][1][0][1]:  # beside the first boot, as the session starts
            plan.setdefault(runs[0][1][0][0], []).append((following, runs[0][0].id, "before"))
        else:  # after the last throughput point so far, or at this configuration's first check
            plan.setdefault(last_point or run[0][0], []).append((following, current.id, "after"))
    return plan


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Start the boots ahead planned at this check (before or after it); before a throughput point,
    wait for boots ahead to end; show what boots ahead said meanwhile."""
    state = maybe_state(item.config)
    pool = state.pool if state is not None else None
    planned = state.ahead.get(item.nodeid, []) if state is not None else []
    if pool is not None:
        _boot_ahead(pool, item, [p for p in planned if p[2] == "before"])
        if _measures(item):
            pool.settle_boots()
    result = yield
    if pool is not None:
        _boot_ahead(pool, item, [p for p in planned if p[2] == "after"])
        pool.flush_messages()
    return result


def _boot_ahead(pool: ServerPool, item: pytest.Item, planned: list[tuple[Configuration, str, str]]) -> None:
    from pytest_glm45.engine.recipe import client_cores

    for following, current, when in planned:
        pool.boot_ahead(following, current, client_cores(configuration(item)) or (), at_start=when == "before")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist: one unit of work per configuration, so each boots once, on one worker."""
    from pytest_glm45.measure.sidebyside import make_scheduler

    settings = state_of(config).settings
    ids = [c.id for c in settings.matrix] + ([settings.remote.config_id] if settings.remote else [])
    return make_scheduler(config, log, ids)
