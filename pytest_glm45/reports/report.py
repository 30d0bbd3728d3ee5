"""Run reports: JSON a machine reads (and `pytest_glm45.reports.report_html` renders for a person).

A report holds, per configuration, the vLLM version, engine, distribution and boot; the
hardware inventory; every check's stable id, outcome (passed, failed, error, known failure,
unexpected pass, skipped), reason, the failure text observed for every check that did not
pass, the known-failure entry that judged it, and for a failing one its server's log excerpt; every
throughput point's figures (the median over its rounds, each round's values, and the figures
marked invalid with why); and, run with a reference, the comparison with it (`comparison`).
`pytest_glm45.reports.compare` says what changed between two reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_glm45 import __version__
from pytest_glm45.records.redaction import known_secrets, redact
from pytest_glm45.reports.report_html import render_html

if TYPE_CHECKING:
    from pytest_glm45.engine.pool import BootRecord
    from pytest_glm45.measure.throughput import Point
    from pytest_glm45.records.verdict import Verdicts
    from pytest_glm45.reports.compare import Comparison
    from pytest_glm45.settings import Settings

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


#: Outcomes whose check records carry their server's log excerpt.
WITH_LOG = ("failed", "error", "known failure", "unexpected pass")
#: Lines (and at most characters) of a configuration's log a failing check record keeps.
LOG_EXCERPT_LINES, LOG_EXCERPT_CHARS = 40, 6000


def log_excerpt(path: Path | None, secrets_: tuple[str, ...] = (), lines: int = LOG_EXCERPT_LINES) -> str:
    """The last `lines` of a server log, secrets redacted, at most LOG_EXCERPT_CHARS; "" without a log."""
    if path is None or not Path(path).is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    text = redact("\n".join(text.splitlines()[-lines:]), known_secrets(secrets_))
    return text[-LOG_EXCERPT_CHARS:]


def point_json(p: Point) -> dict[str, Any]:
    """A throughput point as the report holds it: its figures (medians of the rounds not set aside), each round's
    values (`rounds`), invalid figures, and (schema 2, added fields) each figure's spread and tolerance, the figures
    not judged and why, every round's evidence of a noisy neighbour (`contention`) and the rounds set aside."""
    return {"config": p.config_id, "shape": p.shape.name, "batch": p.batch, "input_len": p.shape.input_len,
            "output_len": p.shape.output_len, **p.metrics, "rounds": p.rounds, "invalid": p.invalid,
            "spread": p.spread, "not_judged": p.not_judged, "contention": p.contention, "set_aside": p.set_aside}  # fmt: skip


def build(settings: Settings, history: Iterable[BootRecord], verdicts: Verdicts, points: Sequence[Point],
          log_excerpts: Mapping[tuple[str, str], str] | None = None, secrets_: tuple[str, ...] = (),
          parity: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The report of one session, from what the pool, the verdicts and the load runs recorded (and
    `parity`, `pytest_glm45.measure.parity_session.ParitySession.to_report()`, when the parity suite ran: on the
    pytest-xdist controller, every worker's recordings and pairs, and the verdicts judged there).

    Every failing, known-failing or unexpectedly passing check record carries `log_excerpt`: its
    server's log tail as it stood when the check failed (`log_excerpts`, keyed by (check, config)),
    else the tail of that configuration's log now; secrets redacted either way."""
    history = list(history)
    logs = {r.config_id: r.log_path for r in history}
    tails: dict[str, str] = {}
    inventory: dict[str, Any] = {}
    gpu_name = None
    if settings.engine == "gpu":
        from pytest_glm45.engine.inventory import read_inventory

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
        booted = next((c for c in settings.matrix if c.id == record.config_id), None)
        if booted is not None and record.engine != "remote":
            from pytest_glm45.glm.parsers import describe

            # The class behind each parser name in the vLLM installed here (`glm45` is GLM-4.7's parser since 0.24).
            data["configurations"][record.config_id]["parsers"] = describe(booted.model.tool_call_parser, booted.model.reasoning_parser)
    for (check, config_id), r in sorted(verdicts.records.items()):
        data["configurations"].setdefault(config_id, {"vllm_version": None, "engine": None, "status": "not booted"})
        data["checks"].append({"id": check, "config": config_id, "outcome": r.outcome, "reason": r.reason,
                               "observed": r.observed, "known_entry": r.known_entry, "seconds": round(r.seconds, 2),
                               "reproducer": r.reproducer})  # fmt: skip
        if r.outcome in WITH_LOG:
            excerpt = (log_excerpts or {}).get((check, config_id))
            if excerpt is None:
                if config_id not in tails:
                    tails[config_id] = log_excerpt(logs.get(config_id), secrets_)
                excerpt = tails[config_id]
            data["checks"][-1]["log_excerpt"] = redact(excerpt, known_secrets(secrets_))[-LOG_EXCERPT_CHARS:]
    configs = {c.id: c for c in settings.matrix}
    for p in points:
        point = point_json(p)
        config = configs.get(p.config_id)
        if gpu_name and config is not None and "median_tpot_ms" in p.metrics:
            from pytest_glm45.engine.preflight import tpot_floor_seconds

            floor = tpot_floor_seconds(config.model, config.plan, gpu_name)
            if floor:
                point["roofline_tpot_floor_ms"] = floor * 1000
                point["tpot_over_floor"] = p.metrics["median_tpot_ms"] / (floor * 1000)
        data["benchmarks"].append(point)
    if parity is not None:
        data["parity"] = dict(parity)
    return data


def attach_comparison(report: dict[str, Any], comparison: Comparison) -> None:
    """Embed what changed against the reference run, so the page can answer with it first."""
    report["comparison"] = {**asdict(comparison), "verdict": comparison.verdict(), "regressed": comparison.regressed}


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
