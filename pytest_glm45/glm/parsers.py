"""Which parser class really runs behind a parser name, read from the installed vLLM without importing it.

Since vLLM 0.24 the tool-call parser name `glm45` is served by the GLM-4.7 implementation
(`glm47_moe_tool_parser.Glm47MoeModelToolParser`); a run's report says, per configuration, the class behind
each name the server was started with. vLLM registers its parsers lazily in a literal table (`name: (module,
class)`) in `vllm/tool_parsers/__init__.py` and `vllm/reasoning/__init__.py`; the kit reads those tables with
`ast` (importing vLLM takes seconds and initializes a platform).
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

#: Where each kind of parser is registered, relative to the vllm package.
REGISTRIES = {"tool": ("tool_parsers", "__init__.py"), "reasoning": ("reasoning", "__init__.py")}


def _vllm_dir() -> Path | None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def registry(kind: str) -> dict[str, str]:
    """`{name: "module.Class"}` for `kind` (`tool` or `reasoning`) in the installed vLLM; empty when not found."""
    root = _vllm_dir()
    if root is None:
        return {}
    path = root.joinpath(*REGISTRIES[kind])
    try:
        tree = ast.parse(path.read_text("utf-8"))
    except (OSError, SyntaxError):
        return {}
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=True):
            if (isinstance(key, ast.Constant) and isinstance(key.value, str) and isinstance(value, ast.Tuple)
                    and len(value.elts) == 2 and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts)):  # fmt: skip
                module, cls = (e.value for e in value.elts)  # type: ignore[attr-defined]
                found[key.value] = f"{module}.{cls}"
    return found


def parser_class(kind: str, name: str) -> str | None:
    """The `module.Class` serving parser `name` in the installed vLLM, or None when vLLM has no such name."""
    return registry(kind).get(name)


def describe(tool_parser: str, reasoning_parser: str) -> dict[str, str | None]:
    """The report's view of one configuration's parsers: each name and the class behind it."""
    return {
        "tool_call_parser": tool_parser,
        "tool_call_parser_class": parser_class("tool", tool_parser),
        "reasoning_parser": reasoning_parser,
        "reasoning_parser_class": parser_class("reasoning", reasoning_parser),
    }
