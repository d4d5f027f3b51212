//! `levee provision`: creates, idempotently, the AWS resources a manifest needs (every function's
//! queue and dead-letter queue with its redrive policy, the key-value table with TTL enabled, the
//! blob bucket) and reports for each whether it was created or already existed.

use std::fmt;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, BucketLocationConstraint, CreateBucketConfiguration,
    ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};

use crate::aws::errors::{ErrorContext, Resource};
use crate::aws::settings::AwsSettings;
use crate::blobs::s3::S3Blobs;
use crate::queue::QueueSpec;
use crate::queue::offload::PAYLOAD_PREFIX;
use crate::queue::sqs::SqsQueue;
use crate::store::dynamo::DynamoStore;
use crate::{Error, Result};

/// Days after which a leftover large payload is removed by the bucket's lifecycle rule: longer
/// than SQS's longest retention (14 days), so no live message loses its payload.
pub const PAYLOAD_EXPIRY_DAYS: i32 = 30;
/// How long to wait for a new table to become ACTIVE.
const TABLE_WAIT: Duration = Duration::from_secs(120);

/// Whether provisioning created a resource or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Exists,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Exists => "exists",
        })
    }
}

/// The kind of a provisioned resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    Queue,
    DeadLetterQueue,
    Table,
    Bucket,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Queue => "sqs queue",
            ResourceKind::DeadLetterQueue => "sqs dead-letter queue",
            ResourceKind::Table => "dynamodb table",
            ResourceKind::Bucket => "s3 bucket",
        })
    }
}

/// One resource and what provisioning did with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Provisioned {
    pub kind: ResourceKind,
    pub name: String,
    pub outcome: Outcome,
    /// Extra facts worth printing (redrive policy, TTL attribute).
    pub detail: String,
}

/// What [`provision`] did, one line per resource when displayed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProvisionReport {
    pub resources: Vec<Provisioned>,
}

impl ProvisionReport {
    /// How many resources were created by this run.
    pub fn created(&self) -> usize {
        self.resources
            .iter()
            .filter(|r| r.outcome == Outcome::Created)
            .count()
    }

    /// The entry for `name`, if provisioned.
    pub fn get(&self, name: &str) -> Option<&Provisioned> {
        self.resources.iter().find(|r| r.name == name)
    }

    fn push(
        &mut self,
        kind: ResourceKind,
        name: impl Into<String>,
        outcome: Outcome,
        detail: impl Into<String>,
    ) {
        self.resources.push(Provisioned {
            kind,
            name: name.into(),
            outcome,
            detail: detail.into(),
        });
    }
}

impl fmt::Display for ProvisionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind_w = self
            .resources
            .iter()
            .map(|r| r.kind.to_string().len())
            .max()
            .unwrap_or(0);
        let name_w = self
            .resources
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0);
        for r in &self.resources {
            let kind = r.kind.to_string();
            write!(
                f,
                "{kind:<kind_w$}  {:<name_w$}  {:<7}",
                r.name,
                r.outcome.to_string()
            )?;
            if !r.detail.is_empty() {
                write!(f, "  {}", r.detail)?;
            }
            writeln!(f)?;
        }
        let created = self.created();
        write!(
            f,
            "{created} created, {} already existed",
            self.resources.len() - created
        )
    }
}

/// Creates what is missing of: every function's queue and DLQ (redrive after `max_receive`
/// receives), the table (TTL on `expires_at`) and the bucket (payload expiry rule). Idempotent.
pub async fn provision(
    sdk: &SdkConfig,
    cfg: &AwsSettings,
    functions: &[QueueSpec],
) -> Result<ProvisionReport> {
    cfg.validate()?;
    let mut report = ProvisionReport::default();
    let queues = SqsQueue::new(sdk, cfg.queue_prefix.clone());
    for spec in functions {
        let (queue, dlq) = queues.ensure_queues(spec).await?;
        report.push(
            ResourceKind::DeadLetterQueue,
            queues.dlq_name(&spec.name),
            dlq,
            "retention 14 days",
        );
        report.push(
            ResourceKind::Queue,
            queues.queue_name(&spec.name),
            queue,
            format!(
                "redrive to {} after {} receives",
                queues.dlq_name(&spec.name),
                spec.max_receive
            ),
        );
    }
    let table = ensure_table(sdk, &cfg.table).await?;
    report.push(
        ResourceKind::Table,
        &cfg.table,
        table,
        "keys ns/k, TTL on expires_at",
    );
    let bucket = ensure_bucket(sdk, &cfg.bucket).await?;
    report.push(
        ResourceKind::Bucket,
        &cfg.bucket,
        bucket,
        format!("{PAYLOAD_PREFIX} expire after {PAYLOAD_EXPIRY_DAYS} days"),
    );
    Ok(report)
}

