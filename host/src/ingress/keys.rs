//! API keys: created once and shown once, stored hashed in the platform's kv store (namespace
//! `_levee_keys`), checked on every request through a small in-memory cache.
//!
//! A key reads `lvk_<id>_<secret>`: the 12-hex-digit id names the record, the 256-bit random
//! secret is only ever stored as its SHA-256. A fast hash is right here (unlike passwords): the
//! secret is random, so there is nothing to guess from the hash. Records are cached: younger than
//! [`FRESH`] they are used as they are; older, they are still used while a refresh runs in the
//! background (no request waits for the store), for up to [`STALE_FOR`] when the store cannot be
//! reached, so a store outage does not lock every client out. A revocation made on another host
//! takes effect there within [`FRESH`] plus one request (during an outage, when the store answers
//! again).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{PutOptions, Store};
use crate::{Error, Result};

/// The store namespace of the key records.
pub const KEYS_NS: &str = "_levee_keys";
/// How long a verified record is trusted without asking the store again (revocations on other
/// hosts take at most this long).
pub const FRESH: Duration = Duration::from_secs(5);
/// How long a record is used when the store cannot be reached.
pub const STALE_FOR: Duration = Duration::from_secs(600);
/// Records held in memory (bounded: a client sending random ids only churns this).
const CACHE_CAPACITY: u64 = 10_000;
/// Longest a store lookup may take before the cached record (or a 503) is used.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Most keys `levee keys list` shows.
pub const MAX_LISTED: usize = 1000;

/// A stored key: never the secret, only its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub group: String,
    /// SHA-256 of the whole key, hex.
    pub hash: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<u64>,
}

impl KeyRecord {
    /// Whether this key may use every route.
    pub fn is_admin(&self) -> bool {
        self.group == crate::ingress::settings::ADMIN_GROUP
    }
}

/// What `levee keys list` shows of a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub group: String,
    pub created_ms: u64,
    pub revoked_ms: Option<u64>,
}

impl From<&KeyRecord> for KeyView {
    fn from(r: &KeyRecord) -> Self {
        KeyView {
            id: r.id.clone(),
            name: r.name.clone(),
            group: r.group.clone(),
            created_ms: r.created_ms,
            revoked_ms: r.revoked_ms,
        }
    }
}

/// Why a presented key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Not of the form `lvk_<id>_<secret>`.
    Malformed,
    /// Unknown id, wrong secret or revoked (one answer for all, so ids cannot be probed).
    Invalid,
    /// The store could not be asked and no record is cached.
    Unavailable,
}

#[derive(Clone)]
struct Cached {
    record: Option<Arc<KeyRecord>>,
    /// When the store last answered for this key.
    verified: Instant,
    /// When the store was last asked (a refresh may be under way).
    checked: Instant,
}

