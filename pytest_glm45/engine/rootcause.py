"""The root cause in a vLLM server's log: the first error its engine wrote, not the last line.

A server that dies at boot ends its log with the API server's generic `RuntimeError: Engine core
initialization failed. See root cause above. Failed core proc(s): ...`; the cause (`ValueError: Custom
logits processors are not supported when speculative decoding is enabled.`) sits a hundred lines higher,
in the engine core's traceback. vLLM's lines look like::

    (EngineCore_DP0 pid=4242) ERROR 12-05 10:00:01 [core.py:1510] EngineCore failed to start.
    (EngineCore_DP0 pid=4242) ERROR 12-05 10:00:01 [core.py:1510] Traceback (most recent call last):
    (EngineCore_DP0 pid=4242) ERROR 12-05 10:00:01 [core.py:1510]   File ".../core.py", line 1500, in run_engine_core
    (EngineCore_DP0 pid=4242) ERROR 12-05 10:00:01 [core.py:1510] ValueError: Custom logits processors ...

(each line of a multi-line record repeats the process prefix and the header; a child's own stderr,
such as multiprocessing's "Process EngineCore_DP0:" traceback, has neither). An error is the exception
line that ends a traceback, an ERROR or CRITICAL record with no traceback in it, or argparse's
`prog: error: ...`. At boot, the root cause is the first error of an engine process (any prefix but the
API server's), else the first error at all: the API server's errors are the consequence. Once the server
has served, only tracebacks written since it became ready count, and not those the API server logs for
requests (`root_cause`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

#: vLLM's process prefix, `(EngineCore_DP0 pid=123) `.
PREFIX = re.compile(r"^\((?P<process>[A-Za-z_][\w .:-]*?) pid=(?P<pid>\d+)\) ?")
#: vLLM's record header after the prefix: `ERROR 12-05 10:00:01 [core.py:1510] `.
HEADER = re.compile(r"^(?P<level>DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL) +\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)? +\[[^\]]*\] ?")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRACEBACK = "Traceback (most recent call last):"
#: argparse's refusal: `api_server.py: error: argument --foo: invalid choice ...`
ARGPARSE = re.compile(r"^[\w.\-]+: error: ")
#: Lines after an exception line that start the next exception of a chain.
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
#: How much of a log is read (a boot's log is far smaller; a long run's log is read from its end).
READ_LIMIT = 8 * 1024 * 1024
#: The most of an error's text a message quotes (the log has the rest).
MAX_TEXT = 600


@dataclass(frozen=True)
class RootCause:
    """An error of a log: its text, its 1-based line number, the process that wrote it, whether it ends a
    traceback, and (once chosen as the root cause) which rule chose it."""

    text: str
    line: int
    process: str | None
    traceback: bool = False
    kind: str = "first error"

    def describe(self) -> str:
        """`line 57, process Worker` (where it stands, for messages)."""
        return f"line {self.line}" + (f", process {self.process}" if self.process else "")


@dataclass(frozen=True)
class _Line:
    number: int
    process: str | None
    level: str | None
    text: str


def _split(raw: str, number: int) -> _Line:
    line = ANSI.sub("", raw).rstrip("\r")
    process = None
    prefix = PREFIX.match(line)
    if prefix is not None:
        process, line = prefix.group("process"), line[prefix.end() :]
    header = HEADER.match(line)
    level = None
    if header is not None:
        level, line = header.group("level"), line[header.end() :]
    return _Line(number, process, level, line)


def errors(text: str, first_line: int = 1) -> list[RootCause]:
    """Every error of a log's text, in order (`first_line`: the number of the text's first line). An ERROR
    record's heading ("EngineCore failed to start.") that goes on with a traceback is left out: the
    traceback's exception line says more."""
    lines = [_split(raw, n) for n, raw in enumerate(text.splitlines(), first_line)]
    found: list[RootCause] = []
    in_traceback: dict[str | None, bool] = {}  # per process: processes' lines interleave
    for n, line in enumerate(lines):
        body = line.text.strip()
        if body == TRACEBACK:
            in_traceback[line.process] = True
            continue
        if in_traceback.get(line.process):
            if not body or line.text[0].isspace():  # a frame, its source line, a ^^^ marker
                continue
            in_traceback[line.process] = False
            if not body.startswith(_CHAINED):
                found.append(RootCause(body, line.number, line.process, traceback=True))
            continue
        following = lines[n + 1] if n + 1 < len(lines) else None
        heading = following is not None and following.process == line.process and following.text.strip() == TRACEBACK
        if body and not heading and not body.startswith(_CHAINED) and (line.level in ("ERROR", "CRITICAL") or ARGPARSE.match(body)):
            found.append(RootCause(body, line.number, line.process))
    return found


def engine_process(process: str | None) -> bool:
    """Whether a prefix names one of the engine's processes (engine core, workers), not the API server."""
    return process is not None and not process.lower().startswith("apiserver")


def root_cause(text: str, first_line: int = 1, serving: bool = False) -> RootCause | None:
    """The root cause in a log's text, None without one. At boot: the engine's first error, else the first
    error. Once the server has served (`serving`): the engine's first traceback, else the first traceback
    a process printed itself (no prefix: an uncaught exception's last words); the errors the API server
    logs for requests (a hostile request's validation error, with its traceback) and the ERROR lines a
    serving engine writes for each request it terminates (a grammar's rejection) are not why it died."""
    found = errors(text, first_line)
    if serving:
        tracebacks = [e for e in found if e.traceback]
        engine = next((e for e in tracebacks if engine_process(e.process)), None)
        if engine is not None:
            return replace(engine, kind="engine's first traceback")
        own = next((e for e in tracebacks if e.process is None), None)
        return None if own is None else replace(own, kind="first uncaught traceback")
    engine = next((e for e in found if engine_process(e.process)), None)
    if engine is not None:
        return replace(engine, kind="engine's first error")
    return replace(found[0], kind="first error") if found else None


def find(path: Path, start: int = 0, *, serving: bool = False, secrets: tuple[str, ...] = ()) -> RootCause | None:
    """The root cause in a log file from byte `start` on (the last READ_LIMIT bytes at most), its text
    redacted; None when there is none, or no log."""
    from pytest_glm45.records.redaction import redact

    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            begin = max(0, min(start, size), size - READ_LIMIT)
            f.seek(0)
            newlines, left = 0, begin
            while left > 0:  # the line number where the text read begins
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                newlines, left = newlines + chunk.count(b"\n"), left - len(chunk)
            data = f.read()
    except OSError:
        return None
    if begin > start and b"\n" in data:  # read from the end of a huge log: from the next line's start
        data = data.split(b"\n", 1)[1]
        newlines += 1
    cause = root_cause(data.decode("utf-8", errors="replace"), newlines + 1, serving)
    if cause is None:
        return None
    text = redact(cause.text, secrets)  # then shortened: no part of a secret is left at the cut
    return replace(cause, text=text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…")
