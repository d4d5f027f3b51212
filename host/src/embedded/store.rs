//! [`EmbeddedStore`]: the [`Store`] trait on the embedded SQLite file, one `kv` table keyed by
//! (namespace, key).
//!
//! Expired items are invisible at once and deleted lazily, by the read that finds them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::{EmbeddedDb, duration_ms, now_ms};
use crate::store::{
    CommitOutcome, KvCommit, RECORDS_NS, Record, Versioned, validate, validate_scan,
};
use crate::{Error, PutOptions, Result, Store};

/// Longest namespace (function names are far shorter; DynamoDB's partition key allows more).
const MAX_NS_LEN: usize = 255;

/// The kv store of an [`EmbeddedDb`].
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<EmbeddedDb>,
}

impl EmbeddedStore {
    pub(super) fn new(db: Arc<EmbeddedDb>) -> Self {
        Self { db }
    }

    /// Queues the deletion of items of `ns` that had expired when they were read.
    fn purge(&self, ns: &str, keys: Vec<String>) {
        if keys.is_empty() {
            return;
        }
        let ns = ns.to_string();
        self.db.write_detached(move |conn, _| {
            // Re-checks the expiry: the item may have been rewritten since it was read.
            let mut stmt = conn.prepare_cached(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND expires_at IS NOT NULL AND expires_at <= ?3",
            )?;
            let now = now_ms();
            for key in &keys {
                stmt.execute(params![ns, key, now])?;
            }
            Ok(())
        });
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get_versioned(&self, ns: &str, key: &str) -> Result<Versioned> {
        validate_ns(ns)?;
        validate(key, None)?;
        let (ns_owned, key_owned) = (ns.to_string(), key.to_string());
        let found: Option<(Vec<u8>, Option<i64>, i64)> = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT value, expires_at, version FROM kv WHERE ns = ?1 AND key = ?2",
                    )?
                    .query_row([&ns_owned, &key_owned], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?)
            })
            .await?;
        Ok(match found {
            Some((_, Some(expires_at), version)) if expires_at <= now_ms() => {
                self.purge(ns, vec![key.to_string()]);
                Versioned {
                    value: None,
                    version: version as u64,
                }
            }
            Some((value, _, version)) => Versioned {
                value: Some(Bytes::from(value)),
                version: version as u64,
            },
            None => Versioned::default(),
        })
    }

    /// One read on one connection for every key (one hand-off to the blocking pool, not one per
    /// key).
    async fn get_many(&self, ns: &str, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        validate_ns(ns)?;
        for key in keys {
            validate(key, None)?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (ns_owned, keys_owned) = (ns.to_string(), keys.to_vec());
        let found: Vec<Option<(Vec<u8>, Option<i64>)>> = self
            .db
            .read(move |conn| {
                // One read transaction for all the keys: one snapshot, and one round of locks
                // instead of one per key.
                // Prepared once per connection (`unchecked_transaction` parses its BEGIN each
                // time). A read that fails half-way leaves the transaction open, and
                // `read_pooled` never pools such a connection.
                conn.prepare_cached("BEGIN")?.execute([])?;
                let mut stmt = conn.prepare_cached(
                    "SELECT value, expires_at FROM kv WHERE ns = ?1 AND key = ?2",
                )?;
                let found = keys_owned
                    .iter()
                    .map(|key| {
                        Ok(stmt
                            .query_row([&ns_owned, key], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()?)
                    })
                    .collect::<Result<_>>()?;
                conn.prepare_cached("COMMIT")?.execute([])?;
                Ok(found)
            })
            .await?;
        let now = now_ms();
        let mut expired = Vec::new();
        let values = found
            .into_iter()
            .zip(keys)
            .map(|(row, key)| match row {
                Some((_, Some(at))) if at <= now => {
                    expired.push(key.clone());
                    None
                }
                Some((value, _)) => Some(Bytes::from(value)),
                None => None,
            })
            .collect();
        self.purge(ns, expired);
        Ok(values)
    }

    async fn commit(&self, commit: &KvCommit) -> Result<CommitOutcome> {
        validate_commit(commit)?;
        let commit = commit.clone();
        self.db
            .write(move |conn, _| {
                if let Some(r) = &commit.record
                    && record_exists(conn, &r.key)?
                {
                    return Ok(CommitOutcome::Duplicate);
                }
                let outcome = apply_commit(conn, &commit)?;
                if let (Some(r), CommitOutcome::Committed { .. }) = (&commit.record, &outcome) {
                    insert_record(conn, r)?;
                }
                Ok(outcome)
            })
            .await
    }

    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool> {
        validate_ns(ns)?;
        validate(key, Some(value.as_ref()))?;
        let (ns, key) = (ns.to_string(), key.to_string());
        let ttl = opts.ttl.map(duration_ms);
        self.db
            .write(move |conn, _| {
                let now = now_ms();
                let expires_at = ttl.map(|t| now.saturating_add(t));
                let changed = if opts.if_absent {
                    // An expired item counts as absent and is overwritten.
                    conn.prepare_cached(
                        "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,
                             expires_at = excluded.expires_at, version = kv.version + 1
                         WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?5",
                    )?
                    .execute(params![
                        ns,
                        key,
                        value.as_ref(),
                        expires_at,
                        now
                    ])?
                } else {
                    conn.prepare_cached(
                        "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,
                             expires_at = excluded.expires_at, version = kv.version + 1",
                    )?
                    .execute(params![ns, key, value.as_ref(), expires_at])?
                };
                Ok(changed == 1)
            })
            .await
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<()> {
        validate_ns(ns)?;
        validate(key, None)?;
        let (ns, key) = (ns.to_string(), key.to_string());
        self.db
            .write(move |conn, _| {
                conn.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?
                    .execute([&ns, &key])?;
                Ok(())
            })
            .await
    }

    async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>> {
        validate_ns(ns)?;
        validate_scan(prefix, limit)?;
        let (ns_owned, prefix) = (ns.to_string(), prefix.to_string());
        let after = after.filter(|a| *a >= prefix.as_str()).map(str::to_string);
        let (items, expired) = self
            .db
            .read(move |conn| {
                let now = now_ms();
                // Keys compare bytewise, so the keys with this prefix are a contiguous run
                // starting at the prefix itself: walk it and stop at the first key past it.
                let mut stmt = conn.prepare_cached(
                    "SELECT key, value, expires_at FROM kv WHERE ns = ?1 AND key >= ?2
                     AND (?3 IS NULL OR key > ?3) ORDER BY key",
                )?;
                let mut rows = stmt.query(params![ns_owned, prefix, after])?;
                let (mut items, mut expired) = (Vec::new(), Vec::new());
                while let Some(r) = rows.next()? {
                    let key: String = r.get(0)?;
                    if !key.starts_with(prefix.as_str()) {
                        break;
                    }
                    match r.get::<_, Option<i64>>(2)? {
                        Some(at) if at <= now => expired.push(key),
                        _ => {
                            items.push((key, Bytes::from(r.get::<_, Vec<u8>>(1)?)));
                            if items.len() == limit {
                                break;
                            }
                        }
                    }
                }
                Ok((items, expired))
            })
            .await?;
        self.purge(ns, expired);
        Ok(items)
    }
}

/// Checks a commit's namespace, bounds, keys and values before it reaches the writer thread.
pub(super) fn validate_commit(commit: &KvCommit) -> Result<()> {
    validate_ns(&commit.ns)?;
    commit.validate()?;
    for (key, value) in &commit.writes {
        validate(key, value.as_deref())?;
    }
    Ok(())
}

/// Whether an unexpired completion record `key` exists.
pub(super) fn record_exists(conn: &Connection, key: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
        )?
        .query_row(params![RECORDS_NS, key, now_ms()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Writes a completion record (replacing an expired one).
pub(super) fn insert_record(conn: &Connection, r: &Record) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,
             expires_at = excluded.expires_at, version = kv.version + 1",
    )?
    .execute(params![
        RECORDS_NS,
        r.key,
        r.value.as_ref(),
        now_ms().saturating_add(duration_ms(r.ttl))
    ])?;
    Ok(())
}

/// Inside the writer's transaction: checks the versions `commit` read and, if all are current,
/// applies its writes (not its record). Writes nothing on a conflict.
pub(super) fn apply_commit(conn: &Connection, commit: &KvCommit) -> Result<CommitOutcome> {
    match check_commit(conn, commit)? {
        Checked::Conflict(outcome) => Ok(outcome),
        Checked::Ready(sums) => write_commit(conn, commit, sums),
    }
}

/// What [`check_commit`] found.
pub(super) enum Checked<'a> {
    /// A key read has changed: the outcome to report, nothing to write.
    Conflict(CommitOutcome),
    /// Every read is current; the new values of the counters added to, for [`write_commit`].
    Ready(Vec<(&'a String, Bytes)>),
}

/// The half of [`apply_commit`] that writes nothing: the version checks, and the counters' new
/// values (an add to a value that is not an integer refuses the commit here, before any write,
/// since only SQLite errors roll the group transaction back).
pub(super) fn check_commit<'a>(conn: &Connection, commit: &'a KvCommit) -> Result<Checked<'a>> {
    let mut changed = Vec::new();
    {
        let mut stmt = conn.prepare_cached("SELECT version FROM kv WHERE ns = ?1 AND key = ?2")?;
        for (key, seen) in &commit.reads {
            let now: i64 = stmt
                .query_row(params![commit.ns, key], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if now as u64 != *seen {
                changed.push(key.clone());
            }
        }
    }
    if !changed.is_empty() {
        return Ok(Checked::Conflict(CommitOutcome::Conflict { keys: changed }));
    }
    let mut sums = Vec::with_capacity(commit.adds.len());
    if !commit.adds.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT value FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
        )?;
        let now = now_ms();
        for (key, delta) in &commit.adds {
            let current: Option<Vec<u8>> = stmt
                .query_row(params![commit.ns, key, now], |r| r.get(0))
                .optional()?;
            sums.push((key, crate::store::added(key, current.as_deref(), *delta)?));
        }
    }
    Ok(Checked::Ready(sums))
}

