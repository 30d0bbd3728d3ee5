"""Settings and the matrix, as plain functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glm45.matrix import Plan, parse_plan
from pytest_glm45.settings import SettingsError, resolve_settings


def settings(detected: int = 0, cores: int = 2, **values):
    return resolve_settings(values, detected_gpus=lambda: detected, cpu_cores=cores, rootdir=Path("/r"))


def test_plans_parse_to_canonical_ids() -> None:
    assert parse_plan("tp8") == Plan(tp=8)
    assert parse_plan("TP4-DP2").id == "dp2-tp4"
    assert parse_plan("tp8-ep").id == "tp8-ep"
    assert parse_plan("dp2-tp4").gpus == 8


def test_defaults_follow_the_detected_gpus() -> None:
    assert [c.id for c in settings(0).matrix] == ["tiny-bf16-tp1", "tiny-bf16-tp1-nostrict", "tiny-bf16-tp2"]
    s = settings(8, model="air-fp8", strict_tools="on")
    assert [c.id for c in s.matrix] == ["air-fp8-tp8"] and s.gpus_from == "detected"
    assert s.max_model_len == 65536


def test_more_gpus_than_detected_is_a_visible_skip() -> None:
    s = settings(4, model="air-bf16", parallel="tp8", strict_tools="on")
    assert s.matrix[0].skip_reason == "tp8 needs 8 GPUs; this machine has 4"


def test_cpu_engine_refusals() -> None:
    reasons = {c.id: c.skip_reason for c in settings(0, model="tiny,air-fp8", parallel="tp1,dp2-tp1", strict_tools="on").matrix}
    assert reasons["tiny-bf16-tp1"] is None
    assert "data parallel" in (reasons["tiny-bf16-dp2-tp1"] or "")
    assert "need GPUs" in (reasons["air-fp8-tp1"] or "")
    one_core = settings(0, cores=1, parallel="tp2", strict_tools="on").matrix[0]
    assert one_core.skip_reason == "tp2 needs 2 CPU cores for its workers; this machine has 1"


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
    s = settings(0)  # tiny-bf16-tp1, tiny-bf16-tp1-nostrict, tiny-bf16-tp2
    tp1, tp1_lax, tp2 = s.matrix
    assert [s.examples(100, c) for c in (tp1, tp1_lax, tp2, None)] == [100, 100, 25, 100]
    assert s.examples(2, tp2) == 1  # never zero
    full = settings(0, profile="full")
    assert [full.examples(1000, c) for c in full.matrix] == [1000, 1000, 1000]
