#!/usr/bin/env bash
# `make deb`: a Debian package of the extension and the command line,
# postgresql-<major>-halo-migrate_<version>_<arch>.deb in target/deb/, built
# for the PostgreSQL that PG_CONFIG names (default 15). Install it with
# `apt install ./target/deb/<file>.deb`; scripts/deb-test.sh does, and checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
major=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
version=$(sed -nE 's/^version = "(.*)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name="postgresql-$major-halo-migrate"
out=target/deb
root="$out/$name"
rm -rf "$root" && mkdir -p "$root"

# The extension, laid out where this PostgreSQL looks for it (pgrx takes
# the paths from pg_config), and the command line.
cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$root" >/dev/null
cargo build --release --locked -p halo_migrate_cli --quiet
install -D -m 755 "${CARGO_TARGET_DIR:-target}/release/halo_migrate" "$root/usr/bin/halo_migrate"
install -D -m 644 README.md "$root/usr/share/doc/$name/README.md"
for f in doc/*.md; do install -D -m 644 "$f" "$root/usr/share/doc/$name/$(basename "$f")"; done

mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: halo_migrate developers <halo-migrate@localhost>
Depends: postgresql-$major, libc6, libgcc-s1, libssl3
Section: database
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Description: online ALTER TABLE for PostgreSQL $major
 halo_migrate changes the schema of a live table (column types, NOT NULL
 columns, dropped columns, constraints) with one SQL call while the
 application keeps reading and writing: the extension, and the halo_migrate
 command line.
EOF
dpkg-deb --build --root-owner-group "$root" "$out/${name}_${version}_${arch}.deb" >/dev/null
echo "$out/${name}_${version}_${arch}.deb"
