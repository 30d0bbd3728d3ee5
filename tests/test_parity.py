"""Logprob parity: the maths on recorded fixtures, thresholds by what differs, and the gate both ways on real vLLM."""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.engine.catalog import CATALOG, resolve_model
from pytest_glm45.measure import parity
from pytest_glm45.measure.parity import Recording, TextRecord

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> Recording:
    return Recording.from_dict(json.loads((FIXTURES / name).read_text("utf-8")))


def rec(tops: list[dict[int, float]], precision: str = "bf16", plan: str = "tp1", config: str = "c", generated_from: int | None = None,
        tokens: list[int] | None = None) -> Recording:  # fmt: skip
    tokens = tokens or [max(t, key=lambda k: t[k]) for t in tops]
    text = TextRecord(tokens, [t[k] for t, k in zip(tops, tokens, strict=True)], tops,
                      len(tops) if generated_from is None else generated_from)  # fmt: skip
    return Recording(config=config, model="m", precision=precision, plan=plan, texts={"t": text}, strings={1: "a", 2: "b", 3: "c"})


# -- the maths --------------------------------------------------------------------------------------


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise() -> None:
    p = {1: math.log(0.6), 2: math.log(0.3), 3: math.log(0.1)}
    assert parity.kl_topk(p, p) == pytest.approx(0.0, abs=1e-12)
    q = {1: math.log(0.3), 2: math.log(0.6), 3: math.log(0.1)}
    expected = 0.6 * math.log(0.6 / 0.3) + 0.3 * math.log(0.3 / 0.6)
    assert parity.kl_topk(p, q) == pytest.approx(expected)


def test_kl_renormalises_over_the_union_with_each_sides_floor() -> None:
    p = {1: math.log(0.5), 2: math.log(0.2)}
    q = {1: math.log(0.5), 3: math.log(0.2)}  # 2 missing from q: q's floor (0.2); 3 missing from p: p's floor
    pn = {1: 0.5 / 0.9, 2: 0.2 / 0.9, 3: 0.2 / 0.9}
    assert parity.kl_topk(p, q) == pytest.approx(sum(v * math.log(v / pn[k]) for k, v in pn.items()), abs=1e-12)


def test_position_figures() -> None:
    d = parity.compare_position("t", 4, False, 1, {1: -0.1, 2: -2.5}, {2: -0.3, 1: -0.9})
    assert (d.ref_top1, d.cand_top1, d.agree) == (1, 2, False)
    assert d.dlogprob == pytest.approx(0.8)
    assert d.kl > 0


def test_exact_ties_in_the_reference_count_as_agreement() -> None:
    d = parity.compare_position("t", 0, False, 1, {1: -0.7, 2: -0.7}, {2: -0.69, 1: -0.71})
    assert d.agree


def test_a_missing_reference_top1_is_judged_at_the_candidates_floor() -> None:
    d = parity.compare_position("t", 0, False, 1, {1: -0.1, 2: -2.0}, {2: -0.2, 3: -3.0})
    assert d.cand_logprob == -3.0 and d.dlogprob == pytest.approx(2.9)


def test_greedy_positions_stop_after_the_continuations_part() -> None:
    a = {1: -0.1, 2: -2.0}
    b = {2: -0.1, 1: -2.0}
    ref = rec([a, a, a, a], generated_from=1)
    cand = rec([a, b, a, a], generated_from=1)  # parts at position 1: 2 and 3 have other contexts
    diffs = parity.compare_texts(ref, cand)
    assert [d.position for d in diffs] == [0, 1]
    assert [d.agree for d in diffs] == [True, False]


def test_different_tokenizations_are_refused() -> None:
    a = {1: -0.1, 2: -2.0}
    with pytest.raises(ValueError, match="tokenizes differently"):
        parity.compare_texts(rec([a, a], tokens=[1, 1]), rec([a, a], tokens=[1, 2]))


