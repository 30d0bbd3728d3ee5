"""The package's layout: wings by job whose imports run one way, old import paths that keep working, a light plugin."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_glm45

PACKAGE = Path(pytest_glm45.__file__).parent

#: The wings, lowest first: a module may import its own wing and the wings before it, never one after it.
WINGS = ("glm", "records", "clients", "engine", "measure", "reports")
#: The modules on top, and what each may import besides the package root.
TOP = {
    "replay_processor": {"glm"},  # loaded inside vLLM's engine process: the GLM format only
    "settings": {*WINGS, "settings_files"},  # the files it names, read as it resolves (settings_files imports it back)
    "settings_files": {*WINGS, "settings"},
    "cli": {*WINGS, "settings"},
    "plugin": {*WINGS, "settings", "plugin"},
}
#: Imports a module may make for type annotations only (under `if TYPE_CHECKING:`), besides its allowed ones.
TYPES_ONLY = {"settings"}


def _part(module: str) -> str:
    """The wing or top module a dotted path of the package belongs to ('' for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path, module: str) -> list[tuple[str, int, bool]]:
    """(imported module of the package, line, under TYPE_CHECKING) for every import in a file, nested ones too."""
    tree = ast.parse(path.read_text("utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for child in node.body for n in ast.walk(child))
    out: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "pytest_glm45":
                names = [f"pytest_glm45.{alias.name}" for alias in node.names]
            elif target.startswith("pytest_glm45."):
                names = [target]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("pytest_glm45.")]
        out.extend((name, node.lineno, id(node) in typing_only) for name in names)
    return out


def _modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out.append((path, ".".join(parts[:-1] if parts[-1] == "__init__" else parts)))
    return out


def _allowed(source: str, target: str, typing_only: bool) -> bool:
    if target in ("", "__version__"):  # the package root holds the version only
        return True
    allowed = set(WINGS[:WINGS.index(source) + 1]) if source in WINGS else TOP[source] | {source}
    return target in allowed or (typing_only and target in TYPES_ONLY)


def test_every_module_sits_in_a_wing_or_on_top() -> None:
    strays = [m for _, m in _modules() if _part(m) not in (*WINGS, *TOP, "")]
    assert strays == [], f"modules outside the wings {WINGS} and the top modules {sorted(TOP)}: {strays}"


def test_the_wings_import_one_way() -> None:
    wrong = []
    for path, module in _modules():
        source = _part(module)
        if not source:
            continue
        for target, line, typing_only in _imports(path, module):
            if not _allowed(source, _part(target), typing_only):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert wrong == [], (
        "imports against the layout (wings lowest first: " + " < ".join(WINGS) + "; nothing imports the plugin):\n"
        + "\n".join(wrong)
    )


def test_the_layout_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """The check above is not vacuous: an engine module importing the reports, or the plugin, is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from pytest_glm45.reports import report\n\ndef f():\n    from pytest_glm45 import plugin\n")
    targets = [t for t, _, _ in _imports(bad, "pytest_glm45.engine.bad")]
    assert targets == ["pytest_glm45.reports", "pytest_glm45.plugin"]
    assert not any(_allowed("engine", _part(t), False) for t in targets)
    assert _allowed("engine", "settings", True) and not _allowed("engine", "settings", False)


def test_every_wing_says_what_it_holds_and_may_import() -> None:
    for wing in WINGS:
        doc = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text("utf-8"))) or ""
        assert "import" in doc, f"pytest_glm45.{wing}'s docstring does not say what it may import"


def test_every_module_is_on_the_layout_map() -> None:
    """docs/layout.md names every module of the package (`clients/transport`, `plugin/options`, `settings`)."""
    text = (PACKAGE.parent / "docs" / "layout.md").read_text("utf-8")
    names = [path.relative_to(PACKAGE).with_suffix("").as_posix() for path, _ in _modules() if path.name != "__init__.py"]
    assert "clients/transport" in names and "settings" in names
    missing = [n for n in names if f"`{n}`" not in text]
    assert missing == [], f"modules missing from docs/layout.md (one row each: `wing/module` | its one job): {missing}"


@pytest.mark.parametrize("old", sorted(pytest_glm45.MOVED))
def test_an_old_import_path_gives_the_module_of_its_wing(old: str) -> None:
    new = importlib.import_module(f"pytest_glm45.{pytest_glm45.MOVED[old]}.{old}")
    assert importlib.import_module(f"pytest_glm45.{old}") is new


def test_old_imports_of_users_conftests_keep_working() -> None:
    from pytest_glm45.chat import ChatClient
    from pytest_glm45.clients.chat import ChatClient as NewChatClient
    from pytest_glm45.engine.pool import ServerHandle as NewServerHandle
    from pytest_glm45.loadgen import Shape
    from pytest_glm45.pool import ServerHandle

    assert ServerHandle is NewServerHandle and ChatClient is NewChatClient and Shape.__module__.endswith("loadgen")


def test_the_shipped_data_folders_are_not_taken_for_modules() -> None:
    """known_failures/ and thresholds/ hold TOML files beside the old module names: the old names are the modules."""
    from pytest_glm45 import known_failures, thresholds

    assert known_failures.__name__ == "pytest_glm45.records.known_failures"
    assert thresholds.__name__ == "pytest_glm45.measure.thresholds"
    assert list(known_failures.default_dir().glob("vllm-*.toml"))


def test_vllm_finds_the_replay_processor_where_it_always_was() -> None:
    assert (PACKAGE / "replay_processor.py").is_file()
    from pytest_glm45.glm.replay import REPLAY_PROCESSOR

    assert REPLAY_PROCESSOR.startswith("pytest_glm45.replay_processor")


def test_importing_the_plugin_loads_no_engine_or_client_library() -> None:
    code = "import sys, pytest_glm45.plugin; print(sorted(m for m in ('vllm', 'torch', 'openai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_plugin_is_a_folder_of_small_rooms_around_one_state() -> None:
    rooms = sorted((PACKAGE / "plugin").glob("*.py"))
    assert {p.stem for p in rooms} >= {"options", "fixtures", "scheduling", "outcomes", "terminal", "reporting", "state"}
    big = {p.name: n for p in rooms if (n := len(p.read_text("utf-8").splitlines())) > 300}
    assert big == {}, f"plugin rooms over 300 lines: {big}"
    stash_keys = [p.name for p in rooms if p.name != "state.py" and "StashKey" in p.read_text("utf-8")]
    assert stash_keys == [], f"rooms that keep their own stash keys instead of the run's state: {stash_keys}"


def test_the_entry_point_registers_every_rooms_hooks_and_fixtures() -> None:
    """pytest registers the hooks and fixtures of the module it loads: each room's must be in the entry point."""
    import pytest_glm45.plugin as entry

    for path in sorted((PACKAGE / "plugin").glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
            if node.name.startswith("pytest_") or fixture:
                assert getattr(entry, node.name, None) is not None, f"{path.name}: {node.name} is not registered"


def test_no_module_of_the_package_holds_more_than_about_500_lines() -> None:
    big = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text("utf-8").splitlines())) > 500}
    assert big == {}, f"modules over 500 lines (a new job goes in a new module named after it): {big}"


