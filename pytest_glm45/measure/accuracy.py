"""Exact-answer accuracy on real weights: kit-generated questions with one correct answer.

Two tasks, both seeded and generated here (nothing downloaded): `arithmetic` (sums and products of
two- and three-digit numbers) and `lookup` (a short table of made-up codes, then one code asked
for). The answer is the last integer in the reply. Floors per model family are data below and can
be set per configuration in the thresholds file:

    [[accuracy]]
    config = "air-fp8-*"   # a pattern on the configuration id (pytest_glm45.records.ids)
    task = "arithmetic"    # arithmetic, lookup, gsm8k, or *
    min_accuracy = 0.95

The last matching entry wins over the default. `gsm8k` is lm-eval's GSM8K through the server's
OpenAI API, when the user installs `lm_eval` (its exact-match score, flexible extraction).
"""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_glm45.records.ids import matches

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TASKS = ("arithmetic", "lookup")
#: Questions per task: enough that one wrong answer moves the score by 2%.
QUESTIONS = 50
#: Default floors by model family. GLM-4.5 and -Air answer two-number arithmetic and a ten-row lookup
#: all but perfectly with thinking off; a broken kernel or shard drops far below (and GSM8K: the
#: model cards report ~0.9 with chain of thought, a floor of 0.8 leaves room for lm-eval's extraction).
DEFAULT_FLOORS: dict[str, dict[str, float]] = {
    "air": {"arithmetic": 0.9, "lookup": 0.9, "gsm8k": 0.8},
    "glm45": {"arithmetic": 0.9, "lookup": 0.9, "gsm8k": 0.8},
}
#: Any other family of real GLM-4.x weights.
FALLBACK_FLOORS = {"arithmetic": 0.8, "lookup": 0.8, "gsm8k": 0.7}

_NAMES = ("amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "iris", "juniper", "krypton",
          "lumen", "marble", "nectar", "onyx", "pepper", "quartz", "raven", "saffron", "tundra")  # fmt: skip


@dataclass(frozen=True)
class Question:
    """One prompt with its one correct answer (an integer, as text)."""

    task: str
    prompt: str
    answer: str


def questions(task: str, n: int = QUESTIONS, seed: int = 4545) -> list[Question]:
    """`n` seeded questions of `task`; raises ValueError naming the tasks for an unknown one."""
    rng = random.Random(f"{seed}:{task}")
    if task == "arithmetic":
        out = []
        for _ in range(n):
            a, b = rng.randint(12, 999), rng.randint(12, 99)
            op = rng.choice(["+", "-", "*"])
            value = a + b if op == "+" else a - b if op == "-" else a * b
            out.append(Question(task, f"Compute {a} {op} {b}. Reply with the number only.", str(value)))
        return out
    if task == "lookup":
        out = []
        for _ in range(n):
            names = rng.sample(_NAMES, 10)
            codes = {name: rng.randint(1000, 9999) for name in names}
            table = "\n".join(f"- {name}: {code}" for name, code in codes.items())
            asked = rng.choice(names)
            out.append(Question(task, f"Here are ten project codes:\n{table}\nWhat is the code of project {asked}? "
                                      "Reply with the number only.", str(codes[asked])))  # fmt: skip
        return out
    raise ValueError(f"unknown accuracy task {task!r}; accepted: {', '.join(TASKS)}")


_INT = re.compile(r"-?\d[\d,]*")


def extract_answer(reply: str | None) -> str | None:
    """The last integer in a reply (thousands separators dropped), or None."""
    found = _INT.findall(reply or "")
    return found[-1].replace(",", "") if found else None


def score(asked: list[Question], replies: list[str | None]) -> tuple[float, list[tuple[Question, str | None]]]:
    """(the share answered exactly, the wrong ones with what was replied)."""
    wrong = [(q, r) for q, r in zip(asked, replies, strict=True) if extract_answer(r) != q.answer]
    return (1 - len(wrong) / len(asked)) if asked else 0.0, wrong


def floor_for(config_id: str, family: str, task: str, thresholds: Path | None) -> tuple[float, str]:
    """The minimum accuracy for `task` on this configuration and where it comes from."""
    floor = DEFAULT_FLOORS.get(family, FALLBACK_FLOORS)[task]
    source = f"pytest_glm45.measure.accuracy default for {family}"
    if thresholds is None:
        return floor, source
    data = tomllib.loads(thresholds.read_text("utf-8"))
    for n, entry in enumerate(data.get("accuracy", []), 1):
        value = entry.get("min_accuracy")
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{thresholds}: [[accuracy]] entry {n}: min_accuracy = {value!r}; accepted: a number from 0 to 1")
        if matches(config_id, str(entry.get("config", "*"))) and matches(task, str(entry.get("task", "*"))):
            floor, source = float(value), f"{thresholds.name} [[accuracy]] #{n}"
    return floor, source
