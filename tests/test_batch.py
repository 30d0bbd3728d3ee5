"""Batched conformance traffic: every selected sibling's request goes out at once, each check gets
its own answer (or its own exception), and no more than the bound are ever in flight."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from pytest_glm45.clients.batch import Batch, Checks, Outcome, param_key, run_all


class Gauge:
    """Counts jobs in flight and remembers the most seen at once (no timing involved)."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def job(self, value: Any) -> Any:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        self.release.wait(5)
        with self.lock:
            self.now -= 1
        if isinstance(value, BaseException):
            raise value
        return value


def test_run_all_keeps_order_and_each_exception() -> None:
    boom = ValueError("job 2 broke")
    outcomes = run_all([lambda: 1, lambda: 2, lambda: (_ for _ in ()).throw(boom), lambda: 4], in_flight=2)
    assert [o.value for o in outcomes] == [1, 2, None, 4]
    assert outcomes[2].error is boom
    with pytest.raises(ValueError, match="job 2 broke"):
        outcomes[2].get()


def test_in_flight_never_exceeds_the_bound() -> None:
    gauge = Gauge()
    batch = Batch("c", in_flight=3)
    futures = [batch.submit(i, lambda i=i: gauge.job(i)) for i in range(10)]
    deadline = time.monotonic() + 5
    while gauge.now < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gauge.now == 3, "three jobs should be running while they wait"
    gauge.release.set()
    assert [f.result() for f in futures] == list(range(10))
    assert gauge.most == 3
    batch.close()


def test_a_refused_bound() -> None:
    with pytest.raises(ValueError, match="in_flight must be at least 1"):
        Batch("c", 0)


def test_checks_start_every_sibling_once_and_hand_each_its_own_answer() -> None:
    sent: list[tuple[str, str]] = []
    lock = threading.Lock()

    def job(context: str, params: Any) -> str:
        with lock:
            sent.append((params["case"], params["mode"]))
        if params["case"] == "bad":
            pytest.fail(f"HTTP 500 for {params['case']}", pytrace=False)
        return f"{context}:{params['case']}-{params['mode']}"

    siblings = [{"case": c, "mode": m} for c in ("a", "b", "bad") for m in ("plain", "stream")]
    batch = Batch("cfg", 4)
    answers = {}
    for params in siblings:
        checks = Checks(batch, ("suite", "test_replay"), params, siblings, "ctx")
        try:
            answers[params["case"], params["mode"]] = checks.answer(job)
        except pytest.fail.Exception as exc:
            answers[params["case"], params["mode"]] = f"failed: {exc}"
    assert sorted(sent) == sorted((p["case"], p["mode"]) for p in siblings), "each sibling's request is sent exactly once"
    assert answers["a", "stream"] == "ctx:a-stream"
    assert answers["bad", "plain"] == "failed: HTTP 500 for bad"
    # A stream check that asks for its plain twin gets the answer already sent, not a new request.
    twin = Checks(batch, ("suite", "test_replay"), {"case": "b", "mode": "stream"}, siblings, "ctx")
    assert twin.answer(job, {"case": "b", "mode": "plain"}) == "ctx:b-plain"
    assert len(sent) == 6
    batch.close()


def test_the_longest_answers_are_sent_first() -> None:
    """Siblings go out longest scripted answer first (a case cut by its max_tokens is short), so a long
    one never starts last and leaves the server decoding it alone."""

    class Case:
        def __init__(self, id: str, script: str, max_tokens: int | None = None) -> None:
            self.id, self.script, self.max_tokens = id, script, max_tokens

    cases = [Case("short", "Hi."), Case("cut", "word " * 200, max_tokens=5), Case("long", "step " * 200), Case("mid", "x" * 300)]
    siblings = [{"case": c} for c in cases]
    sent: list[str] = []
    batch = Batch("cfg", 1)  # one in flight: the order they are started in is the order they are sent in
    Checks(batch, ("suite", "f"), siblings[0], siblings, None).answer(lambda _c, p: sent.append(p["case"].id))
    batch.close()
    assert sent == ["long", "mid", "cut", "short"]


def test_a_deselected_twin_is_sent_when_asked_for() -> None:
    sent: list[str] = []
    only_stream = [{"case": "a", "mode": "stream"}]
    batch = Batch("cfg", 2)
    checks = Checks(batch, ("suite", "f"), only_stream[0], only_stream, None)
    assert checks.answer(lambda _c, p: sent.append(p["mode"]) or p["mode"]) == "stream"
    assert checks.answer(lambda _c, p: sent.append(p["mode"]) or p["mode"], {"case": "a", "mode": "plain"}) == "plain"
    assert sent == ["stream", "plain"]
    batch.close()