/// The writing half of [`apply_commit`], after [`check_commit`] found every read current.
pub(super) fn write_commit(
    conn: &Connection,
    commit: &KvCommit,
    sums: Vec<(&String, Bytes)>,
) -> Result<CommitOutcome> {
    for (key, value) in &sums {
        conn.prepare_cached(
            "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, NULL)
             ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,
                 expires_at = NULL, version = kv.version + 1",
        )?
        .execute(params![commit.ns, key, value.as_ref()])?;
    }
    let mut versions = Vec::with_capacity(commit.writes.len());
    for (key, value) in &commit.writes {
        match value {
            Some(v) => {
                // A write of the bytes already there keeps the version, so the row comes out
                // byte for byte the same and SQLite leaves its page clean (no WAL frame). Readers
                // of the old version lose nothing: what they read is still what is stored.
                let version: i64 = conn
                    .prepare_cached(
                        "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, NULL)
                         ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,
                             expires_at = NULL,
                             version = kv.version
                                 + (kv.value IS NOT excluded.value OR kv.expires_at IS NOT NULL)
                         RETURNING version",
                    )?
                    .query_row(params![commit.ns, key, v.as_ref()], |r| r.get(0))?;
                versions.push(Some(version as u64));
            }
            None => {
                conn.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?
                    .execute(params![commit.ns, key])?;
                versions.push(Some(0));
            }
        }
    }
    Ok(CommitOutcome::Committed { versions })
}

