//! `/media/download` and `/media/thumbnail`: this server's uploads for
//! other servers, as `multipart/mixed`. The client API answers what it
//! knows of the file (`clientapi.media`); the bytes come from the shared
//! media store.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#content-repository>

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use myelin_clientapi::api::{
    MEDIA_QUERY_TOPIC, MediaInfo, MediaQuery, MediaReply, MediaStore, ThumbnailMethod, content_disposition, thumbnail,
};
use myelin_roomserver::api::REQUEST_TIMEOUT;
use myelin_types::{ErrorCode, MatrixError};

use super::FederationState;
use super::auth::Origin;
use crate::multipart;

/// GET /_matrix/federation/v1/media/download/{mediaId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid>
pub(super) async fn download(
    Origin(_origin): Origin,
    State(state): State<FederationState>,
    Path(media_id): Path<String>,
) -> Result<Response, MatrixError> {
    let (info, bytes) = load(&state, &media_id).await?;
    let disposition = content_disposition(&info.content_type, info.filename.as_deref());
    Ok(answer(&info.content_type, &disposition, &bytes))
}

/// GET /_matrix/federation/v1/media/thumbnail/{mediaId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediathumbnailmediaid>
pub(super) async fn thumbnail_of(
    Origin(_origin): Origin,
    State(state): State<FederationState>,
    Path(media_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, MatrixError> {
    let (width, height, method) = thumbnail_params(query.as_deref().unwrap_or_default())?;
    let (_, bytes) = load(&state, &media_id).await?;
    // Decoding and resizing are CPU-bound: off the request threads.
    let made = tokio::task::spawn_blocking(move || thumbnail(&bytes, width, height, method)).await.map_err(|e| {
        tracing::error!(error = %e, "thumbnail task failed");
        MatrixError::internal()
    })?;
    let (bytes, content_type) = made.map_err(|e| {
        MatrixError::new(ErrorCode::Unknown, format!("Cannot make a thumbnail: {e}"))
            .with_status(StatusCode::BAD_REQUEST)
    })?;
    Ok(answer(content_type, "inline", &bytes))
}

/// `width`, `height` (both required, positive) and `method` of a thumbnail request.
fn thumbnail_params(query: &str) -> Result<(u32, u32, ThumbnailMethod), MatrixError> {
    let (mut width, mut height, mut method) = (None, None, ThumbnailMethod::Scale);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let side = || {
            value
                .parse::<u32>()
                .ok()
                .filter(|side| *side > 0)
                .ok_or_else(|| MatrixError::invalid_param(format!("{name} must be a positive integer")))
        };
        match name.as_ref() {
            "width" => width = Some(side()?),
            "height" => height = Some(side()?),
            "method" => {
                method = match value.as_ref() {
                    "scale" => ThumbnailMethod::Scale,
                    "crop" => ThumbnailMethod::Crop,
                    other => return Err(MatrixError::invalid_param(format!("Unknown thumbnail method {other:?}"))),
                }
            }
            _ => {}
        }
    }
    let missing = |name: &str| MatrixError::new(ErrorCode::MissingParam, format!("{name} is required"));
    Ok((width.ok_or_else(|| missing("width"))?, height.ok_or_else(|| missing("height"))?, method))
}

/// What the client API knows of a local upload, and its bytes; 404 for
/// anything else.
async fn load(state: &FederationState, media_id: &str) -> Result<(MediaInfo, Vec<u8>), MatrixError> {
    let not_found = || MatrixError::not_found("Media not found");
    if !MediaStore::is_valid_id(media_id) {
        return Err(not_found());
    }
    let request = MediaQuery { media_id: media_id.to_owned() };
    let reply: MediaReply =
        state.bus.request_json(MEDIA_QUERY_TOPIC, media_id, &request, REQUEST_TIMEOUT).await.map_err(|error| {
            tracing::warn!(%error, "the client API did not answer a media query");
            MatrixError::internal()
        })?;
    let info = reply.ok_or_else(not_found)?;
    let bytes = state.media.read(media_id).await.map_err(|error| {
        tracing::error!(%error, %media_id, "an upload the client API knows is missing from the media store");
        MatrixError::internal()
    })?;
    Ok((info, bytes))
}

fn answer(content_type: &str, disposition: &str, bytes: &[u8]) -> Response {
    let (multipart_type, body) = multipart::build(content_type, disposition, bytes);
    let mut response = body.into_response();
    if let Ok(value) = HeaderValue::from_str(&multipart_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}
