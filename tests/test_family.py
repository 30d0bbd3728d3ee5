"""The GLM-4.x family: GLM-4.6 and GLM-4.7 in the catalog, their recipes' parsers, preflight on fake 8-GPU hosts,
and which parser class really serves each name."""

from __future__ import annotations

import pytest

from pytest_glm45.cli import main
from pytest_glm45.engine.catalog import CATALOG, resolve_model
from pytest_glm45.engine.inventory import Gpu, Inventory
from pytest_glm45.engine.matrix import Configuration, parse_plan
from pytest_glm45.engine.preflight import check
from pytest_glm45.engine.recipe import vllm_args
from pytest_glm45.glm.parsers import describe, parser_class, registry

GIB = 2**30


def host(kind: str, n: int = 8) -> Inventory:
    name, gib = {"H100": ("NVIDIA H100 80GB HBM3", 80), "H200": ("NVIDIA H200", 141)}[kind]
    return Inventory(tuple(Gpu(i, name, gib * GIB, (9, 0)) for i in range(n)), "550.0", "12.4", "fake")


@pytest.mark.parametrize(
    ("alias", "checkpoint", "tool_parser", "fmt", "context"),
    [
        ("bf16", "zai-org/GLM-4.5", "glm45", "native", 131072),
        ("glm-4.6", "zai-org/GLM-4.6", "glm45", "native", 202752),
        ("glm-4.6-fp8", "zai-org/GLM-4.6-FP8", "glm45", "native", 202752),
        ("glm-4.7", "zai-org/GLM-4.7", "glm47", "compact", 202752),
        ("glm-4.7-fp8", "zai-org/GLM-4.7-FP8", "glm47", "compact", 202752),
    ],
)
def test_each_generation_has_its_recipes_parsers_format_and_context(alias: str, checkpoint: str, tool_parser: str, fmt: str, context: int) -> None:
    model = CATALOG[alias]
    assert resolve_model(checkpoint) == model
    assert (model.tool_call_parser, model.reasoning_parser, model.tool_call_format) == (tool_parser, "glm45", fmt)
    assert model.max_position_embeddings == context
    args = vllm_args(Configuration(model=model, plan=parse_plan("tp8"), engine="gpu", max_model_len=65536), model.checkpoint, model.checkpoint)
    assert args[args.index("--tool-call-parser") + 1] == tool_parser and args[args.index("--reasoning-parser") + 1] == "glm45"


def test_configuration_ids_name_the_generation() -> None:
    ids = [Configuration(model=CATALOG[a], plan=parse_plan("tp8"), engine="gpu").id for a in ("fp8", "glm-4.6-fp8", "glm-4.7")]
    assert ids == ["glm45-fp8-tp8", "glm46-fp8-tp8", "glm47-bf16-tp8"]


@pytest.mark.parametrize("alias", ["glm-4.6-fp8", "glm-4.7-fp8"])
def test_fp8_runs_on_8_h100_at_the_recipe_length(alias: str) -> None:
    v = check(CATALOG[alias], parse_plan("tp8"), host("H100"), 65536)
    assert v.runnable and "FP8 native kernels" in v.summary()


@pytest.mark.parametrize("alias", ["glm-4.6", "glm-4.7"])
def test_bf16_needs_h200s_or_two_hosts(alias: str) -> None:
    assert check(CATALOG[alias], parse_plan("tp8"), host("H200"), 202752).runnable
    on_h100 = check(CATALOG[alias], parse_plan("tp8"), host("H100"), 65536)
    assert not on_h100.runnable and "pp2-tp8 would fit" in on_h100.summary()


def test_the_full_202752_token_context_is_sized() -> None:
    v = check(CATALOG["glm-4.6-fp8"], parse_plan("tp8"), host("H100"), 202752, concurrency=4)
    assert v.numbers["max_model_len"] == 202752 and v.numbers["kv_cache_gib"] == pytest.approx(4 * 202752 * 92 * 2 * 128 * 2 / GIB)


def test_serve_prints_glm47s_recipe_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "glm-4.7", "--plan", "tp8", "--print"]) == 0
    out = capsys.readouterr().out
    assert "--model zai-org/GLM-4.7 " in out and "--tensor-parallel-size 8" in out
    assert "--tool-call-parser glm47 --reasoning-parser glm45 --enable-auto-tool-choice" in out


def test_the_installed_vllm_says_which_class_serves_each_parser_name() -> None:
    if not registry("tool"):
        pytest.skip("no vLLM installed here to read the parser table of")
    found = describe("glm45", "glm45")
    assert found["tool_call_parser_class"] and found["tool_call_parser_class"].endswith("ToolParser")
    assert found["reasoning_parser_class"]
    assert parser_class("tool", "glm47") is not None
    assert parser_class("tool", "no-such-parser") is None


@pytest.mark.parametrize(
    ("alias", "declared", "served", "expected"),
    [
        ("tiny", None, "glm45-tiny", ("glm-4.5", "4.5", "native", False)),  # booted: its configuration's model
        ("tiny-4.7", None, "glm45-tiny", ("glm-4.7", "4.7", "compact", True)),  # the name does not matter then
        (None, "glm-4.7-fp8", "served-as-anything", ("glm-4.7", "4.7", "compact", True)),  # remote, declared
        (None, None, "zai-org/GLM-4.7-FP8", (None, "4.7", "compact", True)),  # remote, undeclared: its name says
        (None, None, "my-model", (None, "4.5", "native", False)),  # remote, undeclared, the name says nothing
    ],
)
def test_which_model_a_server_serves_is_decided_by_its_handle(
    alias: str | None, declared: str | None, served: str, expected: tuple[str | None, str, str, bool]
) -> None:
    """One place: the family known failures name, the generation, the tool-call format a check calls the model's
    own and whether replay drops a script's leading <think> (the fixtures' opens_think read only the model, so an
    undeclared GLM-4.7 server got GLM-4.5's replay and GLM-4.7's format)."""
    from pytest_glm45.engine.handle import ServerHandle
    from pytest_glm45.records.known_failures import KnownFailures

    config = Configuration(resolve_model(alias), parse_plan("tp1"), strict_tools=True, engine="cpu") if alias else None
    handle = ServerHandle(config, config.id if config else "remote", "http://127.0.0.1:1", None, served, None, None, None,
                          "cpu" if config else "remote", None, 8192, True, KnownFailures(()),
                          declared_model=resolve_model(declared) if declared else None)  # fmt: skip
    assert (handle.model_family, handle.generation, handle.own_format, handle.opens_think) == expected
