//! [`Store`] over one DynamoDB table (default `levee-kv`, created by `levee provision`).
//!
//! Item layout: partition key `ns` (S, the function's namespace), sort key `k` (S), value `v` (B),
//! and for items written with a TTL `expires_at` (N, epoch seconds: the table's TTL attribute, so
//! DynamoDB deletes them eventually) plus `expires_ms` (N, epoch ms). DynamoDB deletes expired
//! items lazily (often hours later), so every read drops items whose `expires_ms` has passed, and
//! an `if_absent` write treats an expired item as absent. Reads are strongly consistent, so a
//! function reads its own writes as it does on the embedded store. `ver` (N) is the item's
//! version, raised by every write; a commit is one `TransactWriteItems` conditioned on the
//! versions its invocation read.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, TransactWriteItem, Update,
};
use bytes::Bytes;

use crate::aws::errors::{ErrorContext, Resource};
use crate::ids::now_ms;
use crate::store::{
    CommitOutcome, KvCommit, PutOptions, RECORDS_NS, Store, Versioned, validate, validate_scan,
};
use crate::{Error, Result};

/// Most items one `Query` page asks for while scanning.
const PAGE: usize = 1000;

/// Most items in one `TransactWriteItems` call (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Largest `TransactWriteItems` request (DynamoDB's limit), counted over keys and values.
pub const MAX_TRANSACTION_BYTES: usize = 4 << 20;

/// Most keys in one `BatchGetItem` call (DynamoDB's limit).
const MAX_BATCH_GET: usize = 100;

/// Calls one batch read makes for keys DynamoDB left unprocessed before asking them one by one.
const BATCH_GET_ROUNDS: usize = 4;

/// Transactions one commit with adds is rebuilt into when only its counters' checks fail;
/// after that the conflict goes to the worker, which runs the handler again.
const ADD_ROUNDS: usize = 8;

/// A namespaced key-value store in one DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    ctx: ErrorContext,
    table: String,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// The table's partition and sort key of `key` in namespace `ns`. Completion records
/// (`{queue}/{message id}` in [`RECORDS_NS`]) get one partition per queue, `_levee_done/{queue}`,
/// so a function's task role can be granted exactly its own records through
/// `dynamodb:LeadingKeys` (see `levee infra render`).
pub fn item_key<'a>(ns: &str, key: &'a str) -> (String, &'a str) {
    if ns == RECORDS_NS
        && let Some((queue, id)) = key.split_once('/')
    {
        return (records_partition(queue), id);
    }
    (ns.to_string(), key)
}

/// The partition holding queue `queue`'s completion records.
pub fn records_partition(queue: &str) -> String {
    format!("{RECORDS_NS}/{queue}")
}

