# halo_migrate — the two entry points are `make demo` and `make test`; both do
# all set-up on a fresh Debian bookworm machine first (scripts/setup.sh).

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
export PG_CONFIG
PGRX_TEST_DATA ?= /tmp/halo_pgrx_test_data
export USER ?= $(shell id -un)

.PHONY: setup install test test-layers test-unit test-regress test-e2e test-fuzz test-cli test-upgrade test-deb deb demo bench fuzz clean

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
	cargo pgrx test pg15 -p halo_migrate --runas postgres --pgdata $(PGRX_TEST_DATA)

test-regress: install
	bash scripts/regress.sh

test-e2e: install
	cargo test --features e2e --test e2e

# The differential fuzzer's short pass: a fixed seed, 40 cases.
test-fuzz: install
	cargo test --features e2e --test fuzz -- --nocapture

## A fuzzing campaign: make fuzz SEED=42 ITERATIONS=500 (findings are printed
## with a shrunk reproducer; see doc/fuzzing.md).
SEED ?= $(shell date +%s)
ITERATIONS ?= 200
fuzz: install
	FUZZ_SEED=$(SEED) FUZZ_ITERATIONS=$(ITERATIONS) cargo test --features e2e --test fuzz -- --nocapture

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

clean:
	cargo clean
	rm -rf results regression.diffs regression.out $(PGRX_TEST_DATA)
