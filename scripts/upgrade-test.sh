#!/usr/bin/env bash
# `make test-upgrade`: the upgrade path from the previous release, as a DBA
# takes it. On a private copy of this PostgreSQL's installation (PostgreSQL
# finds its files relative to its binaries, so the copy is self-contained and
# the installed one is never touched):
#   1. the previous release (built from its git commit) runs migrations:
#      one finished, one finished with its revert window open, a background
#      one waiting at the cut-over, one driven by step() stopped mid-copy;
#   2. the server stops, the package is upgraded (this build's library and
#      scripts), the server starts: before the update, every function refuses
#      with 55000, and the migrations in flight are left untouched;
#   3. ALTER EXTENSION halo_migrate UPDATE; the background migration resumes,
#      each migration is finished or reverted, and every table matches its
#      control table, written in the same transactions all along;
#   4. the updated extension's objects equal a fresh CREATE EXTENSION's,
#      object by object (scripts/extension-objects.sql).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
# The previous release: the commit its package was built from.
OLD_VERSION=0.1.0
OLD_COMMIT=08c8960
if [ "$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')" != 15 ]; then
    echo "upgrade-test: skipped: $OLD_VERSION was built for PostgreSQL 15 only"; exit 0
fi
new_version=$(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1)
build=$repo/target/upgrade-$OLD_VERSION       # the old build (kept between runs)
work=$(mktemp -d /tmp/halo_upgrade.XXXXXX); chmod 755 "$work"
say() { echo "upgrade-test: $*"; }
fail() { echo "upgrade-test: FAILED: $*" >&2; exit 1; }

# 1a. The previous release's extension, built once from its commit.
git -C "$repo" cat-file -e "$OLD_COMMIT^{commit}" 2>/dev/null \
    || git -C "$repo" fetch -q --unshallow 2>/dev/null || true
git -C "$repo" cat-file -e "$OLD_COMMIT^{commit}" 2>/dev/null \
    || fail "commit $OLD_COMMIT ($OLD_VERSION) is not in this clone: clone with full history"
