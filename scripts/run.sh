#!/usr/bin/env bash
# The main job: set up (venv + install) and serve the HTTP API and its demo
# page on the embedded SQLite default (./session-ledger.db, migrated on the
# first run). Extra arguments go to `session-ledger serve` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec .venv/bin/session-ledger serve "$@"
