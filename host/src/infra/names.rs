//! Physical and logical names of a rendered deployment, checked against AWS's rules at render
//! time so a bad manifest fails here, naming the setting, and not halfway through a stack.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::manifest::Manifest;
use crate::scaling::EcsSettings;
use crate::{Error, Result};

/// Every physical name the stack creates, as the hosts and `levee scale` will look them up.
#[derive(Debug, Clone)]
pub struct Names {
    pub stack: String,
    pub queue_prefix: String,
    pub table: String,
    pub bucket: String,
    pub repository: String,
    pub ecs: EcsSettings,
    /// Logical id stem per function (CloudFormation ids are alphanumeric).
    ids: BTreeMap<String, String>,
}

/// The CloudFormation logical id stem of `name`: its alphanumeric parts in CamelCase
/// (`search-index` → `SearchIndex`).
pub fn logical_id(name: &str) -> String {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn bad(field: &str, msg: impl std::fmt::Display) -> Error {
    Error::Manifest(format!("{field}: {msg}"))
}

impl Names {
    /// Checks and derives every name of `manifest`'s deployment as stack `stack`.
    pub fn new(manifest: &Manifest, stack: &str) -> Result<Self> {
        if stack.is_empty()
            || stack.len() > 32
            || !stack.starts_with(|c: char| c.is_ascii_alphabetic())
            || !stack.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::Invalid(format!(
                "--stack `{stack}`: 1 to 32 characters of A-Z, a-z, 0-9 and `-`, starting with a \
                 letter (it prefixes role and log group names)"
            )));
        }
        let aws = crate::backends::aws_settings(&manifest.aws);
        aws.validate()?;
        if aws.queue_prefix.is_empty() {
            // An empty prefix would make the grants on `{prefix}*` cover every queue.
            return Err(bad(
                "aws.queue_prefix",
                "empty; a deployment needs its own prefix (for example `levee-`) so its queues \
                 and grants cannot reach anyone else's",
            ));
        }
        if !aws.queue_prefix.ends_with(['-', '_']) {
            return Err(bad(
                "aws.queue_prefix",
                format!(
                    "`{}` must end with `-` or `_`, so one deployment's prefix is never the start \
                     of another function's name",
                    aws.queue_prefix
                ),
            ));
        }
        let ecs = aws.ecs.clone().unwrap_or_default();
        ecs.validate().map_err(|e| match e {
            Error::Invalid(m) => Error::Manifest(m),
            other => other,
        })?;
        let mut ids = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for name in manifest.functions.keys() {
            let id = logical_id(name);
            if !seen.insert(id.clone()) {
                return Err(bad(
                    &format!("functions.{name}"),
                    format!(
                        "its name and another function's both become `{id}` in the template; \
                         rename one"
                    ),
                ));
            }
            let queue = format!("{}{name}-dlq", aws.queue_prefix);
            if queue.len() > 80 {
                return Err(bad(
                    &format!("functions.{name}"),
                    format!("queue name `{queue}` is longer than SQS's 80 characters"),
                ));
            }
            let service = ecs.service(name);
            if service.len() > 255
                || !service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    "aws.ecs.service_pattern",
                    format!(
                        "service name `{service}`: ECS allows 1 to 255 of A-Z, a-z, 0-9, `-`, `_`"
                    ),
                ));
            }
            if [format!("{stack}-scaler"), format!("{stack}-ingress")].contains(&service) {
                return Err(bad(
                    &format!("functions.{name}"),
                    format!(
                        "its service `{service}` would be the scaler's or the ingress's; rename it"
                    ),
                ));
            }
            let role = format!("{stack}-{name}-task");
            if role.len() > 64 {
                return Err(bad(
                    &format!("functions.{name}"),
                    format!(
                        "role name `{role}` is longer than IAM's 64 characters; use a shorter --stack"
                    ),
                ));
            }
            ids.insert(name.clone(), id);
        }
        if !ecs
            .cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || ecs.cluster.len() > 255
        {
            return Err(bad(
                "aws.ecs.cluster",
                format!(
                    "`{}`: ECS allows 1 to 255 of A-Z, a-z, 0-9, `-`, `_`",
                    ecs.cluster
                ),
            ));
        }
        Ok(Self {
            stack: stack.to_string(),
            queue_prefix: aws.queue_prefix,
            table: aws.table,
            bucket: aws.bucket,
            repository: stack.to_ascii_lowercase(),
            ecs,
            ids,
        })
    }

    /// Logical id stem of function `name`.
    pub fn id(&self, name: &str) -> &str {
        &self.ids[name]
    }

    pub fn queue(&self, function: &str) -> String {
        format!("{}{function}", self.queue_prefix)
    }

    pub fn dlq(&self, function: &str) -> String {
        format!("{}{function}-dlq", self.queue_prefix)
    }

    pub fn service(&self, function: &str) -> String {
        self.ecs.service(function)
    }

    /// The scaler's service (not matched by `service_pattern` for any function).
    pub fn scaler_service(&self) -> String {
        format!("{}-scaler", self.stack)
    }

    /// The ingress's service.
    pub fn ingress_service(&self) -> String {
        format!("{}-ingress", self.stack)
    }

    pub fn role(&self, what: &str) -> String {
        format!("{}-{what}", self.stack)
    }

    pub fn log_group(&self, what: &str) -> String {
        format!("/levee/{}/{what}", self.stack)
    }

    /// The physical names the stack creates, by kind (for `deploy.sh`'s collision check).
    pub fn to_json(&self) -> Value {
        let functions: Vec<&String> = self.ids.keys().collect();
        json!({
            "stack": self.stack,
            "queues": functions.iter().flat_map(|f| [self.queue(f), self.dlq(f)]).collect::<Vec<_>>(),
            "table": self.table,
            "bucket": self.bucket,
            "repository": self.repository,
            "cluster": self.ecs.cluster,
            "services": functions.iter().map(|f| self.service(f))
                .chain([self.scaler_service(), self.ingress_service()]).collect::<Vec<_>>(),
        })
    }
}
