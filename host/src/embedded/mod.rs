//! The embedded durable backend: one SQLite file (WAL, `synchronous=NORMAL`) holding every queue,
//! dead-letter queue, running total and kv namespace of a Levee installation.
//!
//! All writes go through one writer thread that drains a channel of operations and commits as
//! many as are waiting in one transaction (group commit); each caller awaits its own result, which
//! it receives only after the commit, so an `Ok` means "durably committed" (it survives SIGKILL of
//! the process; WAL with `synchronous=NORMAL` does not promise survival of a power loss). Reads
//! (stats, kv get, scans) use a small pool of separate read connections that never block on the
//! writer, and a checkpoint thread copies the WAL into the file beside the writer.

mod checkpoint;
mod queue;
mod store;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{Error, Result};

pub use queue::EmbeddedQueue;
pub use store::EmbeddedStore;

use writer::{Job, Wakes};

/// Conventional name of the database file inside a data directory.
pub const FILE_NAME: &str = "levee.db";

/// Schema version this build writes, kept in `PRAGMA user_version`. Version 2 added kv item
/// versions (optimistic concurrency), version 3 the death history of redriven messages and the
/// dead-letter id index; older files are upgraded in place on open.
const SCHEMA_VERSION: i64 = 3;

/// How long a connection waits for a lock held by another process (e.g. a CLI opening the file
/// while `levee up` runs) before failing with a retryable "database is busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections kept open for reuse; more are opened on demand under load and closed after.
/// Invocations read in place, and on 2 cores more than 4 of them were often mid-read at once
/// (preempted), so with 4 the pipeline bench opened and closed a connection 100-200 times a
/// second (0.7% of its CPU). Memory stays bounded by [`READER_CACHE_KIB`] per connection.
const READ_POOL: usize = 16;

/// Page cache of a read connection, in KiB. In WAL mode a reader's cache is emptied whenever
/// another connection has committed since its last read, which the busy writer nearly always
/// has, so a large one buys little; the writer keeps the large cache.
const READER_CACHE_KIB: i64 = 4_096;

