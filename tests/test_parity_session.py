"""Who is the parity reference and what becomes of every configuration (issue 34): the reference is checked
first and compared with nothing, a failed reference fails the rest naming it, and a candidate whose
reference ran on another pytest-xdist worker is judged on the controller. Unit tests on built
recordings, then the suite on stand-in servers (tests/standin_server.py serves /v1/completions logprobs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.measure import parity
from pytest_glm45.measure.parity import Recording, TextRecord
from pytest_glm45.measure.parity_session import CANDIDATE, REFERENCE, WAITING, ParitySession, settle_verdicts
from pytest_glm45.records.verdict import CheckRecord, Verdicts

GOOD = {1: -0.1, 2: -2.5, 3: -3.0}
OTHER = {2: -0.1, 1: -2.5, 3: -3.0}  # another top-1: the candidate disagrees everywhere
CHECK = "test_parity::test_logprobs_match_the_reference"


def rec(config: str, top: dict[int, float] = GOOD, plan: str = "tp1", contradict: bool = False) -> Recording:
    """A recording of one text: 4 prompt positions and the greedy ones, every position `top`."""
    n = 4 + parity.GREEDY_TOKENS
    tokens = [1] * 4 + [max(top, key=lambda k: top[k])] * parity.GREEDY_TOKENS  # the prompt's, then greedy
    text = TextRecord(tokens, [top[t] for t in tokens], [dict(top) for _ in range(n)], 4)
    if contradict:
        text.logprobs[5] = 0.5  # a logprob above 0
    return Recording(config=config, model="tiny", precision="bf16", plan=plan, texts={"prose": text}, strings={1: "a", 2: "b"})


def planned(*configs: str, deferred: bool = False) -> ParitySession:
    session = ParitySession(deferred=deferred)
    session.plan([(c, "tiny") for c in configs])
    return session


def test_the_reference_is_checked_and_compared_with_nothing() -> None:
    session = planned("tiny-bf16-tp1", "tiny-bf16-tp2")
    ref = session.check(rec("tiny-bf16-tp1"))
    assert ref.role == REFERENCE and not ref.failed and ref.pair is None
    assert "is the parity reference of model 'tiny'" in ref.message() and "nothing is compared" in ref.message()
    cand = session.check(rec("tiny-bf16-tp2", plan="tp2"))
    assert cand.role == CANDIDATE and cand.pair is not None and cand.pair.passed and not cand.failed
    seen = session.to_report()["configurations"]
    assert (seen["tiny-bf16-tp1"]["outcome"], seen["tiny-bf16-tp2"]["outcome"]) == ("reference", "passed")


def test_a_reference_that_contradicts_itself_is_no_reference_and_the_rest_fail_naming_it() -> None:
    session = planned("tiny-bf16-tp1", "tiny-bf16-tp2", "tiny-bf16-tp4")
    ref = session.check(rec("tiny-bf16-tp1", contradict=True))
    assert ref.role == REFERENCE and ref.failed and "contradict themselves" in ref.message()
    assert "tiny" not in session.references
    for config in ("tiny-bf16-tp2", "tiny-bf16-tp4"):  # never quietly the next reference
        out = session.check(rec(config, plan=config[-3:]))
        assert out.failed and out.pair is None
        assert "no parity verdict: the parity reference tiny-bf16-tp1 of model 'tiny' failed" in out.message()
    report = session.to_report()
    assert report["failed_references"]["tiny"].startswith("the parity reference tiny-bf16-tp1")
    assert report["configurations"]["tiny-bf16-tp1"]["outcome"] == "reference, failed"
    assert "no reference for tiny" in parity.render_parity_section({"parity": report}).lower()


def test_a_reference_whose_recording_failed_fails_the_rest_naming_it() -> None:
    session = planned("tiny-bf16-tp1", "tiny-bf16-tp2")
    session.recording_failed("tiny-bf16-tp1", "HttpError: 500 on /v1/completions")
    out = session.check(rec("tiny-bf16-tp2", plan="tp2"))
    assert out.failed and "tiny-bf16-tp1 of model 'tiny' failed to record its logprobs: HttpError: 500" in out.message()


def test_a_reference_that_never_recorded_fails_the_rest_naming_it() -> None:
    """Its server did not boot: its check never ran. The next configuration does not become the reference."""
    session = planned("tiny-bf16-tp1", "tiny-bf16-tp2", "tiny-bf16-tp4")
    for config in ("tiny-bf16-tp2", "tiny-bf16-tp4"):
        out = session.check(rec(config, plan=config[-3:]))
        assert out.role == CANDIDATE and out.failed
        assert "the parity reference tiny-bf16-tp1 of model 'tiny' has no recording" in out.message()
    assert not session.references


def test_a_candidate_is_judged_whatever_its_self_consistency_says_and_both_are_reported() -> None:
    session = planned("tiny-bf16-tp1", "tiny-perturbed-bf16-tp1")
    session.check(rec("tiny-bf16-tp1"))
    out = session.check(rec("tiny-perturbed-bf16-tp1", OTHER, contradict=True))
    assert out.pair is not None and not out.pair.passed and out.problems
    text = out.message()
    assert "tiny-perturbed-bf16-tp1 against tiny-bf16-tp1" in text and "worst positions:" in text
    assert "the server's logprobs contradict themselves" in text
    report = session.to_report()
    assert report["configurations"]["tiny-perturbed-bf16-tp1"]["self_consistency"] == out.problems
    assert "contradict themselves too" in parity.render_parity_section({"parity": report})


def test_under_xdist_a_candidate_whose_reference_is_elsewhere_is_judged_on_the_controller() -> None:
    worker_a, worker_b = planned("tiny-bf16-tp1", "tiny-bf16-tp2", "tiny-bf16-tp4", deferred=True), \
        planned("tiny-bf16-tp1", "tiny-bf16-tp2", "tiny-bf16-tp4", deferred=True)  # fmt: skip
    # Worker b records its candidates before worker a has recorded the reference.
    assert worker_b.check(rec("tiny-bf16-tp2", plan="tp2"), CHECK).role == WAITING
    waiting = worker_b.check(rec("tiny-bf16-tp4", OTHER, plan="tp4"), CHECK)
    assert waiting.role == WAITING and not waiting.failed and "the controller compares them" in waiting.message()
    assert worker_a.check(rec("tiny-bf16-tp1"), CHECK).role == REFERENCE
    controller = ParitySession()
    verdicts = Verdicts()
    for config in ("tiny-bf16-tp1", "tiny-bf16-tp2", "tiny-bf16-tp4"):  # what the workers' skips left in the tally
        verdicts.records[(CHECK, config)] = CheckRecord(CHECK, config, "skipped", seconds=1.5)
    for worker in (worker_b, worker_a):  # through xdist's workeroutput: plain JSON
        controller.absorb(json.loads(json.dumps(worker.carry())))
    lines, failed = settle_verdicts(controller, verdicts)
    assert failed and len(lines) == 2
    assert verdicts.records[(CHECK, "tiny-bf16-tp1")].outcome == "skipped"  # the reference: compared with nothing
    assert verdicts.records[(CHECK, "tiny-bf16-tp2")].outcome == "passed"
    tp4 = verdicts.records[(CHECK, "tiny-bf16-tp4")]
    assert tp4.outcome == "failed" and "tiny-bf16-tp4 against tiny-bf16-tp1" in tp4.reason and tp4.seconds == 1.5
    report = controller.to_report()
    assert [(p["candidate"], p["passed"]) for p in report["pairs"]] == [("tiny-bf16-tp2", True), ("tiny-bf16-tp4", False)]
    assert set(report["references"]) == {"tiny"} and set(report["recordings"]) == {"tiny-bf16-tp2", "tiny-bf16-tp4"}
    assert controller.settle() == []  # judged once


def test_under_xdist_a_failed_reference_on_another_worker_fails_the_waiting_ones() -> None:
    worker_a, worker_b = (planned("tiny-bf16-tp1", "tiny-bf16-tp2", deferred=True) for _ in range(2))
    worker_b.check(rec("tiny-bf16-tp2", plan="tp2"), CHECK)
    worker_a.check(rec("tiny-bf16-tp1", contradict=True), CHECK)
    controller = ParitySession()
    for worker in (worker_a, worker_b):
        controller.absorb(json.loads(json.dumps(worker.carry())))
    [(check, out)] = controller.settle()
    assert check == CHECK and out.failed and "the parity reference tiny-bf16-tp1 of model 'tiny' failed" in out.message()


# -- the suite on stand-in servers --------------------------------------------------------------------


SUITE = Path(__file__).resolve().parent.parent / "suites" / "test_parity.py"


def run_suite(pytester: pytest.Pytester, tmp_path: Path, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    pytester.makepyfile(test_parity=SUITE.read_text("utf-8"))
    report = tmp_path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--glm45-log-dir", str(tmp_path / "logs"),
                                           "--glm45-report", str(report), "-rs", *args, timeout=300)  # fmt: skip
    return result, json.loads((report / "report.json").read_text("utf-8"))


@pytest.mark.parametrize(("rule", "outcomes", "says"), [
    # tp2's logits moved by noise: the reference is a skip, tp2 fails with its figures and worst positions
    ("--tensor-parallel-size 2=skew=1.5", {"skipped": 1, "failed": 1}, ["tiny-bf16-tp2 against tiny-bf16-tp1", "worst positions:"]),
    ("--tensor-parallel-size 2=skew=0.001", {"skipped": 1, "passed": 1}, []),
    # on every server, the greedy token and another candidate decode to "" (issue 29): read by id, both pass
    ("--tensor-parallel-size=collapse", {"skipped": 1, "passed": 1}, []),
    ("--tensor-parallel-size 1=contradict", {"failed": 2},
     ["the parity reference tiny-bf16-tp1 of model 'tiny' failed: its logprobs contradict themselves"]),
    ("--tensor-parallel-size 1=fail", {"failed": 2},
     ["the parity reference tiny-bf16-tp1 of model 'tiny' failed to record its logprobs: HttpError"]),
])  # fmt: skip
def test_the_reference_is_a_skip_and_a_failed_one_fails_the_rest(pytester: pytest.Pytester, standin: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, rule: str,
                                                                 outcomes: dict[str, int], says: list[str]) -> None:  # fmt: skip
    monkeypatch.setenv("STANDIN_PARITY", rule)
    result, report = run_suite(pytester, tmp_path, "--gpus", "0", "--glm45-model", "tiny", "--glm45-parallel", "tp1,tp2",
                               "--glm45-strict-tools", "on")  # fmt: skip
    result.assert_outcomes(**outcomes)
    out = result.stdout.str()
    for text in says:
        assert text in out, out
    checks = {c["config"]: c for c in report["checks"]}
    seen = report["parity"]["configurations"]
    if "skipped" in outcomes:
        assert checks["tiny-bf16-tp1"]["outcome"] == "skipped" and seen["tiny-bf16-tp1"]["outcome"] == "reference"
        assert "tiny-bf16-tp1 is the parity reference of model 'tiny'" in checks["tiny-bf16-tp1"]["observed"]
        [pair] = report["parity"]["pairs"]
        assert pair["candidate"] == "tiny-bf16-tp2" and pair["passed"] is ("passed" in outcomes)
    else:
        assert report["parity"]["pairs"] == [] and set(report["parity"]["failed_references"]) == {"tiny"}
        assert checks["tiny-bf16-tp2"]["outcome"] == "failed" and "no parity verdict" in checks["tiny-bf16-tp2"]["reason"]
