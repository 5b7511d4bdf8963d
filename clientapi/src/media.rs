//! The media store: uploaded files on disk, one per media id, under
//! `<media path>/<first two characters of the id>/<id>`.

use std::path::{Path, PathBuf};

use myelin_config::Config;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

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

/// Length of generated media ids (letters and digits).
pub const MEDIA_ID_LEN: usize = 24;

pub struct MediaStore {
    root: PathBuf,
    /// Wakes downloads waiting for the content of a created `mxc://` URI
    /// when an upload in this process completes.
    uploaded: Notify,
}

impl MediaStore {
    /// The configured media path, or `media` under the data directory.
    pub fn from_config(config: &Config) -> Self {
        let root = config.client_api.media_path.clone().unwrap_or_else(|| config.global.data_dir.join("media"));
        Self { root, uploaded: Notify::new() }
    }

    /// Whether `media_id` could be one this server generated; anything else
    /// never reaches the file system.
    pub fn is_valid_id(media_id: &str) -> bool {
        media_id.len() == MEDIA_ID_LEN && media_id.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    fn path_of(&self, media_id: &str) -> PathBuf {
        self.root.join(&media_id[..2]).join(media_id)
    }

    /// Write the file whole: to a temporary name first, so a crash never
    /// leaves a partial file under the real one.
    pub async fn write(&self, media_id: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path_of(media_id);
        let dir = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await?;
        let partial = dir.join(format!("{media_id}.partial"));
        tokio::fs::write(&partial, bytes).await?;
        tokio::fs::rename(&partial, &path).await
    }

    pub async fn read(&self, media_id: &str) -> std::io::Result<Vec<u8>> {
        tokio::fs::read(self.path_of(media_id)).await
    }

    pub async fn remove(&self, media_id: &str) -> std::io::Result<()> {
        tokio::fs::remove_file(self.path_of(media_id)).await
    }

    /// Completes at the next [`Self::announce_upload`] (once enabled).
    pub fn next_upload(&self) -> Notified<'_> {
        self.uploaded.notified()
    }

    /// Content reached a created `mxc://` URI: waiting downloads look again.
    pub fn announce_upload(&self) {
        self.uploaded.notify_waiters();
    }
}

/// `inline` only for [`INLINE_TYPES`]; the file name as an RFC 6266
/// `filename*` (UTF-8, percent-encoded).
pub fn content_disposition(content_type: &str, file_name: Option<&str>) -> String {
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
