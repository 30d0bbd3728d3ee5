"""pytest-glm45: a pytest plugin and conformance kit for serving GLM-4.5 with vLLM.

The package is cut in wings by job, each a subpackage whose docstring says what it holds and what it may
import: `glm` (the GLM format), `records` (known failures, judging, reproducers), `clients` (the HTTP APIs),
`engine` (servers and their pool), `measure` (throughput, parity, accuracy) and `reports`. The plugin
(`pytest_glm45.plugin`), the CLI (`pytest_glm45.cli`), the run's settings (`pytest_glm45.settings`) and the
replay processor vLLM loads (`pytest_glm45.replay_processor`) sit on top. tests/test_layout.py holds the rule.

Modules that used to sit side by side in this folder keep their old import paths (`pytest_glm45.pool`,
`pytest_glm45.chat`, ...): importing one gives the very module of its wing, so `from pytest_glm45.pool import
ServerHandle` in a conftest goes on working, and so does monkeypatching through either path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Sequence

__version__ = "0.1.0"

#: The old flat module names, and the wing each lives in now.
MOVED: dict[str, str] = {
    **dict.fromkeys(("glm_format", "toolcall", "parsers", "replay"), "glm"),
    **dict.fromkeys(("known_failures", "verdict", "reproducer", "redaction", "serverlog"), "records"),
    **dict.fromkeys(("chat", "answers", "schemas", "surfaces", "batch", "loadgen"), "clients"),
    **dict.fromkeys(
        ("catalog", "inventory", "cluster", "matrix", "tinymodel", "recipe", "server", "spawn", "rootcause", "probes",
         "gpulease", "pool", "preflight"),
        "engine",
    ),
    **dict.fromkeys(
        ("throughput", "thresholds", "parity", "parity_html", "parity_record", "parity_session", "accuracy", "sidebyside"),
        "measure",
    ),
    **dict.fromkeys(("report", "report_html", "compare", "recheck", "evidence"), "reports"),
}


def moved_to(old: str) -> str | None:
    """The current dotted path of an old flat module path (`pytest_glm45.pool`), or None if it did not move."""
    prefix, _, name = old.rpartition(".")
    if prefix != __name__ or name not in MOVED:
        return None
    return f"{__name__}.{MOVED[name]}.{name}"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old flat module path and loads it as the module of its wing (the same object, not a copy)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old path; None for everything else."""
        if moved_to(fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        """The wing's module itself, imported under its new path."""
        new = moved_to(spec.name)
        assert new is not None
        return importlib.import_module(new)

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the wing's module ran when it was imported."""


# First on the path: the data folders known_failures/ and thresholds/ would otherwise be found as namespace packages.
if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Alias())
