#!/usr/bin/env bash
# The benchmark: plain ALTER TABLE against halo_migrate on the same table,
# under the same rate-limited pgbench write load, in one run. Prints a table
# of medians and ratios. Usage: bench/run.sh  (ROWS, RATE, REPEAT to override)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-2000000}; RATE=${RATE:-200}; REPEAT=${REPEAT:-3}
# The write load runs for a fixed LOAD_S seconds and ends on its own (so its
# per-transaction log is complete); each migration must finish within it.
LOAD_S=${LOAD_S:-$(( 10 + ROWS / 100000 ))}
ALTER="ALTER COLUMN amount TYPE bigint"
dir=$(mktemp -d /tmp/halo_bench.XXXXXX); chmod 755 "$dir"
trap 'scripts/pgcluster.sh stop "$dir/data" >/dev/null 2>&1; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data" "shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 30min")
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
now() { date +%s.%N; }
q -c "CREATE EXTENSION halo_migrate"
export PGOPTIONS="-c client_min_messages=warning"

fresh_table() {
    q -c "DROP TABLE IF EXISTS bench CASCADE" \
      -c "CREATE TABLE bench (id serial PRIMARY KEY, account int NOT NULL, amount int NOT NULL, note text)" \
      -c "INSERT INTO bench (account, amount, note) SELECT g % 10000, g % 1000, md5(g::text) FROM generate_series(1, $ROWS) g" \
      -c "CREATE INDEX bench_account ON bench (account)" \
      -c "CREATE VIEW bench_view AS SELECT id, account FROM bench" \
      -c "VACUUM ANALYZE bench" -c "CHECKPOINT"
}

# The worker's peak private memory (RssAnon, kB; shared buffers are not
# counted), sampled every 0.2 s into $1 until killed.
sample_worker_memory() {
    echo 0 > "$1"
    while true; do
        for pid in $(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'"); do
            kb=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ "${kb:-0}" -gt "$(cat "$1")" ] && echo "$kb" > "$1"
        done
        sleep 0.2
    done
}

# run_under_load NAME SQL...: time the SQL while pgbench writes at RATE tx/s.
run_under_load() {
    local name=$1; shift
    rm -f "$dir/$name".log*
    pgbench -n -c 4 -j 2 -R "$RATE" -T "$LOAD_S" -D rows="$ROWS" -f bench/write.sql -l --log-prefix="$dir/$name.log" >/dev/null 2>&1 &
    local pg=$!
    sample_worker_memory "$dir/mem" &
    local sampler=$!
    sleep 2
    local t0; t0=$(now)
    for sql in "$@"; do q -c "$sql" >/dev/null; done
    local t1; t1=$(now)
    kill $sampler; wait $sampler 2>/dev/null || true
    wait $pg || true
    if [ "$(awk "BEGIN {print ($t1 - $t0 > $LOAD_S - 3)}")" = 1 ]; then
        echo "bench: $name outlasted the ${LOAD_S}s write load; raise LOAD_S" >&2
    fi
    read -r worst p99 stalls n < <(python3 bench/latency.py "$dir/$name.log" "$t0" "$t1")
    echo "$name $(awk "BEGIN {print $t1 - $t0}") $worst $p99 $stalls $(cat "$dir/mem")"
}

# Write throughput at saturation, without and with the capture trigger.
throughput() {
    pgbench -n -c 4 -j 2 -T 10 -D rows="$ROWS" -f bench/write.sql 2>/dev/null | awk '/^tps/ {print $3; exit}'
}

results=()
for i in $(seq "$REPEAT"); do
    fresh_table
    results+=("$(run_under_load plain "ALTER TABLE bench $ALTER")")
    fresh_table
    results+=("$(run_under_load halo "SELECT migrate.start('bench', '$ALTER')" "SELECT migrate.finish('bench')")")
    q -c "SELECT count(*) FROM bench" >/dev/null
    fresh_table
    tps_plain=$(throughput)
    q -c "SELECT migrate.start('bench', '$ALTER', background => false)" >/dev/null
    tps_trigger=$(throughput)
    q -c "SELECT migrate.abort('bench')" >/dev/null
    results+=("tps $tps_plain $tps_trigger")
    fresh_table
    while read -r method secs; do results+=("copy_$method $secs"); done < <(bench/copy_methods.sh "$ROWS" 20000)
done

# Scaling: halo's wall time and worker memory as the table grows (one run each).
MAIN_ROWS=$ROWS
for size in ${SCALE_SIZES-1000000 2000000 5000000}; do
    ROWS=$size; LOAD_S=$(( 10 + ROWS / 100000 ))
    fresh_table
    read -r _ secs _ _ _ kb < <(run_under_load halo "SELECT migrate.start('bench', '$ALTER')" "SELECT migrate.finish('bench')")
    fresh_table
    read -r _ plain _ _ _ _ < <(run_under_load plain "ALTER TABLE bench $ALTER")
    results+=("scale $size $secs $plain $kb")
done

printf '%s\n' "${results[@]}" > "$dir/results.txt"
python3 - "$dir/results.txt" "$MAIN_ROWS" "$RATE" "$REPEAT" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = lambda name, col: statistics.median(float(r[col]) for r in rows if r[0] == name)
print(f"\nhalo_migrate benchmark: {int(sys.argv[2]):,} rows, ALTER COLUMN amount TYPE bigint, "
      f"pgbench write load at {sys.argv[3]} tx/s, median of {sys.argv[4]} runs\n")
print(f"{'method':<14}{'wall s':>9}{'worst write ms':>16}{'p99 write ms':>14}{'seconds w/o writes':>20}{'worker peak MB':>16}")
for m in ("plain", "halo"):
    mem = f"{med(m,5) / 1024:.1f}" if m == "halo" else "-"
    print(f"{m:<14}{med(m,1):>9.2f}{med(m,2):>16.1f}{med(m,3):>14.1f}{med(m,4):>20.0f}{mem:>16}")
print(f"\nhalo / plain wall time: {med('halo',1) / med('plain',1):.2f}x")
tp, tt = med("tps", 1), med("tps", 2)
print(f"write throughput at saturation: {tp:.0f} tps without capture trigger, {tt:.0f} with ({100*tt/tp:.0f}%)")
ct, ck = med("copy_tid", 1), med("copy_key", 1)
print(f"batched copy of the table, 20000-row batches: heap TID ranges {ct:.2f} s, key ranges {ck:.2f} s "
      f"(key / TID {ck / ct:.2f}x)")
scale = [r for r in rows if r[0] == "scale"]
if scale:
    print(f"\n{'rows':>12}{'halo s':>9}{'plain s':>9}{'ratio':>7}{'worker peak MB':>16}")
    for r in scale:
        print(f"{int(r[1]):>12,}{float(r[2]):>9.2f}{float(r[3]):>9.2f}{float(r[2]) / float(r[3]):>7.2f}{float(r[4]) / 1024:>16.1f}")
PY
