#!/usr/bin/env bash
# SQL regression tests: pg_regress against a throwaway cluster (the extension
# must already be installed: `cargo pgrx install`). Usage: regress.sh [test ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tests=("$@")
# sql/ holds the regression tests and, for cargo-pgrx, the extension's update scripts.
[ ${#tests[@]} -gt 0 ] || tests=($(ls sql/*.sql | xargs -n1 basename | grep -v '^halo_migrate--' | sed 's/\.sql$//'))
dir=$(mktemp -d /tmp/halo_regress.XXXXXX); chmod 755 "$dir"
trap 'scripts/pgcluster.sh stop "$dir/data"; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data")
mkdir -p results
"$(dirname "$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --pgxs)")/../test/regress/pg_regress" \
    --host=127.0.0.1 --port="$port" --user=postgres \
    --dbname=halo_regress \
    --inputdir=. --outputdir=. "${tests[@]}" || {
    echo "--- regression.diffs ---"; cat regression.diffs 2>/dev/null | head -200; exit 1; }