fn validate_ns(ns: &str) -> Result<()> {
    if ns.is_empty() || ns.len() > MAX_NS_LEN {
        return Err(Error::Invalid(format!(
            "kv namespace must be 1 to {MAX_NS_LEN} bytes, got {}",
            ns.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::FILE_NAME;
    use crate::store::MAX_KEY_LEN;
    use std::time::Duration;

    #[tokio::test]
    async fn expired_items_are_deleted_by_the_read_that_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(dir.path().join(FILE_NAME)).unwrap();
        let s = db.store();
        let ttl = PutOptions {
            if_absent: false,
            ttl: Some(Duration::ZERO),
        };
        s.put("fn", "gone", Bytes::from_static(b"x"), ttl)
            .await
            .unwrap();
        s.put(
            "fn",
            "kept",
            Bytes::from_static(b"y"),
            PutOptions::default(),
        )
        .await
        .unwrap();
        let rows =
            || db.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get::<_, i64>(0))?));
        assert_eq!(rows().await.unwrap(), 2);
        assert_eq!(s.get("fn", "gone").await.unwrap(), None);
        // The purge is queued on the writer; a later write is committed after it.
        s.put(
            "fn",
            "later",
            Bytes::from_static(b"z"),
            PutOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(
            rows().await.unwrap(),
            2,
            "the expired row is gone, `later` was added"
        );
        assert_eq!(s.scan("fn", "", None, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn get_many_answers_in_order_and_drops_the_expired() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(dir.path().join(FILE_NAME)).unwrap();
        let s = db.store();
        let expiring = PutOptions {
            if_absent: false,
            ttl: Some(Duration::ZERO),
        };
        s.put("fn", "a", Bytes::from_static(b"1"), PutOptions::default())
            .await
            .unwrap();
        s.put("fn", "b", Bytes::from_static(b"2"), PutOptions::default())
            .await
            .unwrap();
        s.put("fn", "gone", Bytes::from_static(b"x"), expiring)
            .await
            .unwrap();
        s.put(
            "other",
            "a",
            Bytes::from_static(b"9"),
            PutOptions::default(),
        )
        .await
        .unwrap();
        let keys: Vec<String> = ["b", "missing", "a", "gone", "b"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        let found = s.get_many("fn", &keys).await.unwrap();
        let b = |v: &'static [u8]| Some(Bytes::from_static(v));
        assert_eq!(found, [b(b"2"), None, b(b"1"), None, b(b"2")]);
        assert!(s.get_many("fn", &[]).await.unwrap().is_empty());
        assert!(
            s.get_many("fn", &["".to_string()]).await.is_err(),
            "an empty key is refused"
        );
    }

    #[tokio::test]
    async fn a_write_of_the_same_bytes_keeps_the_version_and_dirties_no_page() {
        let dir = tempfile::tempdir().unwrap();
        let db = EmbeddedDb::open(dir.path().join(FILE_NAME)).unwrap();
        let s = db.store();
        let write = |value: &'static [u8]| KvCommit {
            ns: "fn".into(),
            writes: vec![("k".into(), Some(Bytes::from_static(value)))],
            ..KvCommit::default()
        };
        let version = |o: CommitOutcome| match o {
            CommitOutcome::Committed { versions } => versions[0],
            other => panic!("{other:?}"),
        };
        assert_eq!(version(s.commit(&write(b"a")).await.unwrap()), Some(1));
        // Same bytes: same version, and SQLite writes nothing for it.
        let wal = || {
            std::fs::metadata(dir.path().join(format!("{FILE_NAME}-wal")))
                .unwrap()
                .len()
        };
        let before = wal();
        assert_eq!(version(s.commit(&write(b"a")).await.unwrap()), Some(1));
        assert_eq!(wal(), before, "a same-bytes write appended WAL frames");
        assert_eq!(s.get_versioned("fn", "k").await.unwrap().version, 1);
        // Other bytes: a new version.
        assert_eq!(version(s.commit(&write(b"b")).await.unwrap()), Some(2));
        // A reader of version 1 conflicts with the change, a reader of version 2 does not.
        let check = |seen: u64| KvCommit {
            ns: "fn".into(),
            reads: vec![("k".into(), seen)],
            writes: vec![("k".into(), Some(Bytes::from_static(b"b")))],
            ..KvCommit::default()
        };
        assert!(matches!(
            s.commit(&check(1)).await.unwrap(),
            CommitOutcome::Conflict { .. }
        ));
        assert_eq!(version(s.commit(&check(2)).await.unwrap()), Some(2));
        // An item with an expiry gets a new version even for the same bytes (the expiry goes).
        s.put(
            "fn",
            "t",
            Bytes::from_static(b"x"),
            PutOptions {
                if_absent: false,
                ttl: Some(Duration::from_secs(60)),
            },
        )
        .await
        .unwrap();
        let ttl_write = KvCommit {
            ns: "fn".into(),
            writes: vec![("t".into(), Some(Bytes::from_static(b"x")))],
            ..KvCommit::default()
        };
        assert_eq!(version(s.commit(&ttl_write).await.unwrap()), Some(2));
    }

    #[tokio::test]
    async fn namespaces_and_scan_limits_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedDb::open(dir.path().join(FILE_NAME))
            .unwrap()
            .store();
        let err = s.get("", "k").await.unwrap_err().to_string();
        assert!(err.contains("namespace"), "{err}");
        let err = s.scan("fn", "", None, 0).await.unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
        let err = s
            .scan("fn", &"p".repeat(MAX_KEY_LEN + 1), None, 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix"), "{err}");
    }
}
