#!/usr/bin/env bash
# Idempotent set-up of everything halo_migrate needs on a fresh Debian bookworm
# machine (run as root), for PostgreSQL $PG (15 by default; 17 and 18 inside
# the Debian chroot of scripts/pgroot.sh): the server and headers, clang for bindgen,
# sudo (the test harness runs PostgreSQL as the postgres user), OpenSSL (the
# command line's TLS, and certificates for its tests), pg_cron,
# pg_repack, pgbench, cargo-pgrx 0.18.1 and `cargo pgrx init`.
set -euo pipefail

PGRX_VERSION=0.18.1
PG=${PG:-15}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG/bin/pg_config}
APT_PACKAGES=(postgresql-$PG postgresql-server-dev-$PG clang libclang-dev
              pkg-config sudo postgresql-$PG-cron postgresql-$PG-repack libssl-dev openssl)

log() { printf '[setup] %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "Debian packages already installed"
fi

# Debian's postgresql-common may create and start a default cluster; we never use it.
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q "^$PG *main .*online"; then
    pg_ctlcluster "$PG" main stop || true
fi

if cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    log "cargo-pgrx $PGRX_VERSION already installed"
else
    log "installing cargo-pgrx $PGRX_VERSION (takes a few minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

if [ -f "${PGRX_HOME:-$HOME/.pgrx}/config.toml" ] && grep -q "pg$PG" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    log "cargo pgrx already initialised for pg$PG"
else
    log "cargo pgrx init --pg$PG $PG_CONFIG"
    cargo pgrx init --pg"$PG" "$PG_CONFIG" >/dev/null
fi

# The test harness runs PostgreSQL as `postgres`; it must be able to read the
# work tree (pg_regress inputs) and write the pgrx test data directory.
chmod o+rx "$HOME" 2>/dev/null || true
log "done"