if [ ! -f "$build/pkg/.done" ]; then
    say "building $OLD_VERSION from $OLD_COMMIT (once)"
    rm -rf "$build" && mkdir -p "$build/src"
    git -C "$repo" archive "$OLD_COMMIT" | tar -x -C "$build/src"
    (cd "$build/src" && CARGO_TARGET_DIR="$build/target" \
        cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$build/pkg" >/dev/null)
    touch "$build/pkg/.done"
fi

# 1b. A private installation: this PostgreSQL's binaries, libraries and
# share directory, copied; extension files are swapped in it only.
libdir=$("$PG_CONFIG" --pkglibdir); sharedir=$("$PG_CONFIG" --sharedir)
bindir=$("$PG_CONFIG" --bindir)
pg=$work/pg
mkdir -p "$pg$(dirname "$libdir")" "$pg$(dirname "$sharedir")"
cp -a "$(dirname "$bindir")" "$pg$(dirname "$(dirname "$bindir")")/"
[ -d "$pg$sharedir" ] || cp -a "$sharedir" "$pg$(dirname "$sharedir")/"
[ -d "$pg$libdir" ] || cp -a "$libdir" "$pg$(dirname "$libdir")/"
export PG_CONFIG=$pg$bindir/pg_config
[ "$("$PG_CONFIG" --sharedir)" = "$pg$sharedir" ] || fail "the copied PostgreSQL is not relocatable"
install_release() {  # DIR holding usr/... as `cargo pgrx package` lays it out
    rm -f "$pg$libdir/halo_migrate.so" "$pg$sharedir"/extension/halo_migrate*
    cp "$1$libdir/halo_migrate.so" "$pg$libdir/"
    cp "$1$sharedir"/extension/halo_migrate* "$pg$sharedir/extension/"
}
install_release "$build/pkg"

data=$work/data
trap 'scripts/pgcluster.sh stop "$data" >/dev/null 2>&1 || true; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
port=$(scripts/pgcluster.sh start "$data" "shared_preload_libraries = 'halo_migrate'")
q() { psql -X -q -A -t -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
restart() {
    scripts/pgcluster.sh stop "$data"
    port=$(scripts/pgcluster.sh start "$data" "shared_preload_libraries = 'halo_migrate'")
}

# Four tables, each with a control table written in the same transactions.
say "$OLD_VERSION: starting migrations"
q -c "CREATE EXTENSION halo_migrate"
[ "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'halo_migrate'")" = "$OLD_VERSION" ] \
    || fail "the old release did not install as $OLD_VERSION"
for t in done_t window_t bg_t step_t; do
    q -c "CREATE TABLE $t (id int PRIMARY KEY, v text, n int)" \
      -c "CREATE TABLE ${t}_ctl (id int PRIMARY KEY, v text, n int)" \
      -c "INSERT INTO $t SELECT g, md5(g::text), g FROM generate_series(1, 20000) g" \
      -c "INSERT INTO ${t}_ctl SELECT * FROM $t"
done
# Writes to a table and its control table in one transaction.
write() {  # TABLE ROUND
    local t=$1 r=$2
    q -c "BEGIN" \
      -c "INSERT INTO $t VALUES (100000 + $r, 'new $r', $r), (100500 + $r, NULL, NULL)" \
      -c "INSERT INTO ${t}_ctl VALUES (100000 + $r, 'new $r', $r), (100500 + $r, NULL, NULL)" \
      -c "UPDATE $t SET v = v || '+', n = n + 1 WHERE id % 97 = $r" \
      -c "UPDATE ${t}_ctl SET v = v || '+', n = n + 1 WHERE id % 97 = $r" \
      -c "UPDATE $t SET id = -id WHERE id = 5000 + $r" \
      -c "UPDATE ${t}_ctl SET id = -id WHERE id = 5000 + $r" \
      -c "DELETE FROM $t WHERE id % 89 = $r" -c "DELETE FROM ${t}_ctl WHERE id % 89 = $r" \
      -c "COMMIT"
}
same() {  # TABLE: the table equals its control table, row by row
    local diff
    local a="SELECT id, v, n FROM $1" b="SELECT id, v, n FROM ${1}_ctl"
    diff=$(q -c "SELECT count(*) FROM (($a EXCEPT ALL $b) UNION ALL ($b EXCEPT ALL $a)) d")
    [ "$diff" = 0 ] || fail "$1 differs from its control table in $diff rows"
}
phase() { q -c "SELECT phase FROM migrate.migrations WHERE table_name = 'public.$1' ORDER BY id DESC LIMIT 1"; }

q -c "SELECT migrate.start('done_t', 'ALTER COLUMN id TYPE bigint', background => false)" >/dev/null
write done_t 1
q -c "SELECT migrate.finish('done_t')" >/dev/null
q -c "SELECT migrate.start('window_t', 'ALTER COLUMN n TYPE bigint', background => false,
                           revertible => true)" >/dev/null
write window_t 1
q -c "SELECT migrate.finish('window_t')" >/dev/null
write window_t 2
q -c "SELECT migrate.start('bg_t', 'ALTER COLUMN id TYPE bigint, ADD COLUMN w int DEFAULT 7')" >/dev/null
write bg_t 1
for _ in $(seq 1 120); do [ "$(phase bg_t)" = ready ] && break; sleep 0.5; done
[ "$(phase bg_t)" = ready ] || fail "bg_t did not reach ready under $OLD_VERSION: $(phase bg_t)"
write bg_t 2
q -c "SELECT migrate.start('step_t', 'ALTER COLUMN v TYPE varchar(64)', background => false,
                           batch_rows => 2000)" >/dev/null
q -c "SELECT migrate.step('step_t')" -c "SELECT migrate.step('step_t')" >/dev/null
write step_t 1
[ "$(phase step_t)" = copying ] || fail "step_t is not mid-copy: $(phase step_t)"

# 2. The package upgrade: the server stops, the files change, it starts.
say "upgrading the package to $new_version and restarting"
scripts/pgcluster.sh stop "$data"
mkdir -p "$work/new"
for f in "$libdir/halo_migrate.so" "$sharedir"/extension/halo_migrate*; do
    install -D -m 644 "$f" "$work/new$f"
done
rm -f "$work/new$sharedir/extension/halo_migrate--$OLD_VERSION.sql"
[ -f "$work/new$sharedir/extension/halo_migrate--$OLD_VERSION--$new_version.sql" ] \
    || fail "no update script halo_migrate--$OLD_VERSION--$new_version.sql is installed"
install_release "$work/new"
port=$(scripts/pgcluster.sh start "$data" "shared_preload_libraries = 'halo_migrate'")

