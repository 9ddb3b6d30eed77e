#!/usr/bin/env bash
# Install the package `make deb` built, the way a DBA would (apt install
# ./file.deb), and check it: what dpkg installed, the command line, and the
# demonstration (scripts/demo.sh) against the packaged extension.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
deb=$(ls -t target/deb/postgresql-"$major"-halo-migrate_*.deb | head -1)
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "./$deb" >/dev/null
name=$(dpkg-deb -f "$deb" Package)
dpkg -s "$name" | grep -q '^Status: install ok installed'
for f in "$("$PG_CONFIG" --pkglibdir)/halo_migrate.so" \
         "$("$PG_CONFIG" --sharedir)/extension/halo_migrate.control" /usr/bin/halo_migrate; do
    dpkg -S "$f" | grep -q "^$name:" || { echo "deb-test: $f is not from $name" >&2; exit 1; }
done
/usr/bin/halo_migrate --version
# The demonstration, on the packaged extension (and a smaller table).
ROWS=${ROWS:-200000} bash scripts/demo.sh >/tmp/halo_deb_demo.log 2>&1 || {
    tail -40 /tmp/halo_deb_demo.log >&2; echo "deb-test: the demo failed" >&2; exit 1; }
tail -3 /tmp/halo_deb_demo.log
# The command line from the package, against a throwaway cluster.
dir=$(mktemp -d /tmp/halo_deb.XXXXXX); chmod 755 "$dir"
trap 'scripts/pgcluster.sh stop "$dir/data" >/dev/null 2>&1; rm -rf "$dir"' EXIT
port=$(scripts/pgcluster.sh start "$dir/data")
psql -X -q -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 \
    -c "CREATE EXTENSION halo_migrate" \
    -c "CREATE TABLE t (id int PRIMARY KEY, v int)" \
    -c "INSERT INTO t SELECT g, g FROM generate_series(1, 10000) g"
/usr/bin/halo_migrate -h 127.0.0.1 -p "$port" -U postgres -d postgres -t t \
    -a 'ALTER COLUMN id TYPE bigint' --execute --revertible -q
/usr/bin/halo_migrate -h 127.0.0.1 -p "$port" -U postgres -d postgres -t t --revert -q
echo "deb-test: $deb installs and works"
