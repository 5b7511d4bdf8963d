#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each,
# starting from the committed seeds (fuzz/seeds/<target>); fails on the
# first crash, whose input libFuzzer writes under the target directory's
# fuzz/artifacts/<target>/. Reproduce one with
#   cargo fuzz run --fuzz-dir fuzz --sanitizer none <target> <input>
#
# Stable Rust: `--sanitizer none` keeps cargo-fuzz to stable rustc flags
# (libFuzzer's coverage instrumentation); AddressSanitizer would need
# nightly (`-Zsanitizer`, or RUSTC_BOOTSTRAP=1), and the code under test is
# safe Rust, where a bug shows as a panic, which libFuzzer reports as a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
# Release build with debug assertions and overflow checks (cargo-fuzz's
# default); 16 codegen units build much faster than its default of one.
build=(--fuzz-dir fuzz --sanitizer none --target-dir "$target_dir" --codegen-units 16)
targets=(canonical_json pdu_format redaction auth_check)

cargo fuzz build "${build[@]}"
for target in "${targets[@]}"; do
    corpus="$target_dir/corpus/$target"
    artifacts="$target_dir/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    echo "fuzzing $target for ${seconds}s"
    # New inputs go to the first corpus directory (under the target dir);
    # the seeds are only read.
    cargo fuzz run "${build[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -artifact_prefix="$artifacts/" -print_final_stats=1
done
