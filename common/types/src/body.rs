//! Reading a request's whole body before it is routed.
//!
//! A handler or extractor that refuses a request before reading its body
//! (a missing token, an unknown path, a wrong method) leaves unread bytes on
//! the connection; hyper then closes it, the kernel answers the unread bytes
//! with a reset, and the client can lose the response it was sent. Reading
//! the body first (it is bounded, and JSON handlers read it all anyway)
//! keeps the connection clean.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::MatrixError;

/// Middleware (`axum::middleware::from_fn_with_state(limit, read_body_first)`)
/// that buffers a body of at most `limit` bytes; a larger one is refused
/// with 413 `M_TOO_LARGE`.
pub async fn read_body_first(
    axum::extract::State(limit): axum::extract::State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match to_bytes(body, limit).await {
        Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(_) => MatrixError::too_large("The request body is too large").into_response(),
    }
}
