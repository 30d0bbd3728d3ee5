"""Run reports: JSON a machine reads (and `pytest_glm45.report_html` renders for a person).

A report holds, per configuration, the vLLM version, engine, distribution and boot; the
hardware inventory; every check's stable id, outcome (passed, failed, error, known failure,
unexpected pass, skipped), reason, the failure text observed for every check that did not
pass, and the known-failure entry that judged it; and every throughput point's figures (the
median over its rounds, each round's values, and the figures marked invalid with why).
`pytest_glm45.compare` says what changed between two reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_glm45 import __version__
from pytest_glm45.report_html import render_html

if TYPE_CHECKING:
    from pytest_glm45.pool import BootRecord
    from pytest_glm45.settings import Settings
    from pytest_glm45.throughput import Point
    from pytest_glm45.verdict import Verdicts

SCHEMA = 2
#: Schemas `load` reads: 1 lacks observed failure texts and per-round figures.
READABLE_SCHEMAS = (1, 2)


def new_report(kit_version: str, profile: str, inventory: Mapping[str, Any]) -> dict[str, Any]:
    """An empty report."""
    return {
        "schema": SCHEMA,
        "kit_version": kit_version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "profile": profile,
        "hardware": dict(inventory),
        "configurations": {},
        "checks": [],
        "benchmarks": [],
    }


def build(settings: Settings, history: Iterable[BootRecord], verdicts: Verdicts, points: Sequence[Point]) -> dict[str, Any]:
    """The report of one session, from what the pool, the verdicts and the load runs recorded."""
    inventory: dict[str, Any] = {}
    gpu_name = None
    if settings.engine == "gpu":
        from pytest_glm45.inventory import read_inventory

        inv = read_inventory()
        inventory = inv.to_dict()
        gpu_name = inv.gpus[0].name if inv.gpus else None
    data = new_report(__version__, settings.profile.name, inventory)
    for record in history:
        data["configurations"][record.config_id] = {
            "vllm_version": record.vllm_version, "engine": record.engine, "distribution": record.distribution,
            "status": record.status, "replay": record.replay,
            "startup_seconds": round(record.startup_seconds, 1) if record.startup_seconds is not None else None,
            "log": str(record.log_path) if record.log_path else None,
        }  # fmt: skip
    for (check, config_id), r in sorted(verdicts.records.items()):
        data["configurations"].setdefault(config_id, {"vllm_version": None, "engine": None, "status": "not booted"})
        data["checks"].append({"id": check, "config": config_id, "outcome": r.outcome, "reason": r.reason,
                               "observed": r.observed, "known_entry": r.known_entry, "seconds": round(r.seconds, 2)})  # fmt: skip
    configs = {c.id: c for c in settings.matrix}
    for p in points:
        point = {"config": p.config_id, "shape": p.shape.name, "batch": p.batch, "input_len": p.shape.input_len,
                 "output_len": p.shape.output_len, **p.metrics, "rounds": p.rounds, "invalid": p.invalid}  # fmt: skip
        config = configs.get(p.config_id)
        if gpu_name and config is not None and "median_tpot_ms" in p.metrics:
            from pytest_glm45.preflight import tpot_floor_seconds

            floor = tpot_floor_seconds(config.model, config.plan, gpu_name)
            if floor:
                point["roofline_tpot_floor_ms"] = floor * 1000
                point["tpot_over_floor"] = p.metrics["median_tpot_ms"] / (floor * 1000)
        data["benchmarks"].append(point)
    return data


def write(report: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    """report.json and report.html in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json.dumps(report, indent=1, sort_keys=True, default=str), "utf-8")
    html_path.write_text(render_html(report), "utf-8")
    return json_path, html_path


def load(path: Path) -> dict[str, Any]:
    """A report.json, checked for a schema this kit reads."""
    data = json.loads(Path(path).read_text("utf-8"))
    if data.get("schema") not in READABLE_SCHEMAS:
        raise ValueError(f"{path}: report schema {data.get('schema')!r}; accepted: {', '.join(map(str, READABLE_SCHEMAS))}")
    return dict(data)
