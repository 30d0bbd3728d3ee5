"""Known-failure evidence from a report: each failure's request, what came back and its curl
reproducer, as TOML lines ready to paste into a `known_failures/vllm-<version>.toml` entry.

The shipped entries spell their evidence as `evidence.request`, `evidence.expected` and
`evidence.got`; what this module prints adds `evidence.curl` (the command that shows the defect
against `pytest-glm45 serve`) and `evidence.observed` (the check's own failure text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_glm45.records import ids, known_failures
from pytest_glm45.records.reproducer import Exchange, exchange_from, summary

#: Outcomes that get evidence.
WITH_EVIDENCE = ("failed", "error", "known failure")
#: Characters of a request body and of an answer that evidence.request and evidence.got keep.
REQUEST_CHARS, GOT_CHARS = 600, 400


def toml_string(text: str) -> str:
    """`text` as a TOML basic string on one line (control characters and line separators escaped)."""
    out = json.dumps(text, ensure_ascii=False)
    # DEL is not allowed raw in TOML; line and paragraph separators would break a line in an editor.
    escaped = {"\x7f": "\\u007F", "\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
    return "".join(escaped.get(c, "\\uFFFD" if 0xD800 <= ord(c) <= 0xDFFF else c) for c in out)


def toml_command(command: str) -> str:
    """A shell command as a TOML multi-line literal string (pasteable as it reads; the value ends with a
    newline), or a basic string when the command holds what a literal string cannot."""
    if "'''" in command or any((ord(c) < 32 and c != "\t") or c in "\x7f\x85\u2028\u2029" for c in command):
        return toml_string(command)
    return f"'''\n{command}\n'''"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


#: Known-failure directories as `known_failures.directories` reads them (None: the shipped files).
Directories = Path | Sequence[Path] | None


def _entry(source: str | None, version: str | None, directory: Directories) -> known_failures.KnownFailure | None:
    """The entry a record names (`vllm-0.32.0.toml#3`), read from the version's file (none from a draft)."""
    if not source or not version or "#" not in source:
        return None
    try:
        entries = known_failures.load(version, directory).entries
    except known_failures.KnownFailuresError:
        return None
    return next((e for e in entries if e.source == source), None)


def evidence_block(check: dict[str, Any], version: str | None, directory: Directories = None) -> str:
    """One check record as comment lines (check, configuration, outcome, the entry) and evidence lines."""
    repro = check.get("reproducer")
    entry = _entry(check.get("known_entry"), version, directory)
    lines = [f"# {check['id']} on {check['config']} (vLLM {version or '?'}): {check['outcome']}"]
    if entry is not None:
        lines.append(f"# known failure {entry.source}: signature {entry.signature.describe()}; "
                     f"reason: {' '.join(entry.reason.split())[:300]}")  # fmt: skip
    elif check.get("known_entry"):
        lines.append(f"# checked against known failure {check['known_entry']} (not found in the files read)")
    else:
        lines.append("# no known-failure entry covers it: a new [[failure]] needs checks, reason, signature and this evidence")
    if not repro:
        lines.append("# no request recorded (the check sent none through the kit's clients, or the report predates reproducers)")
    else:
        main = _main_request(repro)
        body = json.dumps(main.body, ensure_ascii=False) if main.raw is None else main.raw
        lines.append(f"evidence.request = {toml_string(_cut(f'{main.method} {main.path}' + (' stream=true' if main.stream else '') + f': {body}', REQUEST_CHARS))}")
    if entry is not None and "expected" in entry.evidence:
        lines.append(f"evidence.expected = {toml_string(str(entry.evidence['expected']))}")
    if repro:
        main = _main_request(repro)
        chunks = [c for c in main.chunks or [] if c != "[DONE]"]
        # A stream's defect shows at its end (an error event, the last deltas, the finish reason).
        answer = main.response if main.response is not None else (
            f"{main.chunks_total or len(chunks)} chunks, the last: " + " ".join(chunks[-2:]) if chunks else "")
        lines.append(f"evidence.got = {toml_string(_cut(summary(main).split(' -> ', 1)[1] + (f': {answer}' if answer else ''), GOT_CHARS))}")
    lines.append(f"evidence.observed = {toml_string(_cut(check.get('observed') or check.get('reason') or '', GOT_CHARS))}")
    if repro:
        lines.append(f"evidence.curl = {toml_command(repro['curl'])}")
    return "\n".join(lines)


def _main_request(repro: dict[str, Any]) -> Exchange:
    """The request the reproducer's curl repeats (the one whose body the curl carries)."""
    requests = repro.get("requests", [])
    return exchange_from(next((r for r in requests if r.get("reproduced")), requests[-1]))


def evidence_blocks(report: dict[str, Any], check: str | None = None, config: str | None = None,
                    directory: Directories = None) -> list[str]:  # fmt: skip
    """Evidence for every failure and known failure of `report` (those matching `check` and
    `config`, patterns with * and ?), in the report's order."""
    blocks = []
    for record in report.get("checks", []):
        if record.get("outcome") not in WITH_EVIDENCE:
            continue
        if check and not ids.matches(record["id"], check):
            continue
        if config and not ids.matches(record["config"], config):
            continue
        version = (report.get("configurations", {}).get(record["config"]) or {}).get("vllm_version")
        blocks.append(evidence_block(record, known_failures.normalize_version(version) if version else None, directory))
    return blocks
