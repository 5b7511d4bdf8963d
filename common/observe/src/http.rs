//! Per-request metrics and logs for axum routers.
//!
//! Labels come from the matched route template (`/rooms/{room_id}/send/…`),
//! never from the raw path, so they stay few; the log line carries the route
//! too, or for unmatched requests the path without its query string, because
//! clients may put `access_token=` in the query.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{Method, Request};
use axum::response::Response;
use prometheus::{HistogramVec, register_histogram_vec};
use tower::{Layer, Service};
use tracing::Instrument;

static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "myelin_http_request_duration_seconds",
        "HTTP request latency by method, matched route and status class",
        &["method", "route", "status"],
        // Long-polling /sync answers after up to 30 s or more.
        vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
    )
    .expect("metric registers once")
});

/// Times and logs every request. Apply with `Router::layer` so that
/// `MatchedPath` is known when the layer runs.
pub fn metrics_layer() -> MetricsLayer {
    crate::init_metrics();
    MetricsLayer
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for MetricsService<S>
where
    S: Service<Request<Body>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = method_label(request.method());
        let matched = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
        // `path()` excludes the query string.
        let target = matched.clone().unwrap_or_else(|| request.uri().path().to_owned());
        let route = matched.unwrap_or_else(|| "unmatched".to_owned());
        let span = tracing::info_span!("http", method, path = %target);
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(
            async move {
                let result = future.await;
                let elapsed = started.elapsed();
                if let Ok(response) = &result {
                    let status = response.status();
                    DURATION
                        .with_label_values(&[method, route.as_str(), status_class(status.as_u16())])
                        .observe(elapsed.as_secs_f64());
                    let ms = elapsed.as_secs_f64() * 1000.0;
                    if status.is_server_error() {
                        tracing::warn!(status = status.as_u16(), ms, "request failed");
                    } else {
                        tracing::info!(status = status.as_u16(), ms, "request");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

/// A fixed label set: arbitrary method strings must not create series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn call(app: &Router, uri: &str) -> (StatusCode, String) {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_status_class() {
        let app = Router::new()
            .route("/things/{id}", get(|| async { "thing" }))
            .merge(crate::router())
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(metrics_layer());
        assert_eq!(call(&app, "/things/1?access_token=secret").await.0, StatusCode::OK);
        assert_eq!(call(&app, "/things/2").await.0, StatusCode::OK);
        assert_eq!(call(&app, "/nowhere?access_token=secret").await.0, StatusCode::NOT_FOUND);

        let (status, metrics) = call(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let series = |route: &str, class: &str| {
            format!("myelin_http_request_duration_seconds_count{{method=\"GET\",route=\"{route}\",status=\"{class}\"}}")
        };
        assert!(metrics.contains(&format!("{} 2", series("/things/{id}", "2xx"))), "{metrics}");
        assert!(metrics.contains(&format!("{} 1", series("unmatched", "4xx"))), "{metrics}");
        assert!(!metrics.contains("secret"));
        #[cfg(target_os = "linux")]
        assert!(metrics.contains("process_resident_memory_bytes"), "process collector registered");
    }

    #[tokio::test]
    async fn health_says_ok() {
        let (status, body) = call(&crate::router(), "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap(), serde_json::json!({"status": "ok"}));
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(502), "5xx");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
