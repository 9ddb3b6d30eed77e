#!/usr/bin/env bash
# Where the capture trigger's cost goes: write throughput at saturation
# (bench/write_plain.sql, 4 clients) with no trigger, with halo_migrate's
# capture trigger (a migration started with background => false and not
# driven), and with PL/pgSQL triggers that do part of its work: nothing at
# all, a log without its primary-key index, and an UNLOGGED log. The
# variants take turns, ROUNDS times, on one cluster (fsync on, like make bench).
#
# Usage: bench/trigger_costs.sh   (override ROWS, ROUNDS, SECONDS_EACH)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-1000000}; ROUNDS=${ROUNDS:-3}; SECONDS_EACH=${SECONDS_EACH:-10}
dir=$(mktemp -d /tmp/halo_trigger_costs.XXXXXX); chmod 755 "$dir"
trap 'scripts/pgcluster.sh stop "$dir/data" >/dev/null 2>&1; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data" "shared_buffers = 1GB" "max_wal_size = 8GB" "fsync = on")
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
q -c "CREATE EXTENSION halo_migrate" \
  -c "CREATE TABLE bench (id serial PRIMARY KEY, account int NOT NULL, amount int NOT NULL, note text)" \
  -c "INSERT INTO bench (account, amount, note) SELECT g % 10000, g % 1000, md5(g::text) FROM generate_series(1, $ROWS) g" \
  -c "CREATE INDEX bench_account ON bench (account)" \
  -c "CREATE SEQUENCE bench_new_id START $(( ROWS + 1 ))" \
  -c "CREATE TABLE log_noindex (id bigint GENERATED ALWAYS AS IDENTITY, k1 int)" \
  -c "CREATE UNLOGGED TABLE log_unlogged (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, k1 int)" \
  -c "VACUUM ANALYZE"
for v in noindex unlogged; do
    q -c "CREATE FUNCTION log_$v() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
    IF TG_OP <> 'DELETE' THEN INSERT INTO public.log_$v (k1) VALUES (NEW.id); END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.id IS DISTINCT FROM NEW.id) THEN
        INSERT INTO public.log_$v (k1) VALUES (OLD.id);
    END IF;
    RETURN NULL;
END \$\$"
done
q -c "CREATE FUNCTION log_nothing() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN RETURN NULL; END \$\$"
tps() {
    pgbench -n -c 4 -j 2 -T "$SECONDS_EACH" -D rows="$ROWS" -f bench/write_plain.sql 2>/dev/null |
        awk '/^tps/ {printf "%.0f", $3; exit}'
}
printf '%-7s %10s %10s %10s %10s %10s\n' round none capture nothing noindex unlogged
for i in $(seq "$ROUNDS"); do
    none=$(tps)
    q -c "SELECT migrate.start('bench', 'ALTER COLUMN amount TYPE bigint', background => false)" >/dev/null
    capture=$(tps)
    q -c "SELECT migrate.abort('bench')" >/dev/null
    line=$(printf '%-7s %10s %10s' "$i" "$none" "$capture")
    for v in nothing noindex unlogged; do
        q -c "CREATE TRIGGER t AFTER INSERT OR UPDATE OR DELETE ON bench FOR EACH ROW EXECUTE FUNCTION log_$v()"
        line+=$(printf ' %10s' "$(tps)")
        q -c "DROP TRIGGER t ON bench"
    done
    echo "$line"
done
