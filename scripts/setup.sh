#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install the project with its dev and
# bench extras (the peers smoke test runs the bench's peers), then BetterAuth's
# packages for bench/peers (npm ci in bench/peers/betterauth, when npm exists).
# Each install is skipped when its input (pyproject.toml, package-lock.json)
# has not changed since the last successful one (stamp files). Set
# SETUP_FORCE=1 to reinstall.
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

# BetterAuth for bench/peers: node_modules from the committed lock file.
BETTERAUTH=bench/peers/betterauth
NPM_STAMP=$BETTERAUTH/node_modules/.session-ledger-install.sha256
if ! command -v npm >/dev/null 2>&1; then
    log "npm not found: bench/peers cannot run BetterAuth (install Node.js 20+ and npm)"
    exit 0
fi
want=$(sha256sum "$BETTERAUTH/package-lock.json" | cut -d' ' -f1)
if [[ ${SETUP_FORCE:-0} == 1 || ! -f $NPM_STAMP || $(cat "$NPM_STAMP") != "$want" ]]; then
    log "npm ci in $BETTERAUTH (builds better-sqlite3: about a minute)"
    (cd "$BETTERAUTH" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
        || die "npm ci in $BETTERAUTH failed"
    echo "$want" >"$NPM_STAMP"
fi
