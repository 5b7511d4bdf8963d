//! The client listener: the components' routers merged with `/metrics` and
//! `/health`, wrapped in what every client endpoint shares.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use myelin_bus::Shutdown;
use myelin_types::MatrixError;
use myelin_types::body::read_body_first;
use tokio::task::JoinHandle;
use tower_http::cors::CorsLayer;
use tower_http::limit::RequestBodyLimitLayer;

/// Largest request body accepted by the JSON endpoints; media uploads
/// carry their own, configured limit.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Merge `parts` (each limited to [`BODY_LIMIT`]) and `own_limits` (routers
/// that limit their bodies themselves, such as media uploads) with the
/// operational routes and add, outermost first: metrics and request logs
/// (route only, never the query string, which may hold an access token),
/// permissive CORS (the spec asks for it so browser clients work), and
/// Matrix JSON for bare 405/413 answers.
pub fn client_router(parts: impl IntoIterator<Item = Router>, own_limits: impl IntoIterator<Item = Router>) -> Router {
    let mut router = myelin_observe::router();
    for part in parts {
        router = router.merge(
            part.layer(axum::middleware::from_fn_with_state(BODY_LIMIT, read_body_first))
                .layer(DefaultBodyLimit::max(BODY_LIMIT))
                .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        );
    }
    for part in own_limits {
        router = router.merge(part);
    }
    router
        // After the merges: it applies to the routes registered so far.
        // The fallbacks read the body too (see `read_body_first`).
        .method_not_allowed_fallback(|_: Bytes| async {
            MatrixError::unrecognized().with_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .fallback(|_: Bytes| async { MatrixError::unrecognized() })
        .layer(axum::middleware::map_response(matrix_error_bodies))
        .layer(CorsLayer::permissive())
        .layer(myelin_observe::metrics_layer())
}

/// Layers and extractors outside the components answer 405 and 413 with an
/// empty or plain-text body; clients expect a Matrix error. Responses that
/// already carry JSON (a component's own `MatrixError`) pass unchanged.
async fn matrix_error_bodies(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let replacement = match status {
        StatusCode::PAYLOAD_TOO_LARGE => MatrixError::too_large("Request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => MatrixError::unrecognized().with_status(StatusCode::METHOD_NOT_ALLOWED),
        _ => return response,
    };
    let (mut parts, _) = response.into_parts();
    let mut fresh = replacement.into_response();
    // Keep headers such as `Allow`, but describe the new body.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    for (name, value) in &parts.headers {
        fresh.headers_mut().insert(name, value.clone());
    }
    fresh
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Bind `addr` (port 0 picks one) and serve `router` until `shutdown`; open
/// connections get to finish their request. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    mut shutdown: Shutdown,
) -> Result<(SocketAddr, JoinHandle<()>), BindError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| BindError { addr, source })?;
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.wait().await }).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "client listener failed");
        }
        tracing::info!("client listener stopped");
    });
    Ok((local_addr, task))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use axum::routing::{get, post};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        let part = Router::new()
            .route("/_matrix/client/versions", get(|| async { axum::Json(serde_json::json!({"versions": []})) }))
            .route("/echo", post(|body: axum::body::Bytes| async move { body.len().to_string() }));
        let upload = Router::new()
            .route("/upload", post(|body: axum::body::Bytes| async move { body.len().to_string() }))
            .layer(DefaultBodyLimit::max(4 * BODY_LIMIT));
        client_router([part], [upload])
    }

    #[tokio::test]
    async fn routers_with_their_own_limit_keep_it() {
        let big = vec![b'x'; 2 * BODY_LIMIT];
        let (status, _, body) = send(Request::post("/upload").body(Body::from(big)).unwrap()).await;
        assert_eq!((status, body), (StatusCode::OK, Value::from(2 * BODY_LIMIT)));
        let too_big = vec![b'x'; 4 * BODY_LIMIT + 1];
        let (status, _, body) = send(Request::post("/upload").body(Body::from(too_big)).unwrap()).await;
        assert_eq!((status, body["errcode"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE")));
    }

    async fn send(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let response = app().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn unknown_paths_are_unrecognized_json() {
        let (status, _, body) = send(Request::get("/_matrix/client/v3/nope").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    }

    #[tokio::test]
    async fn wrong_methods_are_unrecognized_json() {
        let request = Request::delete("/_matrix/client/versions").body(Body::empty()).unwrap();
        let (status, _, body) = send(request).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["errcode"], "M_UNRECOGNIZED");
    }

    #[tokio::test]
    async fn oversized_bodies_are_too_large_json() {
        let big = vec![b'x'; BODY_LIMIT + 1];
        let request = Request::post("/echo").header(header::CONTENT_LENGTH, big.len()).body(Body::from(big)).unwrap();
        let (status, headers, body) = send(request).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["errcode"], "M_TOO_LARGE");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");

        // Without a Content-Length the limit applies while streaming.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![b'x'; BODY_LIMIT]), Ok(vec![b'x'; 10])];
        let stream = Body::from_stream(futures_stream(chunks));
        let (status, _, body) = send(Request::post("/echo").body(stream).unwrap()).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["errcode"], "M_TOO_LARGE");

        let (status, _, _) = send(Request::post("/echo").body(Body::from(vec![b'x'; 1000])).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
    }

    fn futures_stream(
        chunks: Vec<Result<Vec<u8>, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
        futures::stream::iter(chunks)
    }

    /// A body that records whether it was read to its end.
    fn watched_body() -> (Body, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let chunks = futures::StreamExt::chain(
            futures::stream::iter([Ok::<_, std::io::Error>(vec![b'x'; 100])]),
            futures::stream::poll_fn(move |_| {
                flag.store(true, Ordering::SeqCst);
                std::task::Poll::Ready(None)
            }),
        );
        (Body::from_stream(chunks), done)
    }

    #[tokio::test]
    async fn bodies_are_read_even_when_the_request_is_refused_unread() {
        // An unknown path, a wrong method, and a handler that never reads.
        let refuse = Router::new().route("/refuse", post(|| async { StatusCode::UNAUTHORIZED }));
        let app = client_router([refuse], []);
        for (method, path) in [(Method::POST, "/nope"), (Method::PATCH, "/refuse"), (Method::POST, "/refuse")] {
            let (body, done) = watched_body();
            let request = Request::builder().method(method.clone()).uri(path).body(body).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert!(response.status().is_client_error(), "{method} {path}");
            assert!(done.load(std::sync::atomic::Ordering::SeqCst), "{method} {path}: body left unread");
        }
    }

    #[tokio::test]
    async fn cors_preflight_is_answered_for_browsers() {
        let request = Request::builder()
            .method(Method::OPTIONS)
            .uri("/_matrix/client/versions")
            .header(header::ORIGIN, "https://app.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send(request).await;
        assert!(status.is_success(), "{status}");
        assert!(headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(headers.contains_key(header::ACCESS_CONTROL_ALLOW_HEADERS));

        let request = Request::get("/_matrix/client/versions").header(header::ORIGIN, "https://app.example");
        let (status, headers, _) = send(request.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    #[tokio::test]
    async fn health_and_metrics_are_served() {
        let (status, _, body) = send(Request::get("/health").body(Body::empty()).unwrap()).await;
        assert_eq!((status, body), (StatusCode::OK, serde_json::json!({"status": "ok"})));
        let response = app().oneshot(Request::get("/metrics").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn serve_binds_port_zero_and_stops_on_shutdown() {
        let (trigger, shutdown) = Shutdown::new();
        let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), app(), shutdown).await.unwrap();
        assert_ne!(addr.port(), 0);
        let body: Value =
            reqwest::get(format!("http://{addr}/_matrix/client/versions")).await.unwrap().json().await.unwrap();
        assert_eq!(body["versions"], serde_json::json!([]));
        trigger.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(10), task).await.unwrap().unwrap();
    }
}
