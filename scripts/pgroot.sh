#!/usr/bin/env bash
# pgroot.sh: a Debian chroot with a newer PostgreSQL, for building and testing
# halo_migrate against PG 17 (Debian trixie) and PG 18 (Debian forky) on a
# bookworm host that only has PG 15.
#
# Why a chroot: trixie's and forky's binaries need a newer glibc than
# bookworm's, so they can't run on the host. Inside the root they run natively.
# The host's Rust toolchain (/root/.rustup, /root/.cargo, cargo-pgrx) is
# bind-mounted in and runs there too, because older-glibc binaries run on a
# newer glibc.
#
#   pgroot.sh 17|18 [prepare]     create the root idempotently: debootstrap, then
#                                 PG, headers, clang and tools. The stamp file
#                                 .pgroot-complete marks a finished root.
#   pgroot.sh 17|18 run -- CMD..  run CMD inside the root as root. The cwd is
#                                 kept when it is under the repo.
#   pgroot.sh 17|18 clean         unmount anything left below the root, then
#                                 remove the root and its PGRX_HOME.
# Environment: PGROOT_DIR (default <repo>/target/pgroot), PGROOT_MIRROR
# (default: the Debian mirror in the host's apt sources).
#
# Mounts. prepare and run re-exec themselves with `unshare --mount`, so every
# mount (/proc, /sys, /dev, the repo, /root/.rustup, /root/.cargo) lives in a
# private mount namespace. The host never sees these mounts, and the kernel
# drops them when the last process in the namespace exits, even after
# kill -9. Concurrent runs each get their own namespace. An EXIT trap also
# unmounts them, unless a process started by the run (for example a
# `pg_ctl start`) is still inside the root. That process then keeps its
# namespace until it exits. run holds a shared flock and clean needs an
# exclusive one, so clean refuses while any run or leftover process is alive.
# Before any rm -rf, findmnt must show nothing mounted below the root.
# /tmp is the root's own directory, not the host's. This keeps the host's
# PG 15 clusters, sockets and /tmp/halo_pgrx_test_data (the Makefile's pgrx
# test data dir) separate from the PG 17/18 ones. It is persistent, so
# successive runs see each other's files.
# Nested use: inside a root, `pgroot.sh N run -- CMD` just runs CMD.
# To pass extra environment, use `run -- env X=Y CMD`.
set -euo pipefail

usage() { echo "usage: $0 17|18 [prepare | run -- CMD... | clean]" >&2; exit 2; }
V=${1:-}; case "$V" in 17) SUITE=trixie ;; 18) SUITE=forky ;; *) usage ;; esac
MODE=${2:-prepare}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BASE=$(realpath -m "${PGROOT_DIR:-$REPO/target/pgroot}")
R=$BASE/pg$V
PGRX_DIR=$BASE/pg$V-pgrx   # PGRX_HOME (the host's ~/.pgrx is never used)
LOG=$BASE/pg$V-prepare.log
STAMP=$R/.pgroot-complete
PGBIN=/usr/lib/postgresql/$V/bin

log() { printf '[pgroot %s] %s\n' "$V" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
# step NAME CMD...: run CMD and print its time. Verbose output goes to $LOG.
step() {
    local name=$1 t0; shift; t0=$(now); log "$name ..."
    if ! "$@" >>"$LOG" 2>&1; then tail -n 25 "$LOG" >&2; die "$name failed after $(since "$t0") (log: $LOG)"; fi
    log "$name: $(since "$t0")"
}
# Mount points at or below $1 in this namespace, deepest first.
mounts_below() { findmnt -rn -o TARGET | awk -v p="$1" '$0 == p || index($0, p "/") == 1' | sort -r; }
umount_below() { local m; for m in $(mounts_below "$1"); do umount -l "$m" || true; done; }
# PIDs chrooted into $R that share this mount namespace.
procs_in_root() {
    local p me; me=$(readlink /proc/self/ns/mnt)
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$me" ] && printf '%s ' "${p#/proc/}"
    done; return 0
}
safe_rm() {  # remove $1 only after findmnt shows nothing mounted below it
    local d=$1; [ -e "$d" ] || return 0
    case "$d" in "$BASE"/pg[0-9]*) ;; *) die "refusing to remove $d" ;; esac
    umount_below "$d"
    [ -z "$(mounts_below "$d")" ] || die "still mounted below $d: $(mounts_below "$d" | tr '\n' ' '); not removing"
    rm -rf --one-file-system "$d"
}
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
mount_sys() {
    mount -t proc proc "$R/proc"; mount --rbind /sys "$R/sys"; mount --rbind /dev "$R/dev"  # includes pts, shm
    cp -L /etc/resolv.conf "$R/etc/resolv.conf"; cp -L /etc/hosts "$R/etc/hosts"  # sudo looks up the host name
}
mirror() {
    [ -n "${PGROOT_MIRROR:-}" ] && { echo "$PGROOT_MIRROR"; return; }
    { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
        | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]+' \
        | awk '/\/debian\/?$/ && !m { m = $0 } END { print (m ? m : "http://deb.debian.org/debian") }'
}

