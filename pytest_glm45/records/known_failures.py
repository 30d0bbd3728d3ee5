"""Known failures: conformance checks that fail because a given vLLM version is wrong.

One TOML file per vLLM version, `vllm-<version>.toml`. Each entry names the checks it covers,
the configurations, why vLLM is wrong, the evidence, and the *signature*: what the failure
looks like. A failure of a covered check that matches the signature is known; one that does
not is a new failure, reported with the entry it was checked against and what was seen::

    [[failure]]
    checks = ["test_tool_calling::test_replay[*-native-*]",  # patterns on check ids (pytest_glm45.records.ids)
              "!test_tool_calling::test_replay[*-as-text-native-*]"]  # ! excludes
    configs = ["*", "!*-nostrict"]     # optional: patterns on configuration ids; ! excludes
    models = ["glm-4.5*"]              # optional: patterns on the model family
    reason = "the strict grammar rejects GLM-4.5's native newline after the name"
    signature = { status = 500, match = "server log: .*grammar rejected tokens" }  # status and/or match
    # (a regex on the observed failure text: the check's message, then the server's log lines about the check's
    # failed requests, each as "server log: ..."; a 5xx status alone is refused: many defects share it)
    evidence = { request = "...", expected = "...", got = "HTTP 500 Internal Server Error" }

One defect that hits many checks is one entry (a list or patterns in `checks`). `check = "id"`
is accepted for a single check. A known failure that passes fails the run (as pytest's
`xfail_strict`), naming the entry to remove, unless the entry says the defect is intermittent::

    intermittent = "broke off in 2 of 4 runs (2026-12-05): it depends on how the streamed deltas fall"

(how often it was seen, and why it comes and goes). Such a check that passes is a pass with a note; one that
fails must still fail as the signature says, or it is new.

The same file pins behaviours where the API leaves a choice and a version's choice must not
change silently (a check compares what it sees with the pin, and asks for one if missing)::

    [pins]
    max_tokens_over_window = "reject"
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_glm45.records.ids import glob_match as glob_match
from pytest_glm45.records.ids import matches

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class KnownFailuresError(ValueError):
    """A known-failures file that does not have the documented shape."""


@dataclass(frozen=True)
class Signature:
    """What a known failure looks like: an HTTP status and/or a pattern on the observed failure text."""

    status: int | None = None
    match: str | None = None

    def matches(self, observed: str) -> bool:
        """Whether the observed failure text is this failure."""
        if self.status is not None and not re.search(rf"\bHTTP {self.status}\b|\bcode {self.status}\b", observed):
            return False
        return self.match is None or re.search(self.match, observed, re.DOTALL) is not None

    def describe(self) -> str:
        """The signature in words, for messages."""
        parts = ([f"HTTP {self.status}"] if self.status is not None else []) + (
            [f"text matching /{self.match}/"] if self.match is not None else []
        )
        return " and ".join(parts)


@dataclass(frozen=True)
class KnownFailure:
    """One entry: which checks, where, why, what the failure looks like, and the evidence."""

    checks: tuple[str, ...]
    reason: str
    signature: Signature
    evidence: dict[str, Any]
    configs: tuple[str, ...] = ("*",)
    models: tuple[str, ...] = ("*",)
    source: str = ""
    #: how often an intermittent defect was seen and why it comes and goes; None: it fails every run
    intermittent: str | None = None

    @property
    def check(self) -> str:
        """The entry's check patterns as one line (for messages)."""
        return ", ".join(self.checks)

    def covers(self, check: str, config_id: str, model_family: str | None = None) -> bool:
        """Whether this entry speaks for `check` on `config_id` (and the model family, when known)."""
        return (
            matches(check, self.checks)
            and matches(config_id, self.configs)
            and (model_family is None or matches(model_family, self.models))
        )


@dataclass
class KnownFailures:
    """All entries for one vLLM version."""

    version: str | None
    entries: list[KnownFailure] = field(default_factory=list)
    path: Path | None = None
    pins: dict[str, Any] = field(default_factory=dict)

    def lookup(self, check: str, config_id: str, model_family: str | None = None,
               observed: str | None = None) -> KnownFailure | None:  # fmt: skip
        """The entry that speaks for this check on this configuration, or None: the first that covers
        it; given the failure `observed`, the first covering entry whose signature matches it (a check
        can show two recorded defects at once: a parser's and a surface's), else the first covering."""
        covering = [entry for entry in self.entries if entry.covers(check, config_id, model_family)]
        if observed is not None:
            for entry in covering:
                if entry.signature.matches(observed):
                    return entry
        return covering[0] if covering else None


def normalize_version(version: str) -> str:
    """`0.32.0+cpu` -> `0.32.0`: the file is per release, whatever the build."""
    return version.split("+", 1)[0].strip()


#: The word that names the files shipped with the kit in a list of known-failure directories.
SHIPPED = "shipped"


def default_dir() -> Path:
    """The files shipped with the kit."""
    return Path(str(resources.files("pytest_glm45").joinpath("known_failures")))


def directories(value: str | Path | Sequence[str | Path] | None) -> tuple[Path, ...]:
    """The known-failure directories a value names, in order: a path, a comma list, or a list of either (an option
    given several times); `shipped` stands for the kit's own files. None or nothing named: the shipped files alone."""
    items: list[str | Path] = [value] if isinstance(value, (str, Path)) else list(value or [])
    out: list[Path] = []
    for item in items:
        parts = [item] if isinstance(item, Path) else [p.strip() for p in str(item).replace("\n", ",").split(",") if p.strip()]
        for part in parts:
            path = default_dir() if str(part) == SHIPPED else Path(part).expanduser()
            if path not in out:
                out.append(path)
    return tuple(out) or (default_dir(),)


