"""Preflight verdicts on fake inventories: 8- and 16-GPU hosts of H100, H200 and A100."""

from __future__ import annotations

import pytest

from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.engine.inventory import Gpu, Inventory
from pytest_glm45.engine.matrix import parse_plan
from pytest_glm45.engine.preflight import check, tpot_floor_seconds

GIB = 2**30
KINDS = {
    "H100": ("NVIDIA H100 80GB HBM3", 80, (9, 0)),
    "H200": ("NVIDIA H200", 141, (9, 0)),
    "A100": ("NVIDIA A100-SXM4-80GB", 80, (8, 0)),
}


def host(kind: str, n: int) -> Inventory:
    name, gib, cc = KINDS[kind]
    return Inventory(tuple(Gpu(i, name, gib * GIB, cc) for i in range(n)), "550.0", "12.4", "fake")


def verdict(model: str, plan: str, kind: str, n: int, max_len: int = 65536, concurrency: int = 1):
    return check(CATALOG[model], parse_plan(plan), host(kind, n), max_len, concurrency)


@pytest.mark.parametrize("n", [8, 16])
@pytest.mark.parametrize("kind", ["H100", "H200", "A100"])
def test_air_fp8_fits_on_two_or_more(kind: str, n: int) -> None:
    v = verdict("air-fp8", "tp2", kind, n)
    if kind == "A100":
        assert v.runnable and any("Marlin" in note for note in v.notes)  # 1408/2 = 704 = 11 x 64
    else:
        assert v.runnable and any("native" in note for note in v.notes)


def test_fp8_on_a100_refuses_a_shard_marlin_cannot_tile() -> None:
    v = verdict("air-fp8", "tp4", "A100", 8)  # 1408/4 = 352, not a multiple of 64
    assert not v.runnable
    assert "Marlin" in v.summary() and "1408/4 = 352" in v.summary()
    assert verdict("air-fp8", "tp4-ep", "A100", 8).runnable  # expert parallel keeps the whole intermediate


def test_not_enough_gpus() -> None:
    v = verdict("fp8", "tp16", "H100", 8)
    assert not v.runnable and v.reasons == ["tp16 needs 16 GPUs; this host has 8"]


def test_full_bf16_needs_more_than_one_8_gpu_host() -> None:
    v = verdict("bf16", "tp8", "H100", 8)
    assert not v.runnable
    assert "weights do not fit" in v.summary() and "pp2-tp8 would fit, over 2 hosts like this one" in v.summary()
    assert "--glm45-ray-address" in v.summary()
    assert verdict("bf16", "tp16", "H100", 16).runnable  # 710 GB over 16 x 80 GiB


def test_full_fp8_on_8_h100_fits_at_64k_and_the_kv_cache_limits_128k_concurrency() -> None:
    assert verdict("fp8", "tp8", "H100", 8, 65536).runnable
    v = verdict("fp8", "tp8", "H100", 8, 131072, concurrency=32)
    assert not v.runnable and "KV cache for the planned context does not fit" in v.summary()


def test_tight_is_reported() -> None:
    v = verdict("fp8", "tp8", "H100", 8, 131072, concurrency=2)
    assert v.runnable
    assert v.tight == (v.numbers["free_gib"] < 0.1 * v.numbers["usable_gib"])


@pytest.mark.parametrize("kind", ["H100", "H200", "A100"])
def test_air_bf16_on_one_gpu_does_not_fit(kind: str) -> None:
    v = verdict("air-bf16", "tp1", kind, 8)
    assert not v.runnable  # 212 GB of BF16 weights fit no single GPU
    assert "weights do not fit" in v.summary()


def test_roofline_floor() -> None:
    floor = tpot_floor_seconds(CATALOG["air-fp8"], parse_plan("tp2"), "NVIDIA H100 80GB HBM3")
    assert floor == pytest.approx(12e9 / 2 / 3.35e12)
    assert tpot_floor_seconds(CATALOG["air-fp8"], parse_plan("tp2"), "Mystery GPU") is None


def test_the_servers_memory_flags_reach_preflight() -> None:
    from pytest_glm45.preflight import memory_settings

    assert memory_settings([]) == memory_settings(["--seed", "1"])
    m = memory_settings(["--gpu-memory-utilization", "0.8", "--kv-cache-dtype=fp8", "--gpu-memory-utilization=0.9"])
    assert (m.gpu_memory_utilization, m.kv_cache_dtype_bytes) == (0.9, 1.0)  # the last one wins, as in vLLM
    bf16_kv = verdict("fp8", "tp8", "H100", 8, 131072, concurrency=8)
    fp8_kv = check(CATALOG["fp8"], parse_plan("tp8"), host("H100", 8), 131072, 8, 0.95, m.kv_cache_dtype_bytes)
    assert fp8_kv.numbers["kv_cache_gib"] == pytest.approx(bf16_kv.numbers["kv_cache_gib"] / 2)
    assert "FP8 KV cache" in fp8_kv.summary()
    low = check(CATALOG["air-fp8"], parse_plan("tp1"), host("H100", 8), 65536, 1, 0.3)
    assert not low.runnable and "80 GiB x 0.3" in low.summary()


def test_settings_judge_with_the_server_args(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pytest_glm45.settings import SettingsError, resolve_settings

    def resolve(*server_args: str):  # type: ignore[no-untyped-def]
        return resolve_settings({"model": "air-fp8", "parallel": "tp2", "server_args": list(server_args), "unrunnable": "skip"},
                                detected_gpus=lambda: 8, cpu_cores=16, rootdir=tmp_path, inventory=lambda: host("H100", 8))  # fmt: skip

    assert resolve().matrix[0].skip_reason is None
    assert "weights do not fit" in (resolve("--gpu-memory-utilization 0.3").matrix[0].skip_reason or "")
    with pytest.raises(SettingsError, match="--gpu-memory-utilization 'high' is not a number"):
        resolve("--gpu-memory-utilization high")


def test_a_data_parallel_plan_that_does_not_fit_names_the_plan_that_does_on_this_host() -> None:
    v = verdict("fp8", "dp2-tp4", "H100", 8)
    assert not v.runnable and "82.7 GiB weights" in v.summary() and "tp8 fits on this host" in v.summary()
    assert "pp2-tp8" not in v.summary()
