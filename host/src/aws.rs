//! Shared AWS plumbing for the SQS, DynamoDB and S3 backends: loading the SDK configuration from the
//! standard AWS sources only, the settings the AWS backends share, and the mapping of SDK errors to
//! [`Error`] with messages a user can act on.
//!
//! Configuration comes from `aws_config::defaults` and nothing else: `AWS_ENDPOINT_URL` (or
//! `AWS_ENDPOINT_URL_SQS` …) to point at LocalStack or moto, `AWS_REGION`, `AWS_PROFILE`, the
//! credentials chain, `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` for the SDK's own retries. Throttling,
//! 5xx answers, timeouts and connection failures are retried by the SDK's standard retry policy
//! (exponential backoff with jitter, a retry quota); what still fails surfaces as the retryable
//! [`Error::Unavailable`], so a consumer loop backs off and goes on.

use std::error::Error as StdError;
use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use serde::Deserialize;

use crate::{Error, Result};

/// Queue names are `{prefix}{function}` and `{prefix}{function}-dlq`.
pub const DEFAULT_QUEUE_PREFIX: &str = "levee-";
/// The DynamoDB table holding every function's key-value namespace.
pub const DEFAULT_TABLE: &str = "levee-kv";
/// The S3 bucket for compiled modules and large payloads.
pub const DEFAULT_BUCKET: &str = "levee-blobs";
/// Messages (body + attributes) larger than this go to blobs, the queue carries a reference.
pub const DEFAULT_OFFLOAD_THRESHOLD: usize = 200 * 1024;
/// SQS's largest message, body and attributes together (raised from 256 KiB to 1 MiB in 2025).
pub const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The smallest offload threshold accepted: below it every message would round-trip through blobs.
pub const MIN_OFFLOAD_THRESHOLD: usize = 1024;

/// What the AWS backends need beyond the standard AWS configuration: resource names and the
/// large-payload threshold. Deserialises from a manifest section with these field names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Prefix of every queue name (default `levee-`).
    pub queue_prefix: String,
    /// DynamoDB table (default `levee-kv`).
    pub table: String,
    /// S3 bucket (default `levee-blobs`).
    pub bucket: String,
    /// Bytes above which a message body is offloaded to the bucket (default 200 KiB, at most 1 MiB).
    pub offload_threshold: usize,
    /// `[aws.ecs]`: the ECS services the scaler sizes (`levee scale`); absent: no ECS.
    pub ecs: Option<crate::scaling::EcsSettings>,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            queue_prefix: DEFAULT_QUEUE_PREFIX.to_string(),
            table: DEFAULT_TABLE.to_string(),
            bucket: DEFAULT_BUCKET.to_string(),
            offload_threshold: DEFAULT_OFFLOAD_THRESHOLD,
            ecs: None,
        }
    }
}

impl AwsSettings {
    /// Checks every name against the AWS naming rules and the threshold against the SQS limit;
    /// the error names the field and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let p = &self.queue_prefix;
        // 80 characters is SQS's limit for a whole name; leave room for the function and "-dlq".
        if p.len() > 40
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Manifest(format!(
                "aws.queue_prefix `{p}`: at most 40 characters of A-Z, a-z, 0-9, `-` and `_`"
            )));
        }
        let t = &self.table;
        if t.len() < 3
            || t.len() > 255
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::Manifest(format!(
                "aws.table `{t}`: 3 to 255 characters of A-Z, a-z, 0-9, `-`, `_` and `.`"
            )));
        }
        let b = &self.bucket;
        if b.len() < 3
            || b.len() > 63
            || !b
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !b.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(Error::Manifest(format!(
                "aws.bucket `{b}`: 3 to 63 characters of a-z, 0-9, `-` and `.`, starting and ending \
                 with a letter or digit"
            )));
        }
        check_offload_threshold(self.offload_threshold)
            .map_err(|e| Error::Manifest(format!("aws.offload_threshold: {e}")))?;
        if let Some(ecs) = &self.ecs {
            ecs.validate().map_err(|e| match e {
                Error::Invalid(m) => Error::Manifest(m),
                other => other,
            })?;
        }
        Ok(())
    }
}

