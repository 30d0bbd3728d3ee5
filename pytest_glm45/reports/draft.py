"""A new vLLM version's known-failure file, drafted from the previous version's entries and a run's observations.

The first run on a vLLM version that has no `vllm-<version>.toml` fails on every defect the previous version
also had (and on the new ones). `pytest-glm45 evidence REPORT --draft --since OLD` writes that file as a
draft for a person to review:

- an entry of the previous version whose covered checks fail here *with its signature* is carried over as it
  was (the defect is still there);
- an entry none of whose checks ran in this report is carried over too, marked as not exercised;
- an entry whose checks all pass here is left out (fixed), named in a comment;
- every other failure becomes a new entry, one per check function and failure signature (an HTTP status
  when the failure names one, else the first line of the observed text), listing its checks and configurations,
  with the evidence of its first failure (request, got, observed, curl) and a reason to write;
- a pin check that failed because this version chose otherwise gets the new pin.

The file starts with `draft = true`, which `known_failures.load` refuses: the kit does not judge with it until a
person has read every entry and deleted that line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_glm45.records import known_failures
from pytest_glm45.records.known_failures import KnownFailure, Signature
from pytest_glm45.reports.evidence import WITH_EVIDENCE, evidence_block, toml_string
from pytest_glm45.reports.reference import model_family
from pytest_glm45.reports.rejudge import observed_text, pinned_value

#: Characters of the observed first line a drafted `match` signature keeps.
MATCH_CHARS = 80


class DraftError(ValueError):
    """A report that cannot be drafted from (no version, several versions)."""


def toml_value(value: Any) -> str:
    """A TOML value for the kinds an entry holds: strings (one line, escaped), numbers, booleans, lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return toml_string(str(value))


def entry_toml(entry: KnownFailure) -> str:
    """A parsed entry written back as a `[[failure]]` block (what `known_failures.parse` reads to the same entry)."""
    lines = ["[[failure]]", f"checks = {toml_value(list(entry.checks))}"]
    if entry.configs != ("*",):
        lines.append(f"configs = {toml_value(list(entry.configs))}")
    if entry.models != ("*",):
        lines.append(f"models = {toml_value(list(entry.models))}")
    lines.append(f"reason = {toml_string(entry.reason)}")
    lines.append(f"signature = {signature_toml(entry.signature)}")
    lines += [f"evidence.{key} = {toml_value(value)}" for key, value in entry.evidence.items()]
    return "\n".join(lines)


def signature_toml(signature: Signature) -> str:
    """`{ status = 500 }`, `{ match = "..." }` or both."""
    parts = ([f"status = {signature.status}"] if signature.status is not None else []) + (
        [f"match = {toml_string(signature.match)}"] if signature.match is not None else [])
    return "{ " + ", ".join(parts) + " }"


def signature_of(observed: str) -> Signature:
    """What a failure looks like, for a new entry: its HTTP status when the text names one, with what the server's log
    said about the request (the first `server log:` line, its vLLM prefix and request-specific tail cut off), else the
    failure's first line; a literal pattern either way."""
    status = re.search(r"\b(?:HTTP|code) ([1-5]\d\d)\b", observed)
    logged = next((line.split("server log: ", 1)[1] for line in observed.splitlines() if line.startswith("server log: ")), "")
    fragment = _log_fragment(logged)
    if fragment:
        return Signature(status=int(status.group(1)) if status else None, match="server log: .*" + _literal(fragment))
    first = next((line.strip() for line in observed.splitlines() if line.strip()), "")
    return Signature(status=int(status.group(1)) if status else None, match=_literal(first[:MATCH_CHARS]) if first else ".")


