"""The ids the kit's records are keyed by, read one way everywhere: patterns on ids, and a check's configuration.

**Patterns** (`matches`), the one syntax of every file and option that names checks, configurations, model
families, shapes or tasks (known-failure entries, `[[threshold]]` and `[[accuracy]]` entries, `pytest-glm45
evidence/reproduce --check/--config`): `*` stands for any run of characters (none too), `?` for exactly one, and
every other character for itself; brackets too, unlike fnmatch's classes, since check ids carry them
(`test_replay[native-weather]`). A list of patterns matches a value when one of them does and no `!pattern` in it
excludes the value; a list of exclusions alone starts from `*`. A single pattern is a list of one.

**A check's configuration** (`split_config_id`): pytest joins a configuration's id into a test's parameter id with
`-` (`tiny-bf16-tp1-nostrict-one-call-plain`); the configuration is the longest known id that stands there as a whole
part, and the check id is the parameter id without it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    # Compiled once per pattern: every phase of every check is looked up against every entry's patterns.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def glob_match(value: str, pattern: str) -> bool:
    """Whether `value` matches one pattern: `*` any text, `?` one character, everything else (brackets, `!`) itself."""
    return _regex(pattern).fullmatch(value) is not None


def matches(value: str, patterns: str | Sequence[str]) -> bool:
    """Whether `value` matches `patterns` (one, or a list): some pattern matches and no `!pattern` excludes it."""
    listed = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    include = [p for p in listed if not p.startswith("!")] or ["*"]
    exclude = [p[1:] for p in listed if p.startswith("!")]
    return any(glob_match(value, p) for p in include) and not any(glob_match(value, p) for p in exclude)


def split_config_id(params_id: str, config_ids: Iterable[str]) -> tuple[str | None, str]:
    """(the configuration, the rest) of a test's parameter id: the longest of `config_ids` that stands in it as a
    whole `-`-separated part (at either end, in the middle, or the whole id), and the id without it; (None, the id)
    when none does."""
    for cid in sorted((c for c in config_ids if c), key=len, reverse=True):
        if params_id == cid:
            return cid, ""
        if params_id.endswith(f"-{cid}"):
            return cid, params_id[: -len(cid)].rstrip("-")
        if params_id.startswith(f"{cid}-"):
            return cid, params_id[len(cid) :].lstrip("-")
        if f"-{cid}-" in params_id:
            before, _, after = params_id.partition(f"-{cid}-")
            return cid, f"{before}-{after}"
    return None, params_id
