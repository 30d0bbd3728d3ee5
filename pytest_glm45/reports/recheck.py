"""`pytest-glm45 reproduce REPORT`: send each known failure's request again with the printed curl and judge
whether it still shows the same defect.

A report's check carries `reproducer = {"requests": [...], "curl": str, "python": str}`
(pytest_glm45.records.reproducer); the request marked `reproduced` is the one the curl repeats, with what
came back when the check ran. A report comes from another box, so its curl text is never run: every
chosen check's curl must be the command the kit builds from its recorded request
(`reproducer.verify`), else nothing runs and the command names the checks; each request is then sent
by curl from an argv the kit builds (`reproducer.curl_argv`: no shell, PATH its only environment). The
judge compares an *observation* of the recorded exchange with an observation of what the curl printed
(the body, then `\\nHTTP <code>\\n`).

An observation keeps what the defect is made of and drops what legitimately varies between two runs
of the same deterministic replay:

- the status, and how the connection failed when it did (closed mid-answer, no answer, timeout);
- the error: a non-200 answer's message, or a stream's first error event (the kit stops reading a
  stream there, so both sides are cut at it), with volatile tokens (ids such as chatcmpl-...,
  call_..., resp_..., msg_..., toolu_..., uuids and hex runs, timestamps) normalized;
- a 200 answer in the kit's terms: content, reasoning, tool calls (name and parsed arguments) and
  finish reason, from `answers.from_response`/`assemble` on /v1/chat/completions and
  `surfaces.from_responses`/`from_messages` (streams: `assemble_responses`/`assemble_messages`) on
  /v1/responses and /v1/messages, whose contract problems are kept too, normalized (event numbers
  and the per-event `(got ...)` values go: both change when vLLM merges deltas). Streams are always
  compared assembled, never chunk by chunk;
- other paths: the normalized body.

A stream that broke off (an error event, a connection closed mid-answer) the same way on both sides
is compared up to the break: which tokens were still in flight when the engine failed depends on how
vLLM batched its steps into deltas, so one side's text must be the start of the other's, and the
problems are compared with the text they quote masked.

An answer the request left to sampling (no replay script, no `temperature: 0`, no `seed`) is judged
by status and error only: its text is not part of any defect. The report keeps only the data of a
stream's events, not their `event:` names, so problems about names are not compared.

When the record cannot be assembled in full (a stream whose middle was left out, a chunk or body cut
at BODY_CHARS (8000) characters, a stream the openai client's hook did not record), what it kept is compared: the
status and error, the streamed text as a prefix and suffix of what the curl's stream adds up to (in
order, segment by segment), each cut chunk as a prefix of one of the curl's events, a cut body as a
prefix of the curl's body. Such a match is `partial`, never `reproduces`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.records import ids, reproducer
from pytest_glm45.records.reproducer import Exchange, exchange_from, summary
from pytest_glm45.reports.observation import (
    CLOSED_MID_ANSWER,
    NO_ANSWER,
    TRAILER,
    Atom,
    Chunk,
    CurlRun,
    Observation,
    observe_output,
    observe_record,
    sse_items,
    surface_of,
)
from pytest_glm45.reports.observation import normalize as normalize
from pytest_glm45.reports.observation import normalize_problem as normalize_problem

#: The verdicts, in the order a summary counts them.
VERDICTS = ("reproduces", "partial", "differs", "error", "no reproducer")
#: `--outcome`'s values and the report outcomes each selects.
OUTCOMES = {"known": ("known failure",), "failed": ("failed", "error"), "all": ("failed", "error", "known failure")}
#: What a summary calls the checks of each `--outcome`.
NOUNS = {"known": "known failures", "failed": "failures", "all": "failing or known-failing checks"}
#: Characters of a differing curl's output the JSON verdicts keep.
PRINTED_CHARS = 20000
#: Seconds one curl may run, by default.
TIMEOUT = 120.0
#: Characters at the end of a kept prefix left out of a comparison: a volatile token cut there normalizes differently.
SLACK = 64

# -- the judge ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """One check's verdict."""

    check: str
    config: str
    outcome: str
    known_entry: str | None
    verdict: str
    request: str | None = None
    #: [field, recorded, now] for each field that differs
    differences: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int | None = None
    seconds: float | None = None
    #: what the curl printed, when it differs or errs (its first PRINTED_CHARS characters), for a closer look
    printed: str | None = None