async fn ensure_table(sdk: &SdkConfig, table: &str) -> Result<Outcome> {
    let store = DynamoStore::new(sdk, table);
    let client = store.client();
    let ctx = ErrorContext::new("dynamodb", sdk);
    let outcome = match client.describe_table().table_name(table).send().await {
        Ok(_) => Outcome::Exists,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            let attr = |name: &str| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("name and type are set")
            };
            let key = |name: &str, kind: KeyType| {
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()
                    .expect("fields are set")
            };
            let created = client
                .create_table()
                .table_name(table)
                .attribute_definitions(attr("ns"))
                .attribute_definitions(attr("k"))
                .key_schema(key("ns", KeyType::Hash))
                .key_schema(key("k", KeyType::Range))
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await;
            match created {
                Ok(_) => Outcome::Created,
                // Another provisioner won the race.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_in_use_exception()) =>
                {
                    Outcome::Exists
                }
                Err(e) => return Err(ctx.map("CreateTable", Resource::Table(table), e)),
            }
        }
        Err(e) => return Err(ctx.map("DescribeTable", Resource::Table(table), e)),
    };
    wait_active(sdk, table).await?;
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| ctx.map("DescribeTimeToLive", Resource::Table(table), e))?;
    let status = ttl
        .time_to_live_description()
        .and_then(|d| d.time_to_live_status());
    if !matches!(
        status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_at")
                    .build()
                    .expect("fields are set"),
            )
            .send()
            .await
            .map_err(|e| ctx.map("UpdateTimeToLive", Resource::Table(table), e))?;
    }
    Ok(outcome)
}

async fn wait_active(sdk: &SdkConfig, table: &str) -> Result<()> {
    let store = DynamoStore::new(sdk, table);
    let ctx = ErrorContext::new("dynamodb", sdk);
    let deadline = tokio::time::Instant::now() + TABLE_WAIT;
    loop {
        let out = store
            .client()
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| ctx.map("DescribeTable", Resource::Table(table), e))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Unavailable {
                service: "dynamodb".into(),
                message: format!("table `{table}` did not become ACTIVE within {TABLE_WAIT:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn ensure_bucket(sdk: &SdkConfig, bucket: &str) -> Result<Outcome> {
    let blobs = S3Blobs::new(sdk, bucket);
    let client = blobs.client();
    let ctx = ErrorContext::new("s3", sdk);
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(Outcome::Exists),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => return Err(ctx.map("HeadBucket", Resource::Bucket(bucket), e)),
    }
    let mut create = client.create_bucket().bucket(bucket);
    // us-east-1 is the default location and must not be named.
    if let Some(region) = sdk.region().map(|r| r.as_ref().to_string())
        && region != "us-east-1"
    {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            return Ok(Outcome::Exists);
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_exists()) =>
        {
            return Err(Error::Backend {
                service: "s3".into(),
                message: format!(
                    "bucket `{bucket}` already exists and belongs to another account (bucket names are \
                     global): choose another name in the manifest's aws.bucket"
                ),
            });
        }
        Err(e) => return Err(ctx.map("CreateBucket", Resource::Bucket(bucket), e)),
    }
    // Only on a bucket we created: the call replaces the whole lifecycle configuration.
    let rule = LifecycleRule::builder()
        .id("levee-expire-leftover-payloads")
        .filter(
            LifecycleRuleFilter::builder()
                .prefix(PAYLOAD_PREFIX)
                .build(),
        )
        .status(ExpirationStatus::Enabled)
        .expiration(
            LifecycleExpiration::builder()
                .days(PAYLOAD_EXPIRY_DAYS)
                .build(),
        )
        .build()
        .map_err(|e| Error::Backend {
            service: "s3".into(),
            message: format!("building lifecycle rule: {e}"),
        })?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| Error::Backend {
                    service: "s3".into(),
                    message: format!("building lifecycle configuration: {e}"),
                })?,
        )
        .send()
        .await
        .map_err(|e| {
            ctx.map(
                "PutBucketLifecycleConfiguration",
                Resource::Bucket(bucket),
                e,
            )
        })?;
    Ok(Outcome::Created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_resource_and_sums_up() {
        let mut r = ProvisionReport::default();
        r.push(
            ResourceKind::Queue,
            "levee-inbound",
            Outcome::Created,
            "redrive",
        );
        r.push(ResourceKind::Table, "levee-kv", Outcome::Exists, "");
        let text = r.to_string();
        assert!(
            text.contains("sqs queue")
                && text.contains("levee-inbound")
                && text.contains("created"),
            "{text}"
        );
        assert!(
            text.contains("levee-kv") && text.contains("exists"),
            "{text}"
        );
        assert!(text.ends_with("1 created, 1 already existed"), "{text}");
    }
}
