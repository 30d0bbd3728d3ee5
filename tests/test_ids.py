"""One rule, one place: patterns on ids and a check's configuration, read by pytest_glm45.records.ids for every file
and option that names them (known failures, thresholds, accuracy floors, evidence/reproduce, the plugin, -n)."""

from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

import pytest

from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.measure import accuracy, thresholds
from pytest_glm45.records import known_failures
from pytest_glm45.records.error_events import chunk_error
from pytest_glm45.records.ids import matches, split_config_id
from pytest_glm45.records.reproducer import Exchange

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGE = Path(known_failures.__file__).resolve().parent.parent
CONFIG_IDS = [f"{info.label}-{plan}{strict}" for info in CATALOG.values()
              for plan in ("tp1", "tp2", "tp4", "tp8", "tp8-ep", "dp2-tp4", "pp2-tp4") for strict in ("", "-nostrict")]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "patterns", "expected"),
    [
        ("tiny-bf16-tp1", "tiny-bf16-*", True),
        ("tiny-bf16-tp1", "tiny-bf16-tp?", True),
        ("tiny-bf16-tp12", "tiny-bf16-tp?", False),
        ("t::test_replay[native-x]", "t::test_replay[native-*]", True),  # brackets are themselves
        ("t::test_replay[n]", "t::test_replay[nat]", False),  # not fnmatch's class [nat]
        ("tiny-bf16-tp1-nostrict", ["*", "!*-nostrict"], False),
        ("tiny-bf16-tp1", ["*", "!*-nostrict"], True),
        ("tiny-bf16-tp1", ["!*-nostrict"], True),  # exclusions alone start from *
        ("tiny-bf16-tp1", "!tiny-*", False),  # one pattern is a list of one
        ("a\nb", "a*b", True),
    ],
)
def test_one_syntax_of_patterns(value: str, patterns: str | list[str], expected: bool) -> None:
    assert matches(value, patterns) is expected


def _threshold_file(tmp_path: Path, config: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(f'[[threshold]]\nconfig = "{config}"\nshape = "*"\nbatch = "*"\nmin_output_throughput = 1.0\n'
                    f'[[accuracy]]\nconfig = "{config}"\ntask = "*"\nmin_accuracy = 0.5\n')  # fmt: skip
    return path


@pytest.mark.parametrize(("config", "applies"), [("tiny-[b]f16-*", False), ("!*-nostrict", True), ("!tiny-*", False)])
def test_thresholds_and_accuracy_floors_read_patterns_as_known_failures_do(tmp_path: Path, config: str, applies: bool) -> None:
    """fnmatch read `[b]` as a class and `!` as a character: the three files now share one syntax."""
    path = _threshold_file(tmp_path, config)
    assert thresholds.load(path)[0].matches("tiny-bf16-tp1", "balanced", 1) is applies
    assert (accuracy.floor_for("tiny-bf16-tp1", "glm-4.5", "arithmetic", path)[0] == 0.5) is applies
    entry = known_failures.parse(f'[[failure]]\ncheck = "t::x"\nconfigs = ["{config}"]\nreason = "r"\n'
                                 'signature = {status = 400}\nevidence = {got = "g"}\n')[0]  # fmt: skip
    assert entry.covers("t::x", "tiny-bf16-tp1") is applies


def _shipped_threshold_patterns() -> list[str]:
    out = []
    for path in sorted((PACKAGE / "thresholds").glob("*.toml")):
        text = "\n".join(re.sub(r"^# ?", "", line) if re.match(r"^# ?\[|^# ?\w+ *=", line) else line
                         for line in path.read_text("utf-8").splitlines())  # the template's entries are commented out  # fmt: skip
        data = tomllib.loads(text)
        out += [str(e.get(k, "*")) for table in ("threshold", "accuracy") for e in data.get(table, []) for k in ("config", "shape", "task")]
    return out


def test_the_shipped_thresholds_files_match_as_they_did() -> None:
    patterns = _shipped_threshold_patterns()
    assert any(p.startswith("air-fp8") for p in patterns) and "tiny-bf16-*" in patterns
    values = [*CONFIG_IDS, "prompt-heavy", "decode-heavy", "balanced", "arithmetic", "lookup", "gsm8k"]
    differ = [(v, p) for p in patterns for v in values if matches(v, p) != fnmatch.fnmatchcase(v, p)]
    assert differ == []


def test_the_shipped_known_failures_keep_their_coverage() -> None:
    """The known-failure files always had this syntax: each pattern still covers the checks it names."""
    for path in sorted((PACKAGE / "known_failures").glob("vllm-*.toml")):
        for entry in known_failures.parse(path.read_text("utf-8"), str(path)):
            included = [p for p in entry.checks if not p.startswith("!")]
            literal = [p.replace("*", "x").replace("?", "x") for p in included]
            assert any(entry.covers(c, cid) for c in literal for cid in CONFIG_IDS), (path.name, entry.checks)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ("tiny-bf16-tp1-one-call-plain", ("tiny-bf16-tp1", "one-call-plain")),
        ("tiny-bf16-tp1-nostrict-one-call-plain", ("tiny-bf16-tp1-nostrict", "one-call-plain")),
        ("decode-heavy-25x200-bs1-tiny-bf16-tp1-nostrict", ("tiny-bf16-tp1-nostrict", "decode-heavy-25x200-bs1")),
        ("plain-tiny-bf16-tp2-weather", ("tiny-bf16-tp2", "plain-weather")),  # in the middle: the plugin kept it
        ("tiny-bf16-tp2", ("tiny-bf16-tp2", "")),
        ("tiny-bf16-tp3", (None, "tiny-bf16-tp3")),
        ("xtiny-bf16-tp1", (None, "xtiny-bf16-tp1")),  # a whole part only: the plugin cut it
    ],
)
def test_one_reading_of_the_configuration_in_a_check_id(params: str, expected: tuple[str | None, str]) -> None:
    from pytest_glm45.measure.sidebyside import configuration_of
    from pytest_glm45.plugin.state import without_config_id

    ids = ["tiny-bf16-tp1", "tiny-bf16-tp1-nostrict", "tiny-bf16-tp2"]
    assert split_config_id(params, ids) == expected
    assert configuration_of(f"suites/test_x.py::test_y[{params}]", ids) == expected[0]
    assert without_config_id(params, expected[0]) == expected[1]


@pytest.mark.parametrize(
    ("chunk", "failed"),
    [
        ('{"error": {"message": "boom", "code": 500}}', True),
        ('{"error": "engine dead"}', True),
        ('{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}', True),
        ('{"type": "response.failed", "response": {"error": {"message": "no"}}}', True),
        ('{"type": "response.output_text.delta", "delta": "error", "item_id": "m"}', False),  # the text said "error"
        ('{"type": "response.completed", "response": {"error": null, "status": "completed"}}', False),
        ('{"choices": [{"delta": {"content": "x"}}]}', False),
        ('{"error": {"message": "' + "x" * 50 + '... [20 more characters]', True),  # cut short by the record
        ("[DONE]", False),
    ],
)
def test_a_recorded_stream_failed_by_the_one_reading_of_error_events(chunk: str, failed: bool) -> None:
    assert chunk_error(chunk) is failed
    assert Exchange("POST", "/v1/responses", {}, stream=True, status=200, chunks=[chunk, "[DONE]"]).failed() is failed
