//! Observability shared by every component: logging setup, the Prometheus
//! registry with `/metrics` and `/health`, and the HTTP layer that times and
//! logs each request without ever logging a query string (access tokens
//! travel there; DESIGN.md invariant 10).

mod http;
mod logging;
mod metrics;

pub use http::{MetricsLayer, MetricsService, metrics_layer};
pub use logging::{LoggingError, init_logging};
pub use metrics::{init_metrics, router};
