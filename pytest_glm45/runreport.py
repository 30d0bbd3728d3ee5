"""Assemble a session's run report from what the pool, the outcomes and the load runs recorded."""

from __future__ import annotations

from typing import Any

from pytest_glm45 import __version__, report
from pytest_glm45.settings import Settings


def build_report(settings: Settings, pool: Any, outcomes: Any, throughput: Any) -> dict[str, Any]:
    """A report (see pytest_glm45.report) for this session."""
    inventory: dict[str, Any] = {}
    gpu_name = None
    if settings.engine == "gpu":
        from pytest_glm45.inventory import read_inventory

        inv = read_inventory()
        inventory = inv.to_dict()
        gpu_name = inv.gpus[0].name if inv.gpus else None
    data = report.new_report(__version__, settings.profile.name, inventory)
    for record in pool.history:
        data["configurations"][record.config_id] = {
            "vllm_version": record.vllm_version, "engine": record.engine, "status": record.status,
            "startup_seconds": round(record.startup_seconds, 1) if record.startup_seconds is not None else None,
            "log": str(record.log_path) if record.log_path else None,
        }  # fmt: skip
    for (check, config_id), (outcome, reason) in sorted(outcomes.records.items()):
        data["configurations"].setdefault(config_id, {"vllm_version": None, "engine": None, "status": "not booted"})
        seconds = round(outcomes.seconds.get((check, config_id), 0.0), 2)
        data["checks"].append(
            {"id": check, "config": config_id, "outcome": outcome, "reason": reason, "seconds": seconds}
        )
    configs = {c.id: c for c in settings.matrix}
    for p in getattr(throughput, "points", []):
        point = {"config": p.config_id, "shape": p.shape.name, "batch": p.batch,
                 "input_len": p.shape.input_len, "output_len": p.shape.output_len, **p.metrics}  # fmt: skip
        config = configs.get(p.config_id)
        if gpu_name and config is not None:
            from pytest_glm45.preflight import tpot_floor_seconds

            floor = tpot_floor_seconds(config.model, config.plan, gpu_name)
            if floor:
                point["roofline_tpot_floor_ms"] = floor * 1000
                point["tpot_over_floor"] = p.metrics.get("median_tpot_ms", 0) / (floor * 1000)
        data["benchmarks"].append(point)
    return data
