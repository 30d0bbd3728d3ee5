"""Conservation: what a server returns must account for every token the model wrote.

Replay knows the whole of what the model wrote (the script). Whatever the request asked for and whichever
surface answered, the returned pieces (reasoning, content, calls with their arguments) re-rendered in the
script's own format must give back the script: every piece returned once, as text, as reasoning, or parsed
into a call equal to the call written; nothing dropped, nothing invented, nothing duplicated. The usage
figure must agree: the completion tokens are the script's tokens (on the served tokenizer), plus at most the
end-of-turn token.

The transforms a server is entitled to, the only ones (ALLOWED_TRANSFORMS says the same, for messages):

1. **A call becomes a structured call.** A complete `<tool_call>...</tool_call>` may come back as a call
   whose name and arguments, rendered by `glm_format.render_call` in the script's style, are the text
   written; every value compares as GLM writes it (strings raw, the rest JSON), so `7` and `"7"` are the
   same text here (their JSON types are the tool-calling checks' business). A call whose first `<arg_key>`
   is missing (`<tool_call>get_weathercity</arg_key>...`) may be read with it restored. Only where the
   request lets the server parse: with `tool_choice: "none"` or no `tools`, a call's text must come back
   as text (content or reasoning), never parsed and never dropped.
2. **`<think>...</think>` becomes the reasoning field.** The tags (a `<think>` that opens the script, the
   first `</think>`; the template's own `<think>` when the prompt opened the block) may be consumed, or come
   back as the text they are. Which field a piece lands in (reasoning or content) is not conservation's
   business: the reasoning field and the content are read in that order as one text; where each piece
   must land is what the reasoning and tool-calling checks judge.
3. **Separators may be trimmed.** GLM-4.5 writes a newline between text and a call, between calls and
   after `</think>`, and its chat template strips both fields when it renders them back
   (`reasoning.strip()`, `content.strip()`). So whitespace is formatting exactly where a piece was cut
   out: around a parsed call, around a consumed think tag, at the start and end of the answer, and at the
   ends of the reasoning and the content where they meet; any run of whitespace, none included, is
   accepted there. Whitespace anywhere else is the model's text.
4. **An answer cut by max_tokens** (finish reason `length`) accounts for a prefix of the script (compared
   without whitespace); its usage is at most the script's tokens and the end-of-turn token.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_glm45.clients.answers import ChatResult
from pytest_glm45.glm.glm_format import STYLES, THINK_CLOSE, THINK_OPEN, render_call
from pytest_glm45.glm.replay import AS_TEXT_XARG, parse_as_text
from pytest_glm45.records import reproducer

if TYPE_CHECKING:
    from pytest_glm45.clients.chat import ChatClient

#: The transforms a server may apply to what the model wrote, named in every failure (see the module's docstring).
ALLOWED_TRANSFORMS = (
    "a complete <tool_call> may come back as a structured call equal to it re-rendered (only when the request lets the server parse calls)",
    "<think>...</think> may become the reasoning field (the tags consumed, or kept as text)",
    "whitespace where a call or a think tag was cut out, at the answer's ends and at each field's ends, may be trimmed",
    "an answer cut by max_tokens accounts for a prefix of the script",
)
#: Reading a call's text: a whole call, tags and all (the shortest: calls follow one another).
_CALL = re.compile(r"<tool_call>.*?</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ParseMode:
    """What the request told the server to parse: declared tools, tool_choice, thinking."""

    tools: bool
    tool_choice: Any = "auto"
    thinking: bool = True
    #: The template opened the think block itself (GLM-4.7 with thinking on): the model starts inside it.
    prompt_opens_think: bool = False

    @property
    def parses_calls(self) -> bool:
        """Whether the server may turn the model's calls into structured calls."""
        return self.tools and self.tool_choice != "none"

    def describe(self) -> str:
        """The request's parse mode in words, for a failure message."""
        choice = json.dumps(self.tool_choice) if self.tools else "-"
        return (f"{'tools declared' if self.tools else 'no tools'}, tool_choice {choice}, thinking {'on' if self.thinking else 'off'}"
                + (" (the prompt opened <think>)" if self.prompt_opens_think else ""))  # fmt: skip


def parse_mode(fields: Mapping[str, Any], opens_think: bool = False) -> ParseMode:
    """The parse mode of a request stated in Chat Completions' terms (`tools`, `tool_choice`,
    `chat_template_kwargs.enable_thinking`); `opens_think`: the model's template opens `<think>` itself."""
    tools = bool(fields.get("tools"))
    choice = fields.get("tool_choice", "auto" if tools else "none")
    thinking = bool((fields.get("chat_template_kwargs") or {}).get("enable_thinking", True))
    return ParseMode(tools, choice if tools else "none", thinking, opens_think and thinking)


