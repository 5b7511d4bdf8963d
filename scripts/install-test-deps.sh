#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain. Idempotent:
# each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-nextest >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

# libFuzzer driver for the fuzz targets in fuzz/ (scripts/fuzz.sh).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# A Kafka-protocol broker for the bus's Kafka backend; the conformance suite
# starts it. Its default features have no storage engine.
if ! command -v tansu >/dev/null 2>&1; then
    cargo install tansu --features dynostore --locked
fi

# The deployment's compose files are validated with `docker compose config`
# (or Debian's docker-compose where the compose plugin is missing).
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    apt-get install -y -q docker-compose
fi

# Python clients live in a project-local virtualenv.
if [ ! -x .venv/bin/python ] || ! cmp -s tests/clients/requirements.txt .venv/.requirements; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
    cp tests/clients/requirements.txt .venv/.requirements
fi

# JavaScript clients (matrix-js-sdk, hydrogen-view-sdk, vite, playwright-core)
# from the committed lockfile; reinstalled when the lockfile changes.
js=tests/clients/js
if [ ! -d "$js/node_modules" ] || ! cmp -s "$js/package-lock.json" "$js/node_modules/.package-lock.installed"; then
    (cd "$js" && npm ci --no-audit --no-fund)
    cp "$js/package-lock.json" "$js/node_modules/.package-lock.installed"
fi

# Headless Chromium for the hydrogen-view-sdk test (Debian's package).
if [ ! -x /usr/bin/chromium ]; then
    apt-get install -y -q chromium
fi

# The suite runs every storage test on PostgreSQL too.
pg_url="${MYELIN_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
if command -v psql >/dev/null 2>&1 && ! psql "$pg_url" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    echo "PostgreSQL is not reachable at $pg_url; start it or set MYELIN_TEST_POSTGRES" >&2
    exit 1
fi
