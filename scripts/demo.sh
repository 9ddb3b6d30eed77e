#!/usr/bin/env bash
# The demonstration: a throwaway cluster, a sample table with a view and an
# index, migrate.plan() for a handful of typical ALTERs, then a live online
# migration under a pgbench write load — progress, a pause, a throttle, a
# postponed cut-over — checked row by row afterwards.
#   ROWS=3000000 (default) sets the table size.
set -euo pipefail
ROWS=${ROWS:-3000000}
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/halo_demo.XXXXXX); chmod 755 "$dir"
trap 'touch "$dir/stop_load"; scripts/pgcluster.sh stop "$dir/data"; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data")
psql() { command psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

echo "== throwaway PostgreSQL 15 cluster on port $port"
psql -v rows="$ROWS" <<'SQL'
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
SELECT 'user' || g || '@example.com', g FROM generate_series(1, :rows) g;
-- the oracle: a control table that gets the same writes in the same transactions
CREATE TABLE accounts_control AS SELECT * FROM accounts;
CREATE UNIQUE INDEX ON accounts_control (id);
VACUUM ANALYZE accounts;
SQL
echo "== table accounts: $ROWS rows, an index, a view"

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
\set id random(1, :rows)
BEGIN;
UPDATE accounts SET balance = balance + 1 WHERE id = :id;
UPDATE accounts_control SET balance = balance + 1 WHERE id = :id;
INSERT INTO accounts (email, balance) VALUES ('new' || :id || '@example.com', :id) RETURNING id AS new_id \gset
INSERT INTO accounts_control (id, email, balance) VALUES (:new_id, 'new' || :id || '@example.com', :id);
DELETE FROM accounts WHERE id = :id + 1;
DELETE FROM accounts_control WHERE id = :id + 1;
END;
PGB
# The load runs in 5-second pgbench runs until told to stop: each run ends
# on its own, so its per-transaction log is complete.
mkdir -p "$dir/logs"
(
    k=0
    while [ ! -f "$dir/stop_load" ]; do
        PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres pgbench -n -c 4 -j 2 -R 300 -T 5 -D rows="$ROWS" \
            -f "$dir/load.sql" -l --log-prefix="$dir/logs/load.$k" postgres >/dev/null 2>&1 || true
        k=$((k + 1))
    done
) &
load=$!
sleep 2
status() {
    psql -Atc "SELECT phase, coalesce(percent, 0), rows_copied, backlog, coalesce(eta::text, '-') FROM migrate.status() WHERE id = $id"
}
progress() { # one line, rewritten in place
    IFS='|' read -r phase pct copied backlog eta <<<"$(status)"
    printf '\r   %-10s %5s%%  %9s rows copied  backlog %-6s eta %-14s' "$phase" "$pct" "$copied" "$backlog" "$eta"
}
watch_until() { # watch progress until the phase is one of $@ (or over)
    while :; do
        progress
        for p in "$@" done failed aborted; do [ "$phase" = "$p" ] && { echo; return; }; done
        sleep 0.5
    done
}
t0=$(date +%s.%N)
id=$(psql -Atc "SELECT migrate.start('accounts', 'ALTER COLUMN id TYPE bigint')")
echo "   migration $id started; the application keeps writing at 300 transactions/s"
echo "   (the table stays fully usable; the copy runs in a background worker)"
while :; do
    progress
    [ "${copied:-0}" -ge $((ROWS / 4)) ] && break
    case $phase in copying) ;; *) break ;; esac
    sleep 0.5