def _match_segment(seg: list[Atom], full: list[Atom], at: int, anchors: tuple[bool, bool], ragged: bool = False) -> int | None:
    """Where `seg` (a stretch of a stream, its ends possibly cut mid-atom) sits in `full` from atom `at` on:
    the index of the last atom it matched (the next stretch may go on inside that atom), or None. A cut
    end's atom needs only to be a prefix (end) or suffix (start) of the one it matches; `ragged`: the
    stream broke off, so its last atom may also be longer or shorter than `full`'s last."""
    start, end = anchors
    last = len(seg) - 1
    candidates = [0] if start else range(at, len(full) - last)
    for p in candidates:
        if p + last >= len(full):
            break
        ok = True
        for i, atom in enumerate(seg):
            other = full[p + i]
            if (atom.kind, atom.index) != (other.kind, other.index):
                ok = False
            elif i == last and ragged and p + i == len(full) - 1:
                if i == 0 and not start:  # a stretch from inside the stream to where it broke off
                    ok = atom.text in other.text or any(other.text.endswith(atom.text[:k]) for k in range(len(atom.text), 0, -1))
                else:
                    ok = other.text.startswith(atom.text) or atom.text.startswith(other.text)
            elif i == 0 and not start and i == last and not end:
                ok = atom.text in other.text
            elif i == 0 and not start:
                ok = other.text.endswith(atom.text)
            elif i == last and not end:
                ok = other.text.startswith(atom.text)
            else:
                ok = atom.text == other.text
            if not ok:
                break
        if ok and (not end or p + last == len(full) - 1):
            return p + last
    return None


def _prefix_compatible(a: list[Atom], b: list[Atom]) -> bool:
    """Whether one stream's atoms are the start of the other's (the shorter's last atom a prefix of its twin)."""
    if len(a) > len(b):
        a, b = b, a
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if (x.kind, x.index) != (y.kind, y.index):
            return False
        if i < len(a) - 1 and x.text != y.text:
            return False
        if i == len(a) - 1:
            return y.text.startswith(x.text) or (len(a) == len(b) and x.text.startswith(y.text))
    return True


def _masked(problem: str) -> str:
    """A problem with the text it quotes masked (what a broken-off stream had said by then varies)."""
    return re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'…'", problem)


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "..."


def _atoms_shown(atoms: list[Atom]) -> list[list[str]]:
    return [[a.kind, a.text] for a in atoms]


def compare(recorded: Observation, now: Observation, notes: list[str] | None = None) -> list[list[Any]]:
    """Each field in which `now` shows something other than the record: [field, recorded, now]; what
    the comparison could not hold equal on purpose goes to `notes`.

    A stream that broke off (an error event, a connection closed mid-answer) the same way on both
    sides is compared up to the break: which tokens were still in flight when the engine failed is
    timing (how vLLM batched the steps into deltas), so the text before the break is compared as one
    being a prefix of the other, and the problems with the text they quote masked."""
    notes = [] if notes is None else notes
    diffs: list[list[Any]] = []
    for name in ("status", "transport", "error"):
        a, b = getattr(recorded, name), getattr(now, name)
        if a != b and not (name == "error" and recorded.prefix is not None and a is None):
            diffs.append([name, a, b])
    broke = bool(recorded.segments and now.segments) and (recorded.error is not None or recorded.transport == "closed mid-answer")
    full = now.segments[0] if len(now.segments) == 1 else []
    if recorded.complete and broke and not recorded.sampled and not diffs:
        if not _prefix_compatible(recorded.segments[0], full):
            diffs.append(["stream before the break", _atoms_shown(recorded.segments[0]), _atoms_shown(full)])
        mine, theirs = {_masked(p) for p in recorded.problems or []}, {_masked(p) for p in now.problems or []}
        if mine != theirs:
            diffs.append(["problems", sorted(mine - theirs), sorted(theirs - mine)])
        if recorded.answer != now.answer and not diffs:
            notes.append("both streams broke off the same way; the text before the break was compared as a prefix "
                         "(the tokens in flight when the engine failed vary)")  # fmt: skip
        return diffs
    if recorded.complete:
        mine_fields, theirs_fields = recorded.compared(), now.compared()
        for name in mine_fields:
            a, b = mine_fields[name], theirs_fields.get(name)
            if name in ("status", "transport", "error") or a == b:
                continue
            if name == "problems" and a is not None and b is not None:
                # only what one side has: the record's problems the curl no longer shows, and new ones
                diffs.append([name, sorted(set(a) - set(b)), sorted(set(b) - set(a))])
            else:
                diffs.append([name, a, b])
        return diffs
    if recorded.sampled:
        return diffs
    if recorded.prefix is not None:
        kept = recorded.prefix[:-SLACK] if len(recorded.prefix) > SLACK else recorded.prefix
        if not (now.prefix or "").startswith(kept):
            diffs.append(["body prefix", *_tail_diff(kept, now.prefix or "")])
    at = 0
    segments = [(seg, anchors) for seg, anchors in zip(recorded.segments, recorded.anchors, strict=True) if seg]
    for n, (seg, anchors) in enumerate(segments):
        ragged = broke and n == len(segments) - 1 and anchors[1]
        found = _match_segment(seg, full, at, (anchors[0], anchors[1] and not ragged), ragged=ragged)
        if found is None:
            where = "start" if anchors[0] else "end" if anchors[1] else "middle"
            diffs.append([f"stream ({where})", _atoms_shown(seg), _atoms_shown(full)])
            break
        at = found
    for kept in recorded.cut:
        kept = kept[:-SLACK] if len(kept) > SLACK else kept
        if not any(e.startswith(kept) for e in now.events):
            diffs.append(["cut chunk", kept, "(no event of the curl's stream starts so)"])
    return diffs