impl DynamoStore {
    /// A store over `table` (which `levee provision` creates).
    pub fn new(sdk: &SdkConfig, table: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            ctx: ErrorContext::new("dynamodb", sdk),
            table: table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The DynamoDB client, for provisioning.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn key(ns: &str, key: &str) -> HashMap<String, AttributeValue> {
        let (ns, key) = item_key(ns, key);
        HashMap::from([
            ("ns".to_string(), AttributeValue::S(ns)),
            ("k".to_string(), AttributeValue::S(key.to_string())),
        ])
    }

    fn map<E>(&self, op: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.ctx.map(op, Resource::Table(&self.table), err)
    }
}

fn check_ns(ns: &str) -> Result<()> {
    if ns.is_empty() || ns.len() > 1024 {
        return Err(Error::Invalid(format!(
            "kv namespace must be 1 to 1024 bytes, got {}",
            ns.len()
        )));
    }
    Ok(())
}

/// Whether an item read back has expired (items without `expires_ms` never expire).
fn expired(item: &HashMap<String, AttributeValue>, now_ms: u64) -> bool {
    match item.get("expires_ms") {
        Some(AttributeValue::N(n)) => n.parse::<u64>().is_ok_and(|at| at <= now_ms),
        _ => false,
    }
}

/// An item's version; items written before versions existed count as version 1.
fn version(item: &HashMap<String, AttributeValue>) -> u64 {
    match item.get("ver") {
        Some(AttributeValue::N(n)) => n.parse().unwrap_or(1),
        _ => 1,
    }
}

/// The condition that an item is still at version `seen` (0: absent).
fn version_condition(seen: u64) -> (String, Option<HashMap<String, AttributeValue>>) {
    match seen {
        0 => ("attribute_not_exists(k)".into(), None),
        1 => (
            "ver = :seen OR (attribute_exists(k) AND attribute_not_exists(ver))".into(),
            Some(HashMap::from([(
                ":seen".into(),
                AttributeValue::N("1".into()),
            )])),
        ),
        n => (
            "ver = :seen".into(),
            Some(HashMap::from([(
                ":seen".into(),
                AttributeValue::N(n.to_string()),
            )])),
        ),
    }
}

fn value(item: &HashMap<String, AttributeValue>) -> Result<Bytes> {
    match item.get("v") {
        Some(AttributeValue::B(b)) => Ok(Bytes::copy_from_slice(b.as_ref())),
        other => Err(Error::Backend {
            service: "dynamodb".into(),
            message: format!(
                "item has no binary `v` attribute (found {other:?}); was it written by Levee?"
            ),
        }),
    }
}

impl DynamoStore {
    /// One `TransactWriteItems`: a condition check per key read and not written, an update or
    /// delete per write (conditioned on the version read, if read), and the completion record
    /// (conditioned on its absence). Past [`MAX_TRANSACTION_ITEMS`] items it fails with a
    /// permanent error naming the limit: splitting would break atomicity.
    async fn transact(&self, c: &KvCommit) -> Result<CommitOutcome> {
        for (key, v) in &c.writes {
            validate(key, v.as_deref())?;
        }
        let check_only: Vec<&(String, u64)> = c
            .reads
            .iter()
            .filter(|(k, _)| !c.writes.iter().any(|(w, _)| w == k))
            .collect();
        let items = check_only.len() + c.writes.len() + usize::from(c.record.is_some());
        if items > MAX_TRANSACTION_ITEMS {
            return Err(Error::Invalid(format!(
                "this invocation's commit touches {items} DynamoDB items ({} keys read, {} written{}), \
                 over DynamoDB's limit of {MAX_TRANSACTION_ITEMS} items per transaction; read and \
                 write at most {} keys in one invocation on the aws backend",
                c.reads.len(),
                c.writes.len(),
                if c.record.is_some() {
                    ", 1 completion record"
                } else {
                    ""
                },
                MAX_TRANSACTION_ITEMS - 1
            )));
        }
        let bytes: usize = c
            .writes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Bytes::len))
            .chain(c.record.iter().map(|r| r.key.len() + r.value.len()))
            .sum();
        if bytes > MAX_TRANSACTION_BYTES {
            return Err(Error::Invalid(format!(
                "this invocation's commit is {bytes} bytes, over DynamoDB's limit of {} MiB per \
                 transaction",
                MAX_TRANSACTION_BYTES >> 20
            )));
        }
        if items == 0 {
            return Ok(CommitOutcome::Committed {
                versions: Vec::new(),
            });
        }
        let build = |e: aws_sdk_dynamodb::error::BuildError| Error::Backend {
            service: "dynamodb".into(),
            message: format!("building TransactWriteItems: {e}"),
        };
        // Which key each transaction item is about, to name the keys whose check failed.
        let mut about: Vec<Option<&str>> = Vec::with_capacity(items);
        let mut ops = Vec::with_capacity(items);
        for (key, seen) in &check_only {
            let (cond, values) = version_condition(*seen);
            ops.push(
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(Self::key(&c.ns, key)))
                            .condition_expression(cond)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(build)?,
                    )
                    .build(),
            );
            about.push(Some(key.as_str()));
        }
        let mut versions = Vec::with_capacity(c.writes.len());
        for (key, v) in &c.writes {
            let seen = c.read_version(key);
            let (cond, mut values) = match seen {
                Some(seen) => {
                    let (cond, values) = version_condition(seen);
                    (Some(cond), values.unwrap_or_default())
                }
                None => (None, HashMap::new()),
            };
            let op = match v {
                Some(v) => {
                    values.insert(":v".into(), AttributeValue::B(Blob::new(v.to_vec())));
                    // A key read gets the next version of the one its condition checks; a blind
                    // write only raises whatever is there (items without `ver` count as 1).
                    let set_ver = match seen {
                        Some(seen) => {
                            values
                                .insert(":next".into(), AttributeValue::N((seen + 1).to_string()));
                            "ver = :next"
                        }
                        None => {
                            values.insert(":one".into(), AttributeValue::N("1".into()));
                            "ver = if_not_exists(ver, :one) + :one"
                        }
                    };
                    versions.push(seen.map(|s| s + 1));
                    TransactWriteItem::builder()
                        .update(
                            Update::builder()
                                .table_name(&self.table)
                                .set_key(Some(Self::key(&c.ns, key)))
                                .update_expression(format!(
                                    "SET v = :v, {set_ver} REMOVE expires_ms, expires_at"
                                ))
                                .set_condition_expression(cond)
                                .set_expression_attribute_values(Some(values))
                                .build()
                                .map_err(build)?,
                        )
                        .build()
                }
                None => {
                    versions.push(Some(0));
                    TransactWriteItem::builder()
                        .delete(
                            Delete::builder()
                                .table_name(&self.table)
                                .set_key(Some(Self::key(&c.ns, key)))
                                .set_condition_expression(cond)
                                .set_expression_attribute_values(
                                    (!values.is_empty()).then_some(values),
                                )
                                .build()
                                .map_err(build)?,
                        )
                        .build()
                }
            };
            ops.push(op);
            about.push(Some(key.as_str()));
        }
        if let Some(r) = &c.record {
            let now = now_ms();
            let at_ms = now.saturating_add(r.ttl.as_millis().min(u64::MAX as u128) as u64);
            let mut item = Self::key(RECORDS_NS, &r.key);
            item.insert("v".into(), AttributeValue::B(Blob::new(r.value.to_vec())));
            item.insert("ver".into(), AttributeValue::N("1".into()));
            item.insert("expires_ms".into(), AttributeValue::N(at_ms.to_string()));
            item.insert(
                "expires_at".into(),
                AttributeValue::N(at_ms.div_ceil(1000).to_string()),
            );
            ops.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item))
                            .condition_expression("attribute_not_exists(k) OR expires_ms <= :now")
                            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                            .build()
                            .map_err(build)?,
                    )
                    .build(),
            );
            about.push(None);
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(ops))
            .send()
            .await
        {
            Ok(_) => Ok(CommitOutcome::Committed { versions }),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(ex)) =
                    e.as_service_error()
                {
                    let mut keys = Vec::new();
                    let mut duplicate = false;
                    let mut other = None;
                    for (i, reason) in ex.cancellation_reasons().iter().enumerate() {
                        match reason.code() {
                            None | Some("None") => {}
                            // Another transaction holds the item: retry at once, like a conflict.
                            Some("ConditionalCheckFailed" | "TransactionConflict") => {
                                match about.get(i).copied().flatten() {
                                    Some(k) => keys.push(k.to_string()),
                                    None => duplicate = true,
                                }
                            }
                            Some(code) => other = Some(code.to_string()),
                        }
                    }
                    if duplicate {
                        return Ok(CommitOutcome::Duplicate);
                    }
                    if other.is_none() && !keys.is_empty() {
                        return Ok(CommitOutcome::Conflict { keys });
                    }
                }
                Err(self.map("TransactWriteItems", e))
            }
        }
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get_versioned(&self, ns: &str, key: &str) -> Result<Versioned> {
        check_ns(ns)?;
        validate(key, None)?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(ns, key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.map("GetItem", e))?;
        match out.item() {
            Some(item) if !expired(item, now_ms()) => Ok(Versioned {
                value: Some(value(item)?),
                version: version(item),
            }),
            Some(item) => Ok(Versioned {
                value: None,
                version: version(item),
            }),
            None => Ok(Versioned::default()),
        }
    }

    /// `BatchGetItem`, strongly consistent, 100 keys per call (DynamoDB's limit). Keys it leaves
    /// unprocessed (throttling) are asked again up to [`BATCH_GET_ROUNDS`] times with a short
    /// pause, then one by one.
    async fn get_many(&self, ns: &str, keys: &[String]) -> Result<Vec<Option<Bytes>>> {
        check_ns(ns)?;
        for key in keys {
            validate(key, None)?;
        }
        let mut found: HashMap<(String, String), Bytes> = HashMap::new();
        let mut left: Vec<String> = Vec::new();
        for chunk in keys.chunks(MAX_BATCH_GET) {
            // DynamoDB refuses a request that names a key twice.
            let mut unique: Vec<&String> = chunk.iter().collect();
            unique.sort();
            unique.dedup();
            let mut ask: Vec<_> = unique.iter().map(|k| Self::key(ns, k)).collect();
            for round in 0..BATCH_GET_ROUNDS {
                if ask.is_empty() {
                    break;
                }
                if round > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << round)).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut ask)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| Error::Invalid(format!("BatchGetItem request: {e}")))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| self.map("BatchGetItem", e))?;
                let now = now_ms();
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let (Some(AttributeValue::S(n)), Some(AttributeValue::S(k))) =
                        (item.get("ns"), item.get("k"))
                        && !expired(item, now)
                    {
                        found.insert((n.clone(), k.clone()), value(item)?);
                    }
                }
                ask = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
            }
            left.extend(ask.iter().filter_map(|k| match k.get("k") {
                Some(AttributeValue::S(_)) => {
                    chunk.iter().find(|c| Self::key(ns, c) == *k).cloned()
                }
                _ => None,
            }));
        }
        for key in left {
            if let Some(v) = self.get(ns, &key).await? {
                let (n, k) = item_key(ns, &key);
                found.insert((n, k.to_string()), v);
            }
        }
        Ok(keys
            .iter()
            .map(|key| {
                let (n, k) = item_key(ns, key);
                found.get(&(n, k.to_string())).cloned()
            })
            .collect())
    }

    /// One `TransactWriteItems` (see [`DynamoStore::transact`]). DynamoDB cannot add to the
    /// binary value a counter is kept in, so adds are read here (strongly consistent) and
    /// written as version-checked values; when only those checks fail (another add got there
    /// first) the transaction is rebuilt from fresh reads, up to [`ADD_ROUNDS`] times, without
    /// running the handler again: it never saw the counters.
    async fn commit(&self, c: &KvCommit) -> Result<CommitOutcome> {
        check_ns(&c.ns)?;
        c.validate()?;
        if c.adds.is_empty() {
            return self.transact(c).await;
        }
        let mut outcome = CommitOutcome::Conflict { keys: Vec::new() };
        for _ in 0..ADD_ROUNDS {
            let mut plain = KvCommit {
                adds: Vec::new(),
                ..c.clone()
            };
            for (key, delta) in &c.adds {
                let now = self.get_versioned(&c.ns, key).await?;
                let value = crate::store::added(key, now.value.as_deref(), *delta)?;
                plain.reads.push((key.clone(), now.version));
                plain.writes.push((key.clone(), Some(value)));
            }
            outcome = self.transact(&plain).await?;
            match &mut outcome {
                CommitOutcome::Committed { versions } => {
                    versions.truncate(c.writes.len());
                    return Ok(outcome);
                }
                CommitOutcome::Conflict { keys }
                    if keys.iter().all(|k| c.adds.iter().any(|(a, _)| a == k)) => {}
                _ => return Ok(outcome),
            }
        }
        Ok(outcome)
    }
    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool> {
        check_ns(ns)?;
        validate(key, Some(&value))?;
        let now = now_ms();
        let mut values = HashMap::from([
            (
                ":v".to_string(),
                AttributeValue::B(Blob::new(value.to_vec())),
            ),
            (":one".to_string(), AttributeValue::N("1".into())),
        ]);
        let mut set = "SET v = :v, ver = if_not_exists(ver, :one) + :one".to_string();
        match opts.ttl {
            Some(ttl) => {
                let at_ms = now.saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64);
                values.insert(":ems".into(), AttributeValue::N(at_ms.to_string()));
                // DynamoDB's TTL takes whole seconds: round up so the sweeper never runs early.
                values.insert(
                    ":eat".into(),
                    AttributeValue::N(at_ms.div_ceil(1000).to_string()),
                );
                set.push_str(", expires_ms = :ems, expires_at = :eat");
            }
            None => set.push_str(" REMOVE expires_ms, expires_at"),
        }
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(ns, key)))
            .update_expression(set);
        if opts.if_absent {
            values.insert(":now".into(), AttributeValue::N(now.to_string()));
            req = req.condition_expression("attribute_not_exists(k) OR expires_ms <= :now");
        }
        match req
            .set_expression_attribute_values(Some(values))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.map("UpdateItem", e)),
        }
    }

    async fn delete(&self, ns: &str, key: &str) -> Result<()> {
        check_ns(ns)?;
        validate(key, None)?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(ns, key)))
            .send()
            .await
            .map_err(|e| self.map("DeleteItem", e))?;
        Ok(())
    }

    async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>> {
        check_ns(ns)?;
        validate_scan(prefix, limit)?;
        let mut items = Vec::new();
        // Starting after `after` is DynamoDB's own paging: its key is the exclusive start.
        let mut start: Option<HashMap<String, AttributeValue>> = after
            .filter(|a| a.starts_with(prefix))
            .map(|a| Self::key(ns, a));
        let now = now_ms();
        while items.len() < limit {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .limit((limit - items.len()).clamp(1, PAGE) as i32)
                .set_exclusive_start_key(start.take())
                .expression_attribute_values(":ns", AttributeValue::S(ns.to_string()));
            req = if prefix.is_empty() {
                req.key_condition_expression("ns = :ns")
            } else {
                req.key_condition_expression("ns = :ns AND begins_with(k, :p)")
                    .expression_attribute_values(":p", AttributeValue::S(prefix.to_string()))
            };
            let out = req.send().await.map_err(|e| self.map("Query", e))?;
            for item in out.items() {
                if items.len() == limit {
                    break;
                }
                if expired(item, now) {
                    continue;
                }
                let Some(AttributeValue::S(k)) = item.get("k") else {
                    continue;
                };
                items.push((k.clone(), value(item)?));
            }
            match out.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => break,
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_from_expires_ms() {
        let mut item = DynamoStore::key("ns", "k");
        assert!(!expired(&item, 10), "no TTL never expires");
        item.insert("expires_ms".into(), AttributeValue::N("100".into()));
        assert!(!expired(&item, 99));
        assert!(expired(&item, 100));
    }

    #[test]
    fn a_value_that_is_not_binary_is_reported() {
        let mut item = DynamoStore::key("ns", "k");
        item.insert("v".into(), AttributeValue::S("text".into()));
        assert!(
            value(&item)
                .unwrap_err()
                .to_string()
                .contains("no binary `v`")
        );
    }
}
