"""Configurations side by side: `pytest -n N` (pytest-xdist) on a GPU host.

The kit schedules the workers itself (`pytest_xdist_make_scheduler`): each configuration is one
unit of work, so one worker boots it, once, and runs all of its checks (xdist's own `loadgroup`
cannot do this under pytest 9, whose node ids no longer take xdist's group suffix); workers boot at the same time, each server on its own GPUs
(`pytest_glm45.engine.gpulease`), ports and log; throughput points take the host-wide lock and never
overlap. What each worker learned (boots, verdicts, throughput points) comes back to the
controller in xdist's `workeroutput`, so the terminal summary, report.json and `compare` see
the whole run as if it had run in one process. So do the parity recordings: a configuration whose
parity reference ran on another worker is compared with it on the controller (`pytest_glm45.measure.parity_session`).

The CPU engine refuses `-n`: its servers are bound to this host's cores (tp2 takes them all,
and the load generator needs one of its own), so two at once would measure each other.

No pytest here: the plugin calls these functions from its hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from pytest_glm45.clients.loadgen import Shape
from pytest_glm45.engine.pool import BootRecord
from pytest_glm45.measure.throughput import Point
from pytest_glm45.records.ids import split_config_id
from pytest_glm45.records.verdict import CheckRecord, Verdicts

#: The xdist distributions the kit accepts: each becomes one unit of work per configuration.
GROUPED = ("load", "loadscope", "loadgroup")
#: The key of the kit's share of xdist's workeroutput.
OUTPUT_KEY = "glm45"


class SideBySideError(ValueError):
    """`-n` asked for something that would boot a configuration twice, or share cores."""


def distribution_mode(engine: str, numprocesses: int, dist: str) -> str:
    """The xdist distribution the run uses: `loadscope` (scheduled by configuration, see
    `make_scheduler`) for `-n N`; a SideBySideError for the CPU engine or a mode that would run a
    configuration's checks on several workers."""
    if not numprocesses:
        return dist
    if engine == "cpu":
        raise SideBySideError(
            f"-n {numprocesses}: the CPU engine cannot run configurations side by side: each server is bound to "
            "this host's cores (tp2 takes them all, and the load generator needs one of its own), so two at once "
            "would measure each other; run without -n (configurations then run one after another)"
        )
    if dist in GROUPED:
        return "loadscope"
    raise SideBySideError(
        f"--dist {dist}: it would run a configuration's checks on several workers and boot its server more than "
        f"once; accepted: --dist {', '.join(GROUPED)} (or none: with -n the kit gives each configuration one worker)"
    )


def configuration_of(nodeid: str, config_ids: Sequence[str]) -> str | None:
    """The configuration a check's node id runs on: the longest configuration id that stands as a
    whole part of its parameters (`test_replay[tiny-bf16-tp1-nostrict-one-call-plain]`;
    `pytest_glm45.records.ids.split_config_id`)."""
    if "[" not in nodeid:
        return None
    return split_config_id(nodeid[nodeid.index("[") + 1 : nodeid.rindex("]")], config_ids)[0]


def make_scheduler(config: Any, log: Any, config_ids: Sequence[str]) -> Any:
    """xdist's scope scheduler with one scope per configuration (checks of no configuration are
    scoped by module, as xdist does)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByConfiguration(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return configuration_of(nodeid, config_ids) or str(super()._split_scope(nodeid))

    return ByConfiguration(config, log)


def pack(history: list[BootRecord], verdicts: Verdicts, points: list[Point], parity: Any = None) -> dict[str, Any]:
    """A worker's boots, verdicts, throughput points and parity recordings (`parity`, its
    `ParitySession`, when the parity suite ran there) as plain data for xdist's workeroutput."""
    return {
        "parity": parity.carry() if parity is not None else None,
        "history": [{**asdict(r), "log_path": str(r.log_path) if r.log_path else None} for r in history],
        "records": [asdict(r) for r in verdicts.records.values()],
        "unexpected_passes": [list(x) for x in verdicts.unexpected_passes],
        "mismatches": [list(x) for x in verdicts.mismatches],
        "quiet_intermittent": [list(x) for x in verdicts.quiet_intermittent],
        "points": [asdict(p) for p in points],
    }


def merge(data: dict[str, Any], history: list[BootRecord], verdicts: Verdicts, points: list[Point],
          parity: Callable[[], Any] | None = None) -> None:  # fmt: skip
    """Add a worker's packed data to the controller's history, verdicts and points, and its parity
    recordings to the controller's ParitySession (`parity()` gives it, made when first needed)."""
    for r in data.get("history", []):
        history.append(BootRecord(**{**r, "log_path": Path(r["log_path"]) if r.get("log_path") else None}))
    names = {f.name for f in fields(CheckRecord)}
    for r in data.get("records", []):
        record = CheckRecord(**{k: v for k, v in r.items() if k in names})
        verdicts.records[(record.check, record.config)] = record
    verdicts.unexpected_passes.extend(tuple(x) for x in data.get("unexpected_passes", []))
    verdicts.mismatches.extend(tuple(x) for x in data.get("mismatches", []))
    verdicts.quiet_intermittent.extend(tuple(x) for x in data.get("quiet_intermittent", []))
    for p in data.get("points", []):
        points.append(Point(**{**p, "shape": Shape(**p["shape"])}))
    if data.get("parity") and parity is not None:
        parity().absorb(data["parity"])
