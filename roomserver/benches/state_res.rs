//! State resolution through the room server's entry point
//! (`checks::resolve`, what the input pipeline calls once the events are
//! loaded): two forks of a 10,000-member room with 1,000 conflicting state
//! changes each, in room versions 11 and 12 (whose conflicted subgraph
//! differs). Target: at most 50 ms.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use myelin_roomserver::checks::resolve;
use ruma::RoomVersionId;

fn state_resolution(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_resolution_10k_members_2x1k_conflicts");
    group.sample_size(20).measurement_time(Duration::from_secs(10));
    for version in [RoomVersionId::V11, RoomVersionId::V12] {
        let (mut room, base) = common::BigRoom::new(version.clone(), 10_000);
        let (first, second) = room.conflicting_forks(&base, 1_000);
        let states = [first.state, second.state];
        let resolved = resolve(&room.rules, &states, &room.events).expect("forks resolve");
        assert_eq!(resolved.len(), base.state.len(), "every key survives resolution");
        group.bench_function(format!("v{version}"), |b| {
            b.iter(|| resolve(&room.rules, black_box(&states), &room.events).expect("forks resolve"))
        });
    }
    group.finish();
}

criterion_group!(benches, state_resolution);
criterion_main!(benches);