def _tail_diff(a: str, b: str) -> tuple[str, str]:
    """Both texts from a little before where they first differ."""
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[max(0, n - 40):n + 80], b[max(0, n - 40):n + 80]


def judge(exchange: Exchange, run: CurlRun) -> tuple[str, list[list[Any]], list[str]]:
    """(verdict, differences, notes) for what the curl printed against the recorded exchange."""
    recorded = observe_record(exchange)
    if run.timed_out and recorded.transport != "timeout":
        return "error", [], [f"the curl did not finish in {run.seconds:.0f} s"]
    if run.exit_code == 127:
        return "error", [], [f"curl could not be run: {run.stderr.strip()[:200]}"]
    if not run.timed_out and run.exit_code not in (0, *CLOSED_MID_ANSWER, *NO_ANSWER):
        return "error", [], [f"curl exited {run.exit_code}" + (" (could not connect)" if run.exit_code == 7 else "")
                             + (f": {run.stderr.strip()[:200]}" if run.stderr.strip() else "")]  # fmt: skip
    if not run.timed_out and not TRAILER.search(run.stdout):
        return "error", [], ["curl printed no 'HTTP <code>' line (its -w trailer)"]
    now = observe_output(exchange, run)
    notes = list(recorded.notes)
    if recorded.sampled:
        notes.append("the request leaves its answer to sampling (no replay script, temperature or seed): text not compared")
    if any("SSE event name" in p for p in _named_problems(exchange, run)):
        notes.append("event names not compared (the report keeps only each event's data)")
    diffs = compare(recorded, now, notes)
    if diffs:
        return "differs", diffs, notes
    return ("reproduces" if recorded.complete else "partial"), [], notes


def _named_problems(exchange: Exchange, run: CurlRun) -> list[str]:
    """The curl's stream's problems about SSE event names (the record cannot show them)."""
    if not (exchange.stream and surface_of(exchange.path) == "messages"):
        return []
    from pytest_glm45.clients import surfaces

    events = []
    for item in sse_items(run.stdout):
        if isinstance(item, Chunk):
            try:
                data = json.loads(item.payload)
            except ValueError:
                continue
            if isinstance(data, dict):
                events.append(surfaces.Event(item.name, data))
    return [f"SSE event name {e.name!r}" for e in events if e.name != e.data.get("type")]


# -- running -------------------------------------------------------------------------------------


def run_curl(argv: Sequence[str], env: dict[str, str], timeout: float, stdin: bytes | None = None) -> CurlRun:
    """Run curl's `argv` (no shell) with `stdin` on its standard input and PATH from `env` as its only
    environment; kill its process group after `timeout` seconds."""
    began = time.monotonic()
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={"PATH": env.get("PATH", os.defpath)}, start_new_session=True)  # fmt: skip
    except OSError as exc:
        return CurlRun(127, "", str(exc), time.monotonic() - began)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    return CurlRun(None if timed_out else proc.returncode, out.decode("utf-8", errors="replace"),
                   err.decode("utf-8", errors="replace"), time.monotonic() - began, timed_out)  # fmt: skip


