//! Matrix errors and their mapping to HTTP: the one place where an error
//! becomes `{"errcode":"M_…","error":"…"}` with a status code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The spec's error codes that Myelin emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    #[serde(rename = "M_FORBIDDEN")]
    Forbidden,
    #[serde(rename = "M_UNKNOWN_TOKEN")]
    UnknownToken,
    #[serde(rename = "M_MISSING_TOKEN")]
    MissingToken,
    /// Federation requests without valid X-Matrix authentication.
    #[serde(rename = "M_UNAUTHORIZED")]
    Unauthorized,
    #[serde(rename = "M_BAD_JSON")]
    BadJson,
    #[serde(rename = "M_NOT_JSON")]
    NotJson,
    #[serde(rename = "M_NOT_FOUND")]
    NotFound,
    #[serde(rename = "M_LIMIT_EXCEEDED")]
    LimitExceeded,
    #[serde(rename = "M_UNRECOGNIZED")]
    Unrecognized,
    #[serde(rename = "M_UNKNOWN")]
    Unknown,
    #[serde(rename = "M_USER_IN_USE")]
    UserInUse,
    #[serde(rename = "M_INVALID_USERNAME")]
    InvalidUsername,
    #[serde(rename = "M_INVALID_PARAM")]
    InvalidParam,
    #[serde(rename = "M_MISSING_PARAM")]
    MissingParam,
    #[serde(rename = "M_TOO_LARGE")]
    TooLarge,
    #[serde(rename = "M_UNSUPPORTED_ROOM_VERSION")]
    UnsupportedRoomVersion,
    /// Federation: the room's version is not one the joining server speaks.
    #[serde(rename = "M_INCOMPATIBLE_ROOM_VERSION")]
    IncompatibleRoomVersion,
    /// Federation: a restricted room's resident server knows none of the
    /// rooms whose membership would let the user in.
    #[serde(rename = "M_UNABLE_TO_AUTHORISE_JOIN")]
    UnableToAuthoriseJoin,
    /// Federation: the user may join a restricted room, but no user of the
    /// resident server can authorise it; another server should be tried.
    #[serde(rename = "M_UNABLE_TO_GRANT_JOIN")]
    UnableToGrantJoin,
    #[serde(rename = "M_ROOM_IN_USE")]
    RoomInUse,
    #[serde(rename = "M_BAD_STATE")]
    BadState,
    #[serde(rename = "M_USER_DEACTIVATED")]
    UserDeactivated,
    #[serde(rename = "M_INVALID_ROOM_STATE")]
    InvalidRoomState,
    #[serde(rename = "M_BAD_ALIAS")]
    BadAlias,
    #[serde(rename = "M_THREEPID_DENIED")]
    ThreepidDenied,
    #[serde(rename = "M_WRONG_ROOM_KEYS_VERSION")]
    WrongRoomKeysVersion,
    /// A guest account called an endpoint the spec does not open to guests.
    #[serde(rename = "M_GUEST_ACCESS_FORBIDDEN")]
    GuestAccessForbidden,
    /// Sliding sync: the `pos` names no connection state the server keeps
    /// (unknown, or expired); the client starts the connection again.
    #[serde(rename = "M_UNKNOWN_POS")]
    UnknownPos,
    /// A profile field's value would make the whole profile exceed 64 KiB.
    #[serde(rename = "M_PROFILE_TOO_LARGE")]
    ProfileTooLarge,
    /// A profile field's name is longer than 255 bytes.
    #[serde(rename = "M_KEY_TOO_LARGE")]
    KeyTooLarge,
    /// An upload to an `mxc://` URI (from `POST /media/v1/create`) that
    /// already has content.
    #[serde(rename = "M_CANNOT_OVERWRITE_MEDIA")]
    CannotOverwriteMedia,
    /// A download of an `mxc://` URI whose content has not been uploaded
    /// yet, after waiting the client's `timeout_ms`.
    #[serde(rename = "M_NOT_YET_UPLOADED")]
    NotYetUploaded,
    /// A user or alias in another application service's exclusive
    /// namespace, or outside the calling application service's namespaces.
    #[serde(rename = "M_EXCLUSIVE")]
    Exclusive,
    /// An application service named a device its user does not have.
    #[serde(rename = "M_UNKNOWN_DEVICE")]
    UnknownDevice,
    /// Pinging an application service registered without a `url`.
    #[serde(rename = "M_URL_NOT_SET")]
    UrlNotSet,
    /// Pinging an application service that could not be reached.
    #[serde(rename = "M_CONNECTION_FAILED")]
    ConnectionFailed,
    /// Pinging an application service that did not answer in time.
    #[serde(rename = "M_CONNECTION_TIMEOUT")]
    ConnectionTimeout,
}

