//! Third-party identifiers (email, phone). Myelin supports none, so every
//! account has none, and adding or binding one is refused as the spec lets
//! a server refuse a medium (`403 M_THREEPID_DENIED`).

use axum::Json;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;

fn denied() -> crate::error::ClientApiError {
    myelin_types::MatrixError::new(
        myelin_types::ErrorCode::ThreepidDenied,
        "Third-party identifiers are not supported by this server",
    )
    .into()
}

/// `GET /_matrix/client/v3/account/3pid`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3account3pid>
pub async fn list(_user: AuthedUser) -> Json<Value> {
    Json(json!({ "threepids": [] }))
}

/// `POST /_matrix/client/v3/account/3pid/add`, `…/3pid/bind` and the
/// deprecated `POST /_matrix/client/v3/account/3pid`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3pidadd>
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3pidbind>
pub async fn add(_user: AuthedUser) -> Result<Json<Value>> {
    Err(denied())
}

/// `POST /_matrix/client/v3/account/3pid/delete` and `…/3pid/unbind`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3piddelete>
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3pidunbind>
///
/// There is nothing to remove, and no identity server was ever told.
pub async fn remove(_user: AuthedUser) -> Json<Value> {
    Json(json!({ "id_server_unbind_result": "no-support" }))
}

/// `POST /_matrix/client/v3/{account/3pid,account/password,register}/{email,msisdn}/requestToken`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3pidemailrequesttoken>
///
/// No token is ever sent: no medium is allowed as a contact option.
pub async fn request_token() -> Result<Json<Value>> {
    Err(denied())
}
