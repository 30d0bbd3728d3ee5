#!/usr/bin/env bash
# Box acceptance: does this machine serve GLM-4.5 as a known-good box does? Inventory, preflight, the
# conformance suites, throughput and logprob parity compared with a reference report.json from a known-good box,
# and one archive of everything (reports, logs, inventory, preflight, package list) for the job's artifact.
#
#   docs/ci/box-acceptance.sh
#
# Exit: 0 accepted; 1 the suites failed or the comparison found a regression; 2 usage error;
#       3 the acceptance could not run (no venv, inventory failed, preflight refused, no report written).
# The archive is written whatever the verdict.
# Throughput is judged against the reference box's stored report with the noise measured here: a figure whose
# rounds spread beyond half its tolerance is "not judged" (compare lists it), and drift between the two days is
# not measured. Two servers on one host are compared interleaved instead: `pytest-glm45 ab` (docs/throughput.md).
#
# Environment:
#   GLM45_REFERENCE     report.json of a known-good box (required). By default this box runs the reference's own
#                       configurations (its models, plans and tool-calling modes: `pytest-glm45 plans REFERENCE`), so
#                       the two compare configuration by configuration: a reference from 4 x H200 that ran tp4 makes
#                       an 8 x H100 box run tp4 too (on its first 4 GPUs), not tp8. A plan this box cannot hold
#                       (GLM-4.5-FP8 tp4 on H100) is refused by preflight: take a reference from a box of this kind.
#                       `none` runs without a comparison, to produce the first reference: keep its report/report.json
#   GLM45_VENV          a virtual environment with the kit and vLLM installed (default: the one this shell's
#                       `python3` belongs to, if it has the kit)
#   GLM45_PYTEST_ARGS   options and selection for the suites, quoted as in a shell (default: the reference's
#                       configurations; with GLM45_REFERENCE=none "--glm45-model air-fp8" on every GPU the box shows).
#                       Naming --glm45-model or --glm45-parallel here replaces the reference's: the reference must
#                       then have run the same configurations, or the comparison names them as missing
#   GLM45_CHECKPOINTS   local checkpoints for the reference's models, comma-separated ALIAS=PATH
#                       (e.g. "air-fp8=/models/GLM-4.5-Air-FP8"); default: the hub ids, from the Hugging Face cache
#   GLM45_PREFLIGHT_ARGS  options for `pytest-glm45 preflight` (default: the models, plans, --glm45-max-model-len and
#                       --glm45-server-arg the suites run with)
#   GLM45_TOLERANCE     performance tolerances for every place that judges (the suites' --glm45-compare-to and
#                       compare): metric=fraction or metric=N%, comma-separated, e.g. "output_throughput=0.15"
#   GLM45_KNOWN_FAILURES  known-failure directories, comma-separated, in layers (`shipped` = the kit's own)
#   GLM45_ACCEPT_MISSING  1: checks and configurations that ran only on the reference box do not fail the acceptance
#   GLM45_COMPARE_ARGS  other options for `pytest-glm45 compare`
#   GLM45_OUT           output directory (default: glm45-acceptance)
#   GLM45_ARCHIVE       the archive's path (default: $GLM45_OUT.tar.gz)
#   GLM45_KIT           the kit's checkout, for its suites (default: this script's repository)
#   GITHUB_STEP_SUMMARY set by GitHub Actions: the comparison's summary is appended to the job's page
#
# Logprob parity: every configuration is compared with the reference box's recordings (--glm45-parity-reference)
# when the reference recorded them (its run selected test_parity.py).
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
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/box.txt" ]; then
    # Only an earlier acceptance's output is cleared; anything else is left alone.
    die "GLM45_OUT='$out' is not empty and holds no earlier acceptance (box.txt); name an empty or new directory"
fi

