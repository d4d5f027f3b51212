//! [`EmbeddedStore`]: the [`Store`] trait on the embedded SQLite file, one `kv` table keyed by
//! (namespace, key).
//!
//! Expired items are invisible at once and deleted lazily, by the read that finds them.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{OptionalExtension, params};

use super::{EmbeddedDb, duration_ms, now_ms};
use crate::store::{MAX_KEY_LEN, validate};
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
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>> {
        validate_ns(ns)?;
        validate(key, None)?;
        let (ns_owned, key_owned) = (ns.to_string(), key.to_string());
        let found: Option<(Vec<u8>, Option<i64>)> = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT value, expires_at FROM kv WHERE ns = ?1 AND key = ?2")?
                    .query_row([&ns_owned, &key_owned], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?)
            })
            .await?;
        match found {
            Some((_, Some(expires_at))) if expires_at <= now_ms() => {
                self.purge(ns, vec![key.to_string()]);
                Ok(None)
            }
            Some((value, _)) => Ok(Some(Bytes::from(value))),
            None => Ok(None),
        }
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
                             expires_at = excluded.expires_at
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
                             expires_at = excluded.expires_at",
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

    async fn scan(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>> {
        validate_ns(ns)?;
        if prefix.len() > MAX_KEY_LEN {
            return Err(Error::Invalid(format!(
                "kv scan prefix must be at most {MAX_KEY_LEN} bytes, got {}",
                prefix.len()
            )));
        }
        if limit == 0 {
            return Err(Error::Invalid(
                "kv scan limit must be at least 1, got 0".into(),
            ));
        }
        let (ns_owned, prefix) = (ns.to_string(), prefix.to_string());
        let (items, expired) = self
            .db
            .read(move |conn| {
                let now = now_ms();
                // Keys compare bytewise, so the keys with this prefix are a contiguous run
                // starting at the prefix itself: walk it and stop at the first key past it.
                let mut stmt = conn.prepare_cached(
                    "SELECT key, value, expires_at FROM kv WHERE ns = ?1 AND key >= ?2 ORDER BY key",
                )?;
                let mut rows = stmt.query([&ns_owned, &prefix])?;
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
        assert_eq!(s.scan("fn", "", 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn namespaces_and_scan_limits_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedDb::open(dir.path().join(FILE_NAME))
            .unwrap()
            .store();
        let err = s.get("", "k").await.unwrap_err().to_string();
        assert!(err.contains("namespace"), "{err}");
        let err = s.scan("fn", "", 0).await.unwrap_err().to_string();
        assert!(err.contains("limit"), "{err}");
        let err = s
            .scan("fn", &"p".repeat(MAX_KEY_LEN + 1), 1)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix"), "{err}");
    }
}