def completion_tokens(usage: Mapping[str, Any] | None) -> int | None:
    """The generated-token count of an answer's usage, on any surface (`completion_tokens`, `output_tokens`)."""
    if not usage:
        return None
    for key in ("completion_tokens", "output_tokens"):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# -- the script in pieces ---------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One piece of a script: `text`, a `call` (its whole text), or an `open`/`close` think tag."""

    kind: str
    text: str


def pieces(script: str, prompt_opens_think: bool = False) -> list[Piece]:
    """The script as GLM-4.5's format reads it: an opening `<think>` (the script's first characters, or the
    prompt's), the first `</think>`, and each complete call between text."""
    out: list[Piece] = []
    rest = script
    if prompt_opens_think:
        out.append(Piece("open", ""))
    elif rest.startswith(THINK_OPEN):
        out.append(Piece("open", THINK_OPEN))
        rest = rest[len(THINK_OPEN):]
    before, close, after = rest.partition(THINK_CLOSE)
    regions = [before, after] if close else [before]
    for n, region in enumerate(regions):
        if n == 1:
            out.append(Piece("close", THINK_CLOSE))
        at = 0
        for found in _CALL.finditer(region):
            if found.start() > at:
                out.append(Piece("text", region[at:found.start()]))
            out.append(Piece("call", found.group()))
            at = found.end()
        if at < len(region):
            out.append(Piece("text", region[at:]))
    return out


def call_written_as(piece: str, name: str | None, arguments: Any, style: str | None = None) -> bool:
    """Whether a returned call (name, parsed arguments) is the call text written: re-rendered in the script's
    style it is that text (also read with a missing first `<arg_key>` restored), or it has the written name
    and keys in order, each value the text written (a string) or the JSON value written (`1e3` and `1000.0`
    are one number; JSON does not tell integers from floats)."""
    if not isinstance(arguments, dict) or not name:
        return False
    for one in (style,) if style else STYLES:
        rendered = render_call(name, arguments, one)
        if rendered == piece or rendered.replace("<arg_key>", "", 1) == piece:
            return True
    written = written_call(piece)
    if written is None or written[0] != name or [k for k, _ in written[1]] != list(arguments):
        return False
    return all(_same_value(text, arguments[key]) for key, text in written[1])


_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\n?<arg_value>(.*?)</arg_value>\n?", re.DOTALL)


def written_call(piece: str) -> tuple[str, list[tuple[str, str]]] | None:
    """A well-formed call's name and (key, value text) pairs as written, in either style; None otherwise."""
    inner = piece.removeprefix("<tool_call>").removesuffix("</tool_call>")
    name, bracket, rest = inner.partition("<arg_key>")
    name = name.removesuffix("\n")
    pairs = [(m.group(1), m.group(2)) for m in _PAIR.finditer(bracket + rest)]
    if "".join(m.group() for m in _PAIR.finditer(bracket + rest)) != bracket + rest or "<" in name:
        return None
    return name, pairs


def _same_value(text: str, value: Any) -> bool:
    if isinstance(value, str):
        return value == text
    try:
        return _same_json(json.loads(text), value)
    except ValueError:
        return False


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (never a boolean), arrays and objects member by member."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same_json(a[k], b[k]) for k in a)
    return False


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text


# -- the rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    """One way of reading the script: which tags were consumed, which calls parsed; the text it leaves."""

    segments: tuple[str | None, ...]  # text, or None where a piece was cut out
    parsed: tuple[int, ...]  # indices (into the script's call pieces) of the calls read as structured calls

    def pattern(self) -> re.Pattern[str]:
        """The text this reading leaves, whitespace free at every cut and at both ends."""
        parts = [None, *self.segments, None]
        regex: list[str] = []
        for i, seg in enumerate(parts):
            if seg is None:
                if not regex or regex[-1] != r"\s*":
                    regex.append(r"\s*")
                continue
            text = seg.lstrip() if parts[i - 1] is None else seg
            text = text.rstrip() if parts[i + 1] is None else text
            regex.append(re.escape(text))
        return re.compile("".join(regex))

    def text(self) -> str:
        """The text this reading leaves, a space at each cut (for a diff)."""
        runs, run = [], ""
        for seg in self.segments:
            if seg is None:
                runs.append(run)
                run = ""
            else:
                run += seg
        runs.append(run)
        return " ".join(r.strip() for r in runs if r.strip())


