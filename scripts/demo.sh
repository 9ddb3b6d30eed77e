#!/usr/bin/env bash
# The demonstration: a throwaway cluster, a sample table with a view and an
# index, migrate.plan() for a handful of typical ALTERs, then a live online
# migration under a pgbench write load, checked row by row afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/halo_demo.XXXXXX); chmod 755 "$dir"
trap 'scripts/pgcluster.sh stop "$dir/data"; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data")
psql() { command psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

echo "== throwaway PostgreSQL 15 cluster on port $port"
psql <<'SQL'
CREATE EXTENSION halo_migrate;
CREATE TABLE accounts (
    id      serial PRIMARY KEY,
    email   varchar(50) NOT NULL,
    balance int NOT NULL DEFAULT 0,
    note    text
);
CREATE INDEX accounts_email_idx ON accounts (email);
CREATE VIEW rich AS SELECT email, balance FROM accounts WHERE balance > 900000;
INSERT INTO accounts (email, balance)
SELECT 'user' || g || '@example.com', g FROM generate_series(1, 1000000) g;
-- the oracle: a control table that gets the same writes in the same transactions
CREATE TABLE accounts_control AS SELECT * FROM accounts;
CREATE UNIQUE INDEX ON accounts_control (id);
VACUUM ANALYZE accounts;
SQL
echo "== table accounts: 1,000,000 rows, an index, a view"

show() {
    echo
    echo "== SELECT * FROM migrate.plan('accounts', '$1');"
    psql -P pager=off -c "SELECT step, strategy, lock, rewrites, sql, reason FROM migrate.plan('accounts', \$\$$1\$\$)" -x
}
show 'ALTER COLUMN id TYPE bigint'
show 'ALTER COLUMN email TYPE varchar(200)'
show 'ADD COLUMN created_at timestamptz NOT NULL DEFAULT now()'
show 'ADD CONSTRAINT balance_nonneg CHECK (balance >= 0)'
show 'ALTER COLUMN note SET NOT NULL'
show 'ADD CONSTRAINT accounts_email_key UNIQUE (email)'
echo
echo "== and bad input is refused with a clear error:"
psql -c "SELECT * FROM migrate.plan('accounts', 'ADD COLUMN x int; DROP TABLE accounts')" 2>&1 || true
echo
echo "== plan() changed nothing: $(psql -Atc "SELECT count(*) FROM accounts") rows, columns: $(psql -Atc "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attnum > 0 AND NOT attisdropped")"

echo
echo "== now a live migration: ALTER COLUMN id TYPE bigint, while pgbench writes"
cat > "$dir/load.sql" <<'PGB'
\set id random(1, 1000000)
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE id = :id;
UPDATE accounts_control SET balance = balance + 1 WHERE id = :id;
INSERT INTO accounts (email, balance) VALUES ('new' || :id || '@example.com', :id) RETURNING id AS new_id \gset
INSERT INTO accounts_control (id, email, balance) VALUES (:new_id, 'new' || :id || '@example.com', :id);
DELETE FROM accounts WHERE id = :id + 1;
DELETE FROM accounts_control WHERE id = :id + 1;
END;
PGB
# The load runs for a fixed time and ends on its own, so its log is complete.
PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres pgbench -n -c 4 -j 2 -R 300 -T 25 -f "$dir/load.sql" \
    -l --log-prefix="$dir/load" postgres >/dev/null 2>&1 &
load=$!
sleep 2
t0=$(date +%s.%N)
id=$(psql -Atc "SELECT migrate.start('accounts', 'ALTER COLUMN id TYPE bigint', auto_finish => true)")
echo "   migration $id started; the application keeps writing at 300 transactions/s"
while :; do
    line=$(psql -Atc "SELECT phase, coalesce(percent, 0), rows_copied, backlog, coalesce(eta::text, '-') FROM migrate.status() WHERE id = $id")
    IFS='|' read -r phase pct copied backlog eta <<<"$line"
    printf '\r   %-10s %5s%%  %9s rows copied  backlog %-6s eta %-12s' "$phase" "$pct" "$copied" "$backlog" "$eta"
    case $phase in done|failed|aborted) break ;; esac
    sleep 0.5
done
echo
psql -Atc "SELECT '   ' || migrate.finish('accounts')"
t1=$(date +%s.%N)
echo "   (letting the write load run to its end)"
wait $load || true
read -r worst p99 stalls n < <(python3 bench/latency.py "$dir/load" "$t0" "$t1")
psql -q -c "ALTER TABLE accounts_control ALTER COLUMN id TYPE bigint"
diff=$(psql -Atc "SELECT (SELECT count(*) FROM (TABLE accounts EXCEPT ALL TABLE accounts_control) a)
                       + (SELECT count(*) FROM (TABLE accounts_control EXCEPT ALL TABLE accounts) b)")
echo "== summary"
echo "   wall time:                    $(awk "BEGIN {printf \"%.1f s\", $t1 - $t0}")"
echo "   writes during the migration:  $n, worst latency ${worst} ms, p99 ${p99} ms, seconds without a write: $stalls"
echo "   rows differing from control:  $diff (of $(psql -Atc "SELECT count(*) FROM accounts"))"
echo "   accounts.id is now:           $(psql -Atc "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'id'")"
echo "   indexes, view, sequence kept: $(psql -Atc "SELECT string_agg(indexrelid::regclass::text, ', ') FROM pg_index WHERE indrelid = 'accounts'::regclass"), rich ($(psql -Atc "SELECT count(*) FROM rich") rows), $(psql -Atc "SELECT pg_get_serial_sequence('accounts', 'id')")"
[ "$diff" = 0 ]
