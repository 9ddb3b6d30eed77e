#!/usr/bin/env bash
# The benchmark: the same online change made by plain ALTER TABLE, pg_tat,
# pg_repack and halo_migrate. Each method gets a fresh, file-level copy of the
# same table (CREATE DATABASE ... TEMPLATE) in one cluster, under the same
# rate-limited pgbench write load, in one run. pg_repack cannot alter a
# table, so it does a same-shape rewrite of it, which gives the baseline cost
# of the copy-and-swap machinery.
#
# Per method: wall time; worst and p99 write latency during the migration;
# seconds with no committed write; rows that differ from the control table
# afterwards; WAL written; peak extra disk; the halo worker's peak memory.
# Also: write throughput with and without the capture trigger, the two copy
# methods, and scaling with table size. Writes a report and PNG plots.
#
# The cluster runs with fsync on, as a DBA's server does: a method that
# commits often pays for it here.
#
# Usage: bench/run.sh   (override ROWS, RATE, REPEAT, SCALE_SIZES, SCALE_REPEAT,
#                        METHODS, OUT; REVERT_AFTER for halo_revert)
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
ROWS=${ROWS:-1000000}; RATE=${RATE:-200}; REPEAT=${REPEAT:-3}
SCALE_SIZES=${SCALE_SIZES-1000000 2000000 5000000 10000000}
SCALE_REPEAT=${SCALE_REPEAT:-3}
METHODS=${METHODS:-plain pg_tat pg_repack halo}
OUT=${OUT:-doc/img}
ALTER="ALTER COLUMN amount TYPE bigint"
dir=$(mktemp -d /tmp/halo_bench.XXXXXX); chmod 755 "$dir"; mkdir -p "$dir/logs" "$dir/plot" "$OUT" bench/out
trap 'touch "$dir/stop_load" "$dir/stop_sampler"; scripts/pgcluster.sh stop "$dir/data" >/dev/null 2>&1; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data" "shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min" "fsync = on")
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=run
export PGOPTIONS="-c client_min_messages=warning"
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
now() { date +%s.%N; }

# The table, its untouched control copy, a view that depends on the altered
# column, in a template database for one size.
make_template() {
    q -d postgres -c "DROP DATABASE IF EXISTS tpl" -c "CREATE DATABASE tpl"
    q -d tpl -c "CREATE EXTENSION halo_migrate" -c "CREATE EXTENSION pg_repack" \
      -c "CREATE TABLE bench (id serial PRIMARY KEY, account int NOT NULL, amount int NOT NULL, note text)" \
      -c "INSERT INTO bench (account, amount, note) SELECT g % 10000, g % 1000, md5(g::text) FROM generate_series(1, $1) g" \
      -c "CREATE INDEX bench_account ON bench (account)" \
      -c "CREATE VIEW bench_view AS SELECT id, account, amount FROM bench" \
      -c "CREATE TABLE bench_control (id int PRIMARY KEY, account int NOT NULL, amount int NOT NULL, note text)" \
      -c "INSERT INTO bench_control SELECT * FROM bench" \
      -c "CREATE SEQUENCE bench_new_id START $(( $1 + 1 ))" \
      -c "VACUUM ANALYZE"
}
fresh_db() {
    q -d postgres -c "DROP DATABASE IF EXISTS run WITH (FORCE)" \
      -c "CREATE DATABASE run TEMPLATE tpl STRATEGY FILE_COPY"
}

