"""Thresholds: a miss fails with a table; a saved baseline read back passes on the same figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glm45.measure import thresholds

MEASURED = {"output_throughput": 100.0, "total_token_throughput": 900.0, "request_throughput": 1.0,
            "median_ttft_ms": 50.0, "p99_ttft_ms": 80.0, "median_tpot_ms": 10.0, "p99_itl_ms": 30.0}  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.toml"
    path.write_text(text)
    return path


def test_a_missed_floor_fails_with_a_table(tmp_path: Path) -> None:
    entries = thresholds.load(write(tmp_path, '[[threshold]]\nconfig = "tiny-*"\nmin_output_throughput = 150\nmax_p99_ttft_ms = 100\n'))
    bounds = thresholds.bounds_for(entries, "tiny-bf16-tp1", "balanced", 4)
    ok, table = thresholds.check(bounds, MEASURED)
    assert not ok
    assert "output_throughput  100.00    >= 150" in table and "MISSED" in table
    assert "p99_ttft_ms" in table and "ok" in table


def test_patterns_select_points(tmp_path: Path) -> None:
    entries = thresholds.load(write(tmp_path, '[[threshold]]\nconfig = "air-*"\nshape = "balanced"\nbatch = 64\nmin_output_throughput = 1\n'))
    assert thresholds.bounds_for(entries, "air-fp8-tp2", "balanced", 64)
    assert not thresholds.bounds_for(entries, "air-fp8-tp2", "balanced", 16)
    assert not thresholds.bounds_for(entries, "tiny-bf16-tp1", "balanced", 64)


ROUNDS = {k: [v * 0.95, v, v * 1.05] for k, v in MEASURED.items()}


def baseline_point(batch: int, rounds: dict, passed: bool = True, lengths: tuple[int, int] = (100, 100)) -> thresholds.BaselinePoint:
    return thresholds.BaselinePoint("tiny-bf16-tp1", "balanced", batch, *lengths, rounds, passed)


def test_saved_baseline_read_back_passes_and_a_30_percent_drop_fails(tmp_path: Path) -> None:
    path = tmp_path / "baseline.toml"
    thresholds.save_baseline(path, [baseline_point(4, ROUNDS)], margin=0.2, note="test")
    bounds = thresholds.bounds_for(thresholds.load(path), "tiny-bf16-tp1", "balanced", 4)
    assert len(bounds) == len(MEASURED)
    assert thresholds.check(bounds, MEASURED)[0]
    # Floors come from the worst round: 95 * 0.8 = 76.
    assert {b.metric: b.limit for b in bounds}["output_throughput"] == pytest.approx(76.0)
    slower = {**MEASURED, "output_throughput": 70.0}
    ok, table = thresholds.check(bounds, slower)
    assert not ok and "output_throughput" in table


def test_invalid_figures_get_no_bound_and_are_not_judged(tmp_path: Path) -> None:
    path = tmp_path / "baseline.toml"
    starved = {k: v for k, v in ROUNDS.items() if k != "p99_itl_ms"} | {"median_tpot_ms": [0.0, 0.0, 0.0]}
    thresholds.save_baseline(path, [baseline_point(1, starved)], margin=0.2, note="test")
    text = path.read_text()
    assert "p99_itl_ms" not in text and "median_tpot_ms" not in text, text  # absent, or 0: no bound
    bounds = thresholds.bounds_for(thresholds.load(path), "tiny-bf16-tp1", "balanced", 1)
    ok, table = thresholds.check([*bounds, thresholds.Bound("median_tpot_ms", "max", 5.0, "x")], MEASURED,
                                 {"median_tpot_ms": "starved client"})  # fmt: skip
    assert ok and "not judged: starved client" in table


def test_an_impossible_latency_ceiling_is_refused(tmp_path: Path) -> None:
    with pytest.raises(thresholds.ThresholdsError, match="impossible"):
        thresholds.load(write(tmp_path, '[[threshold]]\nmax_p99_itl_ms = 0\n'))


def test_bad_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(thresholds.ThresholdsError, match="fastest_output"):
        thresholds.load(write(tmp_path, '[[threshold]]\nfastest_output = 3\n'))


def test_shipped_files_parse() -> None:
    from importlib import resources

    folder = Path(str(resources.files("pytest_glm45").joinpath("thresholds")))
    assert thresholds.load(folder / "embedded-default.toml")
    assert thresholds.load(folder / "gpu-template.toml") == []


def test_a_point_is_the_median_of_its_rounds_and_invalid_if_any_round_is() -> None:
    from pytest_glm45.clients.loadgen import Metrics, Shape
    from pytest_glm45.measure.throughput import combine

    def metrics(throughput: float, tpot: float, invalid: dict[str, str] | None = None) -> Metrics:
        return Metrics(duration=1.0, completed=4, failed=0, total_input_tokens=40, total_output_tokens=400,
                       request_throughput=4.0, output_throughput=throughput, total_token_throughput=throughput + 40,
                       latencies={"median_tpot_ms": tpot, "median_ttft_ms": 20.0}, errors=[], invalid=invalid or {})  # fmt: skip

    point = combine("tiny-bf16-tp1", Shape("balanced", 10, 100), 4,
                    [metrics(100, 5.0), metrics(90, 6.0, {"median_tpot_ms": "starved"}), metrics(120, 4.0)])  # fmt: skip
    assert point.metrics["output_throughput"] == 100 and point.rounds["output_throughput"] == [100.0, 90.0, 120.0]
    assert "median_tpot_ms" not in point.metrics and point.invalid == {"median_tpot_ms": "starved"}
    assert point.metrics["median_ttft_ms"] == 20.0 and point.metrics["rounds"] == 3


def test_a_baseline_takes_only_the_points_whose_checks_passed_and_says_so(tmp_path: Path) -> None:
    """A round with failed or short requests measures nothing a later run should be held to."""
    path = tmp_path / "baseline.toml"
    failed = {k: [v * 0.3 for v in values] for k, values in ROUNDS.items()}
    thresholds.save_baseline(path, [baseline_point(1, ROUNDS), baseline_point(4, failed, passed=False)], margin=0.2, note="test")
    text = path.read_text()
    assert "# From the 1 point(s) whose checks passed; left out, their checks failed: tiny-bf16-tp1 balanced x4." in text
    assert thresholds.bounds_for(thresholds.load(path), "tiny-bf16-tp1", "balanced", 4) == []
    assert thresholds.bounds_for(thresholds.load(path), "tiny-bf16-tp1", "balanced", 1)
    with pytest.raises(ValueError, match="no throughput point passed its check"):
        thresholds.save_baseline(path, [baseline_point(4, failed, passed=False)], margin=0.2, note="test")


def test_a_failing_throughput_point_is_absent_from_the_saved_baseline(tmp_path: Path) -> None:
    """The session's points: a point is marked passed by its check's last line (suites/test_throughput.py)."""
    from pytest_glm45.clients.loadgen import Shape
    from pytest_glm45.measure.throughput import Point, ThroughputSession

    session = ThroughputSession(tmp_path)
    good = Point("tiny-bf16-tp1", Shape("balanced", 100, 100), 1, dict(MEASURED), dict(ROUNDS))
    bad = Point("tiny-bf16-tp1", Shape("balanced", 100, 100), 8, dict(MEASURED), dict(ROUNDS))
    session.points += [good, bad]
    session.mark_passed(good)
    session.save_baseline(tmp_path / "b.toml", 0.2, "test")
    entries = thresholds.load(tmp_path / "b.toml")
    assert [(e.batch, e.input_len, e.output_len) for e in entries] == [("1", 100, 100)]


def test_a_baseline_of_other_lengths_is_refused_naming_what_differs(tmp_path: Path) -> None:
    """The same shape name at other lengths (another profile's baseline) is not applied as if it were the point."""
    from pytest_glm45.clients.loadgen import Shape
    from pytest_glm45.measure.throughput import Point, ThroughputSession

    path = tmp_path / "baseline.toml"
    thresholds.save_baseline(path, [baseline_point(4, ROUNDS, lengths=(1000, 1000))], margin=0.2, note="full profile")
    session = ThroughputSession(tmp_path, thresholds_file=path)
    ok, table, applied = session.check(Point("tiny-bf16-tp1", Shape("balanced", 100, 100), 4, dict(MEASURED), dict(ROUNDS)))
    assert not ok and applied == 0
    assert "measured at other lengths" in table and "input_len 1000 (the point: 100), output_len 1000 (the point: 100)" in table
    ok, _table, applied = session.check(Point("tiny-bf16-tp1", Shape("balanced", 1000, 1000), 4, dict(MEASURED), dict(ROUNDS)))
    assert ok and applied == len(MEASURED)