def test_another_texts_digest_is_refused_with_the_next_step() -> None:
    ref = rec([{1: -0.1}])
    cand = rec([{1: -0.1}])
    ref.digest = "0" * 16
    with pytest.raises(ValueError, match="record the reference again"):
        parity.compare(ref, cand)


def test_recording_round_trips_through_json() -> None:
    r = fixture("parity-tiny-tp1.json")
    again = Recording.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r


def test_texts_are_seeded_and_cover_what_is_served() -> None:
    texts = parity.parity_texts()
    assert texts == parity.parity_texts()
    assert set(texts) == {"prose", "code", "tool-call", "json", "long-filler"}
    assert "<tool_call>get_weather" in texts["tool-call"] and "<arg_key>city</arg_key>" in texts["tool-call"]
    assert "def step_0" in texts["code"]
    assert len(texts["long-filler"]) > 5 * len(texts["prose"])


def test_self_consistency_names_what_contradicts() -> None:
    good = rec([{1: -0.1, 2: -2.0}] * (parity.GREEDY_TOKENS + 1), generated_from=1)
    assert parity.self_consistency(good) == []
    bad = rec([{1: -0.1, 2: -2.0}] * (parity.GREEDY_TOKENS + 1), generated_from=1)
    bad.texts["t"].logprobs[3] = -2.0  # greedy picked the second-best token
    bad.texts["t"].top[0] = {1: -2.0, 2: -0.1}  # out of rank order
    problems = parity.self_consistency(bad)
    assert any("greedy decoding chose" in p for p in problems) and any("not in order" in p for p in problems)


# -- thresholds by what differs -----------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "cand", "expected"), [
    (("bf16", "tp1"), ("bf16", "tp2"), "plan"),
    (("bf16", "tp8"), ("bf16", "tp8"), "plan"),
    (("fp8", "tp8"), ("fp8", "dp2-tp4"), "plan-fp8"),
    (("bf16", "tp8"), ("fp8", "tp8"), "precision"),
    (("bf16", "tp1"), ("fp32", "tp1"), "precision"),
    (("bf16", "tp8"), ("fp8", "dp2-tp4"), "precision"),
])  # fmt: skip
def test_thresholds_follow_what_differs(ref: tuple[str, str], cand: tuple[str, str], expected: str) -> None:
    a, b = rec([{1: -0.1}], *ref), rec([{1: -0.1}], *cand)
    assert parity.thresholds_for(a, b).name == expected


def test_thresholds_get_looser_as_more_differs() -> None:
    plan, fp8, precision = (parity.THRESHOLDS[k] for k in ("plan", "plan-fp8", "precision"))
    assert plan.max_abs_dlogprob < fp8.max_abs_dlogprob < precision.max_abs_dlogprob
    assert plan.max_kl < fp8.max_kl < precision.max_kl
    assert plan.min_top1_agreement > fp8.min_top1_agreement > precision.min_top1_agreement


def test_what_differs_names_both_sides() -> None:
    a, b = rec([{1: -0.1}], "bf16", "tp8"), rec([{1: -0.1}], "fp8", "dp2-tp4")
    b.vllm_version = "0.11.0"
    assert parity.what_differs(a, b) == ["precision bf16 -> fp8", "plan tp8 -> dp2-tp4", "vLLM None -> 0.11.0"]


def test_model_key_groups_what_the_gate_compares() -> None:
    assert parity.model_key(CATALOG["tiny"]) == parity.model_key(CATALOG["tiny-perturbed"]) == "tiny"
    assert parity.model_key(CATALOG["tiny-fp32"]) == "tiny"
    assert parity.model_key(CATALOG["tiny-pp"]) == "tiny-pp"
    assert parity.model_key(CATALOG["air-fp8"]) == parity.model_key(CATALOG["air-bf16"]) == "air"
    assert parity.model_key(CATALOG["fp8"]) == parity.model_key(resolve_model("zai-org/GLM-4.5")) == "glm45"


# -- the GPU path on recorded fixtures ----------------------------------------------------------------