def load(version: str | None, directory: str | Path | Sequence[str | Path] | None = None) -> KnownFailures:
    """The known failures recorded for `version`; empty if no directory has a file for it.

    Several directories are layers, read in order: each one's `vllm-<version>.toml` adds its entries (which
    speak before those of the layers under it) and its pins (which replace theirs key by key); a file with
    `replace = true` drops what the layers under it said about that version. Entries of the first directory
    are named `vllm-<version>.toml#n`, those of a later one `<its name>/vllm-<version>.toml#n`. A file that
    still says `draft = true` (`pytest-glm45 evidence --draft` writes one) is refused until someone reviews it.
    """
    if not version:
        return KnownFailures(None)
    version = normalize_version(version)
    entries: list[KnownFailure] = []
    pins: dict[str, Any] = {}
    path: Path | None = None
    for layer, folder in enumerate(directories(directory)):
        candidate = folder / f"vllm-{version}.toml"
        if not candidate.is_file():
            continue
        text = candidate.read_text("utf-8")
        found = parse(text, str(candidate))
        data = tomllib.loads(text)
        if data.get("draft"):
            raise KnownFailuresError(f"{candidate} is a draft (draft = true): review every entry (each says where it came "
                                     "from and what to check), then delete the draft line; accepted: a reviewed file")  # fmt: skip
        if layer:
            found = [replace(e, source=f"{folder.name}/{e.source}") for e in found]
        if data.get("replace") is True:
            entries, pins = [], {}
        entries = found + entries
        pins.update(data.get("pins", {}))
        path = candidate
    return KnownFailures(version, entries, path, pins)


def _patterns(raw: Any, key: str, source: str, n: int) -> tuple[str, ...]:
    value = raw.get(key, ["*"])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KnownFailuresError(f"{source}: entry {n}: {key} = {value!r}; accepted: a pattern or a list of patterns")
    return tuple(value)


def _signature(raw: Any, source: str, n: int) -> Signature:
    sig = raw.get("signature")
    where = f"{source}: entry {n} ({raw.get('check') or raw.get('checks')})"
    if not isinstance(sig, dict) or not (sig.get("status") or sig.get("match")):
        raise KnownFailuresError(f"{where} lacks a signature; accepted: signature = {{ status = 500 }} and/or "
                                 "{ match = \"regex on the observed failure\" }")  # fmt: skip
    unknown = set(sig) - {"status", "match"}
    if unknown:
        raise KnownFailuresError(f"{where}: signature keys {sorted(unknown)} are not accepted; accepted: status, match")
    if sig.get("match") is not None:
        try:
            re.compile(sig["match"])
        except re.error as exc:
            raise KnownFailuresError(f"{where}: signature match {sig['match']!r} is not a regular expression: {exc}") from None
    status = sig.get("status")
    if status is not None and not isinstance(status, int):
        raise KnownFailuresError(f"{where}: signature status {status!r}; accepted: an HTTP status number")
    if status is not None and status >= 500 and sig.get("match") is None:
        raise KnownFailuresError(f"{where}: signature {{ status = {status} }} alone names no defect: an engine that dies, "
                                 "runs out of memory or fails anew answers the same status; accepted: add match = "
                                 "\"regex\" on what vLLM said (its error message, or the server-log line the kit "
                                 "shows as 'server log: ...', such as 'grammar rejected tokens')")  # fmt: skip
    return Signature(status=status, match=sig.get("match"))


def _intermittent(raw: Any, source: str, n: int) -> str | None:
    value = raw.get("intermittent")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise KnownFailuresError(f"{source}: entry {n}: intermittent = {value!r}; accepted: a sentence saying how often "
                                 "the defect was seen and why it comes and goes (a defect seen every run has no such line)")  # fmt: skip
    return value.strip()


def parse(text: str, source: str = "<string>") -> list[KnownFailure]:
    """Parse one file; raise KnownFailuresError naming the entry and what is missing."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnownFailuresError(f"{source}: not valid TOML: {exc}") from exc
    out = []
    for n, raw in enumerate(data.get("failure", []), 1):
        checks = raw.get("checks") or ([raw["check"]] if raw.get("check") else [])
        if isinstance(checks, str):
            checks = [checks]
        included = [c for c in checks if isinstance(c, str) and not c.startswith("!")] if isinstance(checks, list) else []
        missing = [k for k, v in (("check or checks (a pattern that is not a !exclusion)", included), ("reason", raw.get("reason")), ("evidence", raw.get("evidence"))) if not v]
        if missing:
            raise KnownFailuresError(f"{source}: entry {n} ({raw.get('check') or raw.get('checks') or '?'}) lacks {', '.join(missing)}")
        out.append(
            KnownFailure(
                checks=tuple(checks),
                reason=raw["reason"],
                signature=_signature(raw, source, n),
                evidence=dict(raw["evidence"]),
                configs=_patterns(raw, "configs", source, n),
                models=_patterns(raw, "models", source, n),
                source=f"{Path(source).name}#{n}",
                intermittent=_intermittent(raw, source, n),
            )
        )
    return out
