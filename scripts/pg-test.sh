#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for callhook's tests, reachable on 127.0.0.1 only.
#
#   pg-test.sh start DIR PORT       create a cluster in DIR listening on 127.0.0.1:PORT (and a
#                                   unix socket beside its data), wait until it takes
#                                   connections, create the role `callhook` and the database
#                                   `callhook_test`, print the connection URI on stdout:
#                                   postgresql://callhook@127.0.0.1:PORT/callhook_test
#   pg-test.sh stop DIR             stop it (immediate) and remove DIR
#   pg-test.sh restart DIR [SECS]   stop it (fast), keep it down SECS seconds (default 0), start
#                                   it again on the same port with the same data; prints the URI
#   pg-test.sh down DIR             stop it (fast), keep the data (`up` starts it again)
#   pg-test.sh up DIR               start a cluster that `down` stopped; prints the URI
#   pg-test.sh uri DIR              print the URI
#   pg-test.sh status DIR           exit 0 if it runs, 3 if it is stopped
#
# Only stdout carries the URI; progress and errors go to stderr. `start` on a cluster already
# running in DIR on PORT only prints its URI; a cluster left stopped in DIR (a run that was
# killed) is removed and made again; a busy port is an error. DIR is only ever removed when it
# holds this script's marker file. Root cannot run PostgreSQL: as root the server runs as the
# `postgres` system user (Debian's postgresql package makes it), and when that user cannot reach
# DIR (a parent directory it may not enter, or a path too long for a unix socket) the cluster
# lives in a 0755 directory under /tmp that DIR points to. Authentication is `trust` for local
# and 127.0.0.1/32 connections: this is for tests, never for data that matters. fsync stays on.
#
# The PostgreSQL binaries come from $CALLHOOK_PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/*/bin
# (newest first) or PATH, whichever has initdb, pg_ctl and postgres.
set -euo pipefail
shopt -s inherit_errexit
umask 022

PROG=pg-test.sh
MARKER=.callhook-pg-test
ROLE=callhook
DATABASE=callhook_test
SUPERUSER=postgres       # the cluster's bootstrap superuser (initdb -U)
READY_TIMEOUT_S=60       # pg_ctl -t and the pg_isready deadline
SOCKET_PATH_MAX=90       # sun_path is 108 bytes with the NUL; "/.s.PGSQL.NNNNN" is added

# A PG* variable from the caller's shell (PGHOST, PGPASSWORD, PGSERVICE...) must not redirect
# or change the connections made here.
while IFS= read -r v; do
    unset "$v"
done < <(compgen -e | grep '^PG' || true)
export LC_ALL=C

die() {
    echo "$PROG: $*" >&2
    exit 1
}

note() {
    echo "$PROG: $*" >&2
}

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# -- where things are ------------------------------------------------------------------------

find_bindir() {
    local c candidates=()
    if [ -n "${CALLHOOK_PG_BINDIR:-}" ]; then
        candidates+=("$CALLHOOK_PG_BINDIR")
    fi
    if command -v pg_config >/dev/null 2>&1; then
        c=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$c" ]; then candidates+=("$c"); fi
    fi
    while IFS= read -r c; do
        if [ -d "$c" ]; then candidates+=("$c"); fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
    if c=$(command -v pg_ctl 2>/dev/null); then
        candidates+=("$(dirname "$(readlink -f "$c")")")
    fi
    for c in "${candidates[@]}"; do
        if [ -x "$c/initdb" ] && [ -x "$c/pg_ctl" ] && [ -x "$c/postgres" ]; then
            echo "$c"
            return 0
        fi
    done
    die "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found; install Debian's" \
        "postgresql package (make deps), or set CALLHOOK_PG_BINDIR"
}

BINDIR=$(find_bindir)
PSQL="$BINDIR/psql"
if [ ! -x "$PSQL" ]; then
    PSQL=$(command -v psql) || die "psql not found (Debian package postgresql-client)"
fi
PG_ISREADY="$BINDIR/pg_isready"
if [ ! -x "$PG_ISREADY" ]; then
    PG_ISREADY=$(command -v pg_isready) || die "pg_isready not found"
fi

# as_pg CMD...: run a server-side command as the user that owns the cluster (from /, so a
# current directory that user may not read does not matter).
if [ "$(id -u)" -eq 0 ]; then
    getent passwd postgres >/dev/null ||
        die "running as root, but there is no 'postgres' system user to run the server as" \
            "(install Debian's postgresql package)"
    OWNER=postgres
    if command -v runuser >/dev/null 2>&1; then
        as_pg() { (cd / && runuser -u postgres -- "$@"); }
    else
        # shellcheck disable=SC2016 # $0 and $@ are for the inner shell
        as_pg() { (cd / && su postgres -s /bin/sh -c 'exec "$0" "$@"' -- "$@"); }
    fi
else
    OWNER=$(id -un)
    as_pg() { (cd / && "$@"); }
fi

# -- helpers ---------------------------------------------------------------------------------

