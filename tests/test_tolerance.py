"""One tolerance setting: the same syntax, parsed by the same function, for `pytest-glm45 compare --tolerance` and
the pytest run's `--glm45-tolerance` (which judges `--glm45-compare-to`), so a recipe passes one value to both."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_glm45.cli import build_parser
from pytest_glm45.compare import DEFAULT_TOLERANCES
from pytest_glm45.settings import SettingsError, parse_tolerances

VALUE = "output_throughput=0.15,median_ttft_ms=30%"


def test_one_value_means_the_same_in_both_places() -> None:
    cli = build_parser().parse_args(["compare", "a.json", "b.json", "--tolerance", VALUE, "--tolerance", "p99_ttft_ms=0.5"])
    from_cli = parse_tolerances(cli.tolerance, "--tolerance")
    assert from_cli == {"output_throughput": 0.15, "median_ttft_ms": 0.30, "p99_ttft_ms": 0.5}
    assert parse_tolerances([VALUE, "p99_ttft_ms=0.5"]) == from_cli  # the pytest option, given twice


@pytest.mark.parametrize("bad", ["throughput=0.1", "output_throughput", "output_throughput=fast", "output_throughput=-5%"])
def test_a_metric_compare_does_not_judge_or_a_bad_number_is_refused(bad: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_tolerances(bad, "--tolerance")
    assert "metric=fraction or metric=N%" in str(err.value) and ", ".join(DEFAULT_TOLERANCES) in str(err.value)


def test_the_pytest_option_repeats_and_refuses_what_compare_refuses(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--gpus", "0", "--co", "-p", "no:cacheprovider",
                                "--glm45-tolerance", VALUE, "--glm45-tolerance", "throughput=1")  # fmt: skip
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--glm45-tolerance: 'throughput=1' is not accepted; accepted: metric=fraction or metric=N%*"])
    done = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "compare", "a.json", "b.json", "--tolerance", "throughput=1"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode != 0 and "--tolerance: 'throughput=1' is not accepted; accepted: metric=fraction or metric=N%" in done.stderr
