#!/usr/bin/env bash
# The demonstration: a throwaway cluster, a sample table with a view and an
# index, and migrate.plan() for a handful of typical ALTERs.
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
CREATE VIEW rich AS SELECT id, email FROM accounts WHERE balance > 900000;
INSERT INTO accounts (email, balance)
SELECT 'user' || g || '@example.com', g FROM generate_series(1, 1000000) g;
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
