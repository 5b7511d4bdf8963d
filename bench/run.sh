#!/usr/bin/env bash
# Runs the benchmark suite against a freshly started Myelin (release build)
# on SQLite and on PostgreSQL and, with --synapse, against a freshly
# started local Synapse on PostgreSQL, in the same run and with the same
# scenarios. Results (one JSON object per scenario) go to
# bench/results/<stamp>.jsonl; a Markdown table is printed at the end and,
# for a full run, written into PERFORMANCE.md by bench/report.py.
#
#   bench/run.sh [--synapse] [--quick] [--messages N] [--samples N]
#                [--senders N] [--rooms N] [--members N] [--history N]
#
#   --synapse      also run against Synapse (installed into
#                  target/bench-synapse/venv on first use)
#   --quick        tiny scales, to check the suite works (seconds, not
#                  minutes); results go to bench/results/quick-<stamp>.jsonl
#                  and PERFORMANCE.md is left alone
#   --messages N   messages per send scenario, split across its senders
#   --samples N    send-to-sync latency samples per latency scenario
#   --senders N    senders in the multi-sender scenarios and the latency load
#   --rooms N, --members N   initial /sync: rooms, and members per room
#   --history N    events in the room /messages pages back through
#
# Environment: MYELIN_TEST_POSTGRES (an admin connection URL, default
# postgres://postgres@127.0.0.1:5432/postgres), SYNAPSE_SPEC (the pip
# requirement for Synapse, default matrix-synapse[postgres]).
set -euo pipefail
cd "$(dirname "$0")/.."

messages=3200
samples=1000
senders=64
rooms=100
members=100
history=5000
page=100
synapse=false
quick=false
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) messages="$2"; shift 2 ;;
        --samples) samples="$2"; shift 2 ;;
        --senders) senders="$2"; shift 2 ;;
        --rooms) rooms="$2"; shift 2 ;;
        --members) members="$2"; shift 2 ;;
        --history) history="$2"; shift 2 ;;
        --synapse) synapse=true; shift ;;
        --quick) quick=true; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
if $quick; then
    messages=32 samples=20 senders=4 rooms=3 members=4 history=150 page=50
fi

myelin=target/release/myelin
bench=target/release/myelin-bench
pg_admin="${MYELIN_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
synapse_venv=target/bench-synapse/venv
secret="bench-shared-secret-$RANDOM$RANDOM"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
if $quick; then out="bench/results/quick-$stamp.jsonl"; else out="bench/results/$stamp.jsonl"; fi

cargo build --release --locked -p myelin -p myelin-bench

work=$(mktemp -d)
server_pid=""
databases=()
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
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

wait_for_server() {
    local url="$1" log_file="$2"
    for _ in $(seq 1 600); do
        curl -fs "$url/_matrix/client/versions" >/dev/null && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    log "server did not start; log:"
    tail -50 "$log_file" >&2
    exit 1
}

start_myelin() {
    local backend="$1" dir="$work/myelin-$1" db_args=() federation_port
    if [ "$backend" = postgres ]; then
        fresh_database myelin
        db_args=(--database-url "${pg_admin%/*}/$database")
    fi
    port=$(free_port)
    federation_port=$(free_port)
    "$myelin" generate-config --server-name localhost --dir "$dir" "${db_args[@]}" >/dev/null
    MYELIN_CLIENT_API__LISTEN="127.0.0.1:$port" \
    MYELIN_FEDERATION_API__LISTEN="127.0.0.1:$federation_port" \
    MYELIN_CLIENT_API__REGISTRATION_SHARED_SECRET="$secret" \
    MYELIN_GLOBAL__LOG_FILTER=warn \
        "$myelin" run --config "$dir/myelin.yaml" >"$dir/server.log" 2>&1 &
    server_pid=$!
    wait_for_server "http://127.0.0.1:$port" "$dir/server.log"
}

install_synapse() {
    if [ -x "$synapse_venv/bin/python" ] && "$synapse_venv/bin/python" -c 'import synapse' 2>/dev/null; then
        return 0
    fi
    log "installing Synapse into $synapse_venv"
    python3 -m venv "$synapse_venv"
    "$synapse_venv/bin/pip" install -q "${SYNAPSE_SPEC:-matrix-synapse[postgres]}"
}

synapse_version() {
    "$synapse_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))'
}

