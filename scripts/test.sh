#!/usr/bin/env bash
# Set up, start PostgreSQL and Redis if needed, then run every gate:
# ruff, ruff format, mypy --strict, import-linter and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k store -x).
# Every gate runs even when an earlier one failed; the exit code is non-zero
# if any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh || exit 1
scripts/services.sh || exit 1
# Debian's chromium for the browser test (tests/e2e), wrk for bench/http.py.
scripts/browser.sh || exit 1
# node, BetterAuth's own client (tests/compat) and server (bench/peers, tests/bench).
scripts/node_deps.sh || exit 1

status=0
scripts/check.sh || status=1

echo "==> pytest"
.venv/bin/python -m pytest "$@"
pytest_status=$?
case $pytest_status in
    0) ;;
    5)
        echo "test: pytest collected no tests" >&2
        status=1
        ;;
    *) status=1 ;;
esac

if ((status)); then
    echo "test: FAILED (see the gates above)" >&2
else
    echo "test: all gates passed"
fi
exit "$status"
