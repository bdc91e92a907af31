#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install the project with its dev and
# bench extras (the peers smoke test, tests/bench, runs the bench's peers;
# their node packages come from scripts/node_deps.sh). The install is skipped
# when pyproject.toml has not changed since the last successful one (stamp
# file inside .venv). Set SETUP_FORCE=1 to reinstall.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP=$VENV/.session-ledger-install.sha256

log() { printf 'setup: %s\n' "$*" >&2; }
die() {
    printf 'setup: ERROR: %s\n' "$*" >&2
    exit 1
}

find_python() {
    local candidate
    for candidate in python3.11 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' \
                >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

if [[ ! -x $VENV/bin/python ]] || ! $VENV/bin/python -c 'import sys' >/dev/null 2>&1; then
    python=$(find_python) || die "Python >= 3.11 with the venv module is required (python3.11 or python3)"
    log "creating $VENV with $($python --version 2>&1)"
    rm -rf "$VENV"
    "$python" -m venv "$VENV" || die "could not create $VENV"
fi

want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ${SETUP_FORCE:-0} == 1 || ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
    log "installing session-ledger[dev,bench] into $VENV"
    rm -f "$STAMP"
    $VENV/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]' \
        || die "pip install -e '.[dev,bench]' failed"
    echo "$want" >"$STAMP"
fi