impl ErrorCode {
    /// The HTTP status the spec pairs with this code by default.
    pub fn default_status(self) -> StatusCode {
        match self {
            Self::Forbidden
            | Self::UserDeactivated
            | Self::ThreepidDenied
            | Self::WrongRoomKeysVersion
            | Self::GuestAccessForbidden => StatusCode::FORBIDDEN,
            Self::UnknownToken | Self::MissingToken | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound | Self::Unrecognized => StatusCode::NOT_FOUND,
            Self::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::CannotOverwriteMedia => StatusCode::CONFLICT,
            Self::NotYetUploaded | Self::ConnectionTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ConnectionFailed => StatusCode::BAD_GATEWAY,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadJson
            | Self::NotJson
            | Self::UserInUse
            | Self::InvalidUsername
            | Self::InvalidParam
            | Self::MissingParam
            | Self::UnsupportedRoomVersion
            | Self::IncompatibleRoomVersion
            | Self::UnableToAuthoriseJoin
            | Self::UnableToGrantJoin
            | Self::RoomInUse
            | Self::BadState
            | Self::InvalidRoomState
            | Self::BadAlias
            | Self::UnknownPos
            | Self::ProfileTooLarge
            | Self::KeyTooLarge
            | Self::Exclusive
            | Self::UnknownDevice
            | Self::UrlNotSet => StatusCode::BAD_REQUEST,
        }
    }
}

/// An error as a Matrix client receives it. Components return this from
/// handlers (directly or through `From` impls on their own typed errors),
/// and it also travels in bus replies, hence `Serialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{errcode:?} ({status}): {error}")]
pub struct MatrixError {
    pub errcode: ErrorCode,
    pub error: String,
    pub status: u16,
    /// `soft_logout` of `M_UNKNOWN_TOKEN`: the token expired, and the
    /// client may refresh it or log in again keeping its device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft_logout: bool,
}

impl MatrixError {
    pub fn new(errcode: ErrorCode, error: impl Into<String>) -> Self {
        Self { errcode, error: error.into(), status: errcode.default_status().as_u16(), soft_logout: false }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status.as_u16();
        self
    }

    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, error)
    }

    /// `403 M_GUEST_ACCESS_FORBIDDEN`: what a guest gets from an endpoint
    /// the spec does not open to guests, and from every endpoint while the
    /// server does not allow guests.
    pub fn guest_access_forbidden() -> Self {
        Self::new(ErrorCode::GuestAccessForbidden, "Guest access is not allowed here")
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, error)
    }

    pub fn bad_json(error: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadJson, error)
    }

    pub fn invalid_param(error: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidParam, error)
    }

    pub fn unknown_token() -> Self {
        Self::new(ErrorCode::UnknownToken, "Unknown or expired access token")
    }

    /// `401 M_UNKNOWN_TOKEN` with `soft_logout: true`: an expired access
    /// token (<https://spec.matrix.org/v1.16/client-server-api/#soft-logout>).
    pub fn soft_logout() -> Self {
        Self { soft_logout: true, ..Self::new(ErrorCode::UnknownToken, "Access token has expired") }
    }

    pub fn missing_token() -> Self {
        Self::new(ErrorCode::MissingToken, "Missing access token")
    }

    pub fn too_large(error: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, error)
    }

    /// An unexpected failure. The cause is logged by the caller; the client
    /// only learns that it happened.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Unknown, "Internal server error")
    }

    pub fn unrecognized() -> Self {
        Self::new(ErrorCode::Unrecognized, "Unrecognized request").with_status(StatusCode::NOT_FOUND)
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    errcode: ErrorCode,
    error: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    soft_logout: bool,
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let body = Body { errcode: self.errcode, error: &self.error, soft_logout: self.soft_logout };
        (self.status_code(), axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_the_spec_spells_them() {
        let e = MatrixError::unknown_token();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["errcode"], "M_UNKNOWN_TOKEN");
        assert_eq!(e.status_code(), StatusCode::UNAUTHORIZED);
        assert_eq!(MatrixError::too_large("x").status, 413);
        assert_eq!(MatrixError::unrecognized().status, 404);
        assert!(json.get("soft_logout").is_none());
        let soft = serde_json::to_value(MatrixError::soft_logout()).unwrap();
        assert_eq!((soft["errcode"].clone(), soft["soft_logout"].clone()), ("M_UNKNOWN_TOKEN".into(), true.into()));
    }
}
