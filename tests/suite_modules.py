"""A suite module (suites/test_*.py) imported from its file, for kit tests that look at what a suite sends."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SUITES = Path(__file__).resolve().parent.parent / "suites"


def suite_module(stem: str) -> ModuleType:
    """`suites/<stem>.py`, imported once under a name of its own (`glm45_suite_<stem>`: it is not this package's)."""
    name = f"glm45_suite_{stem.removeprefix('test_')}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SUITES / f"{stem}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]
