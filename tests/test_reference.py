"""A report's configurations named again (box acceptance runs a reference's own plans), and checkpoint directories
recognised as catalog models from their config.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_glm45.catalog import CATALOG, UnknownModel, resolve_model
from pytest_glm45.reports.reference import ReferenceError, parse_config_id, run_plan
from pytest_glm45.settings import SettingsError, resolve_settings

ROOT = Path(__file__).resolve().parent.parent
H100X8 = ROOT / "tests" / "fixtures" / "inventory-8xH100.json"


def ran(*ids: str) -> dict:
    return {"configurations": {i: {"vllm_version": "0.32.0"} for i in ids}}


def test_config_ids_read_back() -> None:
    air = parse_config_id("air-fp8-dp2-tp4-nostrict")
    assert air is not None and (air.alias, air.plan.id, air.strict_tools, air.model_family) == ("air-fp8", "dp2-tp4", False, "glm-4.5-air")
    full = parse_config_id("glm45-fp8-tp8-ep")
    assert full is not None and (full.alias, full.plan.id, full.strict_tools) == ("fp8", "tp8-ep", True)
    tiny = parse_config_id("tiny-4.7-bf16-tp1")
    assert tiny is not None and tiny.alias == "tiny-4.7" and tiny.model_family == "glm-4.7"
    assert parse_config_id("remote") is None and parse_config_id("my_model-bf16-tp1") is None


@pytest.mark.parametrize(
    ("ids", "args"),
    [
        # The default expansion: strict everywhere, lax on the first plan (the one with the lax twin goes first).
        (("air-fp8-tp4", "air-fp8-tp4-nostrict"), ["--glm45-model", "air-fp8", "--glm45-parallel", "tp4"]),
        (("glm45-fp8-tp8", "glm45-fp8-tp8-ep", "glm45-fp8-tp8-ep-nostrict"),
         ["--glm45-model", "fp8", "--glm45-parallel", "tp8-ep,tp8"]),
        (("air-fp8-tp4", "air-fp8-tp8"), ["--glm45-model", "air-fp8", "--glm45-parallel", "tp4,tp8", "--glm45-strict-tools", "on"]),
        (("air-fp8-tp4-nostrict",), ["--glm45-model", "air-fp8", "--glm45-parallel", "tp4", "--glm45-strict-tools", "off"]),
        (("air-fp8-tp2", "air-fp8-tp2-nostrict", "air-fp8-tp4", "air-fp8-tp4-nostrict"),
         ["--glm45-model", "air-fp8", "--glm45-parallel", "tp2,tp4", "--glm45-strict-tools", "on,off"]),
    ],
)  # fmt: skip
def test_the_options_make_exactly_the_reports_configurations(ids: tuple[str, ...], args: list[str]) -> None:
    plan = run_plan(ran(*ids))
    assert plan.pytest_args() == args and not plan.extra


def test_options_that_cannot_make_exactly_them_name_the_extra_ones() -> None:
    plan = run_plan(ran("air-fp8-tp4", "glm45-fp8-tp8"))
    assert plan.models == ("air-fp8", "fp8") and set(plan.extra) == {"air-fp8-tp8", "glm45-fp8-tp4"}
    with pytest.raises(ReferenceError, match="remote name no model of the catalog"):
        run_plan(ran("remote"))


def test_the_command_prints_a_reports_plans_for_pytest_and_preflight() -> None:
    report = ROOT / "docs" / "measurements" / "report-vllm-0.32.0.json"
    out = [subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "plans", str(report), *extra], capture_output=True,
                          text=True, check=True).stdout.strip() for extra in ([], ["--preflight"])]  # fmt: skip
    assert out == ["--glm45-model tiny --glm45-parallel tp1,tp2", "--model tiny --plan tp1,tp2"]


def checkpoint(tmp_path: Path, layers: int, hidden: int, context: int = 131072, fp8: bool = True) -> Path:
    path = tmp_path / "ckpt"
    path.mkdir()
    quant = {"quant_method": "compressed-tensors", "format": "float-quantized",
             "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float"}}}}  # fmt: skip
    (path / "config.json").write_text(json.dumps({"architectures": ["Glm4MoeForCausalLM"], "num_hidden_layers": layers,
                                                  "hidden_size": hidden, "max_position_embeddings": context,
                                                  **({"quantization_config": quant} if fp8 else {})}))  # fmt: skip
    return path


def test_a_checkpoint_directory_is_its_catalog_model_served_from_there(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, 46, 4096)
    info = resolve_model(str(path), path_exists=True)
    assert info.label == "air-fp8" and info.checkpoint == str(path) and info.weight_bytes == CATALOG["air-fp8"].weight_bytes
    named = resolve_model(f"glm-4.7={path}")
    assert named.alias == "glm-4.7" and named.checkpoint == str(path) and named.tool_call_parser == "glm47"
    assert resolve_model("air-fp8=myorg/GLM-4.5-Air-FP8-tuned").checkpoint == "myorg/GLM-4.5-Air-FP8-tuned"
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert resolve_model(str(path), path_exists=True).weight_bytes is None  # not GLM-4.x: a model the kit knows by name only


def test_glm_4_6_and_4_7_paths_must_be_named(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, 92, 5120, context=202752, fp8=False)
    with pytest.raises(UnknownModel, match=f"GLM-4.6 or GLM-4.7.*accepted: name it, e.g. glm-4.7={path}"):
        resolve_model(str(path), path_exists=True)
    with pytest.raises(SettingsError, match=r"accepted: name it, e\.g\. glm-4\.7="):
        resolve_settings({"model": str(path), "gpus": "8"}, detected_gpus=lambda: 8, cpu_cores=2, rootdir=tmp_path)


def test_preflight_and_settings_take_a_checkpoint_path_on_an_8_x_h100_box(tmp_path: Path) -> None:
    path = checkpoint(tmp_path, 92, 5120)
    env = {**os.environ, "GLM45_INVENTORY": str(H100X8)}
    done = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "preflight", "--model", str(path), "--plan", "tp8,dp2-tp4"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "glm45-fp8-tp8            RUNS  fits:" in done.stdout and "41.3 GiB weights" in done.stdout
    assert "glm45-fp8-dp2-tp4        SKIP  the FP8 weights do not fit" in done.stdout and "tp8 fits on this host" in done.stdout
    from pytest_glm45.inventory import from_file

    settings = resolve_settings({"model": str(path), "parallel": "tp8"}, detected_gpus=lambda: 8, cpu_cores=16,
                                rootdir=tmp_path, inventory=lambda: from_file(H100X8))  # fmt: skip
    assert [c.id for c in settings.matrix] == ["glm45-fp8-tp8", "glm45-fp8-tp8-nostrict"]
    assert settings.matrix[0].model.checkpoint == str(path) and settings.matrix[0].skip_reason is None


def test_preflight_of_the_tiny_model_on_a_cpu_host_is_not_a_refusal(tmp_path: Path) -> None:
    """Box acceptance on the CPU engine runs preflight of the reference's plans too: the tiny model has no GPU to judge."""
    (tmp_path / "none.json").write_text('{"gpus": []}')
    env = {**os.environ, "GLM45_INVENTORY": str(tmp_path / "none.json")}
    done = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "preflight", "--model", "tiny,air-fp8", "--plan", "tp1"],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert "tiny-bf16-tp1            CPU   the kit's tiny model on the CPU engine" in done.stdout
    assert "air-fp8-tp1              SKIP  tp1 needs 1 GPUs; this host has 0" in done.stdout and done.returncode == 1
