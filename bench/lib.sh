# Shared by the benchmark scripts: sourced, not run. Expects $out (the
# results file) to be set by the caller before `scenario` is used.

myelin="${CARGO_TARGET_DIR:-target}/release/myelin"
bench="${CARGO_TARGET_DIR:-target}/release/myelin-bench"
pg_admin="${MYELIN_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
secret="bench-shared-secret-$RANDOM$RANDOM"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results

work=$(mktemp -d)
# The process the scenarios measure, and every other process of the
# current server (distributed shapes, brokers); all are stopped on exit.
server_pid=""
other_pids=()
databases=()
cleanup() {
    stop_server
    # The servers' logs outlive the run: a scenario may fail, or a server die.
    local logs="$PWD/bench/results/logs-$stamp"
    mkdir -p "$logs"
    (cd "$work" && find . -name '*.log' -exec cp --parents {} "$logs" \;)
    for db in "${databases[@]}"; do
        psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

log() { echo "bench: $*" >&2; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Creates a fresh PostgreSQL database in the C locale (Synapse requires
# it) and names it in $database.
fresh_database() {
    database=$(echo "bench_$1_$stamp" | tr 'A-Z-' 'a-z_')
    psql "$pg_admin" -qc "CREATE DATABASE $database ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" >/dev/null
    databases+=("$database")
}

# Waits until `path` on `url` answers, while process `pid` lives.
wait_for() {
    local url="$1" pid="$2" log_file="$3"
    for _ in $(seq 1 600); do
        curl -fs "$url" >/dev/null && return 0
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    log "$url did not answer; log:"
    tail -50 "$log_file" >&2
    exit 1
}

wait_for_server() { wait_for "$1/_matrix/client/versions" "$server_pid" "$2"; }

# Generates a Myelin configuration in "$1" for `localhost` (a PostgreSQL
# database when "$2" names one) and picks the ports in $port and
# $federation_port.
myelin_config() {
    local dir="$1" db_args=()
    if [ -n "${2:-}" ]; then db_args=(--database-url "${pg_admin%/*}/$2"); fi
    port=$(free_port)
    federation_port=$(free_port)
    "$myelin" generate-config --server-name localhost --dir "$dir" "${db_args[@]}" >/dev/null
}

# Starts `myelin run` with the configuration in "$1" and any further
# arguments, on $port and $federation_port; its pid goes in $spawned. Push
# gateways may be on loopback: the push scenario serves its own.
spawn_myelin() {
    local dir="$1" name="$2"
    shift 2
    MYELIN_CLIENT_API__LISTEN="127.0.0.1:$port" \
    MYELIN_FEDERATION_API__LISTEN="127.0.0.1:$federation_port" \
    MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET="$secret" \
    MYELIN_GLOBAL__LOG_FILTER=warn \
    MYELIN_PUSHER__ALLOW_PRIVATE_GATEWAYS=true \
        "$myelin" run --config "$dir/myelin.yaml" "$@" >"$dir/$name.log" 2>&1 &
    spawned=$!
}

rss_kib() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$server_pid/status"; }

stop_server() {
    local pid
    for pid in $server_pid "${other_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    server_pid=""
    other_pids=()
}

# Runs one scenario against the server on $port; a failure is recorded in
# the results, not skipped.
scenario() {
    local label="$1" stderr="$work/stderr"
    shift
    log "$label: $*"
    if "$bench" --url "http://127.0.0.1:$port" --shared-secret "$secret" --label "$label" "$@" \
        >"$work/result" 2>"$stderr"; then
        cat "$work/result" >>"$out"
    else
        cat "$stderr" >&2
        python3 -c 'import json, sys; print(json.dumps({"scenario": "failed", "case": " ".join(sys.argv[2:-1]), "label": sys.argv[1], "error": open(sys.argv[-1]).read()[:2000]}))' \
            "$label" "$@" "$stderr" >>"$out"
    fi
}