def test_each_sends_every_siblings_requests_and_returns_only_its_own() -> None:
    batch = Batch("cfg", 4)
    siblings = [{"batch": b} for b in range(3)]

    def jobs_for(_context: Any, params: Any) -> list[Any]:
        return [(lambda b=params["batch"], i=i: (b, i)) for i in range(5)]

    mine = Checks(batch, ("suite", "hostile"), {"batch": 1}, siblings, None).each(jobs_for)
    assert [o.get() for o in mine] == [(1, i) for i in range(5)]
    assert len(batch._futures) == 15, "all three batches' requests were started together"
    batch.close()


def test_each_sends_every_siblings_long_requests_first() -> None:
    sent: list[tuple[int, int]] = []
    batch = Batch("cfg", 1)  # one in flight: the order they are started in is the order they are sent in
    siblings = [{"batch": b} for b in range(2)]

    def jobs_for(_context: Any, params: Any) -> list[Any]:
        return [(lambda b=params["batch"], i=i: sent.append((b, i))) for i in range(3)]

    Checks(batch, ("suite", "hostile"), {"batch": 0}, siblings, None).each(jobs_for, lambda params, i: i == 2)
    batch.close()
    assert sent == [(0, 2), (1, 2), (0, 0), (0, 1), (1, 0), (1, 1)]


def test_param_key_uses_case_ids() -> None:
    class Case:
        id = "one-call"

    assert param_key({"case": Case(), "mode": "plain"}) == (("case", "one-call"), ("mode", "'plain'"))
    assert Outcome(3, None).get() == 3


BATCHED = """
import pytest

SCRIPTS = ["alpha", "beta", "FAIL-gamma"]


def job(replay, params):
    answer = replay.chat(params["script"])
    if answer.content.startswith("FAIL"):
        pytest.fail(f"the server said {answer.content!r}", pytrace=False)
    return answer.content


@pytest.mark.parametrize("script", SCRIPTS)
def test_batched(glm45_batch, glm45_replay, script):
    assert glm45_batch.answer(job) == script
"""


def test_batched_checks_keep_ids_outcomes_and_messages(pytester: pytest.Pytester, standin: Any) -> None:
    """Through the plugin, against the stand-in: each item passes or fails on its own answer."""
    pytester.makepyfile(test_b=BATCHED)
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpus", "0", "--glm45-parallel", "tp1", "--glm45-strict-tools",
                                "on", "--glm45-concurrency", "2", "-rA")  # fmt: skip
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_batched[[]tiny-bf16-tp1-FAIL-gamma[]]*", "the server said 'FAIL-gamma'"])
    result.stdout.fnmatch_lines(["PASSED test_b.py::test_batched[[]tiny-bf16-tp1-alpha[]]",
                                 "PASSED test_b.py::test_batched[[]tiny-bf16-tp1-beta[]]",
                                 "FAILED test_b.py::test_batched[[]tiny-bf16-tp1-FAIL-gamma[]]*"])  # fmt: skip


TWINS = """
import time

import pytest

SENT = []


def job(replay, params):
    SENT.append(params["mode"])
    return params["mode"]


@pytest.mark.glm45_twin(mode="plain")
@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_twinned(glm45_batch, mode):
    assert glm45_batch.answer(job) == mode
    for _ in range(500):  # the twin went out with the batch: it arrives without being asked for
        if "plain" in SENT:
            break
        time.sleep(0.01)
    assert SENT.count("plain") == 1, SENT
    assert glm45_batch.answer(job, {"mode": "plain"}) == "plain"
    assert SENT.count("plain") == 1, "asked for, the twin is the answer already sent"
"""


def test_a_twin_goes_out_with_its_siblings_even_when_it_is_not_selected(pytester: pytest.Pytester, standin: Any) -> None:
    """Only the stream item runs (-k); its plain twin (glm45_twin) is sent with the batch, once."""
    pytester.makepyfile(test_t=TWINS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpus", "0", "--glm45-parallel", "tp1", "--glm45-strict-tools",
                                "on", "-k", "stream")  # fmt: skip
    result.assert_outcomes(passed=1)


def test_concurrency_must_be_a_positive_number(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--glm45-concurrency", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--glm45-concurrency: '0' is not accepted; accepted: a whole number of requests in flight*"])
