//! Functions' config and secrets, read by the guest through `wasi:config/store`.
//!
//! `[functions.NAME.config]` holds plain values; `[functions.NAME.secrets]` names where each
//! secret comes from: an environment variable of the host (`{ env = "VAR" }`) or AWS Secrets
//! Manager (`{ aws = "secret id or ARN" }`). Secrets are resolved once when the platform starts
//! (a missing one stops the start, naming it), and never logged: the host prints names only, and
//! every line the guest writes and every error it returns has secret values replaced with
//! `[redacted]` before it reaches a log, a status or a DLQ reason.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Error, Result};

/// What replaces a secret's value in logs and errors.
pub const REDACTED: &str = "[redacted]";
/// Largest config or secret value accepted.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Secrets shorter than this are not searched for in text (they would redact ordinary words);
/// start refuses them.
pub const MIN_SECRET_BYTES: usize = 8;

/// Where one secret comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// An environment variable of the host process.
    pub env: Option<String>,
    /// A secret id or ARN in AWS Secrets Manager (its `SecretString`).
    pub aws: Option<String>,
}

impl SecretRef {
    /// Checks that exactly one source is named; `field` like `functions.notify.secrets.token`.
    pub fn validate(&self, field: &str) -> Result<()> {
        match (&self.env, &self.aws) {
            (Some(e), None) if !e.is_empty() => Ok(()),
            (None, Some(a)) if !a.is_empty() => Ok(()),
            _ => Err(Error::Manifest(format!(
                "`{field}`: name exactly one source, {{ env = \"VAR\" }} or {{ aws = \"secret-id\" }}"
            ))),
        }
    }
}

/// Checks a function's config and secrets; `function` names the manifest table.
pub fn validate(
    function: &str,
    config: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, SecretRef>,
) -> Result<()> {
    for (k, v) in config {
        check_key(&format!("functions.{function}.config"), k)?;
        if v.len() > MAX_VALUE_BYTES {
            return Err(Error::Manifest(format!(
                "`functions.{function}.config.{k}`: at most {} KiB",
                MAX_VALUE_BYTES >> 10
            )));
        }
    }
    for (k, s) in secrets {
        check_key(&format!("functions.{function}.secrets"), k)?;
        s.validate(&format!("functions.{function}.secrets.{k}"))?;
        if config.contains_key(k) {
            return Err(Error::Manifest(format!(
                "`functions.{function}.secrets.{k}`: `{k}` is also in functions.{function}.config; a name is one or the other"
            )));
        }
    }
    Ok(())
}

fn check_key(table: &str, k: &str) -> Result<()> {
    let ok = !k.is_empty()
        && k.len() <= 128
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Manifest(format!(
            "`{table}`: `{k}` is not a valid name (1 to 128 of A-Z a-z 0-9 _ - .)"
        )))
    }
}

/// Resolves `secrets` (name → source); `sdk` is needed only for `aws` sources.
pub async fn resolve(
    function: &str,
    secrets: &BTreeMap<String, SecretRef>,
    sdk: Option<&aws_config::SdkConfig>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(secrets.len());
    let mut client = None;
    for (name, source) in secrets {
        let field = format!("functions.{function}.secrets.{name}");
        let value = if let Some(var) = &source.env {
            std::env::var(var).map_err(|_| {
                Error::Manifest(format!(
                    "`{field}`: the environment variable {var} is not set (or not UTF-8)"
                ))
            })?
        } else {
            let id = source.aws.as_deref().unwrap_or_default();
            let sdk = match sdk {
                Some(s) => s.clone(),
                None => crate::aws::load_sdk_config().await?,
            };
            let c = client.get_or_insert_with(|| aws_sdk_secretsmanager::Client::new(&sdk));
            let got = c
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| {
                    Error::Manifest(format!(
                        "`{field}`: reading `{id}` from AWS Secrets Manager failed: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                    ))
                })?;
            got.secret_string().map(str::to_string).ok_or_else(|| {
                Error::Manifest(format!(
                    "`{field}`: `{id}` has no SecretString (binary secrets are not supported)"
                ))
            })?
        };
        if value.len() < MIN_SECRET_BYTES || value.len() > MAX_VALUE_BYTES {
            return Err(Error::Manifest(format!(
                "`{field}`: a secret must be {MIN_SECRET_BYTES} bytes to {} KiB long (shorter ones cannot be redacted reliably)",
                MAX_VALUE_BYTES >> 10
            )));
        }
        out.push((name.clone(), value));
    }
    Ok(out)
}

/// Replaces secret values in text.
#[derive(Default, Clone)]
pub struct Redactor {
    values: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.values.len())
    }
}

impl Redactor {
    /// A redactor of these values (longest first, so one secret inside another goes whole).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_SECRET_BYTES)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor { values }
    }

    /// Whether there is anything to redact.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret value replaced by [`REDACTED`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), REDACTED));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_every_occurrence_longest_first() {
        let r = Redactor::new(["sk-live-abcdef".to_string(), "sk-live-abcdef-123".into()]);
        assert_eq!(
            r.redact("token sk-live-abcdef-123 and sk-live-abcdef."),
            "token [redacted] and [redacted]."
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_secret_names_exactly_one_source() {
        let both = SecretRef {
            env: Some("A".into()),
            aws: Some("b".into()),
        };
        let e = both
            .validate("functions.n.secrets.t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("functions.n.secrets.t"), "{e}");
        let none = SecretRef {
            env: None,
            aws: None,
        };
        assert!(none.validate("x").is_err());
        let mut config = BTreeMap::new();
        config.insert("token".to_string(), "x".to_string());
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "token".to_string(),
            SecretRef {
                env: Some("T".into()),
                aws: None,
            },
        );
        let e = validate("n", &config, &secrets).unwrap_err().to_string();
        assert!(e.contains("also in functions.n.config"), "{e}");
        let mut bad = BTreeMap::new();
        bad.insert("has space".to_string(), String::new());
        assert!(validate("n", &bad, &BTreeMap::new()).is_err());
    }

    #[tokio::test]
    async fn env_secrets_resolve_and_short_or_missing_ones_are_refused() {
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "token".to_string(),
            SecretRef {
                env: Some("LEVEE_TEST_SECRET_UNSET_9F3A".into()),
                aws: None,
            },
        );
        let e = resolve("n", &secrets, None).await.unwrap_err().to_string();
        assert!(e.contains("LEVEE_TEST_SECRET_UNSET_9F3A is not set"), "{e}");
    }
}
