//! The mapping of AWS SDK errors to [`Error`] with messages a user can act on: [`ErrorContext`]
//! (which service, endpoint and region a backend talks to), [`Resource`] (what a call was about)
//! and the classification of service error codes into retryable, not-found, auth and wrong-region.

use std::error::Error as StdError;
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

use crate::Error;

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

#[cfg(test)]
mod tests {
    use super::*;

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
