"""Stored reports judged again against known-failure files, offline: no server, no re-run.

A report keeps, for every check that did not pass, the failure text observed (`observed`). After someone
records a version's known failures (a drafted `vllm-<version>.toml`, reviewed), the same reports can be judged
against the new files: each failure is looked up as the run looked it up (the check id, its configuration,
the model family, the observed text against the entries' signatures) and becomes a known failure, stays a new
failure, or a pass becomes an unexpected pass; a pin check that failed on a value the files now pin passes (a pin
check that passed is kept: its record does not say what it saw). `pytest-glm45 compare --known-failures DIRS` does this to both
reports before comparing them (the upgrade gate's `--compare-only` with GLM45_KNOWN_FAILURES).

The observed text a report keeps is cut at `verdict.OBSERVED_CHARS` characters; a signature that matches only
beyond that point matched in the run and does not here (the kit's signatures match the first lines).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_glm45.records import known_failures
from pytest_glm45.records.verdict import FAILING, OBSERVED_CHARS, Verdicts
from pytest_glm45.reports.reference import model_family

#: A recorded outcome -> the raw pytest outcome and phase it is judged again as.
_RAW = {
    "passed": ("passed", "call"),
    "unexpected pass": ("passed", "call"),
    "failed": ("failed", "call"),
    "known failure": ("failed", "call"),
    "error": ("failed", "setup"),
}


#: Checks that compare a behaviour with a pin of the version's file: check id -> (pin name, regex for the value seen).
PIN_CHECKS = {
    "test_context_length::test_max_tokens_beyond_the_window_is_pinned": (
        "max_tokens_over_window", r"now (\w+)s \(pinned|\b(\w+)s a max_tokens beyond the window"),
}  # fmt: skip


def pinned_value(record: Mapping[str, Any]) -> tuple[str, str] | None:
    """(pin name, the value the check saw) for a failed pin check, from its failure text; None for other records."""
    pin = PIN_CHECKS.get(record.get("id", ""))
    seen = re.search(pin[1], observed_text(record)) if pin else None
    return (pin[0], seen.group(1) or seen.group(2)) if pin and seen else None


def observed_text(record: Mapping[str, Any]) -> str:
    """The failure text a check record keeps (`observed`); a report from before the kit kept it has only `reason`."""
    return str(record["observed"] if "observed" in record else record.get("reason") or "")


def rejudge(report: Mapping[str, Any], directories: str | Path | Sequence[str | Path] | None) -> dict[str, Any]:
    """A copy of `report` whose check outcomes are judged again against the known-failure files of `directories`
    (known_failures.directories: layers, `shipped` for the kit's own); skipped checks stay as they were."""
    data: dict[str, Any] = copy.deepcopy(dict(report))
    dirs = known_failures.directories(directories)
    versions = {cid: (c or {}).get("vllm_version") for cid, c in (data.get("configurations") or {}).items()}
    files: dict[str | None, known_failures.KnownFailures] = {}
    verdicts = Verdicts(strict_known_failures=True)
    changed = 0
    for record in data.get("checks", []):
        raw = _RAW.get(record.get("outcome", ""))
        if raw is None:
            continue
        version = versions.get(record["config"])
        if version not in files:
            files[version] = known_failures.load(version, dirs)
        observed = observed_text(record)
        pin = pinned_value(record) if record.get("outcome") in FAILING else None
        if pin is not None and files[version].pins.get(pin[0]) == pin[1]:
            # The check failed because the version's file pinned another value; the files now pin what it saw.
            changed += 1
            record.update(outcome="passed", reason="", observed="", known_entry=None)
            continue
        judgement = verdicts.judge(record["id"], record["config"], raw[1], raw[0], observed, files[version],
                                   model_family(record["config"]))  # fmt: skip
        reason = judgement.xfail_reason or judgement.failure or judgement.note or ""
        if judgement.outcome in FAILING and not reason:
            reason = observed
        changed += judgement.outcome != record.get("outcome")
        record.update(outcome=judgement.outcome, reason=reason[:OBSERVED_CHARS],
                      known_entry=judgement.entry.source if judgement.entry else None)  # fmt: skip
    data["rejudged"] = {"known_failures": [str(d) for d in dirs], "changed": changed}
    return data