def test_fp8_against_bf16_passes_the_precision_thresholds() -> None:
    result = parity.compare(fixture("parity-tiny-tp1.json"), fixture("parity-fp8-tp8.json"))
    assert result.thresholds.name == "precision"
    assert result.passed, parity.summary(result)
    # The same numbers would fail a plan-only comparison: the looser thresholds are what let them through.
    tight = parity.compare(fixture("parity-tiny-tp1.json"), fixture("parity-fp8-tp8.json"),
                           {**parity.THRESHOLDS, "precision": parity.THRESHOLDS["plan"]})  # fmt: skip
    assert not tight.passed


def test_fp8_tp8_against_dp2_tp4_passes_the_plan_thresholds() -> None:
    result = parity.compare(fixture("parity-fp8-tp8.json"), fixture("parity-fp8-dp2-tp4.json"))
    assert result.thresholds.name == "plan-fp8" and result.differs == ["plan tp8 -> dp2-tp4"]
    assert result.passed, parity.summary(result)


def test_a_broken_fp8_kernel_fails_with_a_table_of_positions() -> None:
    result = parity.compare(fixture("parity-tiny-tp1.json"), fixture("parity-fp8-broken.json"))
    assert not result.passed
    assert any("p99 |Δlogprob|" in f for f in result.failures) and any("mean KL" in f for f in result.failures)
    table = parity.worst_table(result)
    header, *rows = table.splitlines()
    assert header.split()[:5] == ["text", "pos", "token", "ref", "top-1"]
    assert len(rows) == parity.WORST
    assert rows[0].split()[0] in ("prose", "tool-call")


def test_the_tiny_models_tp2_recording_passes_against_tp1() -> None:
    result = parity.compare(fixture("parity-tiny-tp1.json"), fixture("parity-tiny-tp2.json"))
    assert result.thresholds.name == "plan" and result.passed, parity.summary(result)


def test_session_keeps_the_first_recording_and_compares_the_rest() -> None:
    session = parity.ParitySession()
    assert session.observe(fixture("parity-tiny-tp1.json")) is None
    result = session.observe(fixture("parity-fp8-broken.json"))
    assert result is not None and not result.passed
    report = session.to_report()
    assert set(report["references"]) == {"tiny"}
    pair = report["pairs"][0]
    assert pair["passed"] is False and pair["worst"][0]["ref_top1_text"] is not None
    assert report["configurations"]["tiny-bf16-tp1"]["outcome"] == "reference"
    assert report["configurations"]["glm45-fp8-tp8"]["outcome"] == "failed"
    html = parity.render_parity_section({"parity": report})
    assert "<svg" in html and "FAILED" in html and "glm45-fp8-tp8" in html


def test_a_reference_from_another_run_is_loaded_from_its_report(tmp_path: Path) -> None:
    session = parity.ParitySession()
    session.observe(fixture("parity-tiny-tp1.json"))
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"schema": 2, "parity": session.to_report()}), "utf-8")
    refs = parity.load_references(path)
    other = parity.ParitySession(refs, str(path))
    result = other.observe(fixture("parity-tiny-tp2.json"))
    assert result is not None and result.reference_source == str(path) and result.passed
    with pytest.raises(ValueError, match="holds no recording of model 'glm45'"):
        other.observe(Recording(config="glm45-fp8-tp8", model="glm45", precision="fp8", plan="tp8"))


def test_a_file_without_recordings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"schema": 2, "checks": []}), "utf-8")
    with pytest.raises(ValueError, match="not a parity recording"):
        parity.load_references(path)


# -- the gate both ways, on real vLLM -----------------------------------------------------------------


