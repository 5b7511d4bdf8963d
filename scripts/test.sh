#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every test (unit, integration,
# end-to-end with real clients) on SQLite and PostgreSQL, the bus on Kafka,
# and the room server's fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
export MYELIN_TEST_PYTHON="$PWD/.venv/bin/python"

cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check  # the fuzz crate is outside the workspace
cargo clippy --workspace --all-targets --locked -- -D warnings
# The Kafka backend is an opt-in feature (it builds librdkafka); lint and
# test it too, against the tansu broker the suite starts.
cargo clippy --workspace --all-targets --locked --features myelin/kafka -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast --features myelin/kafka
# Every fuzz target for a minute from its seeds (fails on a crash).
scripts/fuzz.sh
if [ -n "${SYTEST_DIR:-}" ]; then sytest-compat/run.sh --whitelist; fi  # SyTest: see sytest-compat/README.md