def _readings(parts: list[Piece], parse: bool, parsed_count: int) -> Iterable[_Reading]:
    """Every reading the allowed transforms leave open with `parsed_count` calls parsed."""
    tags = [i for i, p in enumerate(parts) if p.kind in ("open", "close")]
    calls = [i for i, p in enumerate(parts) if p.kind == "call"]
    subsets = itertools.combinations(range(len(calls)), parsed_count) if parse or parsed_count == 0 else iter(())
    for chosen in list(subsets):
        for kept in itertools.product((False, True), repeat=len(tags)):
            cut = {calls[c] for c in chosen} | {t for t, keep in zip(tags, kept, strict=True) if not keep}
            yield _Reading(tuple(None if i in cut else p.text for i, p in enumerate(parts)), chosen)


def conservation_problems(script: str, result: ChatResult, mode: ParseMode, script_tokens: Collection[int] | None = None,
                          style: str | None = None) -> list[str]:  # fmt: skip
    """Every way `result` fails to account for `script` under the allowed transforms; empty when it does.

    `script`: what the model generated (as replayed); `mode`: the request's parse mode; `script_tokens`: the
    script's token counts the server may have produced (one, or one per spelling of markup written as text),
    without the end-of-turn token; None skips the usage figure. `style`: the script's call format (None: either).
    """
    parts = pieces(script, mode.prompt_opens_think)
    call_texts = [p.text for p in parts if p.kind == "call"]
    returned = [(c.name, _arguments(c.arguments)) for c in result.tool_calls]
    said = (result.reasoning or "") + (result.content or "")
    # Each field's ends are formatting (rule 3): where the reasoning meets the content, the whitespace either
    # trimmed may have been any run, none included.
    reasoning, content = result.reasoning or "", result.content or ""
    joins = {said} | ({reasoning.rstrip() + ws + content.lstrip() for ws in ("", " ", "\n", "\n\n")} if reasoning and content else set())
    cut_short = result.finish_reason == "length"
    problems: list[str] = []
    if returned and not mode.parses_calls:
        problems.append(f"conservation: {len(returned)} call(s) came back parsed, though the request lets no call be parsed "
                        f"({mode.describe()}): {returned}")  # fmt: skip
    conserved = False
    for reading in _readings(parts, mode.parses_calls, len(returned)):
        if not all(call_written_as(call_texts[c], *returned[i], style) for i, c in enumerate(reading.parsed)):
            continue
        if cut_short:
            written = re.sub(r"\s+", "", "".join(s for s in reading.segments if s is not None))
            conserved = written.startswith(re.sub(r"\s+", "", said))
        else:
            conserved = any(reading.pattern().fullmatch(joined) is not None for joined in joins)
        if conserved:
            break
    if not conserved:
        said_apart = f"{result.reasoning or ''} {result.content or ''}"
        problems += _diagnose(parts, call_texts, returned, said_apart, mode, style)
    problems += _usage_problems(result, script_tokens, cut_short)
    return problems


