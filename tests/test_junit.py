"""JUnit XML (--junitxml) in both families: every check's verdict and the suites' properties in its own
<testcase>, and no warning (issue 29, item 3: one PytestWarning per check that records a property, under
xunit2, pytest's default)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ENTRY = """
[[failure]]
checks = ["test_kf::test_broken"]
configs = ["*-tp1"]
reason = "vLLM gets it wrong"
signature = { status = 500, match = "Internal server error" }
evidence = { request = "POST /v1/chat/completions {}", expected = "200", got = "HTTP 500 Internal server error" }
"""

TESTS = """
def test_broken(glm45_server, record_property):
    record_property("glm45_format", "native")
    raise AssertionError("HTTP 500: Internal server error")

def test_fine(glm45_server, record_property):
    record_property("glm45_format", "compact")

def test_not_a_check(record_property):
    record_property("own", "1")
"""


@pytest.mark.parametrize("family", ["xunit1", "xunit2"])
def test_junit_carries_the_verdicts_per_check_without_a_warning(pytester: pytest.Pytester, standin, tmp_path: Path,
                                                                 family: str) -> None:  # fmt: skip
    kf_dir = tmp_path / "kf"
    kf_dir.mkdir()
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY)
    pytester.makepyfile(test_kf=TESTS)
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gpus", "0", "--glm45-parallel", "tp1",
                                           "--glm45-strict-tools", "on", "--glm45-known-failures", str(kf_dir),
                                           f"--junitxml={junit}", "-o", f"junit_family={family}", "-k", "not not_a_check")  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    out = result.stdout.str()
    assert "warnings" not in result.parseoutcomes() and "PytestWarning" not in out and "warnings summary" not in out, out
    testcases = list(ET.parse(junit).iter("testcase"))
    assert all(("file" in c.attrib) == (family == "xunit1") for c in testcases), "pytest did not write the family asked for"
    cases = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in testcases}
    assert cases == {
        "test_broken[tiny-bf16-tp1]": {
            "glm45_format": "native", "glm45_check": "test_kf::test_broken", "glm45_config": "tiny-bf16-tp1",
            "glm45_verdict": "known failure",
            "glm45_known_failure": "known failure on vLLM 0.0.0-standin (vllm-0.0.0-standin.toml#1): vLLM gets it wrong"},
        "test_fine[tiny-bf16-tp1]": {"glm45_format": "compact", "glm45_check": "test_kf::test_fine", "glm45_config": "tiny-bf16-tp1",
                                     "glm45_verdict": "passed"},
    }  # fmt: skip


def test_a_test_that_is_not_a_check_keeps_pytests_warning(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The kit quiets the warning for its own checks only: another test under xunit2 is warned as pytest would."""
    pytester.makepyfile(test_kf=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gpus", "0", f"--junitxml={tmp_path / 'j.xml'}",
                                           "-o", "junit_family=xunit2", "-k", "not_a_check")  # fmt: skip
    result.assert_outcomes(passed=1, warnings=1)
    assert "record_property is incompatible with junit_family 'xunit2'" in result.stdout.str()