#: The clients wing's one-way trip, lowest first: the kit's terms and the SDKs' schemas; the one transport; one
#: adapter per API (its request, its answer assembly, its contract); what picks or wraps an adapter. A module may
#: import only modules of a lower level: the transport no adapter, no adapter another.
CLIENT_LEVELS = {
    "terms": 0, "schemas": 0,
    "transport": 1,
    "chat_completions": 2, "responses": 2, "messages": 2,
    "surfaces": 3, "chat": 3, "answers": 3,
}  # fmt: skip


def _client_imports(path: Path) -> list[tuple[str, int]]:
    """(clients module, line) for every import of a clients module in a file, `from ..clients import x` too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "pytest_glm45.clients":
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_glm45.clients."):
            out.append(((node.module or "").split(".")[2], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name.split(".")[2], node.lineno) for a in node.names if a.name.startswith("pytest_glm45.clients.")]
    return out


def test_a_surface_request_goes_one_way_down_the_clients_wing() -> None:
    """surfaces -> an adapter -> the transport and the schemas: nothing climbs back up."""
    wrong = []
    for name, level in CLIENT_LEVELS.items():
        path = PACKAGE / "clients" / f"{name}.py"
        for target, line in _client_imports(path):
            if target != name and CLIENT_LEVELS.get(target, 99) >= level:
                wrong.append(f"clients/{name}.py:{line} imports clients.{target}")
    assert wrong == [], "imports that climb back up the clients wing (" + repr(CLIENT_LEVELS) + "):\n" + "\n".join(wrong)


def test_the_clients_trip_check_sees_a_climb(tmp_path: Path) -> None:
    """Not vacuous: an adapter importing another adapter, or the surfaces, is a climb; the transport too."""
    bad = tmp_path / "bad.py"
    bad.write_text("from pytest_glm45.clients import surfaces\nfrom pytest_glm45.clients.responses import call\n")
    assert _client_imports(bad) == [("surfaces", 1), ("responses", 2)]
    assert all(CLIENT_LEVELS[t] >= CLIENT_LEVELS["messages"] for t, _ in _client_imports(bad))


def test_each_api_has_one_adapter_with_its_request_assembly_and_contract() -> None:
    from pytest_glm45.clients import surfaces

    for name, adapter in surfaces.ADAPTERS.items():
        assert {"NAME", "PATH", "request", "call"} <= set(vars(adapter)), adapter.__name__
        assert name == adapter.NAME and surfaces.PATHS[name] == adapter.PATH


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"error": {"message": "boom", "code": 400}}, (400, "boom")),
        ({"error": "engine dead"}, (500, "engine dead")),  # a string error: the chat client crashed on it
        ({"type": "response.failed", "response": {"error": {"message": "no"}}}, (500, "no")),
        ({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, (500, "busy")),
        ({"choices": [], "error": None}, None),
        ({"choices": [{"delta": {}}]}, None),
    ],
)
def test_one_reading_of_mid_stream_error_events(data: dict[str, object], expected: tuple[int, str] | None) -> None:
    from pytest_glm45.clients.surfaces import Event, stream_error
    from pytest_glm45.records.error_events import error_event

    found = error_event(data)
    assert (None if found is None else (found.status, found.message)) == expected
    said = stream_error(Event(None, data))  # type: ignore[arg-type]
    assert (said is None) == (expected is None)