split_args() {
    local -n into="$1"
    into=()
    [ -n "$2" ] || return 0
    mapfile -d '' -t into < <("$venv/bin/python" -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "$2") \
        || die "could not split '$2' as shell words"
}
# The kit's command from this checkout (plans and compare need no vLLM), with the venv's interpreter.
kit_cli() {
    PYTHONPATH="$kit${PYTHONPATH:+:$PYTHONPATH}" "$venv/bin/python" -m pytest_glm45.cli "$@"
}
split_args user_args "${GLM45_PYTEST_ARGS:-}"
split_args compare_args "${GLM45_COMPARE_ARGS:-}"
names_models=0
for arg in "${user_args[@]}"; do
    case "$arg" in
        --glm45-model*|--glm45-parallel*) names_models=1 ;;
        --glm45-tolerance*) die "GLM45_PYTEST_ARGS sets $arg: set GLM45_TOLERANCE instead (it reaches the suites and compare)" ;;
        --glm45-known-failures*) die "GLM45_PYTEST_ARGS sets $arg: set GLM45_KNOWN_FAILURES instead" ;;
        --glm45-compare-to*|--glm45-parity-reference*|--glm45-report*) die "GLM45_PYTEST_ARGS sets $arg, which the acceptance sets itself from GLM45_REFERENCE" ;;
    esac
done
for arg in "${compare_args[@]}"; do
    case "$arg" in
        --tolerance*) die "GLM45_COMPARE_ARGS sets $arg: set GLM45_TOLERANCE instead (it reaches the suites and compare)" ;;
        --known-failures*) die "GLM45_COMPARE_ARGS sets $arg: set GLM45_KNOWN_FAILURES instead" ;;
    esac
done
case "${GLM45_ACCEPT_MISSING:-0}" in
    0|"") accept_missing=() pytest_accept_missing=() ;;
    1) accept_missing=(--accept-missing) pytest_accept_missing=(--glm45-accept-missing on) ;;
    *) die "GLM45_ACCEPT_MISSING='${GLM45_ACCEPT_MISSING}' is not accepted: 1 (accept checks missing on this box) or 0" ;;
esac
tolerance=() pytest_tolerance=() known_failures=() pytest_known_failures=()
[ -z "${GLM45_TOLERANCE:-}" ] || { tolerance=(--tolerance "$GLM45_TOLERANCE"); pytest_tolerance=(--glm45-tolerance "$GLM45_TOLERANCE"); }
[ -z "${GLM45_KNOWN_FAILURES:-}" ] || { known_failures=(--known-failures "$GLM45_KNOWN_FAILURES"); pytest_known_failures=(--glm45-known-failures "$GLM45_KNOWN_FAILURES"); }

# What runs: the reference's own configurations unless GLM45_PYTEST_ARGS names models or plans.
selection=()
if [ "$names_models" = 0 ]; then
    if [ "$reference" = none ]; then
        selection=(--glm45-model air-fp8)
    else
        checkpoints=()
        IFS=',' read -r -a given <<< "${GLM45_CHECKPOINTS:-}"
        for c in "${given[@]}"; do [ -z "${c// /}" ] || checkpoints+=(--checkpoint "${c// /}"); done
        plans_line="$(kit_cli plans "$reference" "${checkpoints[@]}")" \
            || die "cannot run the reference's configurations again (above); set GLM45_PYTEST_ARGS to the models and plans to run"
        split_args selection "$plans_line"
    fi
elif [ -n "${GLM45_CHECKPOINTS:-}" ]; then
    die "GLM45_CHECKPOINTS names checkpoints for the reference's models, but GLM45_PYTEST_ARGS names the models itself: write them there (--glm45-model air-fp8=/models/...)"
fi
pytest_args=("${selection[@]}" "${user_args[@]}")
suites_line="pytest suites ${pytest_args[*]}"
# Preflight judges what the suites will run: their models, plans, context length and memory flags.
if [ -n "${GLM45_PREFLIGHT_ARGS:-}" ]; then
    split_args preflight_args "$GLM45_PREFLIGHT_ARGS"
