"""Verdicts: what each check's outcome means, with the known failures applied, in one tally.

No pytest import: the plugin hands each phase's raw outcome and failure text to `Verdicts.judge`
and applies the `Judgement` it gets back to pytest's report. The outcomes a report shows:

- `passed`, `failed`, `skipped`; `error` for a failure outside the check's body (setup, teardown);
- `known failure`: failed the way a known-failure entry for this vLLM version says it fails;
- `unexpected pass`: an entry says it fails, and it passed; this fails the run unless the user
  relaxed it (the entry has gone stale: remove it); an entry marked `intermittent` (a defect that comes
  and goes) makes such a pass a plain `passed` with a note, counted in `quiet_intermittent`;
- a failure of a covered check that does not match the entry's signature stays `failed`, and the
  judgement names the entry and what was seen instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pytest_glm45.records.known_failures import KnownFailure, KnownFailures

#: Outcomes that fail a run.
FAILING = frozenset({"failed", "error"})
#: The most observed text a record keeps.
OBSERVED_CHARS = 2000


@dataclass(frozen=True)
class Judgement:
    """What a phase's outcome becomes."""

    outcome: str
    #: pytest's xfail text for a known failure or a tolerated unexpected pass, else None
    xfail_reason: str | None = None
    #: a failure message that replaces pytest's (an unexpected pass that fails the run)
    failure: str | None = None
    #: a note to show with the failure (an entry whose signature did not match)
    note: str | None = None
    entry: KnownFailure | None = None


@dataclass
class CheckRecord:
    """One check on one configuration, as the report keeps it."""

    check: str
    config: str
    outcome: str
    reason: str = ""
    observed: str = ""
    seconds: float = 0.0
    known_entry: str | None = None
    #: a failing or known-failing check's requests and answers, with a curl command and a Python snippet
    #: (`{"requests": [...], "curl": str, "python": str}`, pytest_glm45.records.reproducer); None otherwise
    reproducer: dict[str, Any] | None = None


@dataclass
class Verdicts:
    """Every check's verdict for the session: the single tally that the terminal and the report read."""

    strict_known_failures: bool = True
    records: dict[tuple[str, str], CheckRecord] = field(default_factory=dict)
    unexpected_passes: list[tuple[str, str, str]] = field(default_factory=list)
    mismatches: list[tuple[str, str, str]] = field(default_factory=list)
    #: (config, check, entry) of checks whose intermittent known failure did not show this run
    quiet_intermittent: list[tuple[str, str, str]] = field(default_factory=list)

    def judge(self, check: str, config_id: str, phase: str, outcome: str, observed: str,
              known: KnownFailures | None, model_family: str | None = None) -> Judgement:  # fmt: skip
        """The verdict on one phase (`setup`, `call`, `teardown`) whose raw pytest outcome is `outcome`."""
        failing = outcome not in ("skipped", "passed")
        # Entries speak for a check's own body on a live server: a setup or teardown error (a server that did not
        # come up, a fixture that broke) is never a known failure, whatever its text. (The plugin passes no entries
        # for a check whose server died during it.)
        entry = known.lookup(check, config_id, model_family, observed if failing else None) if known is not None and phase == "call" else None
        version = known.version if known is not None else None
        if outcome == "skipped":
            return Judgement("skipped")
        if outcome == "passed":
            if entry is None or phase != "call":
                return Judgement("passed")
            if entry.intermittent:
                self.quiet_intermittent.append((config_id, check, entry.source))
                return Judgement("passed", note=f"intermittent known failure {entry.source} (vLLM {version}) did not show "
                                                f"this run: {entry.intermittent}")  # fmt: skip
            self.unexpected_passes.append((config_id, check, entry.source))
            text = (f"known failure {entry.source} (vLLM {version}) passed on {config_id}: {check} works now; "
                    f"remove it from the entry's checks")  # fmt: skip
            if self.strict_known_failures:
                return Judgement("unexpected pass", failure=f"[XPASS(strict)] {text}", entry=entry)
            return Judgement("unexpected pass", xfail_reason=text, entry=entry)
        failed_as = "failed" if phase == "call" else "error"
        if entry is None:
            return Judgement(failed_as)
        if entry.signature.matches(observed):
            return Judgement("known failure", xfail_reason=f"known failure on vLLM {version} ({entry.source}): {entry.reason}",
                             entry=entry)  # fmt: skip
        self.mismatches.append((config_id, check, entry.source))
        note = (f"{check} on {config_id} is covered by known failure {entry.source} (vLLM {version}), which fails with "
                f"{entry.signature.describe()}; this failure does not match it, so it is new. Observed: {observed[:500]}")  # fmt: skip
        return Judgement(failed_as, note=note, entry=entry)

    def record(self, check: str, config_id: str, judgement: Judgement, observed: str) -> None:
        """Keep the outcome a report shows: a failure or error in any phase outranks what came before."""
        key = (check, config_id)
        previous = self.records.get(key)
        if previous is not None and previous.outcome in FAILING:
            return
        reason = judgement.xfail_reason or judgement.failure or judgement.note or ""
        if judgement.outcome in FAILING and not reason:
            reason = observed
        self.records[key] = CheckRecord(check, config_id, judgement.outcome, reason[:OBSERVED_CHARS],
                                        observed[:OBSERVED_CHARS] if judgement.outcome != "passed" else "",
                                        previous.seconds if previous else 0.0,
                                        judgement.entry.source if judgement.entry else None)  # fmt: skip

    def add_seconds(self, check: str, config_id: str, seconds: float) -> None:
        """Time a phase took (setup, call, teardown); a server's boot lands on its first check."""
        key = (check, config_id)
        record = self.records.setdefault(key, CheckRecord(check, config_id, "passed"))
        record.seconds += seconds

    def counts(self, config_id: str) -> dict[str, int]:
        """Outcome counts for one configuration (the terminal summary's and the report's)."""
        return dict(Counter(r.outcome for r in self.records.values() if r.config == config_id))