# The worker's peak private memory (RssAnon, kB; shared buffers are not
# counted) and the database's peak size, sampled every 0.25 s into $1; and
# the migration's phase, as "epoch phase" lines into $2 (for bench/phases.py).
sampler() {
    local mem=0 disk=0 kb d ph
    while [ ! -f "$dir/stop_sampler" ]; do
        ph=$(q -c "SELECT phase FROM migrate.status('bench') WHERE phase NOT IN ('done', 'failed', 'aborted') LIMIT 1" 2>/dev/null || true)
        [ -n "$ph" ] && echo "$(now) $ph" >> "$2"
        for pid in $(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'"); do
            kb=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ "${kb:-0}" -gt "$mem" ] && mem=$kb
        done
        d=$(q -c "SELECT pg_database_size(current_database())" 2>/dev/null || echo 0)
        [ "${d:-0}" -gt "$disk" ] && disk=$d
        echo "$mem $disk" > "$1"
        sleep 0.25
    done
}

# The write load, in 5-second pgbench runs until told to stop: each run ends
# on its own, so its per-transaction log is complete whatever the migration's
# length.
load() {
    local k=0
    while [ ! -f "$dir/stop_load" ]; do
        pgbench -n -c 4 -j 2 -R "$RATE" -T 5 -D rows="$2" -f bench/write.sql \
            -l --log-prefix="$dir/logs/$1.$k" >/dev/null 2>&1 || true
        k=$((k + 1))
    done
}

migrate() {
    case $1 in
    plain)  # blocking; the view must come off and go back on in the same transaction
        q -c "BEGIN" -c "DROP VIEW bench_view" -c "ALTER TABLE bench $ALTER" \
          -c "CREATE VIEW bench_view AS SELECT id, account, amount FROM bench" -c "COMMIT" ;;
    pg_tat)  # its smallest lock timeout (whole seconds); it wants the command in lower case
        bench/.venv/bin/pg_tat -h "$PGHOST" -p "$PGPORT" -U postgres -d run \
            -c "alter table bench alter column amount type bigint" \
            --lock-timeout 1 --time-between-locks 1 >"$dir/pg_tat.out" 2>&1 ;;
    pg_repack)
        "$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)/pg_repack" -h "$PGHOST" -p "$PGPORT" -U postgres -d run -t bench >"$dir/pg_repack.out" 2>&1 ;;
    halo)
        q -c "SELECT migrate.start('bench', '$ALTER')" -c "SELECT migrate.finish('bench')" >/dev/null ;;
    halo_verify)  # halo with verification before the swap, to measure what it costs
        q -c "SELECT migrate.start('bench', '$ALTER', verify => true)" -c "SELECT migrate.finish('bench')" >/dev/null ;;
    halo_nosnap)  # halo without the snapshot-safe swap, to measure what that check costs
        q -c "SELECT migrate.start('bench', '$ALTER', snapshot_safe => false)" -c "SELECT migrate.finish('bench')" >/dev/null ;;
    halo_revertible)  # halo keeping the old storage for revert(): what keeping costs the cut-over
        q -c "SELECT migrate.start('bench', '$ALTER', revertible => true)" -c "SELECT migrate.finish('bench')" >/dev/null ;;
    halo_revert)  # the revert alone, of a revertible migration made (and written to) before the clock starts
        q -c "SELECT migrate.revert('bench')" >/dev/null ;;
    esac
}

# Before the clock starts: halo_revert's forward migration, then
# REVERT_AFTER seconds of the write load on the new shape (the changes the
# revert maps back).
prepare() {
    case $1 in
    halo_revert)
        q -c "SELECT migrate.start('bench', '$ALTER', revertible => true)" -c "SELECT migrate.finish('bench')" >/dev/null
        sleep "${REVERT_AFTER:-10}" ;;
    esac
}