done
echo
echo "== SELECT migrate.pause('accounts');"
psql -Atc "SELECT '   ' || migrate.pause('accounts')"
sleep 1
progress; echo
sleep 3
progress; echo "   <- 3 s later: nothing copied while paused; changes are still captured"
echo "== SELECT migrate.resume('accounts'); SELECT migrate.throttle('accounts', target_batch_time => '200ms');"
psql -Atc "SELECT '   ' || migrate.resume('accounts')"
psql -Atc "SELECT '   ' || migrate.throttle('accounts', target_batch_time => '200ms')"
watch_until ready
echo "== caught up: the migration waits in 'ready', replaying changes, until someone cuts over"
sleep 3
progress; echo
echo "== SELECT migrate.finish('accounts');"
psql -Atc "SELECT '   ' || migrate.finish('accounts')"
t1=$(date +%s.%N)
touch "$dir/stop_load"
echo "   (letting the write load run to its end)"
wait $load || true
read -r worst p99 stalls n p999 < <(python3 bench/latency.py "$dir/logs/load" "$t0" "$t1")
psql -q -c "ALTER TABLE accounts_control ALTER COLUMN id TYPE bigint"
diff=$(psql -Atc "SELECT (SELECT count(*) FROM (TABLE accounts EXCEPT ALL TABLE accounts_control) a)
                       + (SELECT count(*) FROM (TABLE accounts_control EXCEPT ALL TABLE accounts) b)")
echo "== summary"
echo "   wall time (with a 4 s pause):  $(awk "BEGIN {printf \"%.1f s\", $t1 - $t0}")"
echo "   writes during the migration:  $n, worst latency ${worst} ms, p99 ${p99} ms, p99.9 ${p999} ms, seconds without a write: $stalls"
echo "   rows differing from control:  $diff (of $(psql -Atc "SELECT count(*) FROM accounts"))"
echo "   accounts.id is now:           $(psql -Atc "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attname = 'id'")"
echo "   indexes, view, sequence kept: $(psql -Atc "SELECT string_agg(indexrelid::regclass::text, ', ') FROM pg_index WHERE indrelid = 'accounts'::regclass"), rich ($(psql -Atc "SELECT count(*) FROM rich") rows), $(psql -Atc "SELECT pg_get_serial_sequence('accounts', 'id')")"
[ "$diff" = 0 ]

echo
echo "== expand/contract: RENAME COLUMN note TO memo, with the old and the new application version writing at once"
psql -Atc "SELECT '   migration ' || migrate.start('accounts', 'RENAME COLUMN note TO memo', version => 'v2') || ' expanded'"
psql -P pager=off -c "SELECT version, version_schema, table_name, phase FROM migrate.versions()"
printf '%s\n' '\set id random(1, :rows)' "UPDATE accounts SET note = 'old app ' || :id WHERE id = :id;" > "$dir/old_app.sql"
printf '%s\n' '\set id random(1, :rows)' "UPDATE accounts SET memo = 'new app ' || :id WHERE id = :id;" > "$dir/new_app.sql"
bench() { PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres pgbench -n -c 2 -j 1 -R 100 -D rows="$ROWS" "$@" postgres 2>&1; }
echo "   old version: search_path = public (sees note); new version: search_path = public_v2, public (sees memo)"
bench -T 3 -f "$dir/old_app.sql" > "$dir/old_app.out" &
old_app=$!
PGOPTIONS='-c search_path=public_v2,public' bench -T 7 -f "$dir/new_app.sql" > "$dir/new_app.out" &
new_app=$!
wait $old_app
echo "   the old version wrote $(psql -Atc "SELECT count(*) FROM accounts WHERE note LIKE 'old app%'") rows, which the new version reads as memo: $(PGOPTIONS='-c search_path=public_v2,public' psql -Atc "SELECT count(*) FROM accounts WHERE memo LIKE 'old app%'")"
echo "   the old version is retired; the new one keeps writing through the contract:"
echo "== SELECT migrate.finish('accounts');"
psql -Atc "SELECT '   ' || migrate.finish('accounts')"
wait $new_app
echo "   new version: $(grep -E '^number of (transactions actually processed|failed transactions)' "$dir/new_app.out" | tr '\n' ' ')"
echo "   clients of the new version aborted: $(grep -c 'aborted' "$dir/new_app.out" || true)"
echo "   accounts now has: $(psql -Atc "SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'accounts'::regclass AND attnum > 0 AND NOT attisdropped")"
! grep -q 'aborted' "$dir/new_app.out"
