"""Known failures: the file format, and the outcomes (known, new, unexpected pass) through pytester."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glm45.known_failures import KnownFailuresError, load, normalize_version, parse

ENTRY = """
[[failure]]
check = "test_kf::test_broken"
configs = ["*-tp1"]
reason = "vLLM gets it wrong"
evidence = { request = "POST /v1/chat/completions {}", expected = "200", got = "500" }
"""

TESTS = """
def test_broken(glm45_server):
    assert False, "vLLM is wrong here"

def test_fine(glm45_server):
    pass
"""


def test_parse_and_lookup(tmp_path: Path) -> None:
    (tmp_path / "vllm-1.2.3.toml").write_text(ENTRY)
    kf = load("1.2.3+cpu", tmp_path)
    assert kf.lookup("test_kf::test_broken", "tiny-bf16-tp1") is not None
    assert kf.lookup("test_kf::test_broken", "tiny-bf16-tp2") is None
    assert kf.lookup("test_kf::test_fine", "tiny-bf16-tp1") is None
    assert load("9.9.9", tmp_path).entries == []
    assert normalize_version("0.32.0+cpu") == "0.32.0"


def test_an_entry_without_evidence_is_refused() -> None:
    with pytest.raises(KnownFailuresError, match="lacks evidence"):
        parse('[[failure]]\ncheck = "x"\nreason = "y"\n', "f.toml")


def test_shipped_files_parse() -> None:
    from pytest_glm45.known_failures import default_dir

    files = sorted(default_dir().glob("vllm-*.toml"))
    for f in files:
        entries = parse(f.read_text(), str(f))
        assert all(e.evidence.get("got") for e in entries), f


@pytest.fixture
def kf_dir(tmp_path: Path) -> Path:
    d = tmp_path / "kf"
    d.mkdir()
    return d


def run(pytester: pytest.Pytester, kf_dir: Path) -> pytest.RunResult:
    pytester.makepyfile(test_kf=TESTS)
    return pytester.runpytest("-p", "no:cacheprovider", "-rxX", "--gpus", "0", "--glm45-parallel", "tp1",
                              "--glm45-strict-tools", "on", "--glm45-known-failures", str(kf_dir))  # fmt: skip


def test_known_failure_does_not_fail_the_run(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY)
    result = run(pytester, kf_dir)
    assert result.ret == 0
    result.assert_outcomes(passed=1, xfailed=1)
    assert "known failure on vLLM 0.0.0-standin: vLLM gets it wrong" in result.stdout.str()


def test_removing_the_entry_makes_the_run_fail(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    result = run(pytester, kf_dir)
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)


def test_a_known_failure_that_passes_is_reported(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY.replace("test_broken", "test_fine"))
    result = run(pytester, kf_dir)
    result.assert_outcomes(failed=1, xpassed=1)
    assert "unexpected pass on tiny-bf16-tp1: test_kf::test_fine" in result.stdout.str()


def test_exclusion_patterns() -> None:
    entry = parse('[[failure]]\ncheck = "c"\nreason = "r"\nconfigs = ["*", "!*-nostrict"]\nevidence = {got = "g"}\n')[0]
    assert entry.applies_to("tiny-bf16-tp1") and entry.applies_to("air-fp8-tp8")
    assert not entry.applies_to("tiny-bf16-tp1-nostrict")
