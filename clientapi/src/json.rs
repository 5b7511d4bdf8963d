//! Request extractors that fail as the spec wants: bodies come from
//! `myelin_types::json`; path and query failures are `400 M_INVALID_PARAM`.

use crate::error::ClientApiError;

pub use myelin_types::json::{MatrixJson, OptionalJson};

/// Path parameters, with failures as `400 M_INVALID_PARAM`.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ClientApiError))]
pub struct MatrixPath<T>(pub T);

/// Query parameters, with failures as `400 M_INVALID_PARAM`.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ClientApiError))]
pub struct MatrixQuery<T>(pub T);
