#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, user postgres, trust auth, database
# "test") and Redis (127.0.0.1:6379) are running on this machine.
#
# Idempotent and quiet when both already answer. Installs the servers with
# apt-get when their binaries are absent, starts them when they are down,
# waits until both answer, and exits non-zero with a clear message otherwise.
set -euo pipefail

# Overridable only so that this script itself can be tried on spare ports.
PG_HOST=127.0.0.1
PG_PORT=${SERVICES_PG_PORT:-5432}
PG_CLUSTER=${SERVICES_PG_CLUSTER:-main}
PG_DB=test
REDIS_HOST=127.0.0.1
REDIS_PORT=${SERVICES_REDIS_PORT:-6379}
WAIT_SECONDS=${SERVICES_WAIT_SECONDS:-30}

log() { printf 'services: %s\n' "$*" >&2; }
die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install or start services"
    SUDO=(sudo -n)
fi

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "$@" >/dev/null \
        || die "apt-get install $* failed"
}

# Run a command as the postgres OS user (peer auth on the local socket).
as_postgres() {
    if [[ $(id -un) == postgres ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "${SUDO[@]}" -u postgres "$@"
    fi
}

wait_for() { # wait_for DESCRIPTION COMMAND...
    local what=$1
    shift
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
    return 0
}

# ------------------------------------------------------------------ PostgreSQL

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
pg_sql() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -w -X -q -At "$@"; }

pg_version() { # newest installed server version, e.g. 15
    ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1
}

pg_cluster_version() { # newest version that has our cluster configured
    local dir
    for dir in $(ls -d /etc/postgresql/*/"$PG_CLUSTER" 2>/dev/null | sort -V -r); do
        basename "$(dirname "$dir")"
        return 0
    done
}

ensure_postgres_running() {
    if command -v pg_isready >/dev/null 2>&1 && pg_ready; then
        return 0
    fi
    if [[ -z $(pg_version) ]] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
        apt_install postgresql
    fi
    local version
    version=$(pg_cluster_version)
    if [[ -z $version ]]; then
        version=$(pg_version)
        [[ -n $version ]] || die "PostgreSQL server binaries not found after install"
        log "creating PostgreSQL cluster $version/$PG_CLUSTER"
        "${SUDO[@]}" pg_createcluster "$version" "$PG_CLUSTER" --port "$PG_PORT" >/dev/null || die "pg_createcluster failed"
    fi
    if ! pg_ready; then
        log "starting PostgreSQL $version/$PG_CLUSTER"
        "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start \
            || log "pg_ctlcluster start returned an error (checking whether it answers anyway)"
    fi
    wait_for "PostgreSQL" pg_ready \
        || die "PostgreSQL does not answer on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s (see /var/log/postgresql/)"
}

ensure_postgres_access() {
    # Tests connect as postgres over TCP without a password.
    if ! pg_sql -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
        local version hba
        version=$(pg_cluster_version)
        hba=/etc/postgresql/$version/$PG_CLUSTER/pg_hba.conf
        [[ -f $hba ]] || die "cannot log in as postgres on $PG_HOST and $hba does not exist"
        log "allowing trust auth for postgres on 127.0.0.1 / ::1 in $hba"
        local tmp
        tmp=$(mktemp)
        {
            echo "# added by scripts/services.sh (session-ledger tests)"
            echo "host    all    postgres    127.0.0.1/32    trust"
            echo "host    all    postgres    ::1/128         trust"
            "${SUDO[@]}" cat "$hba"
        } >"$tmp"
        "${SUDO[@]}" cp "$tmp" "$hba"
        rm -f "$tmp"
        as_postgres psql -X -q -p "$PG_PORT" -c 'SELECT pg_reload_conf()' >/dev/null \
            || "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" reload \
            || die "could not reload PostgreSQL after editing $hba"
        wait_for "PostgreSQL login" pg_sql -d postgres -c 'SELECT 1' \
            || die "still cannot log in as postgres on $PG_HOST:$PG_PORT without a password"
    fi
    if [[ $(pg_sql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") != 1 ]]; then
        log "creating database $PG_DB"
        pg_sql -d postgres -c "CREATE DATABASE $PG_DB" || die "could not create database $PG_DB"
    fi
}

# ----------------------------------------------------------------------- Redis

redis_ready() { [[ $(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

ensure_redis_running() {
    if command -v redis-cli >/dev/null 2>&1 && redis_ready; then
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    if ! redis_ready; then
        log "starting Redis on $REDIS_HOST:$REDIS_PORT"
        "${SUDO[@]}" mkdir -p /var/lib/redis /var/log/redis
        "${SUDO[@]}" redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
            --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
            || die "redis-server failed to start (see /var/log/redis/ci.log)"
    fi
    wait_for "Redis" redis_ready \
        || die "Redis does not answer on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s (see /var/log/redis/ci.log)"
}

ensure_postgres_running
ensure_postgres_access
ensure_redis_running