const SCHEMA: &str = "
CREATE TABLE queues (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    max_receive INTEGER NOT NULL,
    processed   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    retried     INTEGER NOT NULL DEFAULT 0
);
-- `visible_at` is when the message can next be received (ms since the epoch); `leased` tells an
-- in-flight message (hidden by a receive) from a delayed one (hidden by a delay or a backoff);
-- `token` is the current receipt's secret, replaced on every receive so older receipts go stale.
CREATE TABLE messages (
    seq           INTEGER PRIMARY KEY,
    queue         INTEGER NOT NULL,
    id            TEXT NOT NULL,
    body          BLOB NOT NULL,
    attrs         BLOB,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    leased        INTEGER NOT NULL DEFAULT 0,
    receive_count INTEGER NOT NULL DEFAULT 0,
    token         INTEGER,
    last_error    TEXT,
    history       TEXT
);
CREATE INDEX messages_ready ON messages (queue, visible_at, leased);
CREATE INDEX messages_age ON messages (queue, sent_at);
CREATE TABLE dead_letters (
    seq           INTEGER PRIMARY KEY,
    queue         INTEGER NOT NULL,
    id            TEXT NOT NULL,
    body          BLOB NOT NULL,
    attrs         BLOB,
    sent_at       INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    dead_at       INTEGER NOT NULL,
    history       TEXT
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, seq);
CREATE INDEX dead_letters_id ON dead_letters (queue, id);
CREATE TABLE kv (
    ns         TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_at INTEGER,
    version    INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
";

/// Upgrades a version 1 file: items written before versions existed count as version 1.
const MIGRATE_1_TO_2: &str = "ALTER TABLE kv ADD COLUMN version INTEGER NOT NULL DEFAULT 1;";

/// Upgrades a version 2 file: `history` is the JSON list of a redriven message's past deaths
/// (NULL: never redriven); the id index serves `dlq_get`.
const MIGRATE_2_TO_3: &str = "
ALTER TABLE messages ADD COLUMN history TEXT;
ALTER TABLE dead_letters ADD COLUMN history TEXT;
CREATE INDEX dead_letters_id ON dead_letters (queue, id);
";

/// One open database file: the writer thread, the read pool and the long-poll wakers.
///
/// Dropping the last handle stops the writer after it has committed what it was given.
pub struct EmbeddedDb {
    jobs: Option<mpsc::UnboundedSender<Box<dyn Job>>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<checkpoint::Checkpointer>,
    shared: Arc<Shared>,
}

/// State the writer thread and the read tasks share.
struct Shared {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

impl std::fmt::Debug for EmbeddedDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedDb")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedDb {
    /// Opens (creating if missing, with its parent directories) the database file at `path`,
    /// creates or checks the schema and starts the writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Arc<Self>> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating data directory {}", dir.display()), e))?;
        }
        let conn = open_connection(&path, false)?;
        init_schema(&conn, &path)?;
        // WAL pages are copied into the file by a thread of their own, not inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)?;
        let checkpointer = Some(checkpoint::Checkpointer::start(&path)?);
        let shared = Arc::new(Shared {
            path,
            readers: Mutex::new(Vec::new()),
            wakers: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("levee-sqlite-writer".into())
                .spawn(move || writer::run(conn, rx, &shared))
                .map_err(|e| Error::io("starting the sqlite writer thread", e))?
        };
        Ok(Arc::new(Self {
            jobs: Some(tx),
            writer: Some(writer),
            checkpointer,
            shared,
        }))
    }

    /// The file this database lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The queue service backed by this file.
    pub fn queue(self: &Arc<Self>) -> EmbeddedQueue {
        EmbeddedQueue::new(self.clone())
    }

    /// The kv store backed by this file.
    pub fn store(self: &Arc<Self>) -> EmbeddedStore {
        EmbeddedStore::new(self.clone())
    }

    /// Runs SQLite's `PRAGMA integrity_check`; an error lists what is corrupt.
    pub async fn integrity_check(&self) -> Result<()> {
        let problems: Vec<String> = self
            .read(|conn| {
                let mut stmt = conn.prepare("PRAGMA integrity_check")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(Error::from)
            })
            .await?;
        if problems.len() == 1 && problems[0] == "ok" {
            Ok(())
        } else {
            Err(Error::Backend {
                service: "sqlite".into(),
                message: format!(
                    "integrity check of {} failed: {}",
                    self.shared.path.display(),
                    problems.join("; ")
                ),
            })
        }
    }

    /// Runs `f` on the writer thread inside the current group transaction and returns its result
    /// once that transaction has committed. `f` may run more than once (after a rollback caused by
    /// another operation of the same group), so it must not consume its captures; it must also
    /// check everything that can fail for a reason of its own before it writes anything, because
    /// only SQLite errors roll back the group.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection, &mut Wakes) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.submit(writer::job(f, Some(reply)))?;
        rx.await.map_err(|_| writer_stopped())?
    }

    /// Queues a write nobody waits for (lazy deletion of expired kv items).
    fn write_detached<F>(&self, f: F)
    where
        F: FnMut(&Connection, &mut Wakes) -> Result<()> + Send + 'static,
    {
        // Losing this write only postpones a cleanup that the next read retries.
        let _ = self.submit(writer::job(f, None));
    }

    fn submit(&self, job: Box<dyn Job>) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(writer_stopped)?
            .send(job)
            .map_err(|_| writer_stopped())
    }

    /// Runs `f` on a pooled read connection on tokio's blocking pool, or right here on a thread
    /// that may block in store calls (a guest's, see [`crate::store::in_place`]).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        if crate::store::in_place::allowed() {
            return read_pooled(&self.shared, f);
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || read_pooled(&shared, f))
            .await
            .map_err(|e| Error::Backend {
                service: "sqlite".into(),
                message: format!("read task failed: {e}"),
            })?
    }

    /// The long-poll waker of `queue`, created on first use.
    fn waker(&self, queue: &str) -> Arc<Notify> {
        self.shared.waker(queue)
    }
}

impl Shared {
    fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = wakers.get(queue) {
            return n.clone();
        }
        let n = Arc::new(Notify::new());
        wakers.insert(queue.to_string(), n.clone());
        n
    }
}

impl Drop for EmbeddedDb {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the jobs it holds and exit; joining makes
        // sure the file is closed before, say, a test reopens it.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.checkpointer.take();
    }
}

/// Runs `f` on a pooled read connection, on the calling thread.
fn read_pooled<T>(shared: &Shared, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let pooled = shared
        .readers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop();
    let conn = match pooled {
        Some(conn) => conn,
        None => open_connection(&shared.path, true)?,
    };
    let result = f(&conn);
    // A read that failed half-way may leave a transaction open; never pool such a connection.
    if conn.is_autocommit() {
        let mut pool = shared.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
    }
    result
}

