//! [`Store`] over one DynamoDB table (default `levee-kv`, created by `levee provision`).
//!
//! Item layout: partition key `ns` (S, the function's namespace), sort key `k` (S), value `v` (B),
//! and for items written with a TTL `expires_at` (N, epoch seconds: the table's TTL attribute, so
//! DynamoDB deletes them eventually) plus `expires_ms` (N, epoch ms). DynamoDB deletes expired
//! items lazily (often hours later), so every read drops items whose `expires_ms` has passed, and
//! an `if_absent` write treats an expired item as absent. Reads are strongly consistent, so a
//! function reads its own writes as it does on the embedded store.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use bytes::Bytes;

use crate::aws::{ErrorContext, Resource, now_ms};
use crate::store::{PutOptions, Store, validate};
use crate::{Error, Result};

/// Most items one `Query` page asks for while scanning.
const PAGE: usize = 1000;

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
        HashMap::from([
            ("ns".to_string(), AttributeValue::S(ns.to_string())),
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

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Bytes>> {
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
            Some(item) if !expired(item, now_ms()) => value(item).map(Some),
            _ => Ok(None),
        }
    }

    async fn put(&self, ns: &str, key: &str, value: Bytes, opts: PutOptions) -> Result<bool> {
        check_ns(ns)?;
        validate(key, Some(&value))?;
        let now = now_ms();
        let mut item = Self::key(ns, key);
        item.insert("v".into(), AttributeValue::B(Blob::new(value.to_vec())));
        if let Some(ttl) = opts.ttl {
            let at_ms = now.saturating_add(ttl.as_millis().min(u64::MAX as u128) as u64);
            item.insert("expires_ms".into(), AttributeValue::N(at_ms.to_string()));
            // DynamoDB's TTL takes whole seconds: round up so the sweeper never runs early.
            item.insert(
                "expires_at".into(),
                AttributeValue::N(at_ms.div_ceil(1000).to_string()),
            );
        }
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        if opts.if_absent {
            req = req
                .condition_expression("attribute_not_exists(k) OR expires_ms <= :now")
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.map("PutItem", e)),
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

    async fn scan(&self, ns: &str, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>> {
        check_ns(ns)?;
        if prefix.len() > crate::store::MAX_KEY_LEN {
            return Err(Error::Invalid(format!(
                "kv scan prefix must be at most {} bytes, got {}",
                crate::store::MAX_KEY_LEN,
                prefix.len()
            )));
        }
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
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
