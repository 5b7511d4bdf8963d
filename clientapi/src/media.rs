//! The media store: uploaded files on disk, one per media id, under
//! `<media path>/<first two characters of the id>/<id>`.

use std::path::{Path, PathBuf};

use myelin_config::Config;

/// Length of generated media ids (letters and digits).
pub const MEDIA_ID_LEN: usize = 24;

pub struct MediaStore {
    root: PathBuf,
}

impl MediaStore {
    /// The configured media path, or `media` under the data directory.
    pub fn from_config(config: &Config) -> Self {
        let root = config.client_api.media_path.clone().unwrap_or_else(|| config.global.data_dir.join("media"));
        Self { root }
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
}