/// The key registry of one host.
pub struct Keys {
    store: Arc<dyn Store>,
    cache: moka::sync::Cache<String, Cached>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

/// Splits `lvk_<id>_<secret>` into its id (without checking the secret).
pub fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("lvk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && (40..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(id)
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

async fn fetch(store: &Arc<dyn Store>, id: &str) -> Result<Option<KeyRecord>> {
    let v = store.get(KEYS_NS, id).await?;
    Ok(v.and_then(|b| serde_json::from_slice(&b).ok()))
}

impl Keys {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Keys {
            store,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(STALE_FOR)
                .build(),
        }
    }

    /// Creates a key for `group`; returns the key (shown once) and its record.
    pub async fn create(&self, group: &str, name: &str) -> Result<(String, KeyRecord)> {
        let group_ok =
            group == crate::ingress::settings::ADMIN_GROUP || crate::manifest::valid_name(group);
        if !group_ok {
            return Err(Error::Invalid(format!(
                "group `{group}`: 1-64 characters of a-z, 0-9 and '-' (or `admin`)"
            )));
        }
        if name.len() > 128 || name.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "a key name is at most 128 printable characters".into(),
            ));
        }
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        use base64::Engine as _;
        let key = format!(
            "lvk_{}_{}",
            hex::encode(id),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let record = KeyRecord {
            id: hex::encode(id),
            name: name.to_string(),
            group: group.to_string(),
            hash: hash(&key),
            created_ms: crate::ids::now_ms(),
            revoked_ms: None,
        };
        let fresh = self
            .store
            .put(
                KEYS_NS,
                &record.id,
                Bytes::from(serde_json::to_vec(&record).expect("record serialises")),
                PutOptions {
                    if_absent: true,
                    ttl: None,
                },
            )
            .await?;
        if !fresh {
            return Err(Error::Unavailable {
                service: "keys".into(),
                message: "key id collision; try again".into(),
            });
        }
        Ok((key, record))
    }

    /// Every key (revoked ones too), oldest first, at most [`MAX_LISTED`].
    pub async fn list(&self) -> Result<Vec<KeyView>> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        while out.len() < MAX_LISTED {
            let page = self.store.scan(KEYS_NS, "", after.as_deref(), 100).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let full = page.len() == 100;
            for (_, v) in page {
                if let Ok(r) = serde_json::from_slice::<KeyRecord>(&v) {
                    out.push(KeyView::from(&r));
                }
            }
            if !full {
                break;
            }
        }
        out.truncate(MAX_LISTED);
        out.sort_by_key(|k| k.created_ms);
        Ok(out)
    }

    /// Revokes key `id`; false when there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool> {
        let Some(mut record) = fetch(&self.store, id).await? else {
            return Ok(false);
        };
        if record.revoked_ms.is_none() {
            record.revoked_ms = Some(crate::ids::now_ms());
            self.store
                .put(
                    KEYS_NS,
                    id,
                    Bytes::from(serde_json::to_vec(&record).expect("record serialises")),
                    PutOptions::default(),
                )
                .await?;
        }
        self.cache.invalidate(id);
        Ok(true)
    }

    /// Checks a presented key.
    pub async fn verify(&self, key: &str) -> std::result::Result<Arc<KeyRecord>, Rejected> {
        let id = key_id(key).ok_or(Rejected::Malformed)?;
        let record = match self.cache.get(id) {
            Some(c) if c.checked.elapsed() < FRESH => c.record,
            Some(c) if c.verified.elapsed() < STALE_FOR => {
                // Serve what we have; one background refresh per FRESH period.
                self.cache.insert(
                    id.to_string(),
                    Cached {
                        checked: Instant::now(),
                        ..c.clone()
                    },
                );
                let (store, cache, id) = (self.store.clone(), self.cache.clone(), id.to_string());
                tokio::spawn(async move {
                    if let Ok(Ok(r)) =
                        tokio::time::timeout(LOOKUP_TIMEOUT, fetch(&store, &id)).await
                    {
                        let now = Instant::now();
                        let record = r.map(Arc::new);
                        cache.insert(
                            id,
                            Cached {
                                record,
                                verified: now,
                                checked: now,
                            },
                        );
                    }
                });
                c.record
            }
            _ => match tokio::time::timeout(LOOKUP_TIMEOUT, fetch(&self.store, id)).await {
                Ok(Ok(r)) => {
                    let now = Instant::now();
                    let record = r.map(Arc::new);
                    self.cache.insert(
                        id.to_string(),
                        Cached {
                            record: record.clone(),
                            verified: now,
                            checked: now,
                        },
                    );
                    record
                }
                _ => return Err(Rejected::Unavailable),
            },
        };
        match record {
            Some(r) if r.revoked_ms.is_none() && same(&r.hash, &hash(key)) => Ok(r),
            _ => Err(Rejected::Invalid),
        }
    }

    /// Whether `key` (e.g. read from a key file) is a valid admin key.
    pub async fn is_admin_key(&self, key: &str) -> bool {
        matches!(self.verify(key).await, Ok(r) if r.is_admin())
    }
}
