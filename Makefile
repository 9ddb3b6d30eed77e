# halo_migrate — the two entry points are `make demo` and `make test`; both do
# all set-up on a fresh Debian bookworm machine first (scripts/setup.sh).

# The PostgreSQL major version: 15, this Debian's (bookworm), by default.
# `make test PG=17` or `PG=18` runs the same target inside a Debian chroot
# that has that version (scripts/pgroot.sh; Debian trixie resp. forky),
# with its own build directory (target/pg17, target/pg18).
PG ?= 15
PG_CONFIG ?= /usr/lib/postgresql/$(PG)/bin/pg_config
export PG PG_CONFIG
# Cargo features of the extension for that version.
FEATURES = --no-default-features --features pg$(PG)
PGRX_TEST_DATA ?= /tmp/halo_pgrx_test_data
export USER ?= $(shell id -un)

TARGETS = setup install test test-layers test-unit test-regress test-e2e test-fuzz test-cli \
          test-upgrade test-deb deb demo bench fuzz clean
.PHONY: $(TARGETS)

ifneq ($(and $(filter-out 15,$(PG)),$(if $(PGROOT_VERSION),,outside)),)
# Another version, outside its chroot: prepare the chroot, run there.
$(TARGETS):
	bash scripts/pgroot.sh $(PG) prepare
	bash scripts/pgroot.sh $(PG) run -- make $@ $(MAKEOVERRIDES)
else

setup:
	bash scripts/setup.sh

install: setup
	cargo pgrx install --release --pg-config $(PG_CONFIG)

## All tests: Rust unit tests and #[pg_test]s, SQL regression, end to end, the CLI.
test: setup test-layers test-unit install test-regress test-e2e test-fuzz test-cli test-upgrade test-deb

# src/ keeps its layers: api → bgw → engine → catalog → plan → pg.
test-layers:
	bash scripts/layers.sh

# Plain unit tests and in-server #[pg_test]s (cargo pgrx test runs both).
test-unit: setup
	cargo pgrx test pg$(PG) -p halo_migrate --runas postgres --pgdata $(PGRX_TEST_DATA)

test-regress: install
	bash scripts/regress.sh

test-e2e: install
	cargo test $(FEATURES),e2e --test e2e

# The differential fuzzer's short pass: a fixed seed, 40 cases.
test-fuzz: install
	cargo test $(FEATURES),e2e --test fuzz -- --nocapture

## A fuzzing campaign: make fuzz SEED=42 ITERATIONS=500 (findings are printed
## with a shrunk reproducer; see doc/fuzzing.md).
SEED ?= $(shell date +%s)
ITERATIONS ?= 200
fuzz: install
	FUZZ_SEED=$(SEED) FUZZ_ITERATIONS=$(ITERATIONS) cargo test $(FEATURES),e2e --test fuzz -- --nocapture

# The command line (cli/): its unit tests, and its tests against real clusters.
test-cli: install
	cargo test -p halo_migrate_cli --features e2e

# The upgrade path: the previous release with migrations in flight, the
# package upgraded, ALTER EXTENSION halo_migrate UPDATE, each migration ended.
test-upgrade: install
	bash scripts/upgrade-test.sh

## The Debian package (target/deb/postgresql-15-halo-migrate_<version>_<arch>.deb),
## and a check that `apt install ./…deb` installs a working extension and command.
deb: setup
	bash scripts/deb.sh

test-deb: deb
	bash scripts/deb-test.sh

## A demonstration on a throwaway local cluster.
demo: install
	bash scripts/demo.sh

## The benchmark: plain ALTER, pg_tat, pg_repack and halo_migrate under one
## pgbench write load (bench/setup.sh fetches pg_tat and matplotlib).
bench: install
	bash bench/run.sh
	bash bench/partitioned.sh
	KIND=rewrite bash bench/partitioned.sh

clean:
	cargo clean
	rm -rf results regression.diffs regression.out $(PGRX_TEST_DATA)
endif
