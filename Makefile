.PHONY: setup services test check run bench bench-peers

# Create .venv and install the project with its dev tools.
setup:
	scripts/setup.sh

# Make sure PostgreSQL and Redis run locally (installs them when absent).
services:
	scripts/services.sh

# Every gate: ruff, format, mypy, import-linter, pytest. Extra pytest args: make test ARGS="-k store".
test:
	scripts/test.sh $(ARGS)

# Static gates only (quick).
check:
	scripts/setup.sh
	scripts/check.sh

# Set up and start the service on the embedded SQLite default.
run:
	scripts/run.sh $(ARGS)

# Append throughput against the raw drivers (PostgreSQL and SQLite). make bench ARGS="--n 2000"
bench:
	scripts/setup.sh
	scripts/services.sh
	.venv/bin/python -m bench.append $(ARGS)

# session-ledger against Django sessions, fastapi-users, eventsourcing and BetterAuth
# (same PostgreSQL / Redis / SQLite, alternating rounds), with charts in bench/results/.
# make bench-peers ARGS=--quick (under 3 minutes; the full run under 15).
bench-peers:
	scripts/setup.sh
	scripts/services.sh
	scripts/browser.sh wrk
	scripts/node_deps.sh
	.venv/bin/python -m bench.peers $(ARGS)
