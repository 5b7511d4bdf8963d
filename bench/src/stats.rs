//! Measurement helpers: latency histograms, error tallies and the figures
//! the report turns into table rows.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A histogram of microseconds with three significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("three significant figures is a valid histogram")
}

pub fn record(histogram: &mut Histogram<u64>, elapsed: std::time::Duration) {
    let micros = elapsed.as_micros() as u64;
    // The histogram grows to fit; should it ever fail to, the sample is
    // kept at the largest value it can hold rather than dropped.
    if histogram.record(micros).is_err() {
        histogram.saturating_record(micros);
    }
}

/// Percentiles in milliseconds.
pub fn percentiles(histogram: &Histogram<u64>) -> Value {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "count": histogram.len(),
        "p50": ms(0.50), "p99": ms(0.99), "p999": ms(0.999),
        "max": histogram.max() as f64 / 1000.0,
    })
}

/// One headline number of a scenario: a row of the report's table.
pub fn figure(name: &str, value: f64, higher_is_better: bool) -> Value {
    json!({"name": name, "value": value, "better": if higher_is_better { "higher" } else { "lower" }})
}

/// Failed requests during a measurement: counted and a few kept verbatim.
#[derive(Default)]
pub struct Errors {
    count: u64,
    samples: Vec<String>,
}

impl Errors {
    pub fn record(&mut self, error: &anyhow::Error) {
        self.note(format!("{error:#}"));
    }

    /// Counts a failure that is not a request error (a short result).
    pub fn note(&mut self, message: String) {
        self.count += 1;
        if self.samples.len() < 5 {
            self.samples.push(message);
        }
    }

    pub fn merge(&mut self, other: Errors) {
        self.count += other.count;
        for sample in other.samples {
            if self.samples.len() < 5 {
                self.samples.push(sample);
            }
        }
    }

    /// Adds `errors` and `error_samples` to a scenario's result.
    pub fn report_into(&self, result: &mut Value, prefix: &str) {
        result[format!("{prefix}errors")] = json!(self.count);
        result[format!("{prefix}error_samples")] = json!(self.samples);
    }
}