def curl_env(base_url: str | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """What the curls are built from (`reproducer.curl_argv`): PATH, GLM45_BASE_URL, and the key variables."""
    environ = dict(os.environ) if environ is None else environ
    env = {"PATH": environ.get("PATH", os.defpath)}
    url = base_url or environ.get("GLM45_BASE_URL")
    if url:
        env["GLM45_BASE_URL"] = url.rstrip("/")
    for name in ("GLM45_API_KEY", "VLLM_API_KEY"):
        if environ.get(name):
            env[name] = environ[name]
    return env


def main_request(reproducer: dict[str, Any]) -> Exchange | None:
    """The request a reproducer's curl repeats, or None when it lists none."""
    requests = reproducer.get("requests") or []
    if not requests:
        return None
    return exchange_from(next((r for r in requests if r.get("reproduced")), requests[-1]))


def altered(record: dict[str, Any]) -> str | None:
    """Why a check's reproducer is not what this kit would have written (`reproducer.verify`), or None."""
    try:
        repro = record.get("reproducer") or {}
        exchange = main_request(repro)
        if not repro.get("curl") or exchange is None:
            return None
        reproducer.verify(exchange, repro["curl"])
    except reproducer.AlteredReproducer as exc:
        return str(exc)
    except (TypeError, AttributeError) as exc:
        return f"its reproducer is not one the kit writes ({exc})"
    return None


def recheck(record: dict[str, Any], env: dict[str, str], timeout: float) -> Verdict:
    """Send one check's recorded request again with the curl the kit builds for it, and judge what came back.
    Raises reproducer.AlteredReproducer when the report's curl is not that one (`altered` says so first)."""
    verdict = Verdict(record["id"], record["config"], record.get("outcome", "?"), record.get("known_entry"), "no reproducer")
    repro = record.get("reproducer") or {}
    exchange = main_request(repro)
    if not repro.get("curl") or exchange is None:
        return verdict
    reproducer.verify(exchange, repro["curl"])
    verdict.request = summary(exchange)
    argv, stdin = reproducer.curl_argv(exchange, env)
    run = run_curl(argv, env, timeout, stdin)
    verdict.exit_code, verdict.seconds = run.exit_code, round(run.seconds, 2)
    verdict.verdict, verdict.differences, verdict.notes = judge(exchange, run)
    if verdict.verdict in ("differs", "error"):
        verdict.printed = reproducer.truncated(run.stdout + (f"\n[stderr] {run.stderr}" if run.stderr else ""), PRINTED_CHARS)
    return verdict


def select(report: dict[str, Any], outcome: str, config: str | None, check: str | None) -> list[dict[str, Any]]:
    """The report's checks with one of `outcome`'s outcomes whose configuration and id match the patterns."""
    return [r for r in report.get("checks", [])
            if r.get("outcome") in OUTCOMES[outcome]
            and (config is None or ids.matches(str(r.get("config")), config))
            and (check is None or ids.matches(str(r.get("id")), check))]  # fmt: skip


def summary_line(config: str, verdicts: Sequence[Verdict], noun: str) -> str:
    """`N of M <noun> on CONFIG reproduce with the printed curl (P partial, D differ)`, errors and missing reproducers added."""
    count = {v: sum(1 for x in verdicts if x.verdict == v) for v in VERDICTS}
    extra = "".join(f", {count[v]} {label}" for v, label in (("error", "error"), ("no reproducer", "without a reproducer")) if count[v])
    return (f"{count['reproduces']} of {len(verdicts)} {noun} on {config} reproduce with the printed curl "
            f"({count['partial']} partial, {count['differs']} differ{extra})")  # fmt: skip


def describe(verdict: Verdict) -> list[str]:
    """A verdict as the lines the command prints: one line, then what differs or why."""
    lines = [f"{verdict.verdict:<13} {verdict.config}  {verdict.check}"]
    for name, mine, theirs in verdict.differences:
        lines.append(f"    {name}: recorded {_short(mine)}")
        lines.append(f"    {' ' * len(name)}  now      {_short(theirs)}")
    if verdict.verdict != "reproduces":
        lines += [f"    ({note})" for note in verdict.notes]
    return lines


# -- the command ----------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted: a number of seconds above 0, such as 120")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `reproduce` subcommand's options."""
    parser.add_argument("report", help="a report.json (pytest --glm45-report DIR writes DIR/report.json), or its directory")
    parser.add_argument("--outcome", choices=tuple(OUTCOMES), default="known",
                        help="Which checks: known failures, failures (failed or error), or all of them. Default: known.")
    parser.add_argument("--config", default=None, help="Only configurations whose id matches this pattern (* and ?). Default: all.")
    parser.add_argument("--check", default=None, help="Only checks whose id matches this pattern (* and ?). Default: all.")
    parser.add_argument("--base-url", default=None,
                        help=f"The server the curls go to (GLM45_BASE_URL). Default: $GLM45_BASE_URL, else {reproducer.DEFAULT_BASE_URL}.")
    parser.add_argument("--timeout", type=_positive, default=TIMEOUT, help=f"Seconds one curl may run. Default: {TIMEOUT:.0f}.")
    parser.add_argument("--json", default=None, metavar="FILE", help="Also write the verdicts to FILE as JSON.")
    parser.add_argument("-q", "--quiet", action="store_true", help="Print only the summary lines.")


def _usage(message: str) -> int:
    print(f"pytest-glm45 reproduce: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """`pytest-glm45 reproduce`: 0 when no check differs or errs, 1 when one does, 2 on a usage error or a
    report whose curls are not the kit's (then nothing runs)."""
    from pytest_glm45.reports import report as report_module

    path = Path(args.report)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = report_module.load(path)
        if not isinstance(data.get("checks"), list):
            raise ValueError(f"{path}: no 'checks' list")
    except (OSError, ValueError) as exc:
        return _usage(f"cannot read the report {args.report}: {exc}; expected a report.json that "
                      "`pytest --glm45-report DIR` writes (DIR/report.json)")  # fmt: skip
    configs = sorted({str(c.get("config")) for c in data["checks"]})
    if args.config is not None and not any(ids.matches(c, args.config) for c in configs):
        return _usage(f"--config {args.config!r} matches no configuration of {path}; it has: {', '.join(configs) or 'none'}")
    chosen = select(data, args.outcome, args.config, args.check)
    noun = NOUNS[args.outcome]
    refused = [(record, why) for record in chosen if (why := altered(record))]
    if refused:
        from pytest_glm45 import __version__

        lines = "".join(f"\n  {r.get('config')}  {r.get('id')}: {why}" for r, why in refused)
        return _usage(f"refused {path}: the report was altered, or comes from another kit version (it says pytest-glm45 "
                      f"{data.get('kit_version', '?')}; this is {__version__}); nothing was run:{lines}\n"
                      "accepted: a report.json as `pytest --glm45-report` wrote it, rechecked with the kit version "
                      "that wrote it")  # fmt: skip
    env = curl_env(args.base_url)
    if shutil.which("curl", path=env["PATH"]) is None:
        return _usage("curl is not on PATH: the requests are sent again with curl")
    where = env.get("GLM45_BASE_URL", f"{reproducer.DEFAULT_BASE_URL} (the curl's default)")
    if not chosen:
        print(f"pytest-glm45 reproduce: {path} has no {noun}" + (f" matching --check {args.check}" if args.check else "")
              + (f" on --config {args.config}" if args.config else ""))  # fmt: skip
    picked_configs = sorted({str(c["config"]) for c in chosen})
    if len(picked_configs) > 1:
        print(f"pytest-glm45 reproduce: note: {len(picked_configs)} configurations ({', '.join(picked_configs)}) "
              f"replayed against the one server at {where}; --config picks one", file=sys.stderr)  # fmt: skip
    if chosen and not args.quiet:
        print(f"pytest-glm45 reproduce: {len(chosen)} {noun} of {path} against {where}", flush=True)
    verdicts: list[Verdict] = []
    for record in chosen:
        verdict = recheck(record, env, args.timeout)
        verdicts.append(verdict)
        if not args.quiet:
            print("\n".join(describe(verdict)), flush=True)
    for config in picked_configs:
        print(summary_line(config, [v for v in verdicts if v.config == config], noun))
    if args.json:
        payload = {"report": str(path), "base_url": env.get("GLM45_BASE_URL"), "outcome": args.outcome,
                   "checks": [asdict(v) for v in verdicts],
                   "summary": {c: {"total": sum(1 for v in verdicts if v.config == c),
                                   **{k: sum(1 for v in verdicts if v.config == c and v.verdict == k) for k in VERDICTS}}
                               for c in picked_configs}}  # fmt: skip
        try:
            Path(args.json).write_text(json.dumps(payload, indent=1, default=str) + "\n", "utf-8")
        except OSError as exc:
            return _usage(f"cannot write --json {args.json}: {exc}")
    return 1 if any(v.verdict in ("differs", "error") for v in verdicts) else 0
