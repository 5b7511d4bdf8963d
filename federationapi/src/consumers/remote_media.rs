//! Answers `federationapi.media`: another server's file for the client
//! API's downloads and thumbnails. Asked with the authenticated
//! `/media/download` first, then the older `/_matrix/media/v3/download`
//! when the server does not know it; the file is written into the shared
//! media store under the id the client API chose.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid>

use std::sync::Arc;

use async_trait::async_trait;
use http::StatusCode;
use myelin_bus::{HandleError, Record, Responder};
use myelin_clientapi::api::{MediaInfo, MediaStore, RemoteMedia, RemoteMediaReply, RemoteMediaRequest};
use myelin_types::{ErrorCode, MatrixError};

use super::encode;
use crate::client::{ClientError, ConnectError, FederationClient, FederationRequest, Reply};
use crate::multipart;

pub const GROUP: &str = "federationapi.media";

/// Room for the multipart framing around the file itself.
const FRAMING_BYTES: u64 = 64 * 1024;

pub struct RemoteMediaResponder {
    pub client: Arc<FederationClient>,
    pub media: Arc<MediaStore>,
}

#[async_trait]
impl Responder for RemoteMediaResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let request: RemoteMediaRequest =
            request.json().map_err(|e| HandleError::Poison(format!("bad remote media request: {e}")))?;
        let reply: RemoteMediaReply = self.fetch(&request).await;
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}

impl RemoteMediaResponder {
    async fn fetch(&self, request: &RemoteMediaRequest) -> RemoteMediaReply {
        if !MediaStore::is_valid_id(&request.file_id) {
            return Err(MatrixError::invalid_param("The client API named an invalid file id"));
        }
        let (info, bytes) = self.download(request).await?;
        if bytes.len() as u64 > request.max_size {
            return Err(too_large());
        }
        self.media.write(&request.file_id, &bytes).await.map_err(|error| {
            tracing::error!(%error, "cannot write a fetched file into the media store");
            MatrixError::internal()
        })?;
        Ok(RemoteMedia { info, size: bytes.len() as u64 })
    }

    /// The file's metadata and bytes, from the v1 endpoint or the legacy one.
    async fn download(&self, request: &RemoteMediaRequest) -> Result<(MediaInfo, Vec<u8>), MatrixError> {
        let server = request.server_name.as_str();
        let media_id = encode(&request.media_id);
        let max_body = usize::try_from(request.max_size.saturating_add(FRAMING_BYTES)).unwrap_or(usize::MAX);
        let v1 = FederationRequest::get(server, format!("/_matrix/federation/v1/media/download/{media_id}"));
        match self.client.fetch(v1, max_body).await {
            Ok(reply) => read_multipart(&reply),
            Err(ClientError::Status { status: 400 | 404, body, .. }) if body["errcode"] == "M_UNRECOGNIZED" => {
                let path = format!("/_matrix/media/v3/download/{server}/{media_id}?allow_remote=false");
                let legacy = FederationRequest::get(server, path).unsigned();
                let reply = self.client.fetch(legacy, max_body).await.map_err(|e| refusal(&request.media_id, e))?;
                Ok(read_plain(&reply))
            }
            Err(error) => Err(refusal(&request.media_id, error)),
        }
    }
}

fn too_large() -> MatrixError {
    MatrixError::too_large("The remote file is larger than this server accepts").with_status(StatusCode::BAD_GATEWAY)
}

fn bad_gateway(message: String) -> MatrixError {
    MatrixError::new(ErrorCode::Unknown, message).with_status(StatusCode::BAD_GATEWAY)
}

/// The client's error for a failed fetch: 502 `M_TOO_LARGE` (the spec's
/// answer) for a file too large, else 404: media a server does not have
/// or cannot be asked for is media this server cannot find.
fn refusal(media_id: &str, error: ClientError) -> MatrixError {
    match error {
        ClientError::Status { status: 404, .. } => MatrixError::not_found(format!("Remote media {media_id} not found")),
        ClientError::Connect { source: ConnectError::TooLarge(_), .. } => too_large(),
        other => {
            tracing::info!(error = %other, %media_id, "fetching remote media failed");
            MatrixError::not_found(format!("Cannot fetch the remote media: {other}"))
        }
    }
}

fn header(reply: &Reply, name: http::header::HeaderName) -> Option<&str> {
    reply.headers.get(name).and_then(|value| value.to_str().ok())
}

fn read_multipart(reply: &Reply) -> Result<(MediaInfo, Vec<u8>), MatrixError> {
    let content_type = header(reply, http::header::CONTENT_TYPE).unwrap_or_default();
    let part = multipart::parse(content_type, &reply.body)
        .ok_or_else(|| bad_gateway("The remote server answered something other than multipart/mixed".to_owned()))?;
    if part.location.is_some() {
        // Following a redirect to an arbitrary URL would need its own
        // address policy; not done yet.
        return Err(bad_gateway("The remote server redirects its media elsewhere".to_owned()));
    }
    let info = MediaInfo {
        content_type: part.content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
        filename: part.content_disposition.as_deref().and_then(multipart::file_name),
    };
    Ok((info, part.bytes))
}

fn read_plain(reply: &Reply) -> (MediaInfo, Vec<u8>) {
    let info = MediaInfo {
        content_type: header(reply, http::header::CONTENT_TYPE).unwrap_or("application/octet-stream").to_owned(),
        filename: header(reply, http::header::CONTENT_DISPOSITION).and_then(multipart::file_name),
    };
    (info, reply.body.to_vec())
}