fn writer_stopped() -> Error {
    Error::Unavailable {
        service: "sqlite".into(),
        message: "the writer thread has stopped".into(),
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| Error::Backend {
        service: "sqlite".into(),
        message: format!("cannot open {}: {e}", path.display()),
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    // Query planner stability: without it SQLite marks a cached statement for re-preparing
    // whenever a new value is bound to a `LIMIT ?` or to an equality filter that switches between
    // 0/1 and other integers (`queue = ?` with queue ids 1, 2, ...), so the writer parsed and
    // planned the lease and lease-check statements again on most executions (2.6% of the
    // pipeline's CPU). Those value-sensitive plans only matter with `ANALYZE` statistics, which
    // Levee never gathers: its plans come from the indexes alone.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    let cache_kib = if read_only { READER_CACHE_KIB } else { 16_384 };
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    if read_only {
        // Opened read-write (WAL readers need to update the shared-memory index) but refusing
        // writes, so a bug cannot bypass the writer thread.
        conn.pragma_update(None, "query_only", true)?;
    } else {
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Backend {
                service: "sqlite".into(),
                message: format!("{} refused WAL mode (got `{mode}`)", path.display()),
            });
        }
        // In WAL mode NORMAL syncs only at checkpoints: a commit is in the OS once COMMIT
        // returns, which survives the process being killed.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(conn)
}

fn init_schema(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
            Ok(())
        }
        1 => {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {MIGRATE_1_TO_2} {MIGRATE_2_TO_3}
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
            Ok(())
        }
        2 => {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {MIGRATE_2_TO_3} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
            Ok(())
        }
        SCHEMA_VERSION => Ok(()),
        other => Err(Error::Backend {
            service: "sqlite".into(),
            message: format!(
                "{} has schema version {other}, but this build of levee knows only version \
                 {SCHEMA_VERSION}; use a newer levee",
                path.display()
            ),
        }),
    }
}

/// Milliseconds since the Unix epoch ([`crate::ids::now_ms`]) as SQLite's integer: persisted
/// timestamps must survive a restart.
fn now_ms() -> i64 {
    i64::try_from(crate::ids::now_ms()).unwrap_or(i64::MAX)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_statements_are_not_re_prepared_when_bound_values_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let conn = open_connection(&path, false).unwrap();
        init_schema(&conn, &path).unwrap();
        // The shapes SQLite re-plans per bound value unless the planner is held stable: a
        // `LIMIT ?` and an equality filter on a small integer outside the index used.
        let statements = [
            (
                "SELECT seq FROM messages WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at LIMIT ?3",
                3,
            ),
            (
                "SELECT seq FROM messages WHERE seq = ?1 AND queue = ?2 AND token = ?3",
                3,
            ),
        ];
        for (sql, n) in statements {
            for i in 0..20i64 {
                let mut stmt = conn.prepare_cached(sql).unwrap();
                let values: Vec<i64> = (0..n).map(|k| (i + k) % 3).collect();
                let mut rows = stmt.query(rusqlite::params_from_iter(values)).unwrap();
                while rows.next().unwrap().is_some() {}
            }
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "{sql}"
            );
        }
    }

    #[tokio::test]
    async fn reopening_keeps_the_schema_and_rejects_newer_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/levee.db");
        drop(EmbeddedDb::open(&path).unwrap());
        let db = EmbeddedDb::open(&path).unwrap();
        db.integrity_check().await.unwrap();
        drop(db);

        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = EmbeddedDb::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema version 99"), "{err}");
    }

    #[tokio::test]
    async fn a_version_2_file_is_upgraded_with_the_history_columns() {
        use crate::{OutgoingMessage, Queue, QueueSpec};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        // The version 2 schema: this one without the history columns and the id index.
        let v2 = SCHEMA.replace(",\n    history       TEXT", "").replace(
            "CREATE INDEX dead_letters_id ON dead_letters (queue, id);",
            "",
        );
        assert!(!v2.contains("history"));
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!("{v2} PRAGMA user_version = 2;"))
            .unwrap();
        drop(conn);
        let db = EmbeddedDb::open(&path).unwrap();
        db.integrity_check().await.unwrap();
        let q = db.queue();
        q.ensure(&QueueSpec {
            name: "q".into(),
            max_receive: 1,
        })
        .await
        .unwrap();
        q.send("q", vec![OutgoingMessage::new("a")]).await.unwrap();
        assert_eq!(q.dlq_redrive("q").await.unwrap(), 0);
        let page = q.dlq_page("q", None, 10).await.unwrap();
        assert!(page.letters.is_empty());
        let version: i64 = db
            .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[tokio::test]
    async fn the_file_is_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(dir.path().join(FILE_NAME)).unwrap();
        let mode: String = db
            .read(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
