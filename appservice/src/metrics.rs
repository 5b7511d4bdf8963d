//! Application service telemetry. Labels carry registration ids, which the
//! operator's configuration bounds.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, register_int_counter_vec};

static QUEUED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "myelin_appservice_events_queued_total",
        "Room events queued for an application service",
        &["service"]
    )
    .expect("metric registers once")
});

static TRANSACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "myelin_appservice_transactions_total",
        "Transactions sent to application services, by outcome (delivered, failed)",
        &["service", "outcome"]
    )
    .expect("metric registers once")
});

/// An event was queued for `service`.
pub fn queued(service: &str) {
    QUEUED.with_label_values(&[service]).inc();
}

/// A transaction to `service` ended with `outcome`.
pub fn transaction(service: &str, outcome: &str) {
    TRANSACTIONS.with_label_values(&[service, outcome]).inc();
}
