#!/usr/bin/env bash
# The static gates: ruff lint, ruff format, mypy --strict, import-linter.
# Runs every gate, then exits non-zero if any failed. Assumes scripts/setup.sh ran.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=.venv/bin
# The packages install as session_ledger.<dir> (setuptools' package-dir
# mapping, resolved at run time by the editable install's import hook). mypy
# does not run import hooks, so it reads them through a link farm named as
# the installed packages; the tests, benchmarks and examples import them from
# there like any other code.
MYPY_SRC=.mypy_cache/src
MYPY_TARGETS=("$MYPY_SRC/session_ledger" tests bench examples)
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
link_farm() {
    mkdir -p "$MYPY_SRC/session_ledger"
    local package
    for package in ledger projections workers api migrations; do
        ln -sfn "../../../$package" "$MYPY_SRC/session_ledger/$package"
    done
}
link_farm
gate "mypy --strict" env MYPYPATH="$MYPY_SRC" "$BIN/mypy" --strict --explicit-package-bases "${MYPY_TARGETS[@]}"
gate "lint-imports" "$BIN/lint-imports"

if ((${#failed[@]})); then
    printf 'check: FAILED: %s\n' "$(IFS=,; echo "${failed[*]}" | sed 's/,/, /g')" >&2
    exit 1
fi
echo "check: all static gates passed"
