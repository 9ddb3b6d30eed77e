#!/usr/bin/env bash
# The two ways to copy a table in batches, compared on the same table: heap
# TID ranges (what halo_migrate's copy does) and key ranges (keyset
# pagination over the primary key). Each batch is its own transaction, into
# an index-less shadow, as in a migration. Prints "tid SECONDS" and "key
# SECONDS" lines. Usage: bench/copy_methods.sh ROWS BATCH  (PG* set by caller)
set -euo pipefail
ROWS=$1; BATCH=$2
q() { psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
now() { date +%s.%N; }

blocks=$(q -c "SELECT pg_relation_size('bench') / current_setting('block_size')::int")
per_block=$(q -c "SELECT greatest(1, (reltuples / greatest(relpages, 1))::int) FROM pg_class WHERE oid = 'bench'::regclass")
step=$(( (BATCH + per_block - 1) / per_block ))
shadow() { q -c "DROP TABLE IF EXISTS copy_shadow" -c "CREATE TABLE copy_shadow (LIKE bench INCLUDING DEFAULTS)" -c "CHECKPOINT"; }

tid_copy() {
    local b=0
    { while [ "$b" -lt "$blocks" ]; do
        echo "INSERT INTO copy_shadow SELECT * FROM ONLY bench WHERE ctid >= '($b,0)'::tid AND ctid < '($((b + step)),0)'::tid;"
        b=$((b + step))
    done; } > /tmp/halo_tid_copy.sql
    q -f /tmp/halo_tid_copy.sql
}

key_copy() {
    { echo "\\set last 0"
      for _ in $(seq $(( ROWS / BATCH + 1 ))); do
        echo "WITH ins AS (INSERT INTO copy_shadow SELECT * FROM ONLY bench WHERE id > :last ORDER BY id LIMIT $BATCH RETURNING id) SELECT coalesce(max(id), :last) AS last FROM ins \\gset"
      done; } > /tmp/halo_key_copy.sql
    q -f /tmp/halo_key_copy.sql >/dev/null
}

for method in tid key; do
    shadow
    t0=$(now)
    "${method}_copy"
    t1=$(now)
    n=$(q -c "SELECT count(*) FROM copy_shadow")
    [ "$n" -ge "$ROWS" ] || { echo "copy_methods: $method copied $n of $ROWS rows" >&2; exit 1; }
    echo "$method $(awk "BEGIN {print $t1 - $t0}")"
done
q -c "DROP TABLE copy_shadow"
