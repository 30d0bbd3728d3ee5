"""The `pytest-glm45` command: it resolves settings as the plugin does and prints the recipe's command."""

from __future__ import annotations

import subprocess
import sys


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_glm45.cli", *args], capture_output=True, text=True, timeout=300)


def test_serve_print_shows_the_recipe_for_a_gpu_configuration() -> None:
    done = cli("serve", "--model", "fp8", "--plan", "tp8", "--gpus", "8", "--print")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    for part in ("VLLM_ENFORCE_STRICT_TOOL_CALLING=1", "--model zai-org/GLM-4.5-FP8", "--tensor-parallel-size 8",
                 "--tool-call-parser glm45", "--reasoning-parser glm45", "--enable-auto-tool-choice", "--max-model-len 65536",
                 "--no-enable-prefix-caching", "--logits-processors pytest_glm45.replay_processor:ReplayLogitsProcessor",
                 "--gpu-memory-utilization 0.95", "--port 8000"):  # fmt: skip
        assert part in line, (part, line)
    assert "VLLM_API_KEY" not in line
    # This host has no GPUs: the same preflight as the plugin says so.
    assert "preflight: tp8 needs 8 GPUs; this host has 0" in done.stderr


def test_serve_print_on_the_cpu_engine_binds_the_server_away_from_the_client() -> None:
    done = cli("serve", "--print", "--gpus", "0")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "--served-model-name glm45-tiny" in line
    assert "--load-format" not in line  # seeded weights from the model directory: every shard the same model
    assert "VLLM_CPU_OMP_THREADS_BIND=" in line
    # The embedded default keeps vLLM's prefix cache (recipe.TINY_PREFIX_CACHING); real weights turn it off (above).
    assert "prefix-caching" not in line


def test_serve_errors_name_this_commands_options() -> None:
    done = cli("serve", "--plan", "tp3", "--print", "--gpus", "0")
    assert done.returncode != 0
    assert "--plan: 'tp3' is not accepted" in done.stderr
    done = cli("serve", "--plan", "tp1,tp2", "--print", "--gpus", "0")
    assert "one configuration at a time" in done.stderr


def test_compare_refuses_a_bad_tolerance(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = cli("compare", "a.json", "b.json", "--tolerance", "output_throughput=fast")
    assert done.returncode != 0 and "--tolerance" in done.stderr and "metric=fraction" in done.stderr
