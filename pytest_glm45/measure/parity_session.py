"""The parity session: which configuration is each model's reference, and what becomes of every other one.

Each model's reference is the first of its configurations in the run's order of parity checks
(`plan`; every pytest-xdist worker collects the same items, so every worker names the same one), or
the model's recording in `--glm45-parity-reference`. A reference is checked before it is kept: one
whose logprobs contradict themselves (`parity.self_consistency`) or whose recording failed is no
reference, and every later configuration of its model fails naming it, rather than the next one
quietly taking its place. The reference itself is compared with nothing: its check is a skip that
says so, and report['parity']['configurations'] calls it `reference`.

A candidate is compared whatever its own self-consistency says; its verdict reports both.

Under pytest-xdist without a reference file, a candidate whose reference ran on another worker
waits (`waiting`): its check is a skip saying so, the worker hands its recordings to the controller
(`carry`, through `pytest_glm45.measure.sidebyside.pack`), the controller takes every worker's (`absorb`)
and judges the waiting ones once the workers are done (`settle`), recording each verdict in the
run's tally (`settle_verdicts`). No pytest import.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.measure.parity import (
    THRESHOLDS,
    PairResult,
    ParityThresholds,
    Recording,
    compare,
    self_consistency,
    summary,
    texts_digest,
    worst_table,
)
from pytest_glm45.records.verdict import OBSERVED_CHARS, CheckRecord, Verdicts

THIS_SESSION = "this session"
#: A configuration's role: its model's reference, compared with it, or waiting for the controller (pytest-xdist).
REFERENCE, CANDIDATE, WAITING = "reference", "candidate", "waiting"


@dataclass
class ParityOutcome:
    """What the parity check of one configuration comes to."""

    config: str
    model: str
    role: str
    #: what in its own recording contradicts itself (`parity.self_consistency`)
    problems: list[str] = field(default_factory=list)
    pair: PairResult | None = None
    #: why no parity verdict could be reached (the reference failed, or has no recording); None when one was
    no_verdict: str | None = None

    @property
    def failed(self) -> bool:
        """Whether the check fails: its logprobs contradict themselves, no verdict was possible, or the pair fails."""
        return bool(self.problems or self.no_verdict or (self.pair is not None and not self.pair.passed))

    @property
    def outcome(self) -> str:
        """In words, as report['parity']['configurations'] keeps it."""
        if self.role == REFERENCE:
            return "reference, failed" if self.failed else REFERENCE
        if self.role == WAITING:
            return "waiting, failed" if self.failed else WAITING
        return "failed" if self.failed else "passed"

    def message(self) -> str:
        """What the check says: its role, the pair's figures (and worst positions when it fails), why
        there is no verdict, and what contradicts itself."""
        lines = []
        if self.role == REFERENCE and not self.problems:
            lines.append(f"{self.config} is the parity reference of model {self.model!r}: its logprobs are consistent, "
                         "nothing is compared; every other configuration of this model is compared with it")  # fmt: skip
        elif self.role == REFERENCE:
            lines.append(f"{self.config} was to be the parity reference of model {self.model!r}, but its logprobs contradict "
                         "themselves: no configuration of this model is compared")  # fmt: skip
        elif self.role == WAITING:
            lines.append(f"{self.config}: logprobs recorded; its reference for model {self.model!r} ran on another "
                         "pytest-xdist worker, so the controller compares them when the workers are done")  # fmt: skip
        if self.no_verdict:
            lines.append(self.no_verdict)
        if self.pair is not None:
            lines.append(summary(self.pair))
            if not self.pair.passed:
                lines += [f"beyond the thresholds: {'; '.join(self.pair.failures)}", f"worst positions:\n{worst_table(self.pair)}"]
        if self.problems:
            lines.append(f"{self.config}: the server's logprobs contradict themselves:\n" + "\n".join(self.problems))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for report['parity']['configurations']."""
        return {"model": self.model, "role": self.role, "outcome": self.outcome, "self_consistency": self.problems,
                "reference": self.pair.reference if self.pair is not None else None, "no_verdict": self.no_verdict}  # fmt: skip


