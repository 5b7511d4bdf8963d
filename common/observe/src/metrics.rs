//! The Prometheus registry (the crate's default one, which every component
//! registers into) and the operational endpoints.

use std::sync::Once;

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};
use serde_json::json;

static INIT: Once = Once::new();

/// Make sure the process collector (CPU, memory, open fds) is registered,
/// once per process. prometheus registers it into its default registry
/// itself when built with `process` on Linux; registering again only
/// confirms that, and covers builds where it did not.
/// Called by [`router`] and [`crate::metrics_layer`], so callers need not.
pub fn init_metrics() {
    INIT.call_once(|| {
        #[cfg(target_os = "linux")]
        {
            let collector = prometheus::process_collector::ProcessCollector::for_self();
            match prometheus::default_registry().register(Box::new(collector)) {
                Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
                Err(e) => tracing::warn!(error = %e, "process metrics unavailable"),
            }
        }
    });
}

/// `GET /metrics` (Prometheus text exposition) and `GET /health`.
pub fn router() -> Router {
    init_metrics();
    Router::new().route("/metrics", get(metrics)).route("/health", get(health))
}

/// GET /metrics: every metric of the default registry.
/// <https://prometheus.io/docs/instrumenting/exposition_formats/>
async fn metrics() -> Response {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(e) = encoder.encode(&prometheus::default_registry().gather(), &mut body) {
        tracing::error!(error = %e, "encoding metrics failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, encoder.format_type().to_owned())], body).into_response()
}

/// GET /health: the process is up and serving HTTP.
async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}
