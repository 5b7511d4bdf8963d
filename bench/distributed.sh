#!/usr/bin/env bash
# Send throughput of the deployment shapes on this machine, in one run:
# `senders` users each sending into their own room (64 and 64 by default),
# against
#   - the monolith on the embedded bus, with SQLite and with PostgreSQL;
#   - the distributed shape over Kafka and PostgreSQL: the client API, sync
#     API, pusher and federation API each in its own process, with one and
#     then two room server processes sharing the rooms.
# The broker is a tansu with in-memory storage (scripts/install-test-deps.sh
# installs it) unless MYELIN_BENCH_KAFKA names bootstrap servers. Results go
# to bench/results/distributed-<stamp>.jsonl and a Markdown table is printed.
#
#   bench/distributed.sh [--senders N] [--messages N] [--partitions N]
#
#   --messages N    messages per sender (measured), default 50
#   --partitions N  partitions per topic on Kafka, default 16
set -euo pipefail
cd "$(dirname "$0")/.."

senders=64
messages=50
partitions=16
while [ $# -gt 0 ]; do
    case "$1" in
        --senders) senders="$2"; shift 2 ;;
        --messages) messages="$2"; shift 2 ;;
        --partitions) partitions="$2"; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

source bench/lib.sh
out="bench/results/distributed-$stamp.jsonl"

cargo build --release --locked -p myelin -p myelin-bench --features myelin/kafka

# A fresh broker per distributed run, so no run reads another's topics.
start_broker() {
    if [ -n "${MYELIN_BENCH_KAFKA:-}" ]; then brokers="$MYELIN_BENCH_KAFKA"; return; fi
    local broker_port
    broker_port=$(free_port)
    tansu broker --listener-url "tcp://127.0.0.1:$broker_port" \
        --advertised-listener-url "tcp://127.0.0.1:$broker_port" \
        --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
    other_pids+=($!)
    brokers="127.0.0.1:$broker_port"
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$broker_port") 2>/dev/null && return 0
        sleep 0.1
    done
    log "tansu did not listen on $brokers"
    exit 1
}

start_monolith() {
    local backend="$1" dir="$work/monolith-$1"
    if [ "$backend" = postgres ]; then fresh_database monolith; else database=""; fi
    myelin_config "$dir" "$database"
    spawn_myelin "$dir" server
    server_pid=$spawned
    wait_for_server "http://127.0.0.1:$port" "$dir/server.log"
}

# One process per component, each ready before the next; the client API's
# port is left in $port for the scenario.
start_distributed() {
    local room_servers="$1" dir="$work/distributed-$1" component n client_port
    fresh_database "distributed_$room_servers"
    start_broker
    myelin_config "$dir" "$database"
    client_port=$port
    local components=()
    for n in $(seq 1 "$room_servers"); do components+=(roomserver); done
    components+=(syncapi pusher federationapi clientapi)
    n=0
    for component in "${components[@]}"; do
        n=$((n + 1))
        if [ "$component" = clientapi ]; then port=$client_port; else port=$(free_port); fi
        MYELIN_GLOBAL__BUS=kafka MYELIN_GLOBAL__KAFKA_BROKERS="$brokers" \
        MYELIN_GLOBAL__BUS_PARTITIONS="$partitions" \
            spawn_myelin "$dir" "$n-$component" --components "$component"
        other_pids+=("$spawned")
        wait_for "http://127.0.0.1:$port/health" "$spawned" "$dir/$n-$component.log"
    done
    port=$client_port
}

python3 bench/report.py meta --quick false --suite shapes \
    --scales "senders=$senders messages_per_sender=$messages partitions=$partitions" >"$out"

run_send() { scenario "$1" send --senders "$senders" --messages "$messages"; }

for backend in sqlite postgres; do
    start_monolith "$backend"
    run_send "myelin-$backend"
    stop_server
done
for room_servers in 1 2; do
    start_distributed "$room_servers"
    run_send "myelin-distributed-$room_servers"
    stop_server
done

log "results: $out"
python3 bench/report.py table "$out"