# run_method METHOD SIZE [KEEP]: one migration under load; prints one line:
# method size secs worst_ms p99_ms stalls rows_differing wal_bytes extra_disk worker_kb p999_ms
run_method() {
    local name=$1 size=$2
    fresh_db
    rm -f "$dir"/logs/* "$dir/stop_load" "$dir/stop_sampler"
    load "$name" "$size" &
    local lp=$!
    sleep 2
    prepare "$name"
    local wal0 disk0; wal0=$(q -c "SELECT pg_current_wal_lsn()"); disk0=$(q -c "SELECT pg_database_size(current_database())")
    rm -f "$dir/phases"
    sampler "$dir/peak" "$dir/phases" &
    local sp=$!
    local t0; t0=$(now)
    migrate "$name" || { echo "bench: $name failed; see its output in $dir" >&2; cat "$dir/$name.out" >&2 2>/dev/null; exit 1; }
    local t1; t1=$(now)
    local wal; wal=$(q -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0')")
    touch "$dir/stop_sampler" "$dir/stop_load"; wait "$sp"; wait "$lp"
    read -r mem peak < "$dir/peak"
    read -r worst p99 stalls _ p999 < <(python3 bench/latency.py "$dir/logs/$name." "$t0" "$t1")
    if [ -s "$dir/phases" ]; then  # write latency by phase, for the halo methods
        python3 bench/phases.py "$dir/logs/$name." "$dir/phases" | sed "s/^/$name $size /" >> bench/out/phases.txt
    fi
    local differ; differ=$(q -c "SELECT (SELECT count(*) FROM (SELECT * FROM bench EXCEPT ALL SELECT * FROM bench_control) a)
                                      + (SELECT count(*) FROM (SELECT * FROM bench_control EXCEPT ALL SELECT * FROM bench) b)")
    if [ "${3:-}" = keep ]; then  # the first run's logs, for the latency plot
        mkdir -p "$dir/plot/$name"; cp "$dir"/logs/* "$dir/plot/$name/"; echo "$t0 $t1" > "$dir/plot/$name/window"
    fi
    echo "$name $size $(awk "BEGIN {print $t1 - $t0}") $worst $p99 $stalls $differ $wal $(( peak > disk0 ? peak - disk0 : 0 )) $mem $p999"
}

# Write throughput at saturation, without and with the capture trigger.
throughput() {
    pgbench -n -c 4 -j 2 -T 10 -D rows="$ROWS" -f bench/write_plain.sql 2>/dev/null | awk '/^tps/ {print $3; exit}'
}

results=()
: > bench/out/phases.txt
echo "bench: $ROWS rows, methods: $METHODS, $REPEAT runs" >&2
make_template "$ROWS"
for i in $(seq "$REPEAT"); do
    for m in $METHODS; do
        results+=("$(run_method "$m" "$ROWS" "$([ "$i" = 1 ] && echo keep)")")
        echo "bench: ${results[-1]}" >&2
    done
    fresh_db
    tps_plain=$(throughput)
    q -c "SELECT migrate.start('bench', '$ALTER', background => false)" >/dev/null
    tps_trigger=$(throughput)
    q -c "SELECT migrate.abort('bench')" >/dev/null
    results+=("tps $tps_plain $tps_trigger")
done
fresh_db
while read -r method secs; do results+=("copy_$method $secs"); done < <(PGDATABASE=run bench/copy_methods.sh "$ROWS" 20000)

# Scaling: SCALE_REPEAT runs per method and size, the methods taking turns
# (the main size reuses its runs above).
for size in $SCALE_SIZES; do
    [ "$size" = "$ROWS" ] && continue
    make_template "$size"
    for i in $(seq "$SCALE_REPEAT"); do
        for m in $METHODS; do
            results+=("$(run_method "$m" "$size")")
            echo "bench: ${results[-1]}" >&2
        done
    done
done
q -d postgres -c "DROP DATABASE IF EXISTS run WITH (FORCE)" -c "DROP DATABASE IF EXISTS tpl"

printf '%s\n' "${results[@]}" > bench/out/results.txt
echo "write latency by phase (method size phase seconds transactions p99 p99.9 worst, ms), one line per phase and run:" >&2
cat bench/out/phases.txt >&2
bench/.venv/bin/python bench/report.py bench/out/results.txt "$ROWS" "$RATE" "$REPEAT" "$dir/plot" "$OUT" | tee bench/out/report.txt