@pytest.fixture
def vllm_lock() -> Iterator[None]:
    """One vLLM server machine-wide: the lock every engineer's vLLM run takes."""
    with open("/tmp/glm45-vllm.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@pytest.mark.skipif(os.environ.get("GLM45_SKIP_VLLM") == "1", reason="GLM45_SKIP_VLLM=1")
def test_perturbed_weights_fail_parity_naming_positions(pytester: pytest.Pytester, vllm_lock: None, tmp_path: Path) -> None:
    """tiny tp1 is the reference (a skip: compared with nothing); tiny-perturbed tp1 (one expert x2, one norm +1%)
    must fail parity, with positions, whatever its self-consistency says (the report keeps both)."""
    pytest.importorskip("vllm")
    suite = Path(__file__).resolve().parent.parent / "suites" / "test_parity.py"
    pytester.makepyfile(test_parity=suite.read_text("utf-8"))
    report = tmp_path / "report"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--gpus", "0", "--glm45-model", "tiny,tiny-perturbed",
        "--glm45-parallel", "tp1", "--glm45-strict-tools", "on", "--glm45-log-dir", str(tmp_path / "logs"),
        "--glm45-report", str(report), "-q", "-rs", timeout=600,
    )  # fmt: skip
    result.assert_outcomes(skipped=1, failed=1)
    out = result.stdout.str()
    assert "tiny-bf16-tp1 is the parity reference of model 'tiny'" in out
    assert "tiny-perturbed-bf16-tp1 against tiny-bf16-tp1" in out
    assert "worst positions:" in out and "beyond the thresholds" in out
    data = json.loads((report / "report.json").read_text("utf-8"))["parity"]
    [pair] = data["pairs"]
    assert pair["candidate"] == "tiny-perturbed-bf16-tp1" and pair["passed"] is False
    assert pair["worst"] and all(w["text"] in parity.parity_texts() for w in pair["worst"])
    seen = data["configurations"]
    assert seen["tiny-bf16-tp1"]["outcome"] == "reference" and seen["tiny-bf16-tp1"]["self_consistency"] == []
    assert seen["tiny-perturbed-bf16-tp1"]["outcome"] == "failed" and "self_consistency" in seen["tiny-perturbed-bf16-tp1"]
    start = out.index("tiny-perturbed-bf16-tp1 against tiny-bf16-tp1")
    print(out[start : start + 2500])  # the figures and the table of worst positions, for the record


def test_thresholds_file_overrides_one_table_and_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[parity]]\nthresholds = "plan-fp8"\nmax_abs_dlogprob = 0.8\n', "utf-8")
    table = parity.thresholds_from_file(path)
    assert table["plan-fp8"].max_abs_dlogprob == 0.8 and table["plan-fp8"].max_kl == parity.THRESHOLDS["plan-fp8"].max_kl
    assert table["plan"] == parity.THRESHOLDS["plan"]
    path.write_text('[[parity]]\nthresholds = "fp4"\n', "utf-8")
    with pytest.raises(ValueError, match="accepted: plan, plan-fp8, precision"):
        parity.thresholds_from_file(path)
    path.write_text('[[parity]]\nthresholds = "plan"\nmax_dlogprob = 1\n', "utf-8")
    with pytest.raises(ValueError, match="accepted: min_top1_agreement"):
        parity.thresholds_from_file(path)


def test_a_parity_reference_that_is_not_one_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpus", "0", "--glm45-parity-reference", str(tmp_path / "none.json"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--glm45-parity-reference*none.json*accepted: the path of an existing report.json*"])
    bad = tmp_path / "report.json"
    bad.write_text(json.dumps({"schema": 2, "parity": {"references": {}}}), "utf-8")
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpus", "0", "--glm45-parity-reference", str(bad))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--glm45-parity-reference*holds no parity recording*"])