prepare() {  # runs inside the private mount namespace, holding the exclusive lock
    [ -f "$STAMP" ] && { log "already prepared: $R"; return; }
    local T0; T0=$(now); : >"$LOG"
    if [ -e "$R" ] && [ ! -f "$R/.pgroot-bootstrapped" ]; then step "remove partial root" safe_rm "$R"; fi
    if [ ! -f "$R/.pgroot-bootstrapped" ]; then
        command -v debootstrap >/dev/null || step "install debootstrap on host" \
            sh -c 'apt-get install -y debootstrap || { apt-get update && apt-get install -y debootstrap; }'
        # bookworm's debootstrap has no script for forky; sid's works for it.
        local script=/usr/share/debootstrap/scripts/$SUITE; [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid
        local m; m=$(mirror)
        step "debootstrap $SUITE from $m" debootstrap --variant=minbase "$SUITE" "$R" "$m" "$script"
        touch "$R/.pgroot-bootstrapped"
    fi
    mount_sys; trap 'umount_below "$R"' EXIT
    # forky's Release is past its Valid-Until on the mirror. debootstrap doesn't
    # check that field, but apt does.
    cat >"$R/etc/apt/apt.conf.d/99pgroot" <<'EOF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Get::Assume-Yes "true";
Dpkg::Options { "--force-confdef"; "--force-confold"; };
EOF
    printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"  # start no daemons
    echo "$V $SUITE" >"$R/etc/pgroot-release"
    step "apt-get update ($SUITE)" in_root apt-get update
    step "install postgresql-common" in_root apt-get install postgresql-common
    # No auto-created cluster. Set this before postgresql-$V's postinst runs.
    sed -ri 's/^#? *create_main_cluster *=.*/create_main_cluster = false/' "$R/etc/postgresql-common/createcluster.conf"
    grep -q '^create_main_cluster = false' "$R/etc/postgresql-common/createcluster.conf" || die "createcluster.conf not set"
    local pkgs=(postgresql-$V postgresql-server-dev-$V postgresql-client-$V build-essential clang libclang-dev
                pkg-config libssl-dev openssl ca-certificates git python3 procps iproute2 sudo make locales) p
    for p in postgresql-$V-cron postgresql-$V-repack; do  # optional: only if the suite has them
        if [[ $(in_root apt-cache policy "$p") == *"Candidate: "[0-9]* ]]; then pkgs+=("$p"); log "$SUITE has $p"
        else log "$SUITE has no $p (skipped)"; fi
    done
    step "install ${#pkgs[@]} packages" in_root apt-get install "${pkgs[@]}"
    [ -x "$R$PGBIN/pgbench" ] || die "no pgbench in $PGBIN"
    in_root pg_lsclusters -h | while read -r ver name _; do  # none expected; drop any
        log "dropping cluster $ver/$name"; in_root pg_dropcluster --stop "$ver" "$name"; done
    step "apt-get clean" in_root apt-get clean
    local left; left=$(procs_in_root); [ -z "$left" ] || die "processes still running in root: $left"
    in_root dpkg-query -W -f='${Package} ${Version}\n' "postgresql-$V" "postgresql-$V-cron" 2>/dev/null | sed 's/^/  /' >&2 || true
    touch "$STAMP"; log "prepared $R in $(since "$T0")"
}

run_in_ns() {  # inside the private mount namespace, holding the shared lock
    local cwd T0 rc d v; T0=$(now); cwd=$(pwd -P); case "$cwd/" in "$REPO"/*) ;; *) cwd=$REPO ;; esac
    trap 'left=$(procs_in_root); if [ -n "$left" ]; then log "still running in the root: $left(their mounts stay in this run'\''s private namespace)"; else umount_below "$R"; fi' EXIT
    mount_sys
    mkdir -p "$PGRX_DIR"; local binds=("$REPO" /root/.rustup /root/.cargo)
    case "$PGRX_DIR/" in "$REPO"/*) ;; *) binds+=("$PGRX_DIR") ;; esac  # PGROOT_DIR outside the repo
    for d in "${binds[@]}"; do mkdir -p "$R$d"; mount --bind "$d" "$R$d"; done
    local envs=(PATH=/root/.cargo/bin:$PGBIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo
        PGRX_HOME="$PGRX_DIR" CARGO_TARGET_DIR="$REPO/target/pg$V" PG_CONFIG="$PGBIN/pg_config" PGROOT_VERSION="$V")
    for v in TERM CI RUST_BACKTRACE RUST_LOG RUSTFLAGS RUSTUP_TOOLCHAIN RUSTUP_AUTO_INSTALL \
             CARGO_BUILD_JOBS CARGO_INCREMENTAL CARGO_TERM_COLOR; do [ -n "${!v:-}" ] && envs+=("$v=${!v}"); done
    set +e
    chroot "$R" /usr/bin/env -i "${envs[@]}" /bin/sh -c 'cd "$1" && shift && exec "$@"' pgroot "$cwd" "$@"
    rc=$?; set -e
    log "run (exit $rc): $(since "$T0")"; return $rc
}

case "$MODE" in
prepare | run)
    [ "$(id -u)" = 0 ] || die "must run as root"
    [ "$MODE" = run ] || [ ! -f /etc/pgroot-release ] || die "$MODE must be run on the host, not inside a root"
    if [ "$MODE" = run ]; then
        shift 2; [ "${1:-}" = -- ] && shift; [ $# -gt 0 ] || usage
        if [ -f /etc/pgroot-release ]; then  # already inside a root: nested call
            [ "$(cut -d' ' -f1 /etc/pgroot-release)" = "$V" ] || die "inside the PG $(cut -d' ' -f1 /etc/pgroot-release) root, not $V"
            exec "$@"
        fi
        [ -f "$STAMP" ] || die "$R is not prepared: run 'bash $0 $V' first"
    else
        [ -f "$STAMP" ] && { log "already prepared: $R"; exit 0; }
    fi
    if [ -z "${PGROOT_IN_NS:-}" ]; then
        mkdir -p "$BASE"; exec 9>"$BASE/pg$V.lock"
        if [ "$MODE" = run ]; then flock -s 9; else flock -x 9; fi
        [ "$MODE" = run ] && set -- "$V" run -- "$@"
        # The new namespace holds every mount below and disappears with us.
        PGROOT_IN_NS=1 exec unshare --mount --propagation private -- bash "${BASH_SOURCE[0]}" "$@"
    fi
    unset PGROOT_IN_NS
    if [ "$MODE" = run ]; then run_in_ns "$@"; else prepare; fi ;;
clean)
    [ ! -f /etc/pgroot-release ] || die "clean must be run on the host, not inside a root"
    t0=$(now); mkdir -p "$BASE"; exec 9>"$BASE/pg$V.lock"
    flock -n -x 9 || die "a run (or a process it started, e.g. a postgres) is still using $R; stop it first"
    umount_below "$R"   # stale host-namespace mounts, if any tool ever left some
    safe_rm "$R"; safe_rm "$PGRX_DIR"; rm -f "$LOG"
    log "clean: removed $R and $PGRX_DIR in $(since "$t0")" ;;
*) usage ;;
esac
