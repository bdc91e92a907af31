#!/usr/bin/env bash
# The BetterAuth client compatibility test (tests/compat) runs BetterAuth's
# own JavaScript client with node: make sure node and npm are installed
# (Debian's nodejs and npm, with apt-get, when absent) and install the
# test's packages from its committed package-lock.json with `npm ci`.
# Idempotent and quiet when everything is in place (a stamp of the lock file
# inside node_modules).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROJECT=tests/compat/betterauth_client
STAMP=$PROJECT/node_modules/.session-ledger-lock.sha256

log() { printf 'node_deps: %s\n' "$*" >&2; }
die() {
    printf 'node_deps: ERROR: %s\n' "$*" >&2
    exit 1
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install nodejs and npm by hand"
        SUDO=(sudo -n)
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install nodejs and npm by hand"
    log "apt-get install nodejs npm"
    "${SUDO[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        nodejs npm >/dev/null || die "apt-get install nodejs npm failed"
fi

want=$(sha256sum "$PROJECT/package-lock.json" | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
    exit 0
fi
log "npm ci in $PROJECT"
(cd "$PROJECT" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed"
echo "$want" >"$STAMP"
