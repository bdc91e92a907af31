#!/usr/bin/env bash
# The static gates: ruff lint, ruff format, mypy --strict, import-linter.
# Runs every gate, then exits non-zero if any failed. Assumes scripts/setup.sh ran.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=.venv/bin
MYPY_PATHS=(ledger projections workers api migrations tests bench)
failed=()

gate() { # gate NAME COMMAND...
    local name=$1
    shift
    printf '==> %s\n' "$name"
    if ! "$@"; then
        failed+=("$name")
    fi
}

[[ -x $BIN/python ]] || {
    echo "check: .venv missing: run scripts/setup.sh first" >&2
    exit 2
}

gate "ruff check" "$BIN/ruff" check .
gate "ruff format --check" "$BIN/ruff" format --check .
gate "mypy --strict" "$BIN/mypy" --strict "${MYPY_PATHS[@]}"
gate "lint-imports" "$BIN/lint-imports"

if ((${#failed[@]})); then
    printf 'check: FAILED: %s\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" >&2
    exit 1
fi
echo "check: all static gates passed"