pub(crate) fn check_offload_threshold(bytes: usize) -> Result<()> {
    if !(MIN_OFFLOAD_THRESHOLD..=SQS_MAX_MESSAGE_BYTES).contains(&bytes) {
        return Err(Error::Invalid(format!(
            "offload threshold must be {MIN_OFFLOAD_THRESHOLD} to {SQS_MAX_MESSAGE_BYTES} bytes \
             (SQS's message limit), got {bytes}"
        )));
    }
    Ok(())
}

/// Loads the SDK configuration from the standard AWS sources (environment, profiles, credentials
/// chain). Fails with a hint when no region is configured, since every call would fail later.
pub async fn load_sdk_config() -> Result<SdkConfig> {
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    if config.region().is_none() {
        return Err(Error::Backend {
            service: "aws".into(),
            message:
                "no AWS region configured: set AWS_REGION (for example `us-east-1`) or a region \
                      in your AWS profile"
                    .into(),
        });
    }
    Ok(config)
}

/// The AWS backends of one platform, built from one SDK configuration and the settings: the
/// queue (SQS with large payloads offloaded to S3), the key-value store and the blob store.
#[derive(Debug)]
pub struct AwsBackends {
    /// Large bodies go to S3 first; the ledger commits kv and completion records to DynamoDB
    /// before SQS sends the emits and deletes the source.
    pub queue: crate::queue::offload::OffloadQueue<
        crate::queue::ledger::LedgerQueue<crate::queue::sqs::SqsQueue>,
        crate::blobs::s3::S3Blobs,
    >,
    pub store: crate::store::dynamo::DynamoStore,
    pub blobs: crate::blobs::s3::S3Blobs,
}

impl AwsBackends {
    /// Builds the clients (no network call: errors show on first use or in `levee provision`).
    pub fn new(sdk: &SdkConfig, settings: &AwsSettings) -> Result<Self> {
        settings.validate()?;
        let blobs = crate::blobs::s3::S3Blobs::new(sdk, settings.bucket.clone());
        let store = crate::store::dynamo::DynamoStore::new(sdk, settings.table.clone());
        let ledger = crate::queue::ledger::LedgerQueue::new(
            crate::queue::sqs::SqsQueue::new(sdk, settings.queue_prefix.clone()),
            std::sync::Arc::new(store.clone()),
            std::sync::Arc::new(blobs.clone()),
        );
        let queue = crate::queue::offload::OffloadQueue::new(ledger, blobs.clone())
            .with_threshold(settings.offload_threshold)?;
        Ok(Self {
            queue,
            store,
            blobs,
        })
    }

    /// Loads the standard AWS configuration ([`load_sdk_config`]) and builds the backends.
    pub async fn from_env(settings: &AwsSettings) -> Result<Self> {
        Self::new(&load_sdk_config().await?, settings)
    }
}

