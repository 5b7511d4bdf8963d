//! The content repository: uploads (at once, or to an `mxc://` URI created
//! beforehand), downloads (authenticated under `/_matrix/client/v1/media`,
//! and the legacy unauthenticated `/_matrix/media/{v3,r0}` paths tools still
//! call), URL previews and the upload limit. Other servers' media is fetched
//! once through the federation API (`federationapi.media`), then served from
//! the media store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use myelin_types::random::alphanumeric;
use myelin_types::ruma::{OwnedServerName, UserId};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tower_http::limit::RequestBodyLimitLayer;

use crate::api::{MediaInfo, RemoteMediaRequest};
use crate::auth::{AuthedUser, GuestOk};
use crate::error::{ClientApiError, Result};
use crate::json::{MatrixPath, MatrixQuery};
use crate::media::{MEDIA_ID_LEN, MediaStore, content_disposition};
use crate::producers::federation;
use crate::service::AppState;
use crate::storage::media::{self, Claim, Media, RemoteMedia};
use crate::thumbnail::Method;
use crate::url_preview::{self, Fetched, UrlPreviews};

/// Served with every download: nothing in it may run or load anything.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
     style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// How long an `mxc://` URI from `POST /media/v1/create` waits for its
/// content: the spec's recommendation (and Synapse's default).
const UNUSED_MEDIA_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;

/// How long a download waits for content not uploaded yet: the spec's
/// default, and the most a client may ask for.
const DEFAULT_WAIT_MS: u64 = 20_000;
const MAX_WAIT_MS: u64 = 120_000;

/// How often a waiting download looks again, for an upload that another
/// client API process took (one in this process wakes it at once).
const WAIT_POLL: Duration = Duration::from_millis(500);

/// The URL previewer, when enabled.
type Previews = Extension<Option<Arc<UrlPreviews>>>;

/// The media routes, with the upload limit as their body limit.
pub fn router(app: AppState) -> axum::Router {
    let limit = usize::try_from(app.config.client_api.max_upload_size).unwrap_or(usize::MAX);
    let previews = url_previews(&app.config.client_api);
    let mut router = axum::Router::new()
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/client/v1/media/download/{server_name}/{media_id}", get(download_authenticated))
        .route("/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}", get(download_authenticated_as))
        .route("/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}", get(thumbnail_authenticated))
        .route("/_matrix/client/v1/media/preview_url", get(preview_url))
        .route("/_matrix/media/v1/create", post(create));
    for prefix in ["/_matrix/media/v3", "/_matrix/media/r0"] {
        router = router
            .route(&format!("{prefix}/upload"), post(upload))
            .route(&format!("{prefix}/upload/{{server_name}}/{{media_id}}"), put(upload_to))
            .route(&format!("{prefix}/config"), get(config))
            .route(&format!("{prefix}/download/{{server_name}}/{{media_id}}"), get(download_legacy))
            .route(&format!("{prefix}/download/{{server_name}}/{{media_id}}/{{file_name}}"), get(download_legacy_as))
            .route(&format!("{prefix}/thumbnail/{{server_name}}/{{media_id}}"), get(thumbnail_legacy))
            .route(&format!("{prefix}/preview_url"), get(preview_url));
    }
    router
        .layer(Extension(previews))
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestBodyLimitLayer::new(limit))
        .with_state(app)
}

/// The previewer if the operator enabled URL previews (and its HTTP client
/// could be built; if not, previews stay off and the reason is logged).
fn url_previews(config: &myelin_config::ClientApi) -> Option<Arc<UrlPreviews>> {
    if !config.url_preview_enabled {
        return None;
    }
    match UrlPreviews::new(&config.url_preview_ip_allowlist) {
        Ok(previews) => Some(Arc::new(previews)),
        Err(error) => {
            tracing::error!(%error, "URL previews are off: their HTTP client cannot be built");
            None
        }
    }
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
    let content_type = upload_content_type(&headers)?;
    let record = new_record(&state, alphanumeric(MEDIA_ID_LEN), content_type, query.filename, &body, &user.user_id);
    store(&state, &record, &body).await?;
    Ok(Json(json!({ "content_uri": mxc_uri(&state, &record.media_id) })))
}

