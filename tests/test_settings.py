"""Settings and the matrix, as plain functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glm45.engine.matrix import Plan, parse_plan
from pytest_glm45.settings import SettingsError, resolve_settings


def settings(detected: int = 0, cores: int = 2, **values):
    return resolve_settings(values, detected_gpus=lambda: detected, cpu_cores=cores, rootdir=Path("/r"))


def test_plans_parse_to_canonical_ids() -> None:
    assert parse_plan("tp8") == Plan(tp=8)
    assert parse_plan("TP4-DP2").id == "dp2-tp4"
    assert parse_plan("tp8-ep").id == "tp8-ep"
    assert parse_plan("dp2-tp4").gpus == 8


def test_defaults_follow_the_detected_gpus() -> None:
    assert [c.id for c in settings(0).matrix] == ["tiny-bf16-tp1", "tiny-bf16-tp1-nostrict", "tiny-bf16-tp2", "tiny-bf16-tp1-si4",
                                                  "tiny-bf16-tp1-noreplay", "tiny-bf16-tp1-ngram2"]  # fmt: skip
    s = settings(8, model="air-fp8", strict_tools="on")
    assert [c.id for c in s.matrix] == ["air-fp8-tp8"] and s.gpus_from == "detected"
    assert s.max_model_len == 65536


def test_asked_for_and_not_runnable_is_an_error_naming_why() -> None:
    with pytest.raises(SettingsError) as err:
        settings(4, model="air-bf16", parallel="tp8", strict_tools="on")
    assert "air-bf16-tp8: tp8 needs 8 GPUs; this machine has 4" in str(err.value)
    assert "--glm45-unrunnable skip" in str(err.value)


def test_more_gpus_than_detected_is_a_visible_skip_when_asked() -> None:
    s = settings(4, model="air-bf16", parallel="tp8", strict_tools="on", unrunnable="skip")
    assert s.matrix[0].skip_reason == "tp8 needs 8 GPUs; this machine has 4"


def test_gpus_missing_from_the_inventory_fail_preflight() -> None:
    """--gpus 8 in a container that sees 4: preflight names the GPUs that are not there."""
    from pytest_glm45.engine.inventory import Gpu, Inventory

    four = Inventory(gpus=tuple(Gpu(index=i, name="NVIDIA H100 80GB HBM3", memory_bytes=80 * 2**30, compute_capability=(9, 0)) for i in range(4)))
    with pytest.raises(SettingsError) as err:
        resolve_settings({"model": "air-fp8", "gpus": "8", "strict_tools": "on"}, detected_gpus=lambda: 4, cpu_cores=2,
                         rootdir=Path("/r"), inventory=lambda: four)  # fmt: skip
    assert "air-fp8-tp8: preflight: tp8 needs 8 GPUs; this host has 4" in str(err.value)


def test_only_the_defaults_own_expansion_may_skip() -> None:
    one_core = settings(0, cores=1).matrix  # nothing named: tp2 on one core is a skip, not an error
    assert [c.skip_reason for c in one_core if c.plan.tp == 2] == ["tp2 needs 2 CPU cores for its workers; this machine has 1"]


def test_cpu_engine_refusals() -> None:
    reasons = {c.id: c.skip_reason for c in settings(0, model="tiny,air-fp8", parallel="tp1,dp2-tp1", strict_tools="on",
                                                     unrunnable="skip").matrix}  # fmt: skip
    assert reasons["tiny-bf16-tp1"] is None
    assert "data parallel" in (reasons["tiny-bf16-dp2-tp1"] or "")
    assert "need GPUs" in (reasons["air-fp8-tp1"] or "")
    one_core = settings(0, cores=1, parallel="tp2", strict_tools="on", unrunnable="skip").matrix[0]
    assert one_core.skip_reason == "tp2 needs 2 CPU cores for its workers; this machine has 1"


def test_remote_mode_is_declared() -> None:
    s = settings(0, base_url="http://127.0.0.1:9/v1", model="air-fp8", strict_tools="off")
    assert s.remote is not None and s.remote.base_url == "http://127.0.0.1:9"
    assert (s.remote.real_weights, s.remote.strict_tools, s.remote.config_id) == (True, False, "remote-nostrict")
    undeclared = settings(0, base_url="http://127.0.0.1:9").remote
    assert undeclared is not None and undeclared.real_weights is None and undeclared.strict_tools and not undeclared.strict_declared
    with pytest.raises(SettingsError, match="with --glm45-base-url"):
        settings(0, base_url="http://127.0.0.1:9", strict_tools="on,off")


def test_tolerances_and_numbers_are_parsed_once() -> None:
    from pytest_glm45.settings import parse_tolerances

    assert parse_tolerances("output_throughput=0.1, median_ttft_ms=0.2") == {"output_throughput": 0.1, "median_ttft_ms": 0.2}
    for bad in ("output_throughput", "=0.1", "x=abc", "x=-1"):
        with pytest.raises(SettingsError):
            parse_tolerances(bad)
    with pytest.raises(SettingsError, match="--glm45-startup-timeout"):
        settings(0, startup_timeout="-3")


def test_server_args_split_and_repeat() -> None:
    assert settings(0, server_args=["--seed 1", "--enforce-eager"]).server_args == ("--seed", "1", "--enforce-eager")


def test_errors_name_option_value_and_accepted() -> None:
    with pytest.raises(SettingsError) as err:
        settings(0, model="glm-5")
    assert (err.value.option, err.value.value) == ("--glm45-model", "glm-5")
    assert "air-fp8" in err.value.accepted


def test_hub_ids_and_paths_are_models(tmp_path: Path) -> None:
    s = settings(8, model="someone/GLM-4.5-Air-AWQ," + str(tmp_path), strict_tools="on")
    assert [m.checkpoint for m in s.models] == ["someone/GLM-4.5-Air-AWQ", str(tmp_path)]
    assert settings(8, model="zai-org/GLM-4.5-FP8", strict_tools="on").models[0].alias == "fp8"


def test_other_parallel_plans_draw_a_share_of_the_examples_except_in_full() -> None:
    s = settings(0)  # tiny-bf16-tp1, tiny-bf16-tp1-nostrict, tiny-bf16-tp2 and tp1's decode modes
    tp1, tp1_lax, tp2 = s.matrix[:3]
    assert [s.examples(100, c) for c in (tp1, tp1_lax, tp2, None)] == [100, 100, 25, 100]
    assert s.examples(2, tp2) == 1  # never zero
    full = settings(0, profile="full")
    assert [full.examples(1000, c) for c in full.matrix] == [1000] * 6


BROKEN_ENTRY = """
[[failure]]
checks = ["test_tool_calling::test_replay[*]"]
signature = { status = 500 }
evidence = { got = "HTTP 500" }
"""


def test_a_broken_known_failures_file_is_refused_when_settings_resolve(tmp_path: Path) -> None:
    """Every vllm-*.toml of the directory in use parses before anything boots, whichever version boots."""
    (tmp_path / "vllm-0.31.0.toml").write_text("")
    (tmp_path / "vllm-0.99.0.toml").write_text(BROKEN_ENTRY)
    with pytest.raises(SettingsError) as err:
        settings(0, known_failures=str(tmp_path))
    assert err.value.option == "--glm45-known-failures"
    assert f"{tmp_path / 'vllm-0.99.0.toml'}: entry 1 (['test_tool_calling::test_replay[*]']) lacks reason" in str(err.value)
    (tmp_path / "vllm-0.99.0.toml").write_text("[[failure]\n")
    with pytest.raises(SettingsError, match=r"vllm-0\.99\.0\.toml: not valid TOML"):
        settings(0, known_failures=str(tmp_path))
    (tmp_path / "vllm-0.99.0.toml").write_text("[pins]\nmax_tokens_over_window = 'reject'\n")
    assert settings(0, known_failures=str(tmp_path)).known_failures_dir == tmp_path
    with pytest.raises(SettingsError, match=r"accepted: the path of a directory of vllm-<version>\.toml files"):
        settings(0, known_failures=str(tmp_path / "missing"))


def test_a_thresholds_file_is_read_whole_when_settings_resolve(tmp_path: Path) -> None:
    """Its [[parity]] entries too, which only the parity suite reads, after a boot."""
    path = tmp_path / "thresholds.toml"
    path.write_text('[[threshold]]\nconfig = "*"\nmin_output_throughput = 1\n\n[[parity]]\nthresholds = "no-such-table"\n')
    with pytest.raises(SettingsError) as err:
        settings(0, thresholds=str(path))
    assert err.value.option == "--glm45-thresholds" and "[[parity]] entry 1: thresholds = 'no-such-table'" in str(err.value)


def test_a_broken_known_failures_dir_is_a_usage_error_and_nothing_boots(pytester: pytest.Pytester, standin: object,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    kf = tmp_path / "kf"
    kf.mkdir()
    (kf / "vllm-0.0.0-standin.toml").write_text(BROKEN_ENTRY)
    pytester.makepyfile("def test_x(glm45_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gpus", "0", "--glm45-log-dir", str(tmp_path / "logs"),
                                           "--glm45-known-failures", str(kf))  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--glm45-known-failures: *vllm-0.0.0-standin.toml: entry 1 (*) lacks reason*"])
    assert not (tmp_path / "logs").exists(), "nothing may boot"
