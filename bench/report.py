#!/usr/bin/env python3
"""Turns a results file of bench/run.sh into tables and PERFORMANCE.md.

    report.py meta [--synapse-version V] [--quick B] [--scales S] [--suite all|shapes]
                                                                   one JSON line: machine and versions
    report.py table RESULTS.jsonl                                  the Markdown table
    report.py markdown RESULTS.jsonl > PERFORMANCE.md              the whole document
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

# Measurements the suite has no scenario for yet.
NOT_MEASURED = []

LABELS = {
    "myelin-sqlite": "Myelin (SQLite)",
    "myelin-postgres": "Myelin (PostgreSQL)",
    "myelin-distributed-1": "Myelin (Kafka, 1 room server)",
    "myelin-distributed-2": "Myelin (Kafka, 2 room servers)",
    "synapse-postgres": "Synapse (PostgreSQL)",
}


def run(*command):
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine():
    cpu = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                ram_kib = int(line.split()[1])
    os_name = platform.system()
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as release:
            for line in release:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(ram_kib / 1024 / 1024, 1),
        "cpu": cpu,
        "os": os_name,
        "kernel": platform.release(),
    }


def meta(args):
    commit = run("git", "rev-parse", "HEAD")
    if run("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    admin = os.environ.get("MYELIN_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
    print(json.dumps({
        "scenario": "meta",
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "myelin_commit": commit,
        "rustc": run("rustc", "--version"),
        "synapse_version": args.synapse_version,
        "postgres_version": run("psql", admin, "-tAc", "SHOW server_version"),
        "python": platform.python_version(),
        "quick": args.quick == "true",
        "suite": args.suite,
        "scales": dict(item.split("=", 1) for item in args.scales.split()),
        "conditions": os.environ.get("BENCH_CONDITIONS", ""),
    }))


def load(path):
    with open(path) as results:
        return [json.loads(line) for line in results if line.strip()]


def number(value):
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows):
    """Scenario rows by server, and how many times better Myelin is than Synapse."""
    labels = []
    for row in rows:
        if row["scenario"] != "meta" and row["label"] not in labels:
            labels.append(row["label"])
    # Known servers in a fixed order (Myelin first, Synapse last), others after.
    labels.sort(key=lambda label: list(LABELS).index(label) if label in LABELS else len(LABELS))
    myelins = [label for label in labels if label.startswith("myelin")]
    synapse = next((label for label in labels if label.startswith("synapse")), None)
    ratios = [(m, synapse) for m in myelins] if synapse else []

    cells = {}  # (case, figure) -> label -> (value, better, errors)
    order = []
    failures = []
    for row in rows:
        if row["scenario"] == "meta":
            continue
        if row["scenario"] == "failed":
            failures.append(row)
            continue
        for figure in row["figures"]:
            key = (row["case"], figure["name"])
            if key not in cells:
                cells[key] = {}
                order.append(key)
            cells[key][row["label"]] = (figure["value"], figure["better"], row.get("errors", 0))

    header = ["scenario", "figure"] + [LABELS.get(label, label) for label in labels]
    header += [f"{LABELS.get(m, m).split(' ', 1)[1].strip('()')} vs Synapse" for m, _ in ratios]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * 2 + " ---: |" * (len(header) - 2)]
    for case, name in order:
        by_label = cells[(case, name)]
        line = [case, name]
        for label in labels:
            if label not in by_label:
                # A scenario that failed outright has no figures; its arguments are listed below.
                line.append("failed" if any(f["label"] == label for f in failures) else "–")
                continue
            value, _, errors = by_label[label]
            line.append(number(value) + (f" ({errors} errors)" if errors else ""))
        for m, s in ratios:
            if m in by_label and s in by_label and by_label[m][0] and by_label[s][0]:
                (mine, better, _), (theirs, _, _) = by_label[m], by_label[s]
                ratio = mine / theirs if better == "higher" else theirs / mine
                line.append(f"{ratio:.1f}×")
            else:
                line.append("–")
        lines.append("| " + " | ".join(line) + " |")
    info = next((row for row in rows if row["scenario"] == "meta"), {})
    for case in NOT_MEASURED if info.get("suite", "all") == "all" else []:
        lines.append("| " + " | ".join([case, "not measured yet"] + ["–"] * (len(header) - 2)) + " |")
    text = "\n".join(lines) + "\n"
    if ratios:
        text += "\nA ratio is how many times better Myelin's figure is than Synapse's (above 1: Myelin is better).\n"
    for failure in failures:
        lines_of_error = failure["error"].strip().splitlines()
        # anyhow prints `Error: …` first and a backtrace after it.
        error = next((line for line in lines_of_error if line.startswith("Error:")), lines_of_error[-1] if lines_of_error else "no output")
        text += f"\nFailed on {failure['label']}: `{failure['case']}`: {error}\n"
    errored = [row for row in rows if row.get("errors") or row.get("load_errors")]
    for row in errored:
        text += (f"\n{row['label']}, {row['case']}: {row.get('errors', 0)} failed requests, "
                 f"{row.get('load_errors', 0)} failed load requests; first: "
                 f"{(row.get('error_samples') or row.get('load_error_samples') or [''])[0]}\n")
    return text


def markdown(rows):
    info = next((row for row in rows if row["scenario"] == "meta"), {})
    m = info.get("machine", {})
    s = info.get("scales", {})
    synapse = info.get("synapse_version") or "not run"
    measured = sorted({row["label"] for row in rows if row["scenario"] not in ("meta", "failed")},
                      key=lambda label: list(LABELS).index(label) if label in LABELS else len(LABELS))
    servers = " and ".join(f"a fresh {LABELS.get(label, label)}" for label in measured)
    return f"""# Performance

