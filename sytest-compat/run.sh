#!/usr/bin/env bash
# Runs SyTest against two Myelin servers and prints a pass table by area.
#
#   SYTEST_DIR=/path/to/sytest sytest-compat/run.sh [--whitelist] [--results DIR] [TEST...]
#
# TEST is a file or directory under SyTest's tests/ (e.g. tests/31sync); the
# default is every area listed in AREAS below. With --whitelist the run
# counts only whitelist.txt (everything else is "expected fail") and the
# script fails if any whitelisted test did not pass. Without it, the script
# fails only if SyTest itself could not run.
#
# Environment:
#   SYTEST_DIR       a SyTest checkout (required)
#   SYTEST_PERL5LIB  extra Perl library directories (e.g. where
#                    Net::Async::HTTP::Server >= 0.09 is), prepended to PERL5LIB
#   MYELIN_BINARY    the myelin executable; default: built with cargo
#   TIMEOUT_FACTOR   SyTest's timeout multiplier; default 2
#   MYELIN_SYTEST_LOG  the servers' log filter (e.g. debug)
set -euo pipefail

compat="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$compat/.." && pwd)"
AREAS=(tests/10apidoc tests/30rooms tests/31sync tests/50federation)

whitelist=0
results="$repo/target/sytest"
tests=()
while [ $# -gt 0 ]; do
    case "$1" in
        --whitelist) whitelist=1 ;;
        --results) results="$2"; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) tests+=("$1") ;;
    esac
    shift
done
explicit_tests=${#tests[@]}
[ "$explicit_tests" -gt 0 ] || tests=("${AREAS[@]}")

if [ -z "${SYTEST_DIR:-}" ] || [ ! -x "$SYTEST_DIR/run-tests.pl" ]; then
    echo "SYTEST_DIR must point at a SyTest checkout (see sytest-compat/README.md)" >&2
    exit 2
fi
SYTEST_DIR="$(cd "$SYTEST_DIR" && pwd)"

export PERL5LIB="$compat/perl-shims${SYTEST_PERL5LIB:+:$SYTEST_PERL5LIB}${PERL5LIB:+:$PERL5LIB}"
if ! perl -MNet::Async::HTTP::Server=0.09 -e 1 2>/dev/null; then
    echo "SyTest needs Net::Async::HTTP::Server >= 0.09 on PERL5LIB or SYTEST_PERL5LIB (see sytest-compat/README.md)" >&2
    exit 2
fi

if [ -z "${MYELIN_BINARY:-}" ]; then
    (cd "$repo" && cargo build --quiet -p myelin)
    MYELIN_BINARY="$repo/target/debug/myelin"
fi
MYELIN_BINARY="$(cd "$(dirname "$MYELIN_BINARY")" && pwd)/$(basename "$MYELIN_BINARY")"

# SyTest wants file names as it finds them: tests/<area>/<file>.pl.
files=()
for t in "${tests[@]}"; do
    t="${t#./}"
    if [ -d "$SYTEST_DIR/$t" ]; then
        while IFS= read -r f; do files+=("$f"); done \
            < <(cd "$SYTEST_DIR" && find "$t" -name '*.pl' | sort)
    elif [ -f "$SYTEST_DIR/$t" ]; then
        files+=("$t")
    else
        echo "no such test file or directory in SyTest: $t" >&2
        exit 2
    fi
done

# A whitelist run of the default areas needs only the files that hold a
# whitelisted test (SyTest runs every other test in them as "expected fail"):
# whitelist.txt names them in "# tests/..." comment lines.
if [ "$whitelist" = 1 ] && [ "$explicit_tests" = 0 ]; then
    mapfile -t listed < <(sed -n 's|^#[[:space:]]*\(tests/[^[:space:]]*\.pl\)[[:space:]]*$|\1|p' "$compat/whitelist.txt")
    [ ${#listed[@]} -gt 0 ] && files=("${listed[@]}")
fi

rm -rf "$results"
mkdir -p "$results/plugins" "$results/work"
results="$(cd "$results" && pwd)"
ln -s "$compat" "$results/plugins/myelin"

args=(-I Myelin --myelin-binary "$MYELIN_BINARY" -O tap --all --exclude-deprecated
      --work-directory "$results/work" -B "$compat/blacklist.txt")
[ "$whitelist" = 1 ] && args+=(-W "$compat/whitelist.txt")

echo "SyTest: ${#files[@]} files, results in $results" >&2
set +e
(cd "$SYTEST_DIR" && SYTEST_PLUGINS="$results/plugins" TIMEOUT_FACTOR="${TIMEOUT_FACTOR:-2}" \
    ./run-tests.pl "${args[@]}" "${files[@]}" >"$results/results.tap" 2>"$results/sytest.log")
rc=$?
set -e

summary=(python3 "$compat/summarize.py" "$results")
[ "$whitelist" = 1 ] && summary+=(--check-whitelist "$compat/whitelist.txt")
sum_rc=0
"${summary[@]}" || sum_rc=$?

if ! grep -q '^1\.\.[0-9]' "$results/results.tap"; then
    echo "SyTest did not finish (exit $rc); see $results/sytest.log" >&2
    exit 1
fi
if [ "$whitelist" = 1 ] && [ "$rc" != 0 ]; then
    echo "SyTest reported failures among whitelisted tests (exit $rc)" >&2
    exit 1
fi
exit "$sum_rc"
