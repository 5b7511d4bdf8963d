#!/usr/bin/env bash
# Runs the foundation scenarios against a freshly started Myelin on SQLite
# and on PostgreSQL, and prints a Markdown table. Results (one JSON object
# per scenario) go to bench/results/.
#
#   bench/run.sh [--messages N] [--samples N]
set -euo pipefail
cd "$(dirname "$0")/.."

messages=1000
samples=200
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) messages="$2"; shift 2 ;;
        --samples) samples="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

cargo build --release --locked -p myelin -p myelin-bench
myelin=target/release/myelin
bench=target/release/myelin-bench
pg_admin="${MYELIN_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
secret="bench-shared-secret"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out="bench/results/$stamp.jsonl"
port=18008

work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_server() {
    local backend="$1" dir="$work/$1" db_args=()
    if [ "$backend" = postgres ]; then
        local name="myelin_bench_$stamp"
        name=$(echo "$name" | tr 'A-Z' 'a-z')
        psql "$pg_admin" -qc "CREATE DATABASE $name" >/dev/null
        db_args=(--database-url "${pg_admin%/*}/$name")
    fi
    "$myelin" generate-config --server-name localhost --dir "$dir" "${db_args[@]}" >/dev/null
    MYELIN_CLIENT_API__LISTEN="127.0.0.1:$port" \
    MYELIN_FEDERATION_API__LISTEN="127.0.0.1:$((port + 440))" \
    MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET="$secret" \
    MYELIN_GLOBAL__LOG_FILTER=warn \
        "$myelin" run --config "$dir/myelin.yaml" >"$dir/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null && return 0
        sleep 0.1
    done
    echo "server did not start; log:" >&2
    cat "$dir/server.log" >&2
    exit 1
}

stop_server() {
    local backend="$1" rss
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$server_pid/status")
    echo "{\"scenario\":\"resident_memory\",\"label\":\"myelin-$backend\",\"rss_kib\":$rss}" | tee -a "$out"
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

for backend in sqlite postgres; do
    start_server "$backend"
    run=("$bench" --url "http://127.0.0.1:$port" --shared-secret "$secret" --label "myelin-$backend")
    "${run[@]}" send --senders 1 --messages "$messages" | tee -a "$out"
    "${run[@]}" send --senders 16 --messages $((messages / 16)) | tee -a "$out"
    "${run[@]}" sync-latency --samples "$samples" | tee -a "$out"
    stop_server "$backend"
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("\n| label | scenario | result |\n| --- | --- | --- |")
for r in rows:
    if r["scenario"] == "send":
        result = f'{r["messages_per_second"]:.0f} msg/s ({r["senders"]} senders, {r["messages"]} msgs; send p50 {r["send_latency_ms"]["p50"]:.2f} ms, p99 {r["send_latency_ms"]["p99"]:.2f} ms)'
    elif r["scenario"] == "sync_latency":
        l = r["wakeup_latency_ms"]
        result = f'sync wake-up p50 {l["p50"]:.2f} ms, p99 {l["p99"]:.2f} ms ({r["samples"]} samples)'
    else:
        result = f'{r["rss_kib"] / 1024:.1f} MiB resident after the run'
    print(f'| {r["label"]} | {r["scenario"]} | {result} |')
PY
