//! Pusher telemetry.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, register_int_counter, register_int_counter_vec};

static NOTIFICATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("myelin_pusher_notifications_total", "Notifications recorded for users")
        .expect("metric registers once")
});

static DELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "myelin_pusher_gateway_requests_total",
        "Push gateway requests, by outcome (delivered, retried, gave_up, dropped)",
        &["outcome"]
    )
    .expect("metric registers once")
});

static REJECTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!("myelin_pusher_rejected_pushkeys_total", "Pushers removed because a gateway rejected them")
        .expect("metric registers once")
});

pub fn notifications(n: usize) {
    NOTIFICATIONS.inc_by(n as u64);
}

pub fn delivery(outcome: &str) {
    DELIVERIES.with_label_values(&[outcome]).inc();
}

pub fn rejected() {
    REJECTED.inc();
}