def _literal(text: str) -> str:
    """`text` as a regular expression matching itself (readable: only the metacharacters escaped)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)


def _log_fragment(line: str) -> str:
    """The part of a server-log line that names a defect: without vLLM's process prefix and level/time header, and cut
    before the first number or request id (they differ from request to request)."""
    from pytest_glm45.engine.rootcause import ANSI, HEADER, PREFIX

    text = HEADER.sub("", PREFIX.sub("", ANSI.sub("", line.strip()))).strip()
    cut = re.search(r"\d|\bfor request\b|glm45-|chatcmpl-|cmpl-", text)
    fragment = (text[: cut.start()] if cut else text)[:MATCH_CHARS].rstrip(" [(:,-")
    return fragment if len(fragment) >= 12 else ""


@dataclass
class _NewEntry:
    signature: Signature
    records: list[dict[str, Any]] = field(default_factory=list)


def _version_of(report: Mapping[str, Any], what: str) -> str:
    versions = {known_failures.normalize_version(str(c.get("vllm_version"))) for c in (report.get("configurations") or {}).values()
                if c.get("vllm_version")}  # fmt: skip
    if len(versions) != 1:
        raise DraftError(f"{what} holds {'no vLLM version' if not versions else 'vLLM ' + ', '.join(sorted(versions))}; "
                         "accepted: a report of one vLLM version")  # fmt: skip
    return versions.pop()


def draft(report: Mapping[str, Any], since: str | Mapping[str, Any], directories: str | Path | Sequence[str | Path] | None = None,
          source: str = "report.json") -> str:  # fmt: skip
    """The drafted `vllm-<version>.toml` for `report`'s vLLM version, from the entries of `since` (a version, or the
    report of the run on it) in the known-failure `directories` and the report's failures."""
    version = _version_of(report, source)
    old_report = since if isinstance(since, Mapping) else None
    old_version = _version_of(since, "the --since report") if isinstance(since, Mapping) else known_failures.normalize_version(since)
    dirs = known_failures.directories(directories)
    old = known_failures.load(old_version, dirs)
    try:
        existing = known_failures.load(version, dirs)
    except known_failures.KnownFailuresError:  # an earlier draft for this version: this one replaces it
        existing = known_failures.KnownFailures(version)
    passed_before = {(c["id"], c["config"]) for c in (old_report or {}).get("checks", []) if c.get("outcome") in ("passed", "unexpected pass")}
    records = report.get("checks", [])
    failing = [r for r in records if r.get("outcome") in WITH_EVIDENCE]
    carried: dict[str, list[dict[str, Any]]] = {}
    new: dict[tuple[str, str], _NewEntry] = {}
    pins: dict[str, tuple[str, str]] = {k: (v, f"from vLLM {old_version}") for k, v in old.pins.items()}
    for record in failing:
        observed = observed_text(record)
        pin = pinned_value(record)
        if pin is not None:
            name, value = pin
            pins[name] = (value, f"vLLM {version} {value}s (observed on {record['config']}; vLLM {old_version}: "
                                 f"{old.pins.get(name, 'no pin')})")  # fmt: skip
            continue
        entry = old.lookup(record["id"], record["config"], model_family(record["config"]), observed)
        if entry is not None and entry.signature.matches(observed):
            carried.setdefault(entry.source, []).append(record)
            continue
        signature = signature_of(observed)
        key = (record["id"].split("[", 1)[0], signature_toml(signature))
        new.setdefault(key, _NewEntry(signature)).records.append(record)

    out = _header(version, old_version, old, existing, source, failing, dirs)
    if pins:
        out += ["[pins]"] + [f"{name} = {toml_string(value)}  # {why}" for name, (value, why) in sorted(pins.items())] + [""]
    for entry in old.entries:
        covered = [r for r in records if entry.covers(r["id"], r["config"], model_family(r["config"])) and r.get("outcome") != "skipped"]
        if entry.source in carried:
            hits = carried[entry.source]
            out += [f"# Carried from {entry.source}: {len(hits)} failure(s) here match its signature "
                    f"({_names(hits)}). REVIEW: is the reason still right for vLLM {version}?", entry_toml(entry), ""]  # fmt: skip
        elif not covered:
            out += [f"# Carried from {entry.source}, not exercised by this report (none of its checks ran). REVIEW: keep it "
                    f"only if vLLM {version} still has the defect (a run that covers it will say: a known failure that "
                    "passes fails the run).", entry_toml(entry), ""]  # fmt: skip
        elif all(r.get("outcome") in ("passed", "unexpected pass") for r in covered):
            out += [f"# Left out: {entry.source} ({entry.check}): all {len(covered)} of its checks that ran pass on vLLM {version}.", ""]
        else:
            out += [f"# Left out: {entry.source} ({entry.check}): its checks fail otherwise on vLLM {version} (the new "
                    "entries below); the old reason may still help.", ""]  # fmt: skip
    for (function, _), group in new.items():
        first = group.records[0]
        regressions = [r for r in group.records if (r["id"], r["config"]) in passed_before]
        observed = " ".join(observed_text(first).split())
        block = evidence_block(first, version, dirs).splitlines()
        evidence_lines = block[next((i for i, line in enumerate(block) if not line.startswith("#")), len(block)):]
        out += [f"# New: {function}, {len(group.records)} failure(s) ({_names(group.records)})"
                + (f"; {len(regressions)} passed on vLLM {old_version}" if old_report is not None else "") + ".",
                "# REVIEW: write why vLLM is wrong (or fix the check, if it is), narrow or widen checks/configs, and check",
                "# that the signature tells this defect from others"
                + ("." if (group.signature.match or "").startswith("server log: ") else
                   " (it is the failure's first line: no server-log line named the request; the log of a server given by "
                   "URL is read with --glm45-server-log)."),
                "[[failure]]",
                f"checks = {toml_value(sorted({r['id'] for r in group.records}))}",
                f"configs = {toml_value(sorted({r['config'] for r in group.records}))}",
                f"reason = {toml_string('REVIEW: why vLLM ' + version + ' is wrong here. Observed: ' + observed[:300])}",
                f"signature = {signature_toml(group.signature)}",
                *evidence_lines, ""]  # fmt: skip
    return "\n".join(out).rstrip() + "\n"


def _names(records: Sequence[Mapping[str, Any]], limit: int = 3) -> str:
    names = [f"{r['id']} on {r['config']}" for r in records]
    return ", ".join(names[:limit]) + (f", and {len(names) - limit} more" if len(names) > limit else "")


def _header(version: str, old_version: str, old: known_failures.KnownFailures, existing: known_failures.KnownFailures,
            source: str, failing: Sequence[Mapping[str, Any]], dirs: Sequence[Path]) -> list[str]:  # fmt: skip
    configs = sorted({r["config"] for r in failing})
    lines = [
        f"# Known failures of vLLM {version}: a DRAFT written by `pytest-glm45 evidence --draft` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"# from {source} ({len(failing)} failing check(s) on {', '.join(configs) or 'no configuration'}) and the "
        f"{len(old.entries)} entries of vLLM {old_version} ({old.path or 'no file'}).",
        f"# Known-failure directories read: {', '.join(str(d) for d in dirs)}.",
        "#",
        "# Review every entry (each says where it came from and what to check), then delete the `draft = true` line:",
        "# the kit refuses a file that still says draft. Then judge the stored reports again, without a re-run:",
        "#   pytest-glm45 compare OLD/report.json NEW/report.json --known-failures DIRS [--accept-known]",
    ]
    if existing.entries:
        lines.append(f"# NOTE: {existing.path} already records {len(existing.entries)} entries for vLLM {version}; "
                     "this draft does not include them.")  # fmt: skip
    return [*lines, "draft = true", ""]
