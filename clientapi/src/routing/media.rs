//! The content repository: uploads, downloads (authenticated under
//! `/_matrix/client/v1/media`, and the legacy unauthenticated
//! `/_matrix/media/{v3,r0}` paths tools still call) and the upload limit.
//! Other servers' media is fetched once through the federation API
//! (`federationapi.media`), then served from the media store.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use myelin_types::random::alphanumeric;
use myelin_types::ruma::OwnedServerName;
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;

use crate::api::{MediaInfo, RemoteMediaRequest};
use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::{MatrixPath, MatrixQuery};
use crate::media::{MEDIA_ID_LEN, MediaStore, content_disposition};
use crate::producers::federation;
use crate::service::AppState;
use crate::storage::media::{self, Media, RemoteMedia};
use crate::thumbnail::Method;

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
    download(&state, Source::any(&server_name, &media_id), None).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaidfilename>
async fn download_authenticated_as(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(String, String, String)>,
) -> Result<Response> {
    download(&state, Source::any(&server_name, &media_id), Some(&file_name)).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaid>
async fn download_legacy(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<LegacyQuery>,
) -> Result<Response> {
    let source = Source { server_name: &server_name, media_id: &media_id, allow_remote: query.allow_remote };
    download(&state, source, None).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaidfilename>
async fn download_legacy_as(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<LegacyQuery>,
) -> Result<Response> {
    let source = Source { server_name: &server_name, media_id: &media_id, allow_remote: query.allow_remote };
    download(&state, source, Some(&file_name)).await
}

/// The legacy endpoints' `allow_remote` (default true).
#[derive(Deserialize)]
struct LegacyQuery {
    #[serde(default = "yes")]
    allow_remote: bool,
}

fn yes() -> bool {
    true
}

/// Which file a request names, and whether another server may be asked for it.
#[derive(Clone, Copy)]
struct Source<'a> {
    server_name: &'a str,
    media_id: &'a str,
    allow_remote: bool,
}

impl<'a> Source<'a> {
    fn any(server_name: &'a str, media_id: &'a str) -> Self {
        Self { server_name, media_id, allow_remote: true }
    }
}

fn not_found() -> MatrixError {
    MatrixError::not_found("Media not found")
}

/// The metadata and bytes of a file: this server's upload, or another
/// server's, fetched once and then served from the media store; 404 for
/// anything else.
async fn load(state: &AppState, source: Source<'_>) -> Result<(MediaInfo, Vec<u8>)> {
    if source.server_name == state.server_name() {
        return load_local(state, source.media_id).await;
    }
    let server_name = OwnedServerName::try_from(source.server_name).map_err(|_| not_found())?;
    if !source.allow_remote || !is_remote_media_id(source.media_id) {
        return Err(not_found().into());
    }
    let record = match media::get_remote(&state.db, server_name.as_str(), source.media_id).await? {
        Some(record) => record,
        None => fetch_remote(state, server_name, source.media_id).await?,
    };
    let bytes = state.media.read(&record.file_id).await?;
    Ok((MediaInfo { content_type: record.content_type, filename: record.filename }, bytes))
}

async fn load_local(state: &AppState, media_id: &str) -> Result<(MediaInfo, Vec<u8>)> {
    if !MediaStore::is_valid_id(media_id) {
        return Err(not_found().into());
    }
    let record = media::get(&state.db, media_id).await?.ok_or_else(not_found)?;
    let bytes = state.media.read(media_id).await?;
    Ok((MediaInfo { content_type: record.content_type, filename: record.filename }, bytes))
}

/// Media ids are `[A-Za-z0-9_-]`; anything else is never asked for.
fn is_remote_media_id(media_id: &str) -> bool {
    (1..=255).contains(&media_id.len()) && media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Have the federation API fetch the file into the media store under a
/// fresh id of ours, no larger than we accept for uploads, and record it.
async fn fetch_remote(state: &AppState, server_name: OwnedServerName, media_id: &str) -> Result<RemoteMedia> {
    let file_id = alphanumeric(MEDIA_ID_LEN);
    let request = RemoteMediaRequest {
        server_name: server_name.clone(),
        media_id: media_id.to_owned(),
        file_id: file_id.clone(),
        max_size: state.config.client_api.max_upload_size,
    };
    let fetched = federation::remote_media(&state.bus, &request).await?;
    let record = RemoteMedia {
        server_name: server_name.to_string(),
        media_id: media_id.to_owned(),
        file_id: file_id.clone(),
        content_type: fetched.info.content_type,
        filename: fetched.info.filename,
        size: i64::try_from(fetched.size).unwrap_or(i64::MAX),
        created_ms: state.now_ms(),
    };
    let kept = media::insert_remote(&state.db, &record).await?;
    if kept.file_id != file_id {
        // A concurrent request fetched it first: ours is a spare copy.
        state.media.remove(&file_id).await?;
    }
    Ok(kept)
}

async fn download(state: &AppState, source: Source<'_>, file_name: Option<&str>) -> Result<Response> {
    let (info, bytes) = load(state, source).await?;
    let disposition = content_disposition(&info.content_type, file_name.or(info.filename.as_deref()));
    Ok(media_response(bytes, &info.content_type, &disposition))
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
    /// Only on the legacy endpoint (default true).
    #[serde(default = "yes")]
    allow_remote: bool,
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid>
async fn thumbnail_authenticated(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> Result<Response> {
    let source = Source { server_name: &server_name, media_id: &media_id, allow_remote: query.allow_remote };
    thumbnail(&state, source, query).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3thumbnailservernamemediaid>
async fn thumbnail_legacy(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> Result<Response> {
    let source = Source { server_name: &server_name, media_id: &media_id, allow_remote: query.allow_remote };
    thumbnail(&state, source, query).await
}

async fn thumbnail(state: &AppState, source: Source<'_>, query: ThumbnailQuery) -> Result<Response> {
    let method = match query.method.as_deref() {
        None | Some("scale") => Method::Scale,
        Some("crop") => Method::Crop,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown thumbnail method {other:?}")).into()),
    };
    if query.width == 0 || query.height == 0 {
        return Err(MatrixError::invalid_param("width and height must be positive").into());
    }
    let (_, bytes) = load(state, source).await?;
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
    fn only_spec_media_ids_are_asked_of_other_servers() {
        assert!(is_remote_media_id("abc_DEF-123"));
        for bad in ["", "a/b", "../x", "a b", "é", &"a".repeat(256)] {
            assert!(!is_remote_media_id(bad), "{bad}");
        }
    }

    #[test]
    fn only_generated_ids_are_valid() {
        assert!(MediaStore::is_valid_id(&"a".repeat(MEDIA_ID_LEN)));
        for bad in ["../../etc/passwd", "", "abc", &"a/".repeat(MEDIA_ID_LEN / 2)] {
            assert!(!MediaStore::is_valid_id(bad), "{bad}");
        }
    }
}
