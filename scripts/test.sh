#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration,
# end-to-end with real clients) on SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
export MYELIN_TEST_PYTHON="$PWD/.venv/bin/python"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