start_synapse() {
    local dir="$work/synapse"
    mkdir -p "$dir"
    fresh_database synapse
    port=$(free_port)
    "$synapse_venv/bin/python" -m synapse.app.homeserver --server-name localhost \
        --config-path "$dir/homeserver.yaml" --data-directory "$dir" \
        --generate-config --report-stats=no >/dev/null
    # The generated configuration, adjusted for a benchmark on loopback.
    "$synapse_venv/bin/python" - "$dir" "$database" "$port" "$secret" "$pg_admin" <<'PY'
import sys, urllib.parse, yaml
directory, database, port, secret, admin = sys.argv[1:]
admin = urllib.parse.urlparse(admin)
path = f"{directory}/homeserver.yaml"
config = yaml.safe_load(open(path))
def unlimited():
    return {"per_second": 100000, "burst_count": 100000}
config.update({
    "database": {"name": "psycopg2", "args": {
        "user": admin.username or "postgres", **({"password": admin.password} if admin.password else {}),
        "host": admin.hostname or "127.0.0.1", "port": admin.port or 5432,
        "database": database, "cp_min": 5, "cp_max": 10}},
    "listeners": [{"port": int(port), "bind_addresses": ["127.0.0.1"], "type": "http",
                   "tls": False, "x_forwarded": False,
                   "resources": [{"names": ["client"], "compress": False}]}],
    "registration_shared_secret": secret,
    "report_stats": False,
    "enable_metrics": False,
    "trusted_key_servers": [],
    "suppress_key_server_warning": True,
    "ip_range_blacklist": [],
    "ip_range_blocklist": [],
    # Users are only created during setup; cheap hashing keeps setup short.
    "bcrypt_rounds": 4,
    "rc_message": unlimited(),
    "rc_registration": unlimited(),
    "rc_login": {"address": unlimited(), "account": unlimited(), "failed_attempts": unlimited()},
    "rc_joins": {"local": unlimited(), "remote": unlimited()},
    "rc_joins_per_room": unlimited(),
    "rc_invites": {"per_room": unlimited(), "per_user": unlimited(), "per_issuer": unlimited()},
    "rc_room_creation": unlimited(),
    # Identical repeated /sync requests must be computed, not replayed.
    "caches": {"sync_response_cache_duration": 0},
    "log_config": f"{directory}/log.yaml",
})
yaml.safe_dump(config, open(path, "w"))
yaml.safe_dump({
    "version": 1,
    "formatters": {"precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
    "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                          "filename": f"{directory}/homeserver.log"}},
    "root": {"level": "WARNING", "handlers": ["file"]},
    "disable_existing_loggers": False,
}, open(f"{directory}/log.yaml", "w"))
PY
    "$synapse_venv/bin/python" -m synapse.app.homeserver --config-path "$dir/homeserver.yaml" \
        >"$dir/stdout.log" 2>&1 &
    server_pid=$!
    wait_for_server "http://127.0.0.1:$port" "$dir/stdout.log"
}

rss_kib() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$server_pid/status"; }

stop_server() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# Runs one scenario; a failure is recorded in the results, not skipped.
scenario() {
    local label="$1" stderr="$work/stderr"
    shift
    log "$label: $*"
    if "$bench" --url "http://127.0.0.1:$port" --shared-secret "$secret" --label "$label" "$@" \
        >"$work/result" 2>"$stderr"; then
        cat "$work/result" >>"$out"
    else
        cat "$stderr" >&2
        python3 -c 'import json, sys; print(json.dumps({"scenario": "failed", "case": " ".join(sys.argv[2:-1]), "label": sys.argv[1], "error": open(sys.argv[-1]).read()[-2000:]}))' \
            "$label" "$@" "$stderr" >>"$out"
    fi
}

# The whole suite against the server on "$port" (pid "$server_pid").
suite() {
    local label="$1" idle
    sleep 2
    idle=$(rss_kib VmRSS)
    scenario "$label" send --senders 1 --messages "$messages"
    scenario "$label" send --senders "$senders" --messages $(( (messages + senders - 1) / senders ))
    scenario "$label" send --senders "$senders" --messages $(( (messages + senders - 1) / senders )) --shared-room
    scenario "$label" sync-latency --samples "$samples"
    scenario "$label" sync-latency --samples "$samples" --load-senders "$senders"
    scenario "$label" initial-sync --rooms "$rooms" --members "$members"
    scenario "$label" messages --events "$history" --page "$page"
    python3 -c 'import json, sys
label, idle, loaded, peak = sys.argv[1], *map(int, sys.argv[2:])
mib = lambda kib: round(kib / 1024, 1)
print(json.dumps({"scenario": "memory", "case": "resident memory of the server process", "label": label,
    "figures": [{"name": "idle MiB", "value": mib(idle), "better": "lower"},
                {"name": "after the suite MiB", "value": mib(loaded), "better": "lower"},
                {"name": "peak MiB", "value": mib(peak), "better": "lower"}],
    "rss_idle_kib": idle, "rss_loaded_kib": loaded, "vm_hwm_kib": peak}))' \
        "$label" "$idle" "$(rss_kib VmRSS)" "$(rss_kib VmHWM)" >>"$out"
}

synapse_v=""
if $synapse; then
    install_synapse
    synapse_v=$(synapse_version)
fi
python3 bench/report.py meta --synapse-version "$synapse_v" --quick "$quick" \
    --scales "messages=$messages samples=$samples senders=$senders rooms=$rooms members=$members history=$history page=$page" \
    >"$out"

for backend in sqlite postgres; do
    start_myelin "$backend"
    suite "myelin-$backend"
    stop_server
done
if $synapse; then
    start_synapse
    suite "synapse-postgres"
    stop_server
fi

log "results: $out"
if $quick; then
    python3 bench/report.py table "$out"
else
    python3 bench/report.py markdown "$out" >PERFORMANCE.md
    python3 bench/report.py table "$out"
    log "wrote PERFORMANCE.md"
fi