Measured by `bench/run.sh{'' if synapse == 'not run' else ' --synapse'}` on {info.get('started', '?')}:
every scenario ran against {servers}, one after the other, on the same
machine. Regenerate this file with `bench/run.sh --synapse`; the raw
results are in `bench/results/`, one JSON object per scenario.

## Results

{table(rows)}
## Machine

- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores; RAM: {m.get('ram_gib', '?')} GiB
- OS: {m.get('os', '?')} (kernel {m.get('kernel', '?')})
- Myelin: commit {info.get('myelin_commit', '?')}, release build, {info.get('rustc', '?')}
- Synapse: {synapse} (from PyPI, Python {info.get('python', '?')})
- PostgreSQL: {info.get('postgres_version') or '?'}, on the same machine
{f"- Conditions: {info['conditions']}" + chr(10) if info.get('conditions') else ''}
The load generator (`myelin-bench`) runs on the same machine and competes
with the server for its cores, the same way for every server.

## Method

Each server starts fresh with an empty database. Users are registered with
the shared-secret admin API (`/_synapse/admin/v1/register`), which both
servers serve. Every scenario first sets up its own users and rooms
(requests during setup run 8 at a time), then runs an unmeasured warm-up,
and only then starts its clock. Requests that fail during a measurement are counted and
shown next to the figure; a scenario that fails outright is listed as failed.
Latencies are recorded in HDR histograms (three significant figures).

- **send**: each sender sends messages one request at a time (the next
  after the previous reply), with PUT `/rooms/{{id}}/send/m.room.message/{{txn}}`.
  1 sender; {s.get('senders', '?')} senders each in their own room;
  {s.get('senders', '?')} senders in one shared room. {s.get('messages', '?')}
  messages per scenario, split evenly across its senders, after 5 warm-up
  messages per sender. The figure is successful messages per second from
  the first measured request to the last reply.
- **send-to-sync latency**: a receiver long-polls `/sync` (timeout 30 s) in
  a room; 20 ms after the poll is issued a second user sends a message
  there. A sample is the time from the start of the send request to the
  `/sync` response that carries the message. {s.get('samples', '?')} samples after 10
  warm-up ones, once on an otherwise idle server and once while
  {s.get('senders', '?')} other senders send continuously, each into its own room.
- **initial /sync**: one user creates {s.get('rooms', '?')} public rooms and
  other users join every one of them, so that each room has
  {s.get('members', '?')} members. The user then runs an initial `/sync`
  with the filter `{{"room":{{"state":{{"lazy_load_members":true}},"timeline":{{"limit":10}}}}}}`:
  one unmeasured, then 5 measured; the figure is their median. The issue
  asks for 300 rooms x 300 members; run `bench/run.sh --rooms 300
  --members 300` for that scale (90,000 joins of setup).
- **/messages**: one user sends {s.get('history', '?')} messages into a room
  (8 at a time), pages back through the whole room with
  `/messages?dir=b&limit={s.get('page', '?')}` once unmeasured, then once measured.
  Figures: events per second over the whole pass, and per-page latency.
