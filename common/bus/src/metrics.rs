//! Bus telemetry. Labels are topic names, a fixed set per deployment;
//! per-process reply topics are folded into one `reply` label.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGaugeVec, register_int_counter_vec, register_int_gauge_vec};

static PRODUCED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("myelin_bus_records_produced_total", "Records appended, by topic", &["topic"])
        .expect("metric registers once")
});

static HANDLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("myelin_bus_records_handled_total", "Records handled by consumers, by topic", &["topic"])
        .expect("metric registers once")
});

static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "myelin_bus_handler_retries_total",
        "Transient handler failures retried, by topic",
        &["topic"]
    )
    .expect("metric registers once")
});

static POISON: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("myelin_bus_poison_records_total", "Records skipped as poison, by topic", &["topic"])
        .expect("metric registers once")
});

static EXPIRED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "myelin_bus_requests_expired_total",
        "Requests skipped past their deadline, by topic",
        &["topic"]
    )
    .expect("metric registers once")
});

#[cfg(feature = "kafka")]
static REDELIVERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "myelin_bus_records_redelivered_total",
        "Records handed to a consumer again after a rebalance rewound it, by topic",
        &["topic"]
    )
    .expect("metric registers once")
});

static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "myelin_bus_consumer_lag_records",
        "Records not yet consumed by this process's members of a group, by group and topic",
        &["group", "topic"]
    )
    .expect("metric registers once")
});

fn label(topic: &str) -> &str {
    if topic.starts_with(crate::reply::REPLY_TOPIC_PREFIX) { "reply" } else { topic }
}

pub(crate) fn produced(topic: &str) {
    produced_many(topic, 1);
}

pub(crate) fn produced_many(topic: &str, records: usize) {
    PRODUCED.with_label_values(&[label(topic)]).inc_by(records as u64);
}

pub(crate) fn handled(topic: &str) {
    handled_many(topic, 1);
}

pub(crate) fn handled_many(topic: &str, records: usize) {
    HANDLED.with_label_values(&[label(topic)]).inc_by(records as u64);
}

pub(crate) fn retried(topic: &str) {
    RETRIES.with_label_values(&[label(topic)]).inc();
}

pub(crate) fn poisoned(topic: &str) {
    POISON.with_label_values(&[label(topic)]).inc();
}

pub(crate) fn expired(topic: &str) {
    EXPIRED.with_label_values(&[label(topic)]).inc();
}

#[cfg(feature = "kafka")]
pub(crate) fn redelivered(topic: &str) {
    REDELIVERED.with_label_values(&[label(topic)]).inc();
}

/// Reply groups are named after their reply topics: folded the same way.
pub(crate) fn consumer_lag(group: &str, topic: &str, lag: i64) {
    LAG.with_label_values(&[label(group), label(topic)]).set(lag);
}
