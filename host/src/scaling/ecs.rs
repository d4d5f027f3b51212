//! The cloud [`Actuator`]: in AWS mode each function runs as one ECS service, and a decision sets
//! the services' desired counts.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ecs::error::DisplayErrorContext;
use levee_scaler::{Actuator, Decision};

use super::local::workers_for;
use crate::{Error, Result};

/// Where the services are and how workers map to tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSettings {
    /// The ECS cluster.
    pub cluster: String,
    /// Service name per function; `{function}` is replaced by the function's name.
    pub service_pattern: String,
    /// Workers one task runs; a function's task count is ceil(workers / this).
    pub workers_per_task: u32,
}

impl Default for EcsSettings {
    fn default() -> Self {
        Self {
            cluster: "levee".into(),
            service_pattern: "levee-{function}".into(),
            workers_per_task: 1,
        }
    }
}

impl EcsSettings {
    /// Checks the settings; errors name the bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.cluster.trim().is_empty() {
            return Err(Error::Invalid("ECS cluster name is empty".into()));
        }
        if !self.service_pattern.contains("{function}") {
            return Err(Error::Invalid(format!(
                "ECS service pattern {:?} must contain {{function}}",
                self.service_pattern
            )));
        }
        if self.workers_per_task == 0 {
            return Err(Error::Invalid("workers_per_task must be at least 1".into()));
        }
        Ok(())
    }

    /// The service of `function`.
    pub fn service(&self, function: &str) -> String {
        self.service_pattern.replace("{function}", function)
    }

    /// Tasks needed for `workers` workers.
    pub fn tasks(&self, workers: u32) -> u32 {
        workers.div_ceil(self.workers_per_task)
    }
}

/// Sets ECS desired counts from decisions; only changed counts are sent.
pub struct EcsActuator {
    client: aws_sdk_ecs::Client,
    settings: EcsSettings,
    applied: BTreeMap<String, u32>,
}

impl EcsActuator {
    /// An actuator using `sdk` (endpoint, region, credentials) and `settings`.
    pub fn new(sdk: &SdkConfig, settings: EcsSettings) -> Result<Self> {
        settings.validate()?;
        Ok(Self {
            client: aws_sdk_ecs::Client::new(sdk),
            settings,
            applied: BTreeMap::new(),
        })
    }

    /// Desired counts last set, by function.
    pub fn applied(&self) -> &BTreeMap<String, u32> {
        &self.applied
    }
}

impl Actuator for EcsActuator {
    async fn apply(&mut self, decision: &Decision) -> levee_scaler::Result<()> {
        // Every function is tried even if one fails, so one broken service does not freeze the rest;
        // the first error is reported (the controller records it and the next tick retries).
        let mut first_error = None;
        for (function, d) in &decision.functions {
            let tasks = self.settings.tasks(workers_for(d));
            if self.applied.get(function) == Some(&tasks) {
                continue;
            }
            let service = self.settings.service(function);
            let sent = self
                .client
                .update_service()
                .cluster(&self.settings.cluster)
                .service(&service)
                .desired_count(i32::try_from(tasks).unwrap_or(i32::MAX))
                .send()
                .await;
            match sent {
                Ok(_) => {
                    self.applied.insert(function.clone(), tasks);
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| {
                        format!(
                            "ECS update-service {service} in cluster {} to {tasks}: {}",
                            self.settings.cluster,
                            DisplayErrorContext(&e)
                        )
                    });
                }
            }
        }
        match first_error {
            Some(e) => Err(levee_scaler::Error::Actuator(e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_tasks() {
        let s = EcsSettings {
            workers_per_task: 4,
            ..EcsSettings::default()
        };
        assert_eq!(s.service("search-index"), "levee-search-index");
        assert_eq!(
            (s.tasks(0), s.tasks(1), s.tasks(8), s.tasks(9)),
            (0, 1, 2, 3)
        );
        let bad = EcsSettings {
            service_pattern: "levee".into(),
            ..EcsSettings::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("{function}")
        );
    }
}