else
    preflight_args=()
    for ((i = 0; i < ${#pytest_args[@]}; i++)); do
        arg="${pytest_args[$i]}" value=""
        case "$arg" in
            --glm45-model|--glm45-parallel|--glm45-max-model-len|--glm45-server-arg) value="${pytest_args[$((i + 1))]:-}"; i=$((i + 1)) ;;
            --glm45-model=*|--glm45-parallel=*|--glm45-max-model-len=*|--glm45-server-arg=*) value="${arg#*=}"; arg="${arg%%=*}" ;;
            *) continue ;;
        esac
        case "$arg" in
            --glm45-model) preflight_args+=(--model "$value") ;;
            --glm45-parallel) preflight_args+=(--plan "$value") ;;
            --glm45-max-model-len) preflight_args+=(--max-model-len "$value") ;;
            --glm45-server-arg) preflight_args+=("--server-arg=$value") ;;
        esac
    done
fi

rm -rf "$out"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
archive="${GLM45_ARCHIVE:-$out.tar.gz}"

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
    echo "suites: $suites_line"
    echo "preflight: pytest-glm45 preflight ${preflight_args[*]:-}"
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
preflight_rc=0
"$venv/bin/pytest-glm45" preflight "${preflight_args[@]}" > "$out/preflight.txt" 2>&1 || preflight_rc=$?
cat "$out/preflight.txt" >&2
if [ "$preflight_rc" != 0 ]; then
    if [ "$reference" != none ] && [ "$names_models" = 0 ]; then
        die "this box cannot run the reference's configurations (preflight above, $out/preflight.txt): take a reference from a box of this kind (GLM45_REFERENCE=none makes the first one), or set GLM45_PYTEST_ARGS to plans this box runs and a reference that ran them" 3
    fi
    die "pytest-glm45 preflight refused what the suites would run; see $out/preflight.txt" 3
fi

compare_to=() parity=()
if [ "$reference" != none ]; then
    compare_to=(--glm45-compare-to "$reference" "${pytest_accept_missing[@]}")
    if "$venv/bin/python" -c 'import json, sys
sys.exit(0 if (json.load(open(sys.argv[1])).get("parity") or {}).get("references") else 1)' "$reference" 2>/dev/null; then
        parity=(--glm45-parity-reference "$reference")
        echo "parity: against the reference's recordings" >> "$out/box.txt"
    fi
fi
log "suites: $suites_line"
suites_rc=0
(cd "$kit" && "$venv/bin/python" -m pytest suites -p no:cacheprovider "${pytest_args[@]}" "${compare_to[@]}" "${parity[@]}" \
    "${pytest_tolerance[@]}" "${pytest_known_failures[@]}" \
    --glm45-report "$out/report" --glm45-log-dir "$out/logs" --junitxml "$out/junit.xml" \
    --benchmark-json "$out/benchmarks.json") > "$out/pytest.log" 2>&1 || suites_rc=$?
tail -n 3 "$out/pytest.log" >&2
case "$suites_rc" in
    0|1) ;;
    5) die "the selection runs no check (pytest exit 5): $suites_line" ;;
    *) die "the suites ended with pytest exit $suites_rc (2 interrupted, 3 internal error, 4 usage error); see $out/pytest.log" 3 ;;
esac
[ -s "$out/report/report.json" ] || die "the suites wrote no report.json; see $out/pytest.log" 3

compare_rc=0
if [ "$reference" != none ]; then
    kit_cli compare "$reference" "$out/report/report.json" --markdown "$out/summary.md" "${accept_missing[@]}" \
        "${tolerance[@]}" "${known_failures[@]}" "${compare_args[@]}" > "$out/compare.txt" 2>&1 || compare_rc=$?
    cat "$out/compare.txt"
    [ "$compare_rc" -le 1 ] || die "pytest-glm45 compare ended with exit $compare_rc; see $out/compare.txt" 3
else
    echo "No reference: this run's report/report.json can be the reference for boxes like this one." > "$out/summary.md"
fi
echo "" >> "$out/summary.md"
{
    echo "Suites: pytest exit $suites_rc (\`$suites_line\`); compare exit $compare_rc."
    [ -z "${parity[*]}" ] || echo "Logprob parity judged against the reference box's recordings."
} >> "$out/summary.md"
[ -z "${GITHUB_STEP_SUMMARY:-}" ] || cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"
if [ "$suites_rc" = 0 ] && [ "$compare_rc" = 0 ]; then
    log "accepted"
    exit 0
fi
log "NOT accepted: pytest exit $suites_rc, compare exit $compare_rc"
exit 1