def _diagnose(parts: list[Piece], call_texts: list[str], returned: list[tuple[str | None, Any]], said_apart: str, mode: ParseMode,
              style: str | None) -> list[str]:  # fmt: skip
    """What is missing and what is extra, for the reading closest to what came back: tags consumed, each
    returned call matched to the next call written that it equals."""
    problems = []
    chosen: list[int] = []
    for name, args in returned:
        start = chosen[-1] + 1 if chosen else 0
        match = next((c for c in range(start, len(call_texts)) if call_written_as(call_texts[c], name, args, style)), None)
        if match is None or not mode.parses_calls:
            written = "written once and parsed already (duplicated)" if any(
                call_written_as(t, name, args, style) for t in call_texts) else "never written (invented)"  # fmt: skip
            problems.append(f"conservation: a call came back that the script does not account for: {name}({json.dumps(args)}), {written}")
        else:
            chosen.append(match)
    calls = [i for i, p in enumerate(parts) if p.kind == "call"]
    cut = {calls[c] for c in chosen} | {i for i, p in enumerate(parts) if p.kind in ("open", "close")}
    expected = _Reading(tuple(None if i in cut else p.text for i, p in enumerate(parts)), tuple(chosen)).text()
    words_expected, words_said = re.findall(r"\S+", expected), re.findall(r"\S+", said_apart)
    missing, extra = [], []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(None, words_expected, words_said, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            missing.append(" ".join(words_expected[a1:a2]))
        if op in ("insert", "replace"):
            extra.append(" ".join(words_said[b1:b2]))
    if missing:
        problems.append(f"conservation: lost: text the model wrote came back neither as text, reasoning nor a call: {missing}")
    if extra:
        problems.append(f"conservation: extra: text came back that the model did not write there: {extra}")
    if not problems:
        problems.append(f"conservation: the whitespace inside the text differs: written {expected!r}, returned {said_apart!r}")
    return problems


def _usage_problems(result: ChatResult, script_tokens: Collection[int] | None, cut_short: bool) -> list[str]:
    """The usage figure against the script's tokens (plus the end-of-turn token)."""
    got = completion_tokens(result.usage)
    if got is None or not script_tokens:
        return []
    accepted = sorted({n + extra for n in script_tokens for extra in (0, 1)})
    if cut_short:
        return [] if got <= accepted[-1] else [f"conservation: usage: {got} completion tokens for an answer cut short of a "
                                               f"script of {min(script_tokens)} tokens"]  # fmt: skip
    if got in accepted:
        return []
    return [f"conservation: usage: {got} completion tokens, but the script is {' or '.join(map(str, sorted(script_tokens)))} "
            f"tokens (accepted: {accepted}, the end-of-turn token counted or not)"]  # fmt: skip


def explain(script: str, result: ChatResult, mode: ParseMode, problems: Sequence[str]) -> str:
    """A failure message: the problems, the script, the request's parse mode, what came back, the allowed transforms."""
    got = (f"reasoning={result.reasoning!r} content={result.content!r} calls={[(c.name, c.arguments) for c in result.tool_calls]} "
           f"finish={result.finish_reason!r} completion_tokens={completion_tokens(result.usage)}")  # fmt: skip
    return ("what came back does not account for what the model wrote:\n  " + "\n  ".join(problems)
            + f"\n  script:   {script!r}\n  request:  {mode.describe()}\n  got:      {got} ({'stream' if result.stream else 'plain'})"
            + "\n  allowed:  " + "; ".join(ALLOWED_TRANSFORMS))  # fmt: skip


def assert_conserved(script: str, result: ChatResult, mode: ParseMode, script_tokens: Collection[int] | None = None,
                     style: str | None = None) -> None:  # fmt: skip
    """Raise AssertionError (explain's message) unless `result` accounts for `script`."""
    problems = conservation_problems(script, result, mode, script_tokens, style)
    assert not problems, explain(script, result, mode, problems)


# -- the script's tokens, on the served tokenizer ----------------------------------------------


class ScriptTokens:
    """The token counts of scripts on a server's own tokenizer (`POST /tokenize`), as the replay processor
    encodes them: the whole script at once, or, with markup written as text pieces, the parts between those
    tags one by one and each tag as its first character then the rest, or character by character. Cached;
    the requests are not recorded in any check's reproducer."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], int] = {}

    def _count(self, client: ChatClient, text: str) -> int:
        key = (client.base_url, client.model, text)
        if key not in self._counts:
            with reproducer.recording(None):
                self._counts[key] = client.count_tokens(text)
        return self._counts[key]

    def counts(self, client: ChatClient, script: str, as_text: Sequence[str] = ()) -> frozenset[int]:
        """Every count the replay processor can have produced for `script` (one, unless markup is written as text)."""
        if not as_text:
            return frozenset({self._count(client, script)})
        split = re.split("(" + "|".join(map(re.escape, as_text)) + ")", script)
        base = sum(self._count(client, part) for n, part in enumerate(split) if n % 2 == 0 and part)
        tags = [part for n, part in enumerate(split) if n % 2]
        spellings = {tag: (self._count(client, tag[:1]) + self._count(client, tag[1:]), sum(self._count(client, ch) for ch in tag))
                     for tag in set(tags)}  # fmt: skip
        totals = set()
        for chosen in itertools.product(*(spellings[t] for t in sorted(spellings))):
            pick = dict(zip(sorted(spellings), chosen, strict=True))
            totals.add(base + sum(pick[t] for t in tags))
        return frozenset(totals)


#: One cache for the session's checks.
SCRIPT_TOKENS = ScriptTokens()


def assert_replay_conserved(client: ChatClient, script: str, fields: Mapping[str, Any], result: ChatResult,
                            opens_think: bool = False, style: str | None = None) -> None:  # fmt: skip
    """`assert_conserved` for one replayed answer: `script` as the replay processor got it, the request's
    `fields` in Chat Completions' terms (tools, tool_choice, chat_template_kwargs, vllm_xargs), `opens_think`:
    the model's template opens `<think>` itself; the script's tokens counted on `client`'s server."""
    mode = parse_mode(fields, opens_think)
    as_text = parse_as_text((fields.get("vllm_xargs") or {}).get(AS_TEXT_XARG))
    assert_conserved(script, result, mode, SCRIPT_TOKENS.counts(client, script, as_text), style)
