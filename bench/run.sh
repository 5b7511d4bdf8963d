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
#                [--push-members N] [--push-events N]
#                [--fed-events N] [--fed-members N]
#                [--res-members N] [--res-conflicts N] [--myelin BACKENDS]
#
#   --synapse      also run against Synapse (installed into
#                  target/bench-synapse/venv on first use)
#   --myelin BACKENDS  the Myelin storage backends to run, comma-separated
#                  (default sqlite,postgres; "none" for Synapse only)
#   --quick        tiny scales, to check the suite works (seconds, not
#                  minutes); results go to bench/results/quick-<stamp>.jsonl
#                  and PERFORMANCE.md is left alone
#   --messages N   messages per send scenario, split across its senders
#   --samples N    send-to-sync latency samples per latency scenario
#   --senders N    senders in the multi-sender scenarios and the latency load
#   --rooms N, --members N   initial /sync: rooms, and members per room
#   --history N    events in the room /messages pages back through
#   --push-members N, --push-events N   pushes: members of the room (one
#                  pusher each, at a sink the load generator serves) and
#                  messages sent into it
#   --fed-events N federation ingest: events the load generator, as a
#                  remote server, sends over /send (50 per transaction)
#                  into a room the target joined through it
#   --fed-members N remote join: members of the remote room joined
#   --res-members N, --res-conflicts N   state resolution: members of the
#                  remote room, and conflicting member changes per fork
#
# The federation scenarios serve a fake remote server on loopback (HTTPS,
# a certificate from a CA generated per run); Myelin trusts that CA
# (federation_api.ca_file) and allows loopback peers, Synapse gets a
# plain HTTP federation listener and skips certificate checks.
#
# Environment: MYELIN_TEST_POSTGRES (an admin connection URL, default
# postgres://postgres@127.0.0.1:5432/postgres), SYNAPSE_SPEC (the pip
# requirement for Synapse, default matrix-synapse[postgres]),
# BENCH_CONDITIONS (what else the machine was doing, for the record).
set -euo pipefail
cd "$(dirname "$0")/.."

# Sized so that Synapse's run ends within about 45 minutes on two cores:
# Synapse joins about 16 users a second here, so the issue's initial /sync
# of 300 rooms x 300 members (--rooms 300 --members 300) would spend 95
# minutes in setup alone. Federation runs at the issue's scales.
messages=1600
samples=200
senders=64
rooms=100
members=100
history=5000
page=100
push_members=1000
push_events=20
fed_events=10000
fed_members=10000
res_members=10000
res_conflicts=1000
synapse=false
myelin_backends=sqlite,postgres
quick=false
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) messages="$2"; shift 2 ;;
        --samples) samples="$2"; shift 2 ;;
        --senders) senders="$2"; shift 2 ;;
        --rooms) rooms="$2"; shift 2 ;;
        --members) members="$2"; shift 2 ;;
        --history) history="$2"; shift 2 ;;
        --push-members) push_members="$2"; shift 2 ;;
        --push-events) push_events="$2"; shift 2 ;;
        --fed-events) fed_events="$2"; shift 2 ;;
        --fed-members) fed_members="$2"; shift 2 ;;
        --res-members) res_members="$2"; shift 2 ;;
        --res-conflicts) res_conflicts="$2"; shift 2 ;;
        --synapse) synapse=true; shift ;;
        --myelin) myelin_backends="$2"; shift 2 ;;
        --quick) quick=true; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
for backend in ${myelin_backends//,/ }; do
    case "$backend" in
        sqlite | postgres | none) ;;
        *) echo "unknown Myelin backend $backend" >&2; exit 2 ;;
    esac
done
if $quick; then
    messages=32 samples=20 senders=4 rooms=3 members=4 history=150 page=50 push_members=10 push_events=10
    fed_events=200 fed_members=200 res_members=200 res_conflicts=20
fi

synapse_venv=target/bench-synapse/venv
source bench/lib.sh
if $quick; then out="bench/results/quick-$stamp.jsonl"; else out="bench/results/$stamp.jsonl"; fi

cargo build --release --locked -p myelin -p myelin-bench
pki="$work/pki"
"$bench" --shared-secret "$secret" federation-pki --dir "$pki"

start_myelin() {
    local backend="$1" dir="$work/myelin-$1"
    if [ "$backend" = postgres ]; then fresh_database myelin; else database=""; fi
    myelin_config "$dir" "$database"
    MYELIN_FEDERATION_API__CA_FILE="$pki/ca.pem" MYELIN_FEDERATION_API__ALLOW_LOOPBACK_PEERS=true \
        spawn_myelin "$dir" server
    server_pid=$spawned
    federation_url="https://127.0.0.1:$federation_port"
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
    federation_port=$(free_port)
    federation_url="http://127.0.0.1:$federation_port"
    "$synapse_venv/bin/python" -m synapse.app.homeserver --server-name localhost \
        --config-path "$dir/homeserver.yaml" --data-directory "$dir" \
        --generate-config --report-stats=no >/dev/null
    # The generated configuration, adjusted for a benchmark on loopback.
    "$synapse_venv/bin/python" - "$dir" "$database" "$port" "$federation_port" "$secret" "$pg_admin" <<'PY'
import sys, urllib.parse, yaml
directory, database, port, federation_port, secret, admin = sys.argv[1:]
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
                   "resources": [{"names": ["client"], "compress": False}]},
                  # The fake remote server of the federation scenarios
                  # talks to this one; plain HTTP like the client listener.
                  {"port": int(federation_port), "bind_addresses": ["127.0.0.1"], "type": "http",
                   "tls": False, "x_forwarded": False,
                   "resources": [{"names": ["federation"], "compress": False}]}],
    "registration_shared_secret": secret,
    "report_stats": False,
    "enable_metrics": False,
    "trusted_key_servers": [],
    "suppress_key_server_warning": True,
    "ip_range_blacklist": [],
    "ip_range_blocklist": [],
    # The fake remote server's certificate comes from a CA made per run.
    "federation_verify_certificates": False,
    # Users are only created during setup; cheap hashing keeps setup short.
    "bcrypt_rounds": 4,
    "rc_message": unlimited(),
    "rc_registration": unlimited(),
    "rc_login": {"address": unlimited(), "account": unlimited(), "failed_attempts": unlimited()},
    "rc_joins": {"local": unlimited(), "remote": unlimited()},
    "rc_joins_per_room": unlimited(),
    "rc_invites": {"per_room": unlimited(), "per_user": unlimited(), "per_issuer": unlimited()},
    "rc_room_creation": unlimited(),
    # One origin sends every transaction of the federation ingest.
    "rc_federation": {"window_size": 1000, "sleep_limit": 100000, "sleep_delay": 0,
                      "reject_limit": 100000, "concurrent": 100000},
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
    scenario "$label" push --members "$push_members" --events "$push_events"
    scenario "$label" federation-ingest --federation-url "$federation_url" --tls-dir "$pki" --events "$fed_events"
    scenario "$label" remote-join --federation-url "$federation_url" --tls-dir "$pki" --members "$fed_members"
    scenario "$label" state-resolution --federation-url "$federation_url" --tls-dir "$pki" \
        --members "$res_members" --conflicts "$res_conflicts"
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
    --scales "messages=$messages samples=$samples senders=$senders rooms=$rooms members=$members history=$history page=$page push_members=$push_members push_events=$push_events fed_events=$fed_events fed_members=$fed_members res_members=$res_members res_conflicts=$res_conflicts" \
    >"$out"

for backend in ${myelin_backends//,/ }; do
    [ "$backend" = none ] && continue
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
