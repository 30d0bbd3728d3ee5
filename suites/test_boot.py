"""Startup checks: how each booted server came up, read from its log.

The native Glm4MoeForCausalLM implementation was chosen (not the Transformers fallback), both
glm45 parsers are active, the KV cache holds the planned concurrency at the max model length,
and on GPUs the fused-MoE kernels are tuned (a warning, not a failure, when vLLM says it uses
its default MoE config).
"""

from __future__ import annotations

import re
import warnings

import pytest

from pytest_glm45.engine.pool import ServerHandle

pytestmark = [pytest.mark.glm45_boot, pytest.mark.glm45_strict_irrelevant]
#: Sequences at the full max model length the KV cache must hold at once.
PLANNED_CONCURRENCY = 1


@pytest.fixture
def log(glm45_server: ServerHandle) -> str:
    if glm45_server.log_path is None:
        pytest.skip("the server runs elsewhere: its log is not available to the kit")
    return glm45_server.log_path.read_text(errors="replace")


def test_native_glm4_moe_implementation_is_used(log: str) -> None:
    assert "Resolved architecture: Glm4MoeForCausalLM" in log, "vLLM did not resolve the native GLM-4.5 architecture"
    fallback = [line for line in log.splitlines() if "TransformersForCausalLM" in line or "Transformers backend" in line]
    assert not fallback, "vLLM fell back to its Transformers backend:\n" + "\n".join(fallback[:3])


def test_both_glm45_parsers_are_active(glm45_server: ServerHandle, log: str) -> None:
    """The parsers the model's recipe names (`glm45`, or `glm47` for GLM-4.7's tool calls) are the ones set."""
    model = glm45_server.model
    tool, reasoning = (model.tool_call_parser, model.reasoning_parser) if model is not None else ("glm45", "glm45")
    args = next((line for line in log.splitlines() if "non-default args:" in line), "")
    assert f"'tool_call_parser': '{tool}'" in args, f"tool-call parser not set: {args[:300]}"
    assert f"'reasoning_parser': '{reasoning}'" in args, f"reasoning parser not set: {args[:300]}"
    assert '"auto" tool choice has been enabled' in log


def test_the_parser_classes_behind_the_names_are_reported(glm45_server: ServerHandle, record_property: object) -> None:
    """Which implementation serves each parser name (since vLLM 0.24 `glm45` is the GLM-4.7 parser): recorded, and
    the installed vLLM must register the names the recipe uses."""
    from pytest_glm45.glm.parsers import describe

    if glm45_server.config is None:
        pytest.skip("the server runs elsewhere: the kit cannot see its vLLM's parser table")
    model = glm45_server.config.model
    found = describe(model.tool_call_parser, model.reasoning_parser)
    for key, value in found.items():
        record_property(key, value)  # type: ignore[operator]
    missing = [f"{kind} parser {found[kind + '_parser']!r}" for kind in ("tool_call", "reasoning") if found[kind + "_parser_class"] is None]
    assert not missing, f"the installed vLLM registers no {' and no '.join(missing)}"


def test_kv_cache_holds_the_planned_concurrency(glm45_server: ServerHandle, log: str, record_property: object) -> None:
    found = re.findall(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x", log)
    assert found, "the log does not state the KV cache's maximum concurrency"
    tokens, concurrency = int(found[-1][0].replace(",", "")), float(found[-1][1])
    record_property("kv_cache_max_concurrency", concurrency)  # type: ignore[operator]
    assert tokens == glm45_server.max_model_len
    assert concurrency >= PLANNED_CONCURRENCY, (
        f"the KV cache holds {concurrency}x {tokens}-token sequences; {PLANNED_CONCURRENCY} planned"
    )


def test_moe_kernels_are_tuned_on_gpus(glm45_server: ServerHandle, log: str) -> None:
    if glm45_server.engine not in ("gpu", "ray"):
        pytest.skip("fused-MoE kernel configs exist only on GPUs")
    default = [line for line in log.splitlines() if "Using default MoE config" in line]
    if default:
        warnings.warn(f"{glm45_server.config_id}: untuned fused-MoE kernels: {default[0].strip()}", stacklevel=1)
