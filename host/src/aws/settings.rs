//! [`AwsSettings`], what the AWS backends need beyond the standard AWS configuration (resource names
//! and the large-payload threshold), their defaults, and their validation against the AWS naming
//! rules.

use serde::Deserialize;

use crate::limits::{DEFAULT_OFFLOAD_THRESHOLD, check_offload_threshold};
use crate::{Error, Result};

/// Queue names are `{prefix}{function}` and `{prefix}{function}-dlq`.
pub const DEFAULT_QUEUE_PREFIX: &str = "levee-";
/// The DynamoDB table holding every function's key-value namespace.
pub const DEFAULT_TABLE: &str = "levee-kv";
/// The S3 bucket for compiled modules and large payloads.
pub const DEFAULT_BUCKET: &str = "levee-blobs";

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
}
