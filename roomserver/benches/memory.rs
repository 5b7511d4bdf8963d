//! Resident memory of a 50,000-member room as the room server holds it to
//! resolve state (every event parsed, each fork's state map), read from
//! `VmRSS` and `VmHWM` in /proc/self/status: after building the room, and
//! at the peak of resolving two forks with 1,000 conflicting changes each.
//! Prints its numbers; run with `cargo bench -p myelin-roomserver --bench memory`.

mod common;

use myelin_roomserver::checks::resolve;
use ruma::RoomVersionId;

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    const MEMBERS: usize = 50_000;
    let before = status_kib("VmRSS");
    let (mut room, base) = common::BigRoom::new(RoomVersionId::V12, MEMBERS);
    let loaded = status_kib("VmRSS");
    let (first, second) = room.conflicting_forks(&base, 1_000);
    let resolved = resolve(&room.rules, &[first.state, second.state], &room.events).expect("forks resolve");
    assert_eq!(resolved.len(), base.state.len());
    let peak = status_kib("VmHWM");
    println!("room of {MEMBERS} members ({} events, v12):", room.events.len());
    println!("  resident before:             {:8.1} MiB", mib(before));
    println!("  resident with the room:      {:8.1} MiB (+{:.1} MiB)", mib(loaded), mib(loaded - before));
    println!("  peak after resolving forks:  {:8.1} MiB", mib(peak));
}