/// `POST /_matrix/media/v1/create`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixmediav1create>
///
/// At most `client_api.max_pending_media_uploads` per user wait for their
/// content at a time.
async fn create(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    let media_id = alphanumeric(MEDIA_ID_LEN);
    let now = state.now_ms();
    let expires = now.saturating_add(UNUSED_MEDIA_LIFETIME_MS);
    let cap = i64::try_from(state.config.client_api.max_pending_media_uploads).unwrap_or(i64::MAX);
    if !media::create_pending(&state.db, &media_id, user.user_id.as_str(), now, expires, cap).await? {
        let error = "Too many media IDs are waiting for their content; upload to them first";
        return Err(MatrixError::new(ErrorCode::LimitExceeded, error).into());
    }
    Ok(Json(json!({ "content_uri": mxc_uri(&state, &media_id), "unused_expires_at": expires })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixmediav3uploadservernamemediaid>
///
/// Only the URI's creator, once, before it expires.
async fn upload_to(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let unknown = || MatrixError::not_found("Unknown or expired media ID");
    if server_name != state.server_name() || !MediaStore::is_valid_id(&media_id) {
        return Err(unknown().into());
    }
    let content_type = upload_content_type(&headers)?;
    match media::claim_pending(&state.db, &media_id, user.user_id.as_str(), state.now_ms()).await? {
        Claim::Claimed => {}
        Claim::Unknown => return Err(unknown().into()),
        Claim::NotCreator => return Err(MatrixError::forbidden("Another user created this media ID").into()),
        Claim::Taken => {
            return Err(MatrixError::new(ErrorCode::CannotOverwriteMedia, "Media already uploaded").into());
        }
    }
    let record = new_record(&state, media_id, content_type, query.filename, &body, &user.user_id);
    // In a task of its own: a client that hangs up must not leave the claim held.
    tokio::spawn(async move { finish_upload(&state, &record, &body).await }).await??;
    Ok(Json(json!({})))
}

/// Store a claimed upload, or give the claim back so the creator can retry.
async fn finish_upload(state: &AppState, record: &Media, bytes: &[u8]) -> Result<()> {
    let stored = async {
        state.media.write(&record.media_id, bytes).await?;
        media::complete_pending(&state.db, record).await?;
        Ok::<_, ClientApiError>(())
    }
    .await;
    if stored.is_err() {
        media::release_pending(&state.db, &record.media_id).await?;
    }
    stored?;
    state.media.announce_upload();
    Ok(())
}

/// The upload's `Content-Type`, `application/octet-stream` when absent.
fn upload_content_type(headers: &HeaderMap) -> Result<String, MatrixError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok("application/octet-stream".to_owned());
    };
    value
        .to_str()
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned)
        .ok_or_else(|| MatrixError::invalid_param("Content-Type must be visible ASCII"))
}

fn new_record(
    state: &AppState,
    media_id: String,
    content_type: String,
    filename: Option<String>,
    bytes: &[u8],
    uploader: &UserId,
) -> Media {
    Media {
        media_id,
        content_type,
        filename: filename.filter(|f| !f.is_empty()),
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        uploader: uploader.to_string(),
        created_ms: state.now_ms(),
    }
}

/// Write a new file into the media store and record it.
async fn store(state: &AppState, record: &Media, bytes: &[u8]) -> Result<()> {
    state.media.write(&record.media_id, bytes).await?;
    media::insert(&state.db, record).await?;
    Ok(())
}

