#!/usr/bin/env bash
# Box acceptance: does this machine serve GLM-4.5 as a known-good box does? Inventory, preflight, the
# conformance suites and throughput compared with a reference report.json from a known-good box, and one
# archive of everything (reports, logs, inventory, preflight, package list) for the job's artifact.
#
#   docs/ci/box-acceptance.sh
#
# Exit: 0 accepted; 1 the suites failed or the comparison found a regression; 2 usage error;
#       3 the acceptance could not run (no venv, inventory failed, no report written).
# The archive is written whatever the verdict.
#
# Environment:
#   GLM45_REFERENCE     report.json of a known-good box of the same kind (required). `none` runs without a
#                       comparison, to produce the first reference: keep its report/report.json
#   GLM45_VENV          a virtual environment with the kit and vLLM installed (default: the one this shell's
#                       `python3` belongs to, if it has the kit)
#   GLM45_PYTEST_ARGS   options and selection for the suites, quoted as in a shell
#                       (default: "--glm45-model air-fp8"; GPUs are those the box shows)
#   GLM45_PREFLIGHT_ARGS  options for `pytest-glm45 preflight` (default: "--model air-fp8")
#   GLM45_COMPARE_ARGS  extra options for `pytest-glm45 compare`, e.g. "--tolerance output_throughput=0.15"
#   GLM45_OUT           output directory (default: glm45-acceptance)
#   GLM45_ARCHIVE       the archive's path (default: $GLM45_OUT.tar.gz)
#   GLM45_KIT           the kit's checkout, for its suites (default: this script's repository)
#   GITHUB_STEP_SUMMARY set by GitHub Actions: the comparison's summary is appended to the job's page
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "box-acceptance: $1" >&2; exit "${2:-2}"; }
log() { echo "box-acceptance: $*" >&2; }

case "${1:-}" in
    -h|--help) usage ;;
    "") ;;
    *) die "no arguments are accepted (got '$*'); configure with the GLM45_* variables in --help" ;;
esac

kit="${GLM45_KIT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
[ -f "$kit/pyproject.toml" ] && [ -d "$kit/suites" ] || die "GLM45_KIT='$kit' is not the kit's checkout (no pyproject.toml and suites/)"
reference="${GLM45_REFERENCE:-}"
[ -n "$reference" ] || die "GLM45_REFERENCE is not set: give the report.json of a known-good box (or 'none' to make the first reference)"
if [ "$reference" != none ]; then
    [ -s "$reference" ] || die "GLM45_REFERENCE='$reference' is not a readable report.json"
    reference="$(cd "$(dirname "$reference")" && pwd)/$(basename "$reference")"
fi
if [ -n "${GLM45_VENV:-}" ]; then
    venv="$GLM45_VENV"
else
    venv="$(python3 -c 'import sys; print(sys.prefix)')"
fi
[ -x "$venv/bin/pytest-glm45" ] || die "$venv has no pytest-glm45: set GLM45_VENV to a venv with the kit and vLLM (pip install -e '.[gpu]')" 3
out="${GLM45_OUT:-glm45-acceptance}"
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ]; then
    # Only an earlier acceptance's output is cleared; anything else is left alone.
    [ -f "$out/box.txt" ] || die "GLM45_OUT='$out' is not empty and holds no earlier acceptance (box.txt); name an empty or new directory"
    rm -rf "$out"
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
archive="${GLM45_ARCHIVE:-$out.tar.gz}"

split_args() {
    local -n into="$1"
    into=()
    [ -n "$2" ] || return 0
    mapfile -d '' -t into < <("$venv/bin/python" -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "$2") \
        || die "could not split '$2' as shell words"
}
split_args pytest_args "${GLM45_PYTEST_ARGS:---glm45-model air-fp8}"
split_args preflight_args "${GLM45_PREFLIGHT_ARGS:---model air-fp8}"
split_args compare_args "${GLM45_COMPARE_ARGS:-}"

# The archive is the job's evidence whatever happened, so it is written on every exit after this point.
write_archive() {
    local rc=$?
    echo "$rc" > "$out/exit"
    tar -czf "$archive" -C "$(dirname "$out")" "$(basename "$out")" && log "archive: $archive (exit $rc)"
    exit "$rc"
}
trap write_archive EXIT

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname)"
    echo "kernel: $(uname -srm)"
    echo "kit: $(git -C "$kit" rev-parse HEAD 2>/dev/null || echo "not a git checkout")"
    echo "reference: $reference"
    echo "suites: pytest suites ${GLM45_PYTEST_ARGS:---glm45-model air-fp8}"
} > "$out/box.txt"
"$venv/bin/python" -m pip freeze > "$out/pip-freeze.txt" 2>&1 || true
if command -v nvidia-smi >/dev/null; then
    nvidia-smi -q > "$out/nvidia-smi.txt" 2>&1 || true
    nvidia-smi topo -m > "$out/nvidia-smi-topo.txt" 2>&1 || true
fi

log "inventory"
"$venv/bin/pytest-glm45" inventory --json > "$out/inventory.json" 2> "$out/inventory.err" \
    || die "pytest-glm45 inventory failed: $(cat "$out/inventory.err")" 3
log "preflight ${preflight_args[*]:-}"
"$venv/bin/pytest-glm45" preflight "${preflight_args[@]}" > "$out/preflight.txt" 2>&1 \
    || die "pytest-glm45 preflight failed; see $out/preflight.txt" 3
cat "$out/preflight.txt" >&2

compare_to=()
[ "$reference" = none ] || compare_to=(--glm45-compare-to "$reference")
log "suites: pytest suites ${pytest_args[*]}"
suites_rc=0
(cd "$kit" && "$venv/bin/python" -m pytest suites -p no:cacheprovider "${pytest_args[@]}" "${compare_to[@]}" \
    --glm45-report "$out/report" --glm45-log-dir "$out/logs" --junitxml "$out/junit.xml" \
    --benchmark-json "$out/benchmarks.json") > "$out/pytest.log" 2>&1 || suites_rc=$?
tail -n 3 "$out/pytest.log" >&2
case "$suites_rc" in
    0|1) ;;
    5) die "the selection runs no check (pytest exit 5): GLM45_PYTEST_ARGS='${GLM45_PYTEST_ARGS:-}'" ;;
    *) die "the suites ended with pytest exit $suites_rc (2 interrupted, 3 internal error, 4 usage error); see $out/pytest.log" 3 ;;
esac
[ -s "$out/report/report.json" ] || die "the suites wrote no report.json; see $out/pytest.log" 3

compare_rc=0
if [ "$reference" != none ]; then
    "$venv/bin/pytest-glm45" compare "$reference" "$out/report/report.json" --markdown "$out/summary.md" \
        "${compare_args[@]}" > "$out/compare.txt" 2>&1 || compare_rc=$?
    cat "$out/compare.txt"
    [ "$compare_rc" -le 1 ] || die "pytest-glm45 compare ended with exit $compare_rc; see $out/compare.txt" 3
else
    echo "No reference: this run's report/report.json can be the reference for boxes like this one." > "$out/summary.md"
fi
echo "" >> "$out/summary.md"
echo "Suites: pytest exit $suites_rc (\`pytest suites ${GLM45_PYTEST_ARGS:---glm45-model air-fp8}\`); compare exit $compare_rc." >> "$out/summary.md"
[ -z "${GITHUB_STEP_SUMMARY:-}" ] || cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"
if [ "$suites_rc" = 0 ] && [ "$compare_rc" = 0 ]; then
    log "accepted"
    exit 0
fi
log "NOT accepted: pytest exit $suites_rc, compare exit $compare_rc"
exit 1
