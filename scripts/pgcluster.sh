#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster, run as the `postgres` user on a free
# local port: for the demo, the SQL regression tests and manual checks.
#   pgcluster.sh start DIR [extra postgresql.conf lines...]  -> prints the port
#   pgcluster.sh stop DIR
#   pgcluster.sh crash-restart DIR  (stop -m immediate, as in a crash; start again)
#   pgcluster.sh standby PRIMARY_DIR DIR [extra lines...]  -> a streaming standby's port
set -euo pipefail
# The server of PG_CONFIG (the Makefile's; PostgreSQL 15 by default).
BIN=$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)
cmd=${1:?start|stop}; dir=${2:?data directory}
as_pg() { if [ "$(id -un)" = postgres ]; then "$@"; else sudo -u postgres -- "$@"; fi; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

case "$cmd" in
start)
    shift 2
    mkdir -p "$dir"; chown postgres: "$dir" 2>/dev/null || true
    if [ ! -f "$dir/PG_VERSION" ]; then
        as_pg "$BIN/initdb" -D "$dir" -U postgres --auth=trust --no-sync >/dev/null
    fi
    port=$(free_port)
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
        echo "max_worker_processes = 16"
        for line in "$@"; do echo "$line"; done
    } | as_pg tee "$dir/postgresql.auto.conf" >/dev/null
    as_pg "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
    echo "$port" | as_pg tee "$dir/port"
    ;;
stop)
    [ -f "$dir/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
    ;;
crash-restart)
    as_pg "$BIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null
    as_pg "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
    ;;
standby)
    # A streaming replica of the cluster in $dir (pg_basebackup -R), in $3.
    primary=$dir; dir=${3:?standby data directory}; shift 3
    mkdir -p "$dir"; chown postgres: "$dir" 2>/dev/null || true; chmod 700 "$dir"
    as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$(cat "$primary/port")" -U postgres \
        -D "$dir" -R -X stream --no-sync >/dev/null
    port=$(free_port)
    {
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        for line in "$@"; do echo "$line"; done
    } | as_pg tee -a "$dir/postgresql.auto.conf" >/dev/null
    as_pg rm -f "$dir/port"
    as_pg "$BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null
    echo "$port" | as_pg tee "$dir/port"
    ;;
*) echo "usage: $0 start|stop|crash-restart|standby DIR" >&2; exit 2 ;;
esac
