//! [`Blobs`] as files under `<data_dir>/blobs/`, for the embedded backend.
//!
//! A key is a `/`-separated relative path; each segment becomes a directory or file name, so
//! `modules/abc.cwasm` is `<data_dir>/blobs/modules/abc.cwasm`. Segments that could escape the root
//! or collide with the temporary directory (empty, `.`, `..`, anything starting with `.`) and
//! characters with special meaning (`\`, NUL) are refused. Writes go to a temporary file under
//! `blobs/.tmp/`, are fsynced, then renamed over the target: a reader sees the old or the new
//! bytes, never a partial file, even after a crash.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::blobs::Blobs;
use crate::ids::random_id;
use crate::{Error, Result};

/// Longest key accepted, in bytes (as for S3).
pub const MAX_KEY_LEN: usize = 1024;

/// Blob storage in a directory.
#[derive(Debug, Clone)]
pub struct DiskBlobs {
    root: PathBuf,
}

impl DiskBlobs {
    /// Blobs under `<data_dir>/blobs/` (created on first write).
    pub fn new(data_dir: impl AsRef<Path>) -> Self {
        Self {
            root: data_dir.as_ref().join("blobs"),
        }
    }

    /// The directory holding the blobs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`, or an error naming what is wrong with the key.
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::Invalid(format!(
                "blob key must be 1 to {MAX_KEY_LEN} bytes, got {}",
                key.len()
            )));
        }
        if key.contains(['\\', '\0']) {
            return Err(Error::Invalid(format!(
                "blob key `{}` contains `\\` or NUL",
                key.escape_debug()
            )));
        }
        let mut path = self.root.clone();
        for segment in key.split('/') {
            if segment.is_empty() || segment.starts_with('.') || segment.len() > 255 {
                return Err(Error::Invalid(format!(
                    "blob key `{key}`: segment `{segment}` is not allowed (segments are 1 to 255 bytes, \
                     not empty, `.`, `..` or starting with `.`)"
                )));
            }
            path.push(segment);
        }
        Ok(path)
    }
}

fn write_atomically(root: &Path, path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp_dir = root.join(".tmp");
    std::fs::create_dir_all(&tmp_dir)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = tmp_dir.join(random_id());
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory entry is.
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("blob file task", std::io::Error::other(e.to_string())))?
}

#[async_trait]
impl Blobs for DiskBlobs {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path_of(key)?;
        let root = self.root.clone();
        blocking(move || {
            write_atomically(&root, &path, &data)
                .map_err(|e| Error::io(format!("writing blob {}", path.display()), e))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path_of(key)?;
        blocking(move || match std::fs::read(&path) {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading blob {}", path.display()), e)),
        })
        .await
    }

    /// Reads the file's length and its first `n` bytes only.
    async fn head(&self, key: &str, n: usize) -> Result<Option<(u64, Bytes)>> {
        use std::io::Read as _;
        let path = self.path_of(key)?;
        blocking(move || {
            let read = || -> std::io::Result<(u64, Bytes)> {
                let file = std::fs::File::open(&path)?;
                let size = file.metadata()?.len();
                let mut head = Vec::with_capacity(n.min(size as usize));
                file.take(n as u64).read_to_end(&mut head)?;
                Ok((size, Bytes::from(head)))
            };
            match read() {
                Ok(found) => Ok(Some(found)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(format!("reading blob {}", path.display()), e)),
            }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting blob {}", path.display()), e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_replace_delete() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DiskBlobs::new(dir.path());
        assert_eq!(blobs.get("modules/a.cwasm").await.unwrap(), None);
        blobs
            .put("modules/a.cwasm", Bytes::from_static(b"one"))
            .await
            .unwrap();
        blobs
            .put("modules/a.cwasm", Bytes::from_static(b"two"))
            .await
            .unwrap();
        assert_eq!(
            blobs.get("modules/a.cwasm").await.unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert!(dir.path().join("blobs/modules/a.cwasm").is_file());
        let (size, head) = blobs.head("modules/a.cwasm", 2).await.unwrap().unwrap();
        assert_eq!((size, &head[..]), (3, &b"tw"[..]));
        blobs.delete("modules/a.cwasm").await.unwrap();
        blobs.delete("modules/a.cwasm").await.unwrap();
        assert_eq!(blobs.head("modules/a.cwasm", 2).await.unwrap(), None);
        assert_eq!(blobs.get("modules/a.cwasm").await.unwrap(), None);
        let leftovers = std::fs::read_dir(dir.path().join("blobs/.tmp"))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0, "temporary files are renamed away");
    }

    #[tokio::test]
    async fn keys_that_could_escape_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DiskBlobs::new(dir.path());
        for key in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            ".tmp/x",
            "a\\b",
            "",
            "a/",
        ] {
            let err = blobs.put(key, Bytes::from_static(b"x")).await.unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{key}: {err}");
        }
        assert!(!dir.path().join("x").exists());
        let e = blobs.get("a/../b").await.unwrap_err().to_string();
        assert!(e.contains("segment `..`"), "{e}");
    }
}