check_port() {
    case "$1" in
        '' | *[!0-9]*) die "port must be a number, not '$1'" ;;
    esac
    if [ "$1" -lt 1024 ] || [ "$1" -gt 65535 ]; then
        die "port $1 is outside 1024-65535"
    fi
}

# Something accepts connections on 127.0.0.1:$1 (a listener on 0.0.0.0 included).
port_in_use() {
    # shellcheck disable=SC2016 # $0 is for the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null
}

abs_dir() {
    [ -n "$1" ] || die "DIR must not be empty"
    local d
    d=$(realpath -m -- "$1")
    [ "$d" != / ] || die "DIR must not be /"
    echo "$d"
}

# Sets HOME_DIR, DATA, LOG, PORT for the cluster in $DIR (which must be ours).
load() {
    [ -f "$DIR/$MARKER" ] || die "$DIR is not a cluster made by $PROG (no $MARKER)"
    HOME_DIR=$(cat "$DIR/home")
    PORT=$(cat "$DIR/port")
    DATA="$HOME_DIR/data"
    LOG="$HOME_DIR/server.log"
    [ -d "$DATA" ] || die "$DIR: no data directory at $DATA"
}

# DIR (ours) has a data directory (initdb ran).
has_data() {
    [ -f "$DIR/home" ] && [ -f "$DIR/port" ] && [ -d "$(cat "$DIR/home")/data" ]
}

uri() {
    echo "postgresql://$ROLE@127.0.0.1:$PORT/$DATABASE"
}

# The pid of this cluster's live postmaster (not a zombie, not a recycled pid), or nothing.
postmaster_pid() {
    local pid state
    pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    state=$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$pid/stat" 2>/dev/null || true)
    case "$state" in '' | Z | X | x) return 1 ;; esac
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$DATA" || return 1
    echo "$pid"
}

running() {
    postmaster_pid >/dev/null && as_pg "$BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

show_log() {
    if [ -f "$LOG" ]; then
        echo "---- last lines of $LOG ----" >&2
        tail -n 30 "$LOG" >&2 || true
        echo "----" >&2
    fi
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until "$PG_ISREADY" -q -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" -d postgres -t 2; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log
            die "the server on 127.0.0.1:$PORT was not ready within ${READY_TIMEOUT_S}s"
        fi
        sleep 0.2
    done
}

server_start() {
    if port_in_use "$PORT"; then
        die "127.0.0.1:$PORT is already in use (another PostgreSQL or service?); choose" \
            "another port"
    fi
    if ! as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$READY_TIMEOUT_S" -s start >&2; then
        show_log
        die "the server in $DATA did not start"
    fi
    wait_ready
}

# The role and the database, unless they exist (an idempotent start on a running cluster).
ensure_database() {
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" -d postgres \
        >&2 <<SQL ||
SELECT 'CREATE ROLE $ROLE LOGIN SUPERUSER'
    WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE'
    WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DATABASE') \gexec
SQL
        die "could not create the role $ROLE and the database $DATABASE"
    local got
    got=$("$PSQL" -X -At -d "$(uri)" -c 'SELECT current_user || 1' 2>&1) ||
        die "cannot connect to $(uri): $got"
    [ "$got" = "${ROLE}1" ] || die "unexpected answer from $(uri): $got"
}

# Stops the server (mode immediate or fast) if it runs; kills a postmaster that does not stop.
server_stop() {
    local mode=$1 pid deadline
    postmaster_pid >/dev/null || return 0
    if as_pg "$BINDIR/pg_ctl" -D "$DATA" -m "$mode" -w -t "$READY_TIMEOUT_S" -s stop >&2; then
        return 0
    fi
    # Only the postmaster of this data directory, never a recycled pid.
    if pid=$(postmaster_pid); then
        note "pg_ctl stop failed; killing postmaster $pid"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while postmaster_pid >/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        ! postmaster_pid >/dev/null || die "postmaster $pid does not die"
    fi
}

# Removes the cluster's files: its home (DIR/cluster or /tmp/callhook-pg.*) and DIR.
remove_all() {
    if [ -f "$DIR/home" ]; then
        local home
        home=$(cat "$DIR/home")
        case "$home" in
            "$DIR"/cluster | /tmp/callhook-pg.*) rm -rf -- "$home" ;;
            *) note "not removing unexpected cluster home $home" ;;
        esac
    fi
    rm -rf -- "$DIR"
}

# A home the server's user can own and reach: DIR/cluster, else a fresh 0755 dir in /tmp.
make_home() {
    local h="$DIR/cluster"
    mkdir -p "$h"
    chown "$OWNER" "$h"
    chmod 0755 "$h"
    case "$h" in
        *[!A-Za-z0-9/._+-]*) note "unusual characters in $h" ;;
        *)
            if [ "${#h}" -le "$SOCKET_PATH_MAX" ] && as_pg test -w "$h" -a -x "$h"; then
                echo "$h"
                return 0
            fi
            ;;
    esac
    rmdir "$h"
    h=$(mktemp -d /tmp/callhook-pg.XXXXXX)
    chmod 0755 "$h"
    chown "$OWNER" "$h"
    note "$OWNER cannot reach $DIR, or the socket path would be too long; the cluster lives in $h"
    echo "$h"
}