fn mxc_uri(state: &AppState, media_id: &str) -> String {
    format!("mxc://{}/{media_id}", state.server_name())
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid>
async fn download_authenticated(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> Result<Response> {
    download(&state, Source::new(&server_name, &media_id, &query), None).await
}

/// `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediadownloadservernamemediaidfilename>
async fn download_authenticated_as(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> Result<Response> {
    download(&state, Source::new(&server_name, &media_id, &query), Some(&file_name)).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaid>
async fn download_legacy(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> Result<Response> {
    download(&state, Source::new(&server_name, &media_id, &query), None).await
}

/// `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3downloadservernamemediaidfilename>
async fn download_legacy_as(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> Result<Response> {
    download(&state, Source::new(&server_name, &media_id, &query), Some(&file_name)).await
}

#[derive(Deserialize)]
struct DownloadQuery {
    /// Only on the legacy endpoints (default true).
    #[serde(default = "yes")]
    allow_remote: bool,
    timeout_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// Which file a request names, whether another server may be asked for
/// it, and how long to wait for content not uploaded yet.
#[derive(Clone, Copy)]
struct Source<'a> {
    server_name: &'a str,
    media_id: &'a str,
    allow_remote: bool,
    wait: Duration,
}

impl<'a> Source<'a> {
    fn new(server_name: &'a str, media_id: &'a str, query: &DownloadQuery) -> Self {
        Self { server_name, media_id, allow_remote: query.allow_remote, wait: wait(query.timeout_ms) }
    }
}

/// A client's `timeout_ms`, defaulted and capped.
fn wait(timeout_ms: Option<u64>) -> Duration {
    Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS))
}

fn not_found() -> MatrixError {
    MatrixError::not_found("Media not found")
}

/// The metadata and bytes of a file: this server's upload, or another
/// server's, fetched once and then served from the media store; 404 for
/// anything else.
async fn load(state: &AppState, source: Source<'_>) -> Result<(MediaInfo, Vec<u8>)> {
    if source.server_name == state.server_name() {
        return load_local(state, source.media_id, source.wait).await;
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

/// This server's file. For a created `mxc://` URI whose content has not
/// come yet, waits up to `wait` for it, then `504 M_NOT_YET_UPLOADED`.
async fn load_local(state: &AppState, media_id: &str, wait: Duration) -> Result<(MediaInfo, Vec<u8>)> {
    if !MediaStore::is_valid_id(media_id) {
        return Err(not_found().into());
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Listening before looking, so that an upload in between wakes us.
        let uploaded = state.media.next_upload();
        tokio::pin!(uploaded);
        uploaded.as_mut().enable();
        if let Some(record) = media::get(&state.db, media_id).await? {
            let bytes = state.media.read(media_id).await?;
            return Ok((MediaInfo { content_type: record.content_type, filename: record.filename }, bytes));
        }
        if !media::is_pending(&state.db, media_id, state.now_ms()).await? {
            return Err(not_found().into());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(MatrixError::new(ErrorCode::NotYetUploaded, "The content has not been uploaded yet").into());
        }
        // Timing out only means looking again.
        let _ = tokio::time::timeout_at(deadline.min(now + WAIT_POLL), uploaded).await;
    }
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
    timeout_ms: Option<u64>,
}

/// `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid>
async fn thumbnail_authenticated(
    State(state): State<AppState>,
    GuestOk(_user): GuestOk,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> Result<Response> {
    let source = Source {
        server_name: &server_name,
        media_id: &media_id,
        allow_remote: query.allow_remote,
        wait: wait(query.timeout_ms),
    };
    thumbnail(&state, source, query).await
}

/// `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}` (deprecated, unauthenticated)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixmediav3thumbnailservernamemediaid>
async fn thumbnail_legacy(
    State(state): State<AppState>,
    MatrixPath((server_name, media_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> Result<Response> {
    let source = Source {
        server_name: &server_name,
        media_id: &media_id,
        allow_remote: query.allow_remote,
        wait: wait(query.timeout_ms),
    };
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

#[derive(Deserialize)]
struct PreviewQuery {
    /// Optional here so that its absence is `M_MISSING_PARAM`.
    url: Option<String>,
}

/// `GET /_matrix/client/v1/media/preview_url`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediapreview_url>
///
/// Also the deprecated `GET /_matrix/media/v3/preview_url`. Only where the
/// operator enabled `client_api.url_preview_enabled`; otherwise
/// `404 M_UNRECOGNIZED`, as a server without previews answers. `ts` is not
/// honoured: the cached or a fresh preview is served, as the spec allows.
async fn preview_url(
    State(state): State<AppState>,
    Extension(previews): Previews,
    user: AuthedUser,
    MatrixQuery(query): MatrixQuery<PreviewQuery>,
) -> Result<Json<Map<String, Value>>> {
    let Some(previews) = previews else {
        return Err(MatrixError::new(ErrorCode::Unrecognized, "URL previews are not enabled on this server").into());
    };
    let raw = query.url.ok_or_else(|| MatrixError::new(ErrorCode::MissingParam, "Missing the url parameter"))?;
    let url = url_preview::parse_url(&raw).map_err(MatrixError::from)?;
    if let Some(preview) = previews.cached(&url, state.now_ms()) {
        return Ok(Json(preview));
    }
    let preview = fetch_preview(&state, &previews, &user.user_id, url.clone()).await?;
    previews.remember(&url, preview.clone(), state.now_ms());
    Ok(Json(preview))
}

/// The page's OpenGraph properties, its image (or the URL itself, if it
/// is an image) kept as local media and named by its `mxc://` URI.
async fn fetch_preview(
    state: &AppState,
    previews: &UrlPreviews,
    user: &UserId,
    url: reqwest::Url,
) -> Result<Map<String, Value>> {
    let page = previews.fetch(url, url_preview::MAX_BYTES).await.map_err(MatrixError::from)?;
    // The image becomes local media, so it must fit the upload limit too.
    let image_limit =
        url_preview::MAX_BYTES.min(usize::try_from(state.config.client_api.max_upload_size).unwrap_or(usize::MAX));
    let (mut properties, image) = if page.is_image() {
        let fits = page.bytes.len() <= image_limit;
        (Map::new(), fits.then_some(page))
    } else if page.is_html() {
        let properties = url_preview::opengraph(&page.bytes);
        let source = properties.get("og:image").and_then(Value::as_str).and_then(|src| page.url.join(src).ok());
        let image = match source {
            Some(source) => match previews.fetch(source, image_limit).await {
                Ok(image) => Some(image).filter(Fetched::is_image),
                Err(error) => {
                    tracing::debug!(%error, "URL preview without its image");
                    None
                }
            },
            None => None,
        };
        (properties, image)
    } else {
        (Map::new(), None)
    };
    // The page's image properties describe its copy; ours replace them.
    let alt = properties.get("og:image:alt").cloned();
    properties.retain(|key, _| !key.starts_with("og:image"));
    if let Some(image) = image {
        properties.extend(keep_image(state, user, image).await?);
        if let Some(alt) = alt {
            properties.insert("og:image:alt".to_owned(), alt);
        }
    }
    Ok(properties)
}

/// Store a preview's image; its `og:image` (an `mxc://` URI), type, size
/// and, where its header tells them, dimensions.
async fn keep_image(state: &AppState, user: &UserId, image: Fetched) -> Result<Map<String, Value>> {
    let size = image.bytes.len();
    let dimensions = url_preview::image_dimensions(&image.bytes);
    let record = new_record(state, alphanumeric(MEDIA_ID_LEN), image.content_type, None, &image.bytes, user);
    store(state, &record, &image.bytes).await?;
    let mut properties = Map::new();
    properties.insert("og:image".to_owned(), mxc_uri(state, &record.media_id).into());
    properties.insert("og:image:type".to_owned(), record.content_type.into());
    properties.insert("matrix:image:size".to_owned(), size.into());
    if let Some((width, height)) = dimensions {
        properties.insert("og:image:width".to_owned(), width.into());
        properties.insert("og:image:height".to_owned(), height.into());
    }
    Ok(properties)
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
