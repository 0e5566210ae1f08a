#!/usr/bin/env bash
# A private, throwaway PostGIS cluster for the test suite and the demo.
#
#   scripts/postgis.sh run -- <command...>   start a fresh cluster, run the command with
#                                            DATABASE_URL pointing at it, then stop the cluster
#                                            and delete it (also on failure or Ctrl-C); exits
#                                            with the command's exit code.
#   scripts/postgis.sh start                 start a longer-lived cluster (state in
#                                            data/postgis-cluster.env) and print its DATABASE_URL
#   scripts/postgis.sh status                print the DATABASE_URL of the started cluster, if any
#   scripts/postgis.sh stop                  stop that cluster and delete its files
#
# It installs postgresql-15-postgis-3 with apt when missing, and never touches a cluster that
# already exists on the machine (no pg_ctlcluster, no Debian default cluster): it runs initdb and
# pg_ctl from /usr/lib/postgresql/$PG_VERSION/bin on a new directory made with mktemp -d (under
# $TMPDIR, default /tmp), listening only on 127.0.0.1 on a free port, with its unix socket in that
# directory. The superuser is `postgres`, trusted without a password: anyone on this machine can
# connect to the loopback port while the cluster runs, so keep no private data in it.
#
# Output: stdout carries only what is listed above (the command's own stdout for `run`, one
# DATABASE_URL=... line for `start` and `status`); every progress line, apt/dpkg, initdb and
# server message goes to stderr or to a log file in the cluster directory.
set -euo pipefail
cd "$(dirname "$0")/.."

# fd 3 is the caller's stdout, kept for the documented output; everything else that writes to
# stdout (apt-get, dpkg, initdb, pg_ctl, psql) lands on stderr, whatever it is.
exec 3>&1 1>&2

PG_VERSION=${PG_VERSION:-15}
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PG_PACKAGE=postgresql-$PG_VERSION-postgis-3
DB_NAME=${POSTGIS_DB:-buildings}
STATE_FILE=data/postgis-cluster.env

say() { printf '[postgis] %s\n' "$*" >&2; }
die() {
    printf '[postgis] error: %s\n' "$*" >&2
    exit 1
}

[[ $DB_NAME =~ ^[a-z_][a-z0-9_]{0,62}$ ]] ||
    die "POSTGIS_DB=$DB_NAME is not a plain lower-case database name ([a-z_][a-z0-9_]*)"

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

ensure_installed() {
    # installed, not merely known to dpkg (a removed package's leftover config files)
    if [[ $(dpkg-query -W -f='${Status}' "$PG_PACKAGE" 2>/dev/null) == "install ok installed" &&
        -x $PG_BIN/initdb ]]; then
        return
    fi
    say "installing $PG_PACKAGE with apt"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq >&2 3>&-
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "$PG_PACKAGE" >&2 3>&-
    [[ -x $PG_BIN/initdb ]] || die "$PG_BIN/initdb is missing after installing $PG_PACKAGE"
}

# Run a PostgreSQL server program as the cluster owner: `postgres` when we are root (initdb and
# the server refuse to run as root), ourselves otherwise.
# fd 3 (the caller's stdout) is closed for them, so a server that outlives `start` never holds
# the caller's pipe open.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@" 3>&-
    else
        "$@" 3>&-
    fi
}

free_port() {
    python3 - <<'EOF'
import socket

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
EOF
}

# start_cluster DIR [durable]: initdb in DIR/data, start the server on a free port (set in PORT),
# create the database with the postgis extension. Without "durable" the cluster trades crash
# safety for speed (fsync off): right for a cluster that is deleted afterwards anyway.
start_cluster() {
    local dir=$1 durable=${2:-}
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir"; fi
    local nosync=()
    [[ -n $durable ]] || nosync=(--no-sync)
    as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        "${nosync[@]}" >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        die "initdb failed in $dir"
    }
    local opts attempt
    # Another process may take the free port before the server binds it: try a few ports.
    for attempt in 1 2 3; do
        PORT=$(free_port)
        opts="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$dir"
        [[ -n $durable ]] || opts+=" -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        if as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "$opts" -w -s start \
            >/dev/null 2>&1; then
            break
        fi
        if ((attempt == 3)); then
            cat "$dir/server.log" >&2 || true
            die "the server in $dir did not start (log above)"
        fi
    done
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -qAt -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE $DB_NAME" >/dev/null
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d "$DB_NAME" -qAt -v ON_ERROR_STOP=1 \
        -c "CREATE EXTENSION postgis" >/dev/null
}

