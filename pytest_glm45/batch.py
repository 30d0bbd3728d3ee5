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

from pytest_glm45 import reproducer

T = TypeVar("T")
#: Requests in flight per configuration unless --glm45-concurrency says otherwise.
DEFAULT_CONCURRENCY = 16


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
        every sibling at once; the job's exception is raised here, in the check that owns it."""
        self.batch.prefetch(self.group, [((self.group, param_key(p)), _bind(job, self.context, p)) for p in self.siblings])
        wanted = self.params if params is None else params
        key = (self.group, param_key(wanted))
        try:
            return self.batch.result(key, _bind(job, self.context, wanted))
        finally:
            self.batch.hand_over(key, own=params is None)

    def each(self, jobs_for: Callable[[Any, Mapping[str, Any]], Sequence[Callable[[], T]]]) -> list[Outcome[T]]:
        """Like `answer`, for a check whose answer is many requests: `jobs_for(context, params)` lists
        them; every selected sibling's requests start at once, each its own slot in flight, and this
        check gets its own requests' outcomes, in order."""

        def keyed(params: Mapping[str, Any]) -> list[tuple[Hashable, Callable[[], Outcome[T]]]]:
            return [((self.group, param_key(params), i), _outcome_of(job)) for i, job in enumerate(jobs_for(self.context, params))]

        self.batch.prefetch(self.group, [kj for p in self.siblings for kj in keyed(p)])
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
