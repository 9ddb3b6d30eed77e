#!/usr/bin/env bash
# What the benchmark needs beyond scripts/setup.sh (which installs pgbench and
# Debian's postgresql-15-repack): pg_tat and matplotlib from PyPI, in a
# virtualenv of their own under bench/.venv.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/pg_tat ] || ! .venv/bin/python -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check \
        'pg-transparent-alter-table==4.4.0' 'matplotlib>=3.7,<4'
fi
test -x "$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)/pg_repack"
