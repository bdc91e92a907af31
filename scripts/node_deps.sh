#!/usr/bin/env bash
# The node projects: the BetterAuth client compatibility test (tests/compat)
# runs BetterAuth's own JavaScript client, and the peers bench (bench/peers,
# its smoke test in tests/bench) runs BetterAuth's server. Make sure node and
# npm are installed (Debian's nodejs and npm, with apt-get, when absent) and
# install each project's packages from its committed package-lock.json with
# `npm ci` (bench/peers/betterauth builds better-sqlite3: about a minute).
# Idempotent and quiet when everything is in place (a stamp of each lock file
# inside its node_modules).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROJECTS=(tests/compat/betterauth_client bench/peers/betterauth)

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

for project in "${PROJECTS[@]}"; do
    stamp=$project/node_modules/.session-ledger-lock.sha256
    want=$(sha256sum "$project/package-lock.json" | cut -d' ' -f1)
    if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
        continue
    fi
    log "npm ci in $project"
    (cd "$project" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
        || die "npm ci in $project failed"
    echo "$want" >"$stamp"
done