@dataclass
class ParitySession:
    """The references of one session (see the module's docstring), the pairs compared and every outcome."""

    references: dict[str, Recording] = field(default_factory=dict)
    reference_source: str = THIS_SESSION
    pairs: list[PairResult] = field(default_factory=list)
    recordings: dict[str, Recording] = field(default_factory=dict)
    table: Mapping[str, ParityThresholds] = field(default_factory=lambda: dict(THRESHOLDS))
    #: a pytest-xdist worker: a candidate whose reference is not here waits for the controller
    deferred: bool = False
    #: each model's reference configuration (the first of its parity checks in the run's order), by model
    planned: dict[str, str] = field(default_factory=dict)
    #: the model of every planned configuration
    model_of: dict[str, str] = field(default_factory=dict)
    #: why a model has no reference, by model
    failed_references: dict[str, str] = field(default_factory=dict)
    #: what became of each configuration (`ParityOutcome.to_dict`), by configuration
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: candidates waiting for the controller: their check id, by configuration
    waiting: dict[str, str] = field(default_factory=dict)
    #: the pairs workers compared (report dicts), on the controller
    carried_pairs: list[dict[str, Any]] = field(default_factory=list)

    def plan(self, order: Iterable[tuple[str, str]]) -> None:
        """Name each model's reference: the first configuration of it in `order` ((configuration, model)
        of every parity check, in the order they run). Without a plan, the first one observed is."""
        for config, model in order:
            self.model_of.setdefault(config, model)
            self.planned.setdefault(model, config)

    def _is_reference(self, config: str, model: str) -> bool:
        if self.reference_source != THIS_SESSION:
            return False
        planned = self.planned.get(model)
        if planned is not None:
            return planned == config
        return model not in self.references and model not in self.failed_references

    def recording_failed(self, config: str, why: str) -> None:
        """The configuration's recording failed: when it was to be its model's reference, the model has none."""
        model = self.model_of.get(config)
        if model is not None and self._is_reference(config, model) and model not in self.references:
            self.failed_references[model] = f"the parity reference {config} of model {model!r} failed to record its logprobs: {why}"

    def check(self, recording: Recording, check_id: str = "") -> ParityOutcome:
        """What becomes of `recording`: checked for self-consistency, then kept as its model's reference, or
        compared with it, or (a pytest-xdist worker, the reference elsewhere) left waiting for the controller."""
        config, model = recording.config, recording.model
        self.recordings[config] = recording
        problems = self_consistency(recording)
        if self._is_reference(config, model):
            if problems:
                self.failed_references[model] = (f"the parity reference {config} of model {model!r} failed: its logprobs "
                                                 f"contradict themselves ({problems[0]}" + (", and more)" if len(problems) > 1 else ")"))  # fmt: skip
            else:
                self.references[model] = recording
            return self._kept(ParityOutcome(config, model, REFERENCE, problems))
        if self.reference_source != THIS_SESSION and model not in self.references:
            known = ", ".join(sorted(self.references)) or "none"
            return self._kept(ParityOutcome(config, model, CANDIDATE, problems, no_verdict=(
                f"no parity verdict: the parity reference {self.reference_source} holds no recording of model {model!r} "
                f"(it holds: {known}); record one on a known-good box")))  # fmt: skip
        if model in self.failed_references:
            return self._kept(ParityOutcome(config, model, CANDIDATE, problems, no_verdict=f"no parity verdict: {self.failed_references[model]}"))
        if model not in self.references:
            if self.deferred:
                self.waiting[config] = check_id
                return self._kept(ParityOutcome(config, model, WAITING, problems))
            return self._kept(ParityOutcome(config, model, CANDIDATE, problems, no_verdict=self._missing(model)))
        return self._kept(self._compared(recording, problems))

    def observe(self, recording: Recording) -> PairResult | None:
        """`check`, as the session's first API had it: None for the reference, else the pair; a ValueError
        when no verdict is possible."""
        outcome = self.check(recording)
        if outcome.no_verdict:
            raise ValueError(outcome.no_verdict)
        return outcome.pair

    def _missing(self, model: str) -> str:
        planned = self.planned.get(model, "?")
        return (f"no parity verdict: the parity reference {planned} of model {model!r} has no recording: its parity check did "
                "not record one (its server did not boot, or the check errored or did not run)")  # fmt: skip

    def _compared(self, recording: Recording, problems: list[str]) -> ParityOutcome:
        try:
            pair = compare(self.references[recording.model], recording, self.table, reference_source=self.reference_source)
        except ValueError as exc:
            return ParityOutcome(recording.config, recording.model, CANDIDATE, problems, no_verdict=f"no parity verdict: {exc}")
        self.pairs.append(pair)
        return ParityOutcome(recording.config, recording.model, CANDIDATE, problems, pair)

    def _kept(self, outcome: ParityOutcome) -> ParityOutcome:
        self.outcomes[outcome.config] = outcome.to_dict()
        return outcome

    # -- pytest-xdist: the workers' recordings judged on the controller --------------------------------------

    def carry(self) -> dict[str, Any]:
        """What a worker hands the controller: every recording, its references, outcomes and waiting candidates."""
        return {"recordings": {k: r.to_dict() for k, r in self.recordings.items()},
                "references": {model: r.config for model, r in self.references.items()} if self.reference_source == THIS_SESSION else {},
                "planned": self.planned, "failed_references": self.failed_references, "outcomes": self.outcomes,
                "waiting": self.waiting, "pairs": [p.to_dict() for p in self.pairs] + self.carried_pairs}  # fmt: skip

    def absorb(self, data: Mapping[str, Any]) -> None:
        """Take a worker's `carry` (on the controller)."""
        for config, rec in (data.get("recordings") or {}).items():
            self.recordings[config] = Recording.from_dict(rec)
        for model, config in (data.get("references") or {}).items():
            self.references.setdefault(model, self.recordings[config])
        for model, config in (data.get("planned") or {}).items():
            self.planned.setdefault(model, config)
        self.failed_references.update(data.get("failed_references") or {})
        self.outcomes.update(data.get("outcomes") or {})
        self.waiting.update(data.get("waiting") or {})
        self.carried_pairs += list(data.get("pairs") or [])

    def settle(self) -> list[tuple[str, ParityOutcome]]:
        """Judge every waiting candidate against its model's reference, now that every worker's is here:
        (check id, outcome) for each."""
        out = []
        for config, check_id in sorted(self.waiting.items()):
            recording = self.recordings[config]
            problems = list(self.outcomes.get(config, {}).get("self_consistency") or [])
            model = recording.model
            if model in self.failed_references:
                outcome = ParityOutcome(config, model, CANDIDATE, problems, no_verdict=f"no parity verdict: {self.failed_references[model]}")
            elif model not in self.references:
                outcome = ParityOutcome(config, model, CANDIDATE, problems, no_verdict=self._missing(model))
            else:
                outcome = self._compared(recording, problems)
            out.append((check_id, self._kept(outcome)))
        self.waiting.clear()
        return out

    def to_report(self) -> dict[str, Any]:
        """report['parity']: the references (a report.json is itself a reference file: `load_references`),
        every pair, every other configuration's recording (`recordings`, by configuration id), what became of
        each configuration (`configurations`: role, outcome, self-consistency) and why a model has no reference."""
        refs = {r.config for r in self.references.values()}
        return {"digest": texts_digest(), "reference_source": self.reference_source,
                "references": {k: r.to_dict() for k, r in sorted(self.references.items())},
                "recordings": {k: r.to_dict() for k, r in sorted(self.recordings.items()) if k not in refs},
                "pairs": self.carried_pairs + [p.to_dict() for p in self.pairs],
                "configurations": dict(sorted(self.outcomes.items())), "failed_references": dict(sorted(self.failed_references.items()))}  # fmt: skip


