#!/usr/bin/env bash
# Make sure Debian's chromium (for the Playwright browser test, tests/e2e)
# and wrk (for bench/http.py) are installed. Idempotent and quiet when both
# are present; installs the missing ones with apt-get otherwise.
#
#   scripts/browser.sh           chromium and wrk
#   scripts/browser.sh chromium  only chromium
set -euo pipefail

log() { printf 'browser: %s\n' "$*" >&2; }
die() {
    printf 'browser: ERROR: %s\n' "$*" >&2
    exit 1
}

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: install chromium / wrk by hand"
    SUDO=(sudo -n)
fi

wanted=("$@")
((${#wanted[@]})) || wanted=(chromium wrk)

missing=()
for pkg in "${wanted[@]}"; do
    case $pkg in
    chromium) [[ -x /usr/bin/chromium ]] || missing+=(chromium) ;;
    wrk) command -v wrk >/dev/null 2>&1 || missing+=(wrk) ;;
    *) die "unknown package $pkg (expected chromium or wrk)" ;;
    esac
done
((${#missing[@]})) || exit 0

command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"
log "apt-get update"
"${SUDO[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
log "apt-get install ${missing[*]}"
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
[[ " ${missing[*]} " != *" chromium "* || -x /usr/bin/chromium ]] \
    || die "chromium installed but /usr/bin/chromium is missing"
log "installed ${missing[*]}"