# -- commands --------------------------------------------------------------------------------

cmd_start() {
    DIR=$(abs_dir "$1")
    check_port "$2"
    if [ -f "$DIR/$MARKER" ]; then
        if has_data; then
            load
            if running; then
                [ "$PORT" = "$2" ] ||
                    die "a cluster already runs in $DIR on port $PORT; stop it first"
                note "already running in $DIR on 127.0.0.1:$PORT"
                ensure_database
                uri
                return 0
            fi
            server_stop immediate
        fi
        note "removing the stopped cluster left in $DIR"
        remove_all
    elif [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
        die "$DIR exists, is not empty and was not made by $PROG; refusing to use it"
    fi
    PORT=$2
    if port_in_use "$PORT"; then
        die "127.0.0.1:$PORT is already in use (another PostgreSQL or service?); choose" \
            "another port"
    fi

    mkdir -p "$DIR"
    chmod 0755 "$DIR"
    echo "callhook throwaway PostgreSQL cluster; remove with scripts/$PROG stop $DIR" \
        >"$DIR/$MARKER"
    echo "$PORT" >"$DIR/port"
    HOME_DIR=$(make_home)
    echo "$HOME_DIR" >"$DIR/home"
    DATA="$HOME_DIR/data"
    LOG="$HOME_DIR/server.log"

    note "initdb ($("$BINDIR/postgres" --version)) in $DATA"
    if ! as_pg "$BINDIR/initdb" -D "$DATA" -U "$SUPERUSER" -A trust -E UTF8 --no-locale \
        >"$HOME_DIR/initdb.log" 2>&1; then
        cat "$HOME_DIR/initdb.log" >&2
        die "initdb failed"
    fi
    # Only local and 127.0.0.1 connections, without passwords.
    cat >"$DATA/pg_hba.conf" <<'EOF'
# callhook tests (scripts/pg-test.sh): trust, local and 127.0.0.1 only
local   all  all                trust
host    all  all  127.0.0.1/32  trust
EOF
    cat >>"$DATA/postgresql.conf" <<EOF

# callhook tests (scripts/pg-test.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$HOME_DIR'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 16MB
max_connections = 200
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
timezone = 'UTC'
log_timezone = 'UTC'
EOF
    chown "$OWNER" "$DATA/pg_hba.conf"
    chmod 0600 "$DATA/pg_hba.conf"

    server_start
    ensure_database
    note "ready on 127.0.0.1:$PORT (log: $LOG)"
    uri
}

cmd_stop() {
    DIR=$(abs_dir "$1")
    if [ ! -e "$DIR" ]; then
        note "nothing in $DIR"
        return 0
    fi
    [ -f "$DIR/$MARKER" ] || die "$DIR was not made by $PROG; refusing to remove it"
    if has_data; then
        load
        server_stop immediate
    fi
    remove_all
    note "stopped and removed $DIR"
}

cmd_down() {
    DIR=$(abs_dir "$1")
    load
    if ! running; then
        note "not running"
        return 0
    fi
    server_stop fast
    note "stopped (data kept in $DATA)"
}

cmd_up() {
    DIR=$(abs_dir "$1")
    load
    if running; then
        note "already running on 127.0.0.1:$PORT"
    else
        server_start
        note "running again on 127.0.0.1:$PORT"
    fi
    uri
}

cmd_restart() {
    local secs=${2:-0}
    case "$secs" in
        '' | *[!0-9.]*) die "SECS must be a number of seconds, not '$secs'" ;;
    esac
    cmd_down "$1"
    if [ "$secs" != 0 ]; then
        sleep "$secs"
    fi
    cmd_up "$1"
}

cmd_uri() {
    DIR=$(abs_dir "$1")
    load
    uri
}

cmd_status() {
    DIR=$(abs_dir "$1")
    if [ ! -f "$DIR/$MARKER" ]; then
        note "no cluster in $DIR"
        return 3
    fi
    load
    if running; then
        note "running on 127.0.0.1:$PORT, data in $DATA"
        return 0
    fi
    note "stopped, data in $DATA"
    return 3
}

[ $# -ge 2 ] || usage
cmd=$1
shift
case "$cmd" in
    start) [ $# -eq 2 ] || usage; cmd_start "$@" ;;
    stop) [ $# -eq 1 ] || usage; cmd_stop "$@" ;;
    restart) [ $# -le 2 ] || usage; cmd_restart "$@" ;;
    down) [ $# -eq 1 ] || usage; cmd_down "$@" ;;
    up) [ $# -eq 1 ] || usage; cmd_up "$@" ;;
    uri) [ $# -eq 1 ] || usage; cmd_uri "$@" ;;
    status) [ $# -eq 1 ] || usage; cmd_status "$@" ;;
    *) usage ;;
esac