def settle_verdicts(session: ParitySession, verdicts: Verdicts) -> tuple[list[str], bool]:
    """On the pytest-xdist controller: judge the waiting candidates (`ParitySession.settle`) and record each
    verdict in the run's tally in place of its worker's skip. Returns the lines to show and whether one failed.
    (Known-failure entries are not applied to these verdicts.)"""
    lines, failed = [], False
    for check_id, outcome in session.settle():
        state = "failed" if outcome.failed else "passed"
        previous = verdicts.records.get((check_id, outcome.config))
        text = outcome.message()
        verdicts.records[(check_id, outcome.config)] = CheckRecord(
            check_id, outcome.config, state, text[:OBSERVED_CHARS] if outcome.failed else "",
            text[:OBSERVED_CHARS] if outcome.failed else "", previous.seconds if previous is not None else 0.0)  # fmt: skip
        lines.append(f"{check_id} on {outcome.config}: {state}\n{text}")
        failed = failed or outcome.failed
    return lines, failed


def load_references(path: Path) -> dict[str, Recording]:
    """Recordings by model from a report.json (its `parity.references`) or a file of one recording or a list of them."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}; accepted: a report.json with a parity section, or a parity recording") from None
    if isinstance(data, dict) and "parity" in data:
        raw: Iterable[Any] = (data["parity"] or {}).get("references", {}).values()
    elif isinstance(data, dict) and "references" in data:
        raw = data["references"].values()
    elif isinstance(data, dict):
        raw = [data]
    else:
        raw = data
    refs = {}
    for item in raw:
        try:
            rec = Recording.from_dict(item)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        refs[rec.model] = rec
    if not refs:
        raise ValueError(f"{path} holds no parity recording; accepted: a report.json of a run with the parity suite")
    return refs
