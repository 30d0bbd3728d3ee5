"""The serving recipe: a configuration of the matrix becomes a ServerSpec.

`vllm serve <checkpoint> --tensor-parallel-size N --tool-call-parser glm45 --reasoning-parser
glm45 --enable-auto-tool-choice` plus, on GPUs, `--gpu-memory-utilization 0.95`; the kit adds
the replay processor, turns prefix caching off (throughput is measured on the same server as
conformance, and the recipe benchmarks without it) and sets tool-calling strictness through
VLLM_ENFORCE_STRICT_TOOL_CALLING.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pytest_glm45.matrix import Configuration
from pytest_glm45.server import ServerSpec
from pytest_glm45.tinymodel import ensure_tiny_model

TINY_SERVED_NAME = "glm45-tiny"
#: KV cache for the tiny model on the CPU engine, GiB: at 512 bytes a token it holds ~2M tokens.
TINY_KV_CACHE_GIB = 1


def cpu_bind(tp: int) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `tp` workers on this machine: one core each, `0|1` for tp2."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    per = max(1, len(cores) // tp)
    groups = [cores[i * per : (i + 1) * per] for i in range(tp)]
    return "|".join(",".join(str(c) for c in g) if len(g) > 1 else str(g[0]) for g in groups)


def spec_for(
    config: Configuration,
    extra_args: Sequence[str] = (),
    cache_dir: Path | None = None,
    gpu_ids: Sequence[int] | None = None,
) -> ServerSpec:
    """The ServerSpec that serves `config` as the recipe describes."""
    env: dict[str, str] = {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "1" if config.strict_tools else "0"}
    args: list[str] = []
    if config.model.is_tiny:
        tiny = ensure_tiny_model(cache_dir)
        model, served, load_format, dtype = str(tiny.path), TINY_SERVED_NAME, "dummy", "bfloat16"
    else:
        model, served, load_format, dtype = config.model.checkpoint, config.model.checkpoint, None, None
    if config.engine == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(TINY_KV_CACHE_GIB)
        if config.plan.tp > 1:
            # Without an explicit bind vllm-cpu refuses tp2 here ("Not enough allowed NUMA nodes").
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind(config.plan.tp)
    else:
        args += ["--gpu-memory-utilization", "0.95"]
        if gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    # GLM45_SERVER_ENTRY swaps vLLM for a script: the kit's own tests use it to inject faults.
    entry = os.environ.get("GLM45_SERVER_ENTRY")
    return ServerSpec(
        entry=(entry,) if entry else ServerSpec.entry,
        model=model,
        served_name=served,
        config_id=config.id,
        dtype=dtype,
        tensor_parallel=config.plan.tp,
        data_parallel=config.plan.dp,
        expert_parallel=config.plan.ep,
        max_model_len=config.max_model_len,
        load_format=load_format,
        prefix_caching=False,
        replay=True,
        extra_args=tuple(args) + tuple(extra_args),
        env=tuple(sorted(env.items())),
    )