/// What a failed call was about, for the error message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resource<'a> {
    Queue(&'a str),
    Table(&'a str),
    Bucket(&'a str),
    None,
}

/// Where calls go, kept by each backend so errors can name the endpoint and region.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    service: &'static str,
    endpoint: Option<Arc<str>>,
    region: Option<Arc<str>>,
}

impl ErrorContext {
    pub(crate) fn new(service: &'static str, sdk: &SdkConfig) -> Self {
        Self {
            service,
            endpoint: sdk.endpoint_url().map(Arc::from),
            region: sdk.region().map(|r| Arc::from(r.as_ref())),
        }
    }

    fn endpoint_desc(&self) -> String {
        match &self.endpoint {
            Some(url) => format!("the endpoint at {url}"),
            None => format!(
                "AWS {} in region `{}`",
                self.service,
                self.region.as_deref().unwrap_or("<none>")
            ),
        }
    }

    fn unavailable(&self, message: String) -> Error {
        Error::Unavailable {
            service: self.service.into(),
            message,
        }
    }

    fn backend(&self, message: String) -> Error {
        Error::Backend {
            service: self.service.into(),
            message,
        }
    }

    /// Maps an SDK error of operation `op` on `resource` to a Levee error.
    pub(crate) fn map<E>(
        &self,
        op: &str,
        resource: Resource<'_>,
        err: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let chain = error_chain(&err);
        match &err {
            SdkError::TimeoutError(_) => self.unavailable(format!(
                "{op} timed out talking to {}: {chain}",
                self.endpoint_desc()
            )),
            SdkError::DispatchFailure(d) => {
                if mentions_credentials(&chain) {
                    return self.credentials_error(op);
                }
                if self.region.is_none() {
                    return self.no_region(op);
                }
                if connection_refused(&err) {
                    return self.unavailable(match &self.endpoint {
                        Some(url) => format!(
                            "{op}: nothing answers at {url} (connection refused): the emulator or endpoint \
                             at {url} is not running; start one with `localstack/start.sh`, or unset \
                             AWS_ENDPOINT_URL to use AWS"
                        ),
                        None => format!(
                            "{op}: connection refused by {}: check AWS_REGION and your network",
                            self.endpoint_desc()
                        ),
                    });
                }
                if d.is_user() {
                    return self.backend(format!("{op}: request could not be sent: {chain}"));
                }
                self.unavailable(format!(
                    "{op}: cannot reach {}{}: {chain}",
                    self.endpoint_desc(),
                    if self.endpoint.is_none() {
                        " (check AWS_REGION and your network)"
                    } else {
                        ""
                    }
                ))
            }
            SdkError::ConstructionFailure(_) => {
                if mentions_credentials(&chain) {
                    return self.credentials_error(op);
                }
                if self.region.is_none() {
                    return self.no_region(op);
                }
                self.backend(format!("{op}: could not build the request: {chain}"))
            }
            SdkError::ResponseError(r) => {
                let status = r.raw().status().as_u16();
                if status >= 500 || status == 429 {
                    self.unavailable(format!(
                        "{op}: HTTP {status} from {}: {chain}",
                        self.endpoint_desc()
                    ))
                } else {
                    self.backend(format!(
                        "{op}: unexpected HTTP {status} answer from {} (is it an AWS-compatible \
                         endpoint?): {chain}",
                        self.endpoint_desc()
                    ))
                }
            }
            SdkError::ServiceError(s) => {
                let code = s.err().code().unwrap_or("");
                let message = s.err().message().unwrap_or("").to_string();
                let status = s.raw().status().as_u16();
                self.map_service(op, resource, code, &message, status)
            }
            _ => self.backend(format!("{op}: {chain}")),
        }
    }

    fn map_service(
        &self,
        op: &str,
        resource: Resource<'_>,
        code: &str,
        message: &str,
        status: u16,
    ) -> Error {
        let detail = if message.is_empty() {
            code.to_string()
        } else {
            format!("{code}: {message}")
        };
        if is_not_found(code) {
            return match resource {
                Resource::Queue(name) => Error::QueueNotFound(name.to_string()),
                Resource::Table(name) => self.backend(format!(
                    "{op}: table `{name}` does not exist in {}; run `levee provision` to create it",
                    self.endpoint_desc()
                )),
                Resource::Bucket(name) => self.backend(format!(
                    "{op}: bucket `{name}` does not exist in {}; run `levee provision` to create it",
                    self.endpoint_desc()
                )),
                Resource::None => self.backend(format!("{op}: {detail}; run `levee provision`")),
            };
        }
        if is_throttling(code) || status >= 500 || status == 429 {
            return self.unavailable(format!("{op}: {detail}"));
        }
        if is_auth(code) || status == 401 || status == 403 {
            return self.backend(format!(
                "{op}: access denied ({detail}); check the credentials (AWS_PROFILE, \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that their IAM policy allows this call on \
                 {}{}",
                self.endpoint_desc(),
                resource_suffix(resource)
            ));
        }
        if is_wrong_region(code, message) {
            return self.backend(format!(
                "{op}: {detail}; the resource lives in another region than `{}`: check AWS_REGION",
                self.region.as_deref().unwrap_or("<none>")
            ));
        }
        self.backend(format!("{op}{}: {detail}", resource_suffix(resource)))
    }

    // The SDK's own text (about auth schemes and identity resolvers) does not help a user here.
    fn credentials_error(&self, op: &str) -> Error {
        self.backend(format!(
            "{op}: no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY (any value, e.g. `test`, for LocalStack or moto)"
        ))
    }

    fn no_region(&self, op: &str) -> Error {
        self.backend(format!(
            "{op}: no AWS region configured: set AWS_REGION (for example `us-east-1`) or a region in \
             your AWS profile"
        ))
    }
}

fn resource_suffix(resource: Resource<'_>) -> String {
    match resource {
        Resource::Queue(n) => format!(" (queue `{n}`)"),
        Resource::Table(n) => format!(" (table `{n}`)"),
        Resource::Bucket(n) => format!(" (bucket `{n}`)"),
        Resource::None => String::new(),
    }
}

fn is_not_found(code: &str) -> bool {
    matches!(
        code,
        "QueueDoesNotExist"
            | "AWS.SimpleQueueService.NonExistentQueue"
            | "ResourceNotFoundException"
            | "NoSuchBucket"
    )
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "AWS.SimpleQueueService.RequestThrottled"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "SlowDown"
            | "LimitExceededException"
            | "TransactionInProgressException"
            | "InternalError"
            | "InternalFailure"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "KmsThrottled"
            | "KMS.ThrottlingException"
    )
}