stop_cluster() {
    local dir=$1
    # Only ever delete a directory this script made.
    [[ $(basename -- "$dir") =~ ^postgis-(run|cluster)\.[A-Za-z0-9]+$ && -d $dir ]] || return 0
    if [[ -f $dir/data/postmaster.pid ]]; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -s stop >/dev/null 2>&1 ||
            as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate -w -s stop >/dev/null 2>&1 || true
        if as_owner "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
            printf '[postgis] warning: the server in %s would not stop; left it in place\n' "$dir" >&2
            return 1
        fi
    fi
    rm -rf -- "$dir"
}

# EXIT trap: remove the cluster in CLUSTER_DIR (if any), keep the exit status.
on_exit() {
    local rc=$?
    set +e
    [[ -n ${CLUSTER_DIR:-} ]] && stop_cluster "$CLUSTER_DIR"
    exit "$rc"
}

database_url() { printf 'postgis://postgres@127.0.0.1:%s/%s' "$1" "$DB_NAME"; }

cmd_run() {
    [[ ${1:-} == "--" ]] && shift
    (($#)) || die "usage: scripts/postgis.sh run -- <command...>"
    ensure_installed
    CLUSTER_DIR=$(mktemp -d -t postgis-run.XXXXXX)
    # From here on the cluster and its directory go away whatever happens.
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_cluster "$CLUSTER_DIR"
    export DATABASE_URL PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=$DB_NAME
    DATABASE_URL=$(database_url "$PORT")
    say "throwaway PostGIS $(postgis_version "$PORT") at $DATABASE_URL"
    local rc=0
    "$@" >&3 3>&- || rc=$?
    exit "$rc"
}

postgis_version() {
    "$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d "$DB_NAME" -qAt \
        -c "SELECT extversion FROM pg_extension WHERE extname = 'postgis'"
}

# Reads the state file into DIR, PORT, DATABASE_URL; fails when there is none.
load_state() {
    [[ -f $STATE_FILE ]] || return 1
    # shellcheck disable=SC1090
    source "$STATE_FILE"
}

is_running() { [[ -n ${DIR:-} ]] && as_owner "$PG_BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; }

cmd_start() {
    if load_state; then
        if is_running; then
            say "already running (stop it with: scripts/postgis.sh stop)"
            echo "DATABASE_URL=$DATABASE_URL" >&3
            return
        fi
        say "removing a stale cluster record ($DIR is not running)"
        stop_cluster "$DIR"
        rm -f "$STATE_FILE"
    fi
    ensure_installed
    CLUSTER_DIR=$(mktemp -d -t postgis-cluster.XXXXXX)
    # Until the state file is written, a failure or Ctrl-C removes the half-made cluster.
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_cluster "$CLUSTER_DIR" durable
    mkdir -p "$(dirname "$STATE_FILE")"
    local url
    url=$(database_url "$PORT")
    printf 'DIR=%q\nPORT=%q\nDATABASE_URL=%q\n' "$CLUSTER_DIR" "$PORT" "$url" >"$STATE_FILE"
    say "started PostGIS $(postgis_version "$PORT") in $CLUSTER_DIR (stop it with: scripts/postgis.sh stop)"
    say "use it with: make demo DATABASE_URL=$url   (or: export \"\$(scripts/postgis.sh status)\")"
    CLUSTER_DIR=""
    trap - EXIT INT TERM
    echo "DATABASE_URL=$url" >&3
}

cmd_status() {
    if load_state && is_running; then
        echo "DATABASE_URL=$DATABASE_URL" >&3
    else
        say "not running (start it with: scripts/postgis.sh start)"
        return 3
    fi
}

cmd_stop() {
    if ! load_state; then
        say "nothing to stop (no $STATE_FILE)"
        return
    fi
    stop_cluster "$DIR"
    rm -f "$STATE_FILE"
    say "stopped and removed $DIR"
}

case ${1:-} in
    run) shift && cmd_run "$@" ;;
    start) cmd_start ;;
    status) cmd_status ;;
    stop) cmd_stop ;;
    *) usage ;;
esac