# Before the update: every function refuses, and the migrations in flight
# are untouched: their rows do not change and no worker runs.
state() { q -c "SELECT md5(string_agg(m::text, '|' ORDER BY id)) FROM migrate.migrations m"; }
workers() { q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'halo_migrate worker'"; }
before=$(state)
for call in "SELECT migrate.start('done_t', 'ALTER COLUMN v TYPE varchar(100)')" \
            "SELECT * FROM migrate.plan('done_t', 'ALTER COLUMN v TYPE varchar(100)')" \
            "SELECT migrate.finish('bg_t')" "SELECT migrate.abort('step_t')" \
            "SELECT migrate.step('step_t')" "SELECT migrate.pause('bg_t')" \
            "SELECT migrate.resume('bg_t')" "SELECT migrate.throttle('bg_t', batch_rows => 100)" \
            "SELECT migrate.revert('window_t')" "SELECT migrate.forget('window_t')"; do
    out=$(q -c "\\set VERBOSITY verbose" -c "$call" 2>&1 || true)
    echo "$out" | grep -q "55000: halo_migrate's SQL objects are version $OLD_VERSION, but its library is $new_version" \
        || fail "$call before the update: $out"
    echo "$out" | grep -q "ALTER EXTENSION halo_migrate UPDATE TO '$new_version'" \
        || fail "$call: no hint to update: $out"
done
write bg_t 3
write step_t 2
sleep 6   # the resumer has looked, and its successor once more
grep -q "wait for ALTER EXTENSION halo_migrate UPDATE" "$data/server.log" \
    || fail "the resumer did not report the pending update"
! grep -q "resuming interrupted migrations" "$data/server.log" \
    || fail "a migration was resumed before the update"
[ "$(workers)" = 0 ] || fail "a migration worker runs before the update"
[ "$(state)" = "$before" ] || fail "the migrations' state changed before the update"
[ "$(phase bg_t)" = ready ] || fail "bg_t was touched before the update: $(phase bg_t)"
[ "$(phase step_t)" = copying ] || fail "step_t was touched before the update: $(phase step_t)"

# 3. The update, then every migration is carried to its end.
say "ALTER EXTENSION halo_migrate UPDATE"
q -c "ALTER EXTENSION halo_migrate UPDATE"
[ "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'halo_migrate'")" = "$new_version" ] \
    || fail "the extension did not update to $new_version"
for _ in $(seq 1 60); do
    [ "$(q -c "SELECT migrate.worker_alive(worker_pid) FROM migrate.migrations
               WHERE table_name = 'public.bg_t'")" = t ] && break
    sleep 0.5
done
grep -q "resuming interrupted migrations" "$data/server.log" || fail "bg_t was not resumed"
write bg_t 4
q -c "SELECT migrate.finish('bg_t')" >/dev/null
write step_t 3
q -c "SELECT migrate.finish('step_t')" >/dev/null
write window_t 3
q -c "SELECT migrate.revert('window_t')" >/dev/null
write done_t 2
for t in done_t window_t bg_t step_t; do same "$t"; done
types=$(q -c "SELECT string_agg(attrelid::regclass || '.' || attname || ' ' || format_type(atttypid, atttypmod), ', '
                               ORDER BY attrelid::regclass::text, attnum)
                FROM pg_attribute WHERE attrelid IN ('done_t'::regclass, 'window_t'::regclass,
                     'bg_t'::regclass, 'step_t'::regclass) AND attnum > 0 AND NOT attisdropped")
expected="bg_t.id bigint, bg_t.v text, bg_t.n integer, bg_t.w integer, done_t.id bigint, done_t.v text, done_t.n integer, step_t.id integer, step_t.v character varying(64), step_t.n integer, window_t.id integer, window_t.v text, window_t.n integer"
[ "$types" = "$expected" ] || fail "column types after the migrations: $types"
[ "$(q -c "SELECT count(*) FROM bg_t WHERE w IS DISTINCT FROM 7")" = 0 ] || fail "bg_t.w lost its default"

# 4. The updated objects equal a fresh install's.
q -c "CREATE DATABASE fresh"
psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d fresh -v ON_ERROR_STOP=1 \
    -c "CREATE EXTENSION halo_migrate"
q -f scripts/extension-objects.sql >"$work/updated.txt"
psql -X -q -A -t -h 127.0.0.1 -p "$port" -U postgres -d fresh -v ON_ERROR_STOP=1 \
    -f scripts/extension-objects.sql >"$work/fresh.txt"
[ "$(wc -l <"$work/fresh.txt")" -gt 30 ] || fail "the object list is suspiciously short"
diff -u "$work/fresh.txt" "$work/updated.txt" >&2 \
    || fail "$OLD_VERSION updated to $new_version differs from a fresh $new_version (above: - fresh, + updated)"
! grep -E "terminated by signal|server process .* was terminated" "$data/server.log" >&2 \
    || fail "a server process crashed (above)"
say "$OLD_VERSION → $new_version: $(wc -l <"$work/fresh.txt") object facts equal; 4 tables exact"
