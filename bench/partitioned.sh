#!/usr/bin/env bash
# The partitioned-table benchmark, on a range-partitioned table of ROWS rows
# in PARTS partitions, under the benchmark's write load (pgbench,
# rate-limited, every write mirrored into a control table in the same
# transaction). Two kinds of change (KIND):
# - key: ADD PRIMARY KEY, by plain ALTER TABLE and by halo_migrate (each
#   partition's index built CONCURRENTLY, then attached by the parent);
# - rewrite: ALTER COLUMN account TYPE bigint on a table with a primary key,
#   by plain ALTER TABLE, by halo_migrate with jobs = 1 and jobs = 2 (every
#   partition copied online, one cut-over), and by pg_tat.
# Each method gets a fresh file-level copy of the same database, in one
# cluster, in one run, REPEAT times, the methods taking turns.
#
# Per run: wall time; worst, p99 and p99.9 write latency during the change;
# seconds without a committed write; rows differing from the control;
# whether the change is in place afterwards (t/f).
#
# Usage: bench/partitioned.sh  (override KIND, ROWS, PARTS, RATE, REPEAT, METHODS)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-4000000}; PARTS=${PARTS:-8}; RATE=${RATE:-200}; REPEAT=${REPEAT:-3}
KIND=${KIND:-key}
if [ "$KIND" = rewrite ]; then
    METHODS=${METHODS:-plain halo_j1 halo_j2 pg_tat}
    ALTER="ALTER COLUMN account TYPE bigint"
else
    METHODS=${METHODS:-plain halo}
    ALTER="ADD PRIMARY KEY (id, ts)"
fi
dir=$(mktemp -d /tmp/halo_pbench.XXXXXX); chmod 755 "$dir"; mkdir -p "$dir/logs" bench/out
trap 'touch "$dir/stop_load"; scripts/pgcluster.sh stop "$dir/data" >/dev/null 2>&1; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data" "shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min" "fsync = on")
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=run
export PGOPTIONS="-c client_min_messages=warning"
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
now() { date +%s.%N; }

# events: ts in [0, PARTS * 1000), one partition per 1000; an index on id,
# no key yet.
span=$((PARTS * 1000))
q -d postgres -c "DROP DATABASE IF EXISTS tpl" -c "CREATE DATABASE tpl"
{
    echo "CREATE EXTENSION halo_migrate;"
    echo "CREATE TABLE events (id bigint NOT NULL, ts int NOT NULL, account int NOT NULL, note text) PARTITION BY RANGE (ts);"
    for i in $(seq 0 $((PARTS - 1))); do
        echo "CREATE TABLE events_$i PARTITION OF events FOR VALUES FROM ($((i * 1000))) TO ($(((i + 1) * 1000)));"
    done
    echo "INSERT INTO events SELECT g, g % $span, g % 10000, md5(g::text) FROM generate_series(1, $ROWS) g;"
    # The writes find their rows by id through this (not unique) index, as
    # an application on a table without a key yet would need one.
    if [ "$KIND" = rewrite ]; then
        echo "ALTER TABLE events ADD PRIMARY KEY (id, ts);"
    else
        echo "CREATE INDEX events_id ON events (id);"
    fi
    echo "CREATE TABLE events_control (id bigint NOT NULL, ts int NOT NULL, account int NOT NULL, note text);"
    echo "INSERT INTO events_control SELECT * FROM events;"
    echo "CREATE INDEX ON events_control (id);"
    echo "CREATE SEQUENCE events_new_id START $((ROWS + 1));"
    echo "VACUUM ANALYZE;"
} | q -d tpl
fresh_db() {
    q -d postgres -c "DROP DATABASE IF EXISTS run WITH (FORCE)" \
      -c "CREATE DATABASE run TEMPLATE tpl STRATEGY FILE_COPY"
}

cat > "$dir/write.sql" <<SQL
\set id random(1, $ROWS)
\set op random(1, 10)
\set r random(1, 1000000000)
BEGIN;
\if :op <= 5
UPDATE events SET note = md5(:r::text) WHERE id = :id AND ts = :id % $span;
UPDATE events_control SET note = md5(:r::text) WHERE id = :id;
\elif :op <= 9
SELECT nextval('events_new_id') AS nid \gset
INSERT INTO events VALUES (:nid, :nid % $span, :id % 10000, md5(:r::text));
INSERT INTO events_control VALUES (:nid, :nid % $span, :id % 10000, md5(:r::text));
\else
DELETE FROM events WHERE id = :id AND ts = :id % $span;
DELETE FROM events_control WHERE id = :id;
\endif
END;
SQL

load() {
    local k=0
    while [ ! -f "$dir/stop_load" ]; do
        pgbench -n -c 4 -j 2 -R "$RATE" -T 5 -f "$dir/write.sql" \
            -l --log-prefix="$dir/logs/$1.$k" >/dev/null 2>&1 || true
        k=$((k + 1))
    done
}

migrate() {
    case $1 in
    plain) q -c "ALTER TABLE events $ALTER" ;;
    halo) q -c "SELECT migrate.start('events', '$ALTER')" >/dev/null && q -c "CALL migrate.wait('events')" ;;
    halo_j1|halo_j2)
        q -c "SELECT migrate.start('events', '$ALTER', jobs => ${1#halo_j})" -c "SELECT migrate.finish('events')" >/dev/null ;;
    pg_tat)  # its smallest lock timeout (whole seconds); it wants the command in lower case
        bench/.venv/bin/pg_tat -h "$PGHOST" -p "$PGPORT" -U postgres -d run \
            -c "alter table events alter column account type bigint" \
            --lock-timeout 1 --time-between-locks 1 >"$dir/pg_tat.out" 2>&1 \
            || { echo "bench: pg_tat failed:" >&2; tail -5 "$dir/pg_tat.out" >&2; } ;;
    esac
}

echo "bench: partitioned ($KIND), $ROWS rows in $PARTS partitions, $ALTER, methods: $METHODS, $REPEAT runs" >&2
echo "kind method rows parts secs worst_ms p99_ms p999_ms stalls rows_differing changed"
for i in $(seq "$REPEAT"); do
    for m in $METHODS; do
        fresh_db
        rm -f "$dir"/logs/* "$dir/stop_load"
        load "$m" &
        lp=$!
        sleep "${SETTLE:-2}"
        t0=$(now)
        migrate "$m"
        t1=$(now)
        touch "$dir/stop_load"; wait "$lp"
        read -r worst p99 stalls _ p999 < <(python3 bench/latency.py "$dir/logs/$m." "$t0" "$t1")
        differ=$(q -c "SELECT (SELECT count(*) FROM (SELECT * FROM events EXCEPT ALL SELECT * FROM events_control) a)
                            + (SELECT count(*) FROM (SELECT * FROM events_control EXCEPT ALL SELECT * FROM events) b)")
        # Whether the change is there (a method that failed leaves it out).
        if [ "$KIND" = rewrite ]; then
            changed=$(q -c "SELECT count(*) = 0 FROM pg_partition_tree('events') t JOIN pg_attribute a ON a.attrelid = t.relid
                             WHERE a.attname = 'account' AND a.atttypid <> 'bigint'::regtype")
        else
            changed=$(q -c "SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype = 'p')")
        fi
        echo "$KIND $m $ROWS $PARTS $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") $worst $p99 $p999 $stalls $differ $changed" | tee -a bench/out/partitioned.txt
    done
done
q -d postgres -c "DROP DATABASE IF EXISTS run WITH (FORCE)" -c "DROP DATABASE IF EXISTS tpl"