- **push**: one user creates a public room, {s.get('push_members', '?')} members
  in all join it and every other member sets one http pusher at a push
  gateway sink the load generator serves on loopback (it counts POSTs to
  `/_matrix/push/v1/notify` and answers 200). After one unmeasured message
  has reached every pusher, the first member sends {s.get('push_events', '?')}
  messages one request at a time; the clock runs until the sink has
  received a notification of every message for every other member.
  Figures: messages per second through rule evaluation and delivery, and
  notifications delivered per second.
- **federation ingest**: the load generator plays a remote homeserver
  (server name `127.0.0.1:<port>`, an ed25519 key served at
  `/_matrix/key/v2/server` over HTTPS). It creates a version 10 public room
  on its side; a user of the server under test joins it through
  `/make_join` and `/send_join`. After 50 unmeasured events (waited for),
  it sends {s.get('fed_events', '?')} messages, each on top of the one before,
  signed and hashed, in X-Matrix-signed `PUT /_matrix/federation/v1/send/{{txn}}`
  transactions of 50 PDUs, one transaction at a time. Figures: events per
  second from the first measured transaction to the last event arriving
  in the joined user's long-polling `/sync`, and the per-transaction round
  trip (p50, p99). The round trips do not compare like for like: Synapse
  checks signatures, stages the PDUs and answers before processing them,
  whereas Myelin answers once they are processed; events per second is the
  comparable figure.
- **remote join**: the fake remote server holds a public room of
  {s.get('fed_members', '?')} of its own users; a user of the server under test
  joins it with `POST /join/{{roomId}}?server_name=…` (after an unmeasured
  join of a small room of the same server). The `/send_join` answer carries
  the room's full state (members are not omitted). Figures: the `/join`
  request's duration, and the time from sending it to the room appearing in
  the user's `/sync`.
- **state resolution**: the fake remote server holds a public room of
  {s.get('res_members', '?')} of its own users, which a user of the server
  under test joins. The fake then sends two forks off the room's newest
  event, each of {s.get('res_conflicts', '?')} member events in which the same
  members change their display names, so that every change conflicts with
  its twin on the other fork; both forks are sent (50 PDUs per transaction)
  and awaited in `/sync` before the clock starts. Then one message whose
  `prev_events` are both forks' newest events arrives in a transaction of
  its own: to take it in, the server must resolve the two forks' states.
  Figures: that transaction's round trip, and the time from sending it to
  the message appearing in the user's `/sync`. As in the ingest, Synapse
  answers the transaction before it processes the PDU, so only the second
  figure compares like for like. The criterion benchmark
  `cargo bench -p myelin-roomserver --bench state_res` measures Myelin's
  resolution alone, without storage or HTTP.
- **resident memory**: VmRSS of the server process from `/proc/<pid>/status`
  two seconds after it answers `/_matrix/client/versions` (idle), VmRSS after
  the whole suite, and VmHWM (peak). Synapse runs as one process (no
  workers), so its figure is that process.

Client: `myelin-bench` (Rust, tokio, reqwest over HTTP/1.1 with keep-alive,
no compression), on the same machine, talking to the servers over loopback.

Servers: Myelin with the configuration `myelin generate-config` writes, logs
at `warn`. Synapse with the configuration `--generate-config` writes, changed
for a loopback benchmark: PostgreSQL (psycopg2, pool of 5–10 connections),
one plain HTTP client listener and one plain HTTP federation listener,
every `rc_*` rate limit (`rc_federation` too) raised out of reach,
`ip_range_blacklist: []`, `trusted_key_servers: []`,
`federation_verify_certificates: false`, `report_stats: false`,
logs at WARNING to a file, `bcrypt_rounds: 4` (users are registered only
during setup), and `caches.sync_response_cache_duration: 0` so that repeated
identical initial syncs are computed rather than replayed from a cache. Its
other caches keep their defaults.

For the federation scenarios Myelin trusts the per-run CA of the fake
remote server (`federation_api.ca_file`) and may reach loopback peers
(`federation_api.allow_loopback_peers`).
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    meta_parser = commands.add_parser("meta")
    meta_parser.add_argument("--synapse-version", default="")
    meta_parser.add_argument("--quick", default="false")
    meta_parser.add_argument("--scales", default="")
    # `all` (bench/run.sh) or `shapes` (bench/distributed.sh).
    meta_parser.add_argument("--suite", default="all")
    for name in ("table", "markdown"):
        commands.add_parser(name).add_argument("results")
    args = parser.parse_args()
    if args.command == "meta":
        meta(args)
    elif args.command == "table":
        sys.stdout.write(table(load(args.results)))
    else:
        sys.stdout.write(markdown(load(args.results)))


if __name__ == "__main__":
    main()
