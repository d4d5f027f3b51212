//! The checkpoint thread: copies committed WAL frames into the database file from a connection
//! of its own, so the writer thread never stops to do it.
//!
//! With SQLite's automatic checkpoints the writer runs one inside a `COMMIT` every 1,000 WAL
//! pages: it copies up to 4 MiB into the database file and syncs twice (a few ms here), and every
//! commit queued behind it waits. A `PASSIVE` checkpoint from another connection does the same
//! work beside the writer, on the other core, without taking the write lock. The writer keeps a
//! later automatic checkpoint ([`BACKSTOP_PAGES`]), which then finds little left to copy.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Error, Result};

/// How often the thread checkpoints.
const EVERY: Duration = Duration::from_millis(50);
/// The writer's automatic checkpoint, kept as a backstop: 4,000 pages (16 MiB of WAL). It also
/// restarts the WAL from its beginning, which a checkpoint running beside a busy writer cannot.
pub(super) const BACKSTOP_PAGES: i64 = 4_000;

/// A running checkpoint thread; stops (after one last checkpoint) when dropped.
pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode).
    pub(super) fn start(path: &Path) -> Result<Self> {
        let conn = super::open_connection(path, false)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("levee-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &flag))
            .map_err(|e| Error::io("starting the sqlite checkpoint thread", e))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // Woken at once: closing a database (every CLI command) does not wait out a period.
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn run(conn: &rusqlite::Connection, stop: &AtomicBool) {
    loop {
        std::thread::park_timeout(EVERY);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Nothing new in the WAL costs a lock and a header read; new frames are copied and the
        // two files synced, here rather than inside a commit.
        if let Err(e) = checkpoint(conn) {
            tracing::debug!("background checkpoint failed (the writer's backstop remains): {e}");
        }
    }
    // One last pass so a clean shutdown leaves little WAL behind.
    let _ = checkpoint(conn);
}

/// Runs a passive checkpoint: copies what no reader still needs, never waits for a lock.
fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use crate::embedded::{EmbeddedDb, FILE_NAME};
    use crate::store::Store;

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_the_writer_checkpointing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let db = EmbeddedDb::open(&path).unwrap();
        let store = db.store();
        // About 2 MiB of values: 500 pages or more, far below the writer's own backstop.
        for i in 0..200 {
            let value = Bytes::from(vec![b'a' + (i % 26) as u8; 10_000]);
            store
                .put("ns", &format!("k{i}"), value, Default::default())
                .await
                .unwrap();
        }
        let start = Instant::now();
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        while size() < 2_000_000 && start.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            size() >= 2_000_000,
            "the file holds {} bytes: nothing was checkpointed",
            size()
        );
        // The values read back whole after the copy.
        let v = store.get("ns", "k199").await.unwrap().unwrap();
        assert_eq!(v.len(), 10_000);
    }
}
