//! The content repository: uploads, downloads (authenticated under
//! `/_matrix/client/v1/media`, and the legacy unauthenticated
//! `/_matrix/media/{v3,r0}` paths tools still call) and the upload limit.
//! Media of other servers is not fetched yet.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use myelin_types::random::alphanumeric;
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;

use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::{MatrixPath, MatrixQuery};
use crate::media::{MEDIA_ID_LEN, MediaStore};
use crate::service::AppState;
use crate::storage::media::{self, Media};
use crate::thumbnail::Method;

/// Types a browser may show in place; anything else is served as an
/// attachment so uploaded HTML or SVG can never run in the server's origin.
const INLINE_TYPES: &[&str] = &[
    "text/plain",
    "text/csv",
    "application/json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wav",
    "audio/flac",
];

/// Served with every download: nothing in it may run or load anything.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
     style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// The media routes, with the upload limit as their body limit.
pub fn router(app: AppState) -> axum::Router {
    let limit = usize::try_from(app.config.client_api.max_upload_size).unwrap_or(usize::MAX);
    let mut router = axum::Router::new()
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/client/v1/media/download/{server_name}/{media_id}", get(download_authenticated))
        .route("/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}", get(download_authenticated_as))
        .route("/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}", get(thumbnail_authenticated));
    for prefix in ["/_matrix/media/v3", "/_matrix/media/r0"] {
        router = router
            .route(&format!("{prefix}/upload"), post(upload))
            .route(&format!("{prefix}/config"), get(config))
            .route(&format!("{prefix}/download/{{server_name}}/{{media_id}}"), get(download_legacy))
            .route(&format!("{prefix}/download/{{server_name}}/{{media_id}}/{{file_name}}"), get(download_legacy_as))
            .route(&format!("{prefix}/thumbnail/{{server_name}}/{{media_id}}"), get(thumbnail_legacy));
    }
    router.layer(DefaultBodyLimit::max(limit)).layer(RequestBodyLimitLayer::new(limit)).with_state(app)
}

/// `GET /_matrix/client/v1/media/config`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediaconfig>
async fn config(State(state): State<AppState>, _user: AuthedUser) -> Json<Value> {
    Json(json!({ "m.upload.size": state.config.client_api.max_upload_size }))
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// `POST /_matrix/media/v3/upload`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav3upload>
async fn upload(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => "application/octet-stream".to_owned(),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| MatrixError::invalid_param("Content-Type must be visible ASCII"))?
            .to_owned(),
    };
    let media_id = alphanumeric(MEDIA_ID_LEN);
    state.media.write(&media_id, &body).await?;
    let record = Media {
        media_id: media_id.clone(),
        content_type,
        filename: query.filename.filter(|f| !f.is_empty()),
        size: i64::try_from(body.len()).unwrap_or(i64::MAX),
        uploader: user.user_id.to_string(),
        created_ms: state.now_ms(),
    };
    media::insert(&state.db, &record).await?;
    Ok(Json(json!({ "content_uri": format!("mxc://{}/{media_id}", state.server_name()) })))
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid>
async fn download_authenticated(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Response> {
    download(&state, &server_name, &media_id, None).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaidfilename>
async fn download_authenticated_as(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(String, String, String)>,
) -> Result<Response> {
    download(&state, &server_name, &media_id, Some(&file_name)).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaid>
async fn download_legacy(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
) -> Result<Response> {
    download(&state, &server_name, &media_id, None).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaidfilename>
async fn download_legacy_as(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(String, String, String)>,
) -> Result<Response> {
    download(&state, &server_name, &media_id, Some(&file_name)).await
}

/// The stored record and bytes of a local media id; 404 for anything else.
async fn load(state: &AppState, server_name: &str, media_id: &str) -> Result<(Media, Vec<u8>)> {
    let not_found = || MatrixError::not_found("Media not found");
    if server_name != state.server_name() || !MediaStore::is_valid_id(media_id) {
        return Err(not_found().into());
    }
    let record = media::get(&state.db, media_id).await?.ok_or_else(not_found)?;
    let bytes = state.media.read(media_id).await?;
    Ok((record, bytes))
}

async fn download(state: &AppState, server_name: &str, media_id: &str, file_name: Option<&str>) -> Result<Response> {
    let (record, bytes) = load(state, server_name, media_id).await?;
    let disposition = content_disposition(&record.content_type, file_name.or(record.filename.as_deref()));
    Ok(media_response(bytes, &record.content_type, &disposition))
}

/// Bytes with the headers every media answer carries.
fn media_response(bytes: Vec<u8>, content_type: &str, disposition: &str) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    let content_type =
        HeaderValue::from_str(content_type).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Ok(value) = HeaderValue::from_str(disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    response
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    width: u32,
    height: u32,
    method: Option<String>,
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid>
async fn thumbnail_authenticated(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> Result<Response> {
    thumbnail(&state, &server_name, &media_id, query).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3thumbnailservernamemediaid>
async fn thumbnail_legacy(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> Result<Response> {
    thumbnail(&state, &server_name, &media_id, query).await
}

async fn thumbnail(state: &AppState, server_name: &str, media_id: &str, query: ThumbnailQuery) -> Result<Response> {
    let method = match query.method.as_deref() {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown thumbnail method {other:?}")).into()),
    };
    if query.width == 0 || query.height == 0 {
        return Err(MatrixError::invalid_param("width and height must be positive").into());
    }
    let (_, bytes) = load(state, server_name, media_id).await?;
    // Decoding and resizing are CPU-bound: off the request threads.
    let made =
        tokio::task::spawn_blocking(move || crate::thumbnail::thumbnail(&bytes, query.width, query.height, method))
            .await?;
    let (bytes, content_type) = made.map_err(|e| {
        MatrixError::new(ErrorCode::Unknown, format!("Cannot make a thumbnail: {e}"))
            .with_status(StatusCode::BAD_REQUEST)
    })?;
    Ok(media_response(bytes, content_type, "inline"))
}

/// `inline` only for [`INLINE_TYPES`]; the file name as an RFC 6266
/// `filename*` (UTF-8, percent-encoded).
fn content_disposition(content_type: &str, file_name: Option<&str>) -> String {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let kind = if INLINE_TYPES.contains(&essence.as_str()) { "inline" } else { "attachment" };
    match file_name {
        Some(name) => format!("{kind}; filename*=utf-8''{}", percent_encode(name)),
        None => kind.to_owned(),
    }
}

/// RFC 5987 `attr-char`s stay; every other byte is `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_types_are_inline_and_names_are_encoded() {
        assert_eq!(content_disposition("image/png", None), "inline");
        assert_eq!(content_disposition("IMAGE/PNG; charset=x", None), "inline");
        assert_eq!(content_disposition("text/html", Some("a b.html")), "attachment; filename*=utf-8''a%20b.html");
        assert_eq!(content_disposition("image/svg+xml", None), "attachment");
        assert_eq!(content_disposition("text/plain", Some("é\"")), "inline; filename*=utf-8''%C3%A9%22");
    }

    #[test]
    fn only_generated_ids_are_valid() {
        assert!(MediaStore::is_valid_id(&"a".repeat(MEDIA_ID_LEN)));
        for bad in ["../../etc/passwd", "", "abc", &"a/".repeat(MEDIA_ID_LEN / 2)] {
            assert!(!MediaStore::is_valid_id(bad), "{bad}");
        }
    }
}
