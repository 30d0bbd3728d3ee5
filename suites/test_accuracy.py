"""Accuracy on real weights: does this configuration still answer questions right?

Kit-generated arithmetic and lookup questions with one correct answer each, thinking off, greedy;
the share answered exactly must reach the floor for the model (`pytest_glm45.measure.accuracy`, or an
`[[accuracy]]` entry in the thresholds file). Optionally lm-eval's GSM8K through the server's
OpenAI API, when `lm_eval` is installed. Real GLM-4.x weights only: the tiny model's seeded
weights answer nothing (logprob parity checks its numbers instead).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from pytest_glm45.clients.chat import ChatClient
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.measure import accuracy
from pytest_glm45.settings import Settings

pytestmark = [pytest.mark.glm45_live, pytest.mark.glm45_strict_irrelevant]


def _family(server: ServerHandle, settings: Settings) -> str:
    if server.model is None:
        pytest.skip(f"{server.served_name} at {server.base_url}: which GLM-4.x it serves was not declared; "
                    "add --glm45-model with its alias (air-fp8, fp8, glm-4.7, ...)")
    return server.model.family


@pytest.mark.parametrize("task", accuracy.TASKS)
def test_exact_answer_accuracy(glm45_server: ServerHandle, glm45_chat: ChatClient, glm45_settings: Settings, task: str) -> None:
    asked = accuracy.questions(task)

    def ask(q: accuracy.Question) -> str | None:
        result = glm45_chat.chat([{"role": "user", "content": q.prompt}], max_tokens=32, temperature=0.0,
                                 chat_template_kwargs={"enable_thinking": False})  # fmt: skip
        return result.content

    with ThreadPoolExecutor(max_workers=glm45_settings.concurrency) as pool:
        replies = list(pool.map(ask, asked))
    share, wrong = accuracy.score(asked, replies)
    floor, source = accuracy.floor_for(glm45_server.config_id, _family(glm45_server, glm45_settings), task, glm45_settings.thresholds)
    shown = "\n".join(f"  {q.prompt.splitlines()[-1][:70]!r}: expected {q.answer}, replied {r!r}" for q, r in wrong[:8])
    assert share >= floor, f"{glm45_server.config_id} {task}: {share:.0%} of {len(asked)} exact, floor {floor:.0%} ({source}):\n{shown}"


def test_gsm8k_through_lm_eval(glm45_server: ServerHandle, glm45_settings: Settings) -> None:
    """lm-eval's GSM8K (250 questions) through /v1/chat/completions; needs `pip install lm-eval` and its data set."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed: `pip install lm-eval[api]` runs GSM8K here")
    results = lm_eval.simple_evaluate(
        model="local-chat-completions",
        model_args=f"model={glm45_server.served_name},base_url={glm45_server.base_url}/v1/chat/completions,"
                   f"num_concurrent={glm45_settings.concurrency},max_retries=1,tokenized_requests=False",
        tasks=["gsm8k"], limit=250, apply_chat_template=True,
    )  # fmt: skip
    scores = results["results"]["gsm8k"]
    share = float(scores.get("exact_match,flexible-extract", scores.get("exact_match,strict-match", 0.0)))
    floor, source = accuracy.floor_for(glm45_server.config_id, _family(glm45_server, glm45_settings), "gsm8k", glm45_settings.thresholds)
    assert share >= floor, f"{glm45_server.config_id} GSM8K: exact match {share:.1%}, floor {floor:.0%} ({source}); all scores: {scores}"
