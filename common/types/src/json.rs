//! Request bodies as the spec wants them rejected: unparsable JSON is
//! `400 M_NOT_JSON`, JSON of the wrong shape is `400 M_BAD_JSON` (never
//! axum's plain-text rejections). Every component's handlers use these.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::{ErrorCode, MatrixError};

/// A JSON request body of shape `T`.
pub struct MatrixJson<T>(pub T);

/// Like [`MatrixJson`], but an empty body counts as `{}` (endpoints whose
/// body is optional, such as `/join`).
pub struct OptionalJson<T>(pub T);

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, MatrixError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            MatrixError::too_large("Request body too large")
        } else {
            MatrixError::new(ErrorCode::NotJson, "Could not read the request body")
        }
    })
}

/// Parse `bytes` as JSON (`M_NOT_JSON`), then as `T` (`M_BAD_JSON`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MatrixError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| MatrixError::new(ErrorCode::NotJson, "Content not JSON"))?;
    serde_json::from_value(value).map_err(|e| MatrixError::bad_json(format!("Invalid request body: {e}")))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MatrixJson<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        Ok(Self(parse(&bytes)?))
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(parse(b"{}")?));
        }
        Ok(Self(parse(&bytes)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsable_is_not_json_and_wrong_shape_is_bad_json() {
        #[derive(Debug, serde::Deserialize)]
        struct Body {
            #[allow(dead_code)]
            n: u32,
        }
        assert_eq!(parse::<Body>(b"{nope").unwrap_err().errcode, ErrorCode::NotJson);
        assert_eq!(parse::<Body>(br#"{"n":"x"}"#).unwrap_err().errcode, ErrorCode::BadJson);
        assert!(parse::<Body>(br#"{"n":1}"#).is_ok());
    }
}