fn is_auth(code: &str) -> bool {
    matches!(
        code,
        "AccessDenied"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "InvalidAccessKeyId"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidToken"
            | "AuthFailure"
            | "InvalidSecurity"
    )
}

fn is_wrong_region(code: &str, message: &str) -> bool {
    matches!(
        code,
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException"
    ) || (message.contains("region") && (message.contains("expect") || message.contains("wrong")))
}

/// The error and all its sources on one line (the SDK's top-level messages are terse).
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn mentions_credentials(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    lower.contains("credential") || lower.contains("identity")
}

fn connection_refused(err: &(dyn StdError + 'static)) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        if s.to_string().contains("Connection refused") {
            return true;
        }
        source = s.source();
    }
    false
}

/// Current time in ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random 128-bit hex string, for blob keys.
pub(crate) fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_validate() {
        AwsSettings::default().validate().unwrap();
    }

    #[test]
    fn bad_settings_name_the_field() {
        let s = AwsSettings {
            bucket: "Levee_Blobs".into(),
            ..AwsSettings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("aws.bucket `Levee_Blobs`"), "{e}");

        let s = AwsSettings {
            queue_prefix: "levee/".into(),
            ..AwsSettings::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("aws.queue_prefix")
        );

        let s = AwsSettings {
            table: "t".into(),
            ..AwsSettings::default()
        };
        assert!(s.validate().unwrap_err().to_string().contains("aws.table"));

        let s = AwsSettings {
            offload_threshold: 2 * 1024 * 1024,
            ..AwsSettings::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("aws.offload_threshold") && e.contains("1048576"),
            "{e}"
        );
    }

    #[test]
    fn settings_parse_with_defaults_and_reject_unknown_fields() {
        let s: AwsSettings = toml::from_str("table = \"kv\"").unwrap();
        assert_eq!(s.table, "kv");
        assert_eq!(s.bucket, DEFAULT_BUCKET);
        let e = toml::from_str::<AwsSettings>("tabel = \"kv\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tabel"), "{e}");
    }

    #[test]
    fn service_codes_map_to_retryable_or_not() {
        let ctx = ErrorContext {
            service: "sqs",
            endpoint: Some("http://localhost:4566".into()),
            region: Some("us-east-1".into()),
        };
        let e = ctx.map_service(
            "ReceiveMessage",
            Resource::Queue("q"),
            "ThrottlingException",
            "slow",
            400,
        );
        assert!(e.is_retryable(), "{e}");
        let e = ctx.map_service(
            "ReceiveMessage",
            Resource::Queue("q"),
            "QueueDoesNotExist",
            "",
            400,
        );
        assert!(matches!(e, Error::QueueNotFound(ref n) if n == "q"), "{e}");
        assert!(e.to_string().contains("levee provision"));
        let e = ctx.map_service(
            "GetItem",
            Resource::Table("t"),
            "ResourceNotFoundException",
            "",
            400,
        );
        assert!(
            !e.is_retryable() && e.to_string().contains("levee provision"),
            "{e}"
        );
        let e = ctx.map_service(
            "GetItem",
            Resource::Table("t"),
            "AccessDeniedException",
            "no",
            400,
        );
        assert!(
            !e.is_retryable() && e.to_string().contains("credentials"),
            "{e}"
        );
        let e = ctx.map_service(
            "GetObject",
            Resource::Bucket("b"),
            "SomethingElse",
            "boom",
            503,
        );
        assert!(e.is_retryable(), "{e}");
    }
}
