"""What a server's log said about one request: the lines that carry the kit's request id.

Every request the kit sends carries an `X-Request-Id` of its own (`pytest_glm45.records.reproducer.new_request_id`);
vLLM takes it as the request's id, and its log lines about the request carry it (vLLM 0.32:
"Unexpected: grammar rejected tokens [198] for request chatcmpl-glm45-...-1a2b. Terminating request.").
A known failure whose symptom many defects share (an HTTP 500, a stream broken off) is told apart by such
a line: the verdict judges a failure on its message plus the log lines of the requests the check sent.

The index reads the log once, incrementally: each lookup reads only what was written since the last one.
No pytest here.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path

from pytest_glm45.records.redaction import redact

#: A kit request id inside a log line.
REQUEST_ID = re.compile(r"glm45-[0-9a-f]{16}")
#: The log lines of one request a verdict is shown (the first ones: the cause comes first).
LINES_PER_REQUEST = 4
#: The longest log line kept (a traceback's repr of a request can run to kilobytes).
LINE_CHARS = 600


class RequestLog:
    """Lines of one server's log file, by the kit request id they mention."""

    def __init__(self, path: Path | None, secrets: Iterable[str | None] = ()) -> None:
        self.path = path
        self._secrets = tuple(s for s in secrets if s)
        self._offset = 0
        self._partial = b""
        self._lines: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _read_new(self) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            if b"glm45-" not in raw:
                continue
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            for request_id in set(REQUEST_ID.findall(line)):
                kept = self._lines.setdefault(request_id, [])
                if len(kept) < LINES_PER_REQUEST:
                    kept.append(redact(line.strip()[:LINE_CHARS], self._secrets))

    def lines_for(self, request_ids: Iterable[str]) -> list[str]:
        """The log lines that mention any of `request_ids`, in the order of the ids."""
        with self._lock:
            self._read_new()
            return [line for rid in dict.fromkeys(request_ids) for line in self._lines.get(rid, ())]


def describe(lines: list[str]) -> str:
    """The lines as the observed failure text carries them (empty when there are none)."""
    return "".join(f"\nserver log: {line}" for line in lines)