def test_parse_completion_reads_every_token_by_id() -> None:
    """The shape vLLM's /v1/completions returns with prompt_logprobs, and logprobs under return_tokens_as_token_ids."""
    body = {"choices": [{
        "prompt_logprobs": [None,
                            {"434": {"logprob": -11.3, "rank": 1658, "decoded_token": " weather"},
                             "372": {"logprob": -2.9, "rank": 1, "decoded_token": "wo"},
                             "110": {"logprob": -3.6, "rank": 2, "decoded_token": ""}},
                            {"372": {"logprob": -2.3, "rank": 1, "decoded_token": "wo"},
                             "778": {"logprob": -2.9, "rank": 2, "decoded_token": "54"}}],
        "logprobs": {"tokens": ["token_id:372", "token_id:9000"], "token_logprobs": [-1.8, -0.5],
                     "top_logprobs": [{"token_id:372": -1.8, "token_id:110": -4.1, "token_id:778": -3.2},
                                      {"token_id:9000": -0.5, "token_id:372": -2.0}]},
    }]}  # fmt: skip
    strings: dict[int, str] = {}
    t = parity.parse_completion(body, strings)
    assert t.generated_from == 2 and t.tokens[:2] == [434, 372] and t.logprobs[:2] == [-11.3, -2.3]
    assert t.top[0] == {372: -2.9, 110: -3.6}  # the prompt token (rank 1658) is not in the top-k
    assert t.tokens[2] == 372 and list(t.top[2].items()) == [(372, -1.8), (778, -3.2), (110, -4.1)]  # in order of rank
    assert t.tokens[3] == 9000 and 9000 not in strings  # never in a prompt: its id, no text
    rec = Recording("c", "m", "bf16", "tp1", texts={"t": t}, strings=strings)
    assert rec.token(372) == "wo" and rec.token(9000) == "#9000"
    with pytest.raises(ValueError, match="ignored the request's `prompt_logprobs`"):
        parity.parse_completion({"choices": [{"logprobs": None}]}, {})


# -- two tokens of one text (issue 29): every token read by its id --------------------------------------


def answer(name: str) -> dict[str, Any]:
    """A recorded /v1/completions answer (tests/fixtures/make_collapse_fixtures.py: made by vLLM 0.32's own code)."""
    return dict(json.loads((FIXTURES / name).read_text("utf-8")))


def test_the_request_asks_for_tokens_by_id() -> None:
    body = parity.completion_request("glm45-tiny", "text")
    assert body["return_tokens_as_token_ids"] is True and body["prompt_logprobs"] == parity.TOP_K


def test_two_tokens_of_one_text_stay_two_when_read_by_id() -> None:
    """The greedy token and the second candidate both decode to "": by id, each keeps its own logprob."""
    strings: dict[int, str] = {}
    t = parity.parse_completion(answer("completion-two-tokens-one-text-by-id.json"), strings)
    g = t.generated_from
    assert t.tokens[g] == 1201 and t.logprobs[g] == -2.4747
    assert t.top[g] == {1201: -2.4747, 1544: -2.6622, 95: -2.9013, 30: -3.3078, 88: -3.8115}
    assert len(t.tokens) - g == parity.GREEDY_TOKENS
    rec = Recording("tiny-perturbed-bf16-tp1", "tiny", "bf16", "tp1", texts={"tool-call": t}, strings=strings)
    assert parity.self_consistency(rec) == []


def test_an_answer_keyed_by_text_is_refused_naming_the_request_field() -> None:
    """Without return_tokens_as_token_ids, the two "" tokens are one entry holding the other one's value (four
    entries for five asked): read by text, the greedy token's own logprob is "above its position's top-1"."""
    body = answer("completion-two-tokens-one-text.json")
    assert body["choices"][0]["logprobs"]["top_logprobs"][0] == {"": -2.6622, " the": -2.9013, "?": -3.3078, ".": -3.8115}
    with pytest.raises(ValueError, match=r"generated position 0: the token '' is not spelled 'token_id:<id>'.*"
                                         r"`return_tokens_as_token_ids`"):  # fmt: skip
        parity.parse_completion(body, {})


def test_a_recording_read_by_text_is_refused_saying_to_record_it_again(tmp_path: Path) -> None:
    old = {**fixture("parity-tiny-tp1.json").to_dict(), "schema": 1}
    with pytest.raises(ValueError, match=r"has schema 1, from a kit that read generated tokens by their text.*record it again"):
        Recording.from_dict(old)
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"schema": 2, "parity": {"references": {"tiny": old}}}), "utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}: the parity recording of tiny-bf16-tp1 has schema 1")):
        parity.load_references(path)
