"""Exact-answer accuracy: generated questions, answer extraction, floors from the thresholds file."""

from __future__ import annotations

import operator
from pathlib import Path

import pytest

from pytest_glm45.measure import accuracy


@pytest.mark.parametrize("task", accuracy.TASKS)
def test_questions_are_seeded_with_one_correct_answer(task: str) -> None:
    asked = accuracy.questions(task)
    assert asked == accuracy.questions(task) and len(asked) == accuracy.QUESTIONS
    assert len({q.prompt for q in asked}) == len(asked)
    for q in asked:
        assert q.prompt.endswith("Reply with the number only.")
        assert accuracy.extract_answer(q.answer) == q.answer


def test_arithmetic_answers_are_right() -> None:
    for q in accuracy.questions("arithmetic", 20):
        a, op, b = q.prompt.removeprefix("Compute ").split(".")[0].split()
        assert str({"+": operator.add, "-": operator.sub, "*": operator.mul}[op](int(a), int(b))) == q.answer


def test_lookup_answer_is_the_asked_rows_code() -> None:
    q = accuracy.questions("lookup", 1)[0]
    asked = q.prompt.split("code of project ")[1].split("?")[0]
    assert f"- {asked}: {q.answer}" in q.prompt


def test_unknown_task_is_refused() -> None:
    with pytest.raises(ValueError, match="accepted: arithmetic, lookup"):
        accuracy.questions("trivia")


@pytest.mark.parametrize(("reply", "expected"), [("42", "42"), ("The answer is 1,234.", "1234"), ("-17", "-17"),
                                                 ("3 + 4 = 7", "7"), ("no idea", None), (None, None)])  # fmt: skip
def test_extract_answer_takes_the_last_integer(reply: str | None, expected: str | None) -> None:
    assert accuracy.extract_answer(reply) == expected


def test_score_counts_exact_answers() -> None:
    asked = accuracy.questions("arithmetic", 4)
    share, wrong = accuracy.score(asked, [asked[0].answer, "wrong", asked[2].answer + "0", f"= {asked[3].answer}"])
    assert share == 0.5 and [q for q, _ in wrong] == [asked[1], asked[2]]


def test_floors_default_per_family_and_come_from_the_thresholds_file(tmp_path: Path) -> None:
    assert accuracy.floor_for("air-fp8-tp2", "air", "arithmetic", None)[0] == accuracy.DEFAULT_FLOORS["air"]["arithmetic"]
    path = tmp_path / "t.toml"
    path.write_text('[[accuracy]]\nconfig = "air-fp8-*"\ntask = "lookup"\nmin_accuracy = 0.97\n', "utf-8")
    assert accuracy.floor_for("air-fp8-tp2", "air", "lookup", path) == (0.97, "t.toml [[accuracy]] #1")
    assert accuracy.floor_for("air-bf16-tp2", "air", "lookup", path)[0] == accuracy.DEFAULT_FLOORS["air"]["lookup"]
    path.write_text('[[accuracy]]\nmin_accuracy = 95\n', "utf-8")
    with pytest.raises(ValueError, match="a number from 0 to 1"):
        accuracy.floor_for("air-fp8-tp2", "air", "lookup", path)
