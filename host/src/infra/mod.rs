//! `levee infra render`: the manifest as one CloudFormation template, so the cloud deployment
//! follows the manifest instead of a template kept by hand. Per function a queue and DLQ (with
//! that function's `max_receive`), a task role scoped to exactly what it touches, a task
//! definition and a Fargate service; beside them the kv table, the bucket, an ECR repository, the
//! cluster, the `levee scale` service, the ingress behind a load balancer, log groups and alarms.
//!
//! Names come from the manifest's `[aws]` (queues, table, bucket) and `[aws.ecs]` (cluster,
//! service pattern), the same settings `levee up --backend aws`, `levee provision` and
//! `levee scale` read, so they line up by construction.

mod names;
mod policies;
mod resources;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::manifest::Manifest;
use crate::{Error, Result};

pub use names::{Names, logical_id};
pub use policies::operator_policy;

/// Retention of a function's queue: SQS's longest, so a backlog held through a long outage of a
/// store or provider is not lost to age.
pub const QUEUE_RETENTION_SECS: u64 = 14 * 24 * 3600;
/// Retention of a dead-letter queue (the same: letters wait for an operator).
pub const DLQ_RETENTION_SECS: u64 = 14 * 24 * 3600;
/// Days a leftover offloaded payload stays in the bucket (past the longest queue retention).
pub const PAYLOAD_EXPIRY_DAYS: u32 = crate::provision::PAYLOAD_EXPIRY_DAYS as u32;
/// Port the levee container listens on.
pub const CONTAINER_PORT: u16 = 8080;
/// Oldest-message age above which a function's alarm fires, at least.
pub const MIN_AGE_ALARM_SECS: u64 = 300;

/// CloudFormation's limit of resources in one stack.
pub const MAX_RESOURCES: usize = 500;

/// What `levee infra render` is asked for.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// The CloudFormation stack name (also names the roles, repository and log groups).
    pub stack: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            stack: "levee".into(),
        }
    }
}

/// A rendered deployment: the template, the operator's policy and the physical names.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub template: Value,
    pub operator_policy: Value,
    pub names: Names,
}

impl Rendered {
    /// Resource count by CloudFormation type, for the summary.
    pub fn resource_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        if let Some(res) = self.template["Resources"].as_object() {
            for r in res.values() {
                let t = r["Type"].as_str().unwrap_or("?").to_string();
                *counts.entry(t).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Writes `levee.template.json`, `operator-policy.json` and `names.json` into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Invalid(format!("--out {}: {e}", dir.display())))?;
        let files = [
            ("levee.template.json", &self.template),
            ("operator-policy.json", &self.operator_policy),
            ("names.json", &self.names.to_json()),
        ];
        let mut written = Vec::new();
        for (file, value) in files {
            let path = dir.join(file);
            let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
            std::fs::write(&path, text + "\n")
                .map_err(|e| Error::Invalid(format!("writing {}: {e}", path.display())))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Renders the manifest's deployment. Refuses names AWS would refuse (or that would widen a
/// grant, such as an empty queue prefix) before anything reaches CloudFormation.
pub fn render(manifest: &Manifest, opts: &RenderOptions) -> Result<Rendered> {
    let names = Names::new(manifest, &opts.stack)?;
    let mut res = serde_json::Map::new();
    resources::storage(manifest, &names, &mut res);
    resources::cluster_and_network(&names, &mut res);
    for (name, spec) in &manifest.functions {
        resources::function(manifest, &names, name, spec, &mut res);
    }
    resources::manifest_alarms(manifest, &names, &mut res);
    resources::scaler(manifest, &names, &mut res);
    resources::ingress(manifest, &names, &mut res);
    if res.len() > MAX_RESOURCES {
        return Err(Error::Manifest(format!(
            "functions: {} functions make {} resources, over CloudFormation's {MAX_RESOURCES} per stack",
            manifest.functions.len(),
            res.len()
        )));
    }
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "Levee `{}` rendered from its manifest by `levee infra render`: {} function(s), each \
             with its queue and DLQ (retention {} days), task role and Fargate service; the kv \
             table, the blob bucket, an ECR repository, the ECS cluster, the scaler and the \
             ingress behind a load balancer. Edit the manifest and render again; do not edit.",
            names.stack,
            manifest.functions.len(),
            QUEUE_RETENTION_SECS / 86_400
        ),
        "Parameters": resources::parameters(),
        "Conditions": resources::conditions(),
        "Resources": Value::Object(res),
        "Outputs": resources::outputs(manifest, &names),
    });
    Ok(Rendered {
        template,
        operator_policy: operator_policy(&names),
        names,
    })
}

#[cfg(test)]
mod tests;
