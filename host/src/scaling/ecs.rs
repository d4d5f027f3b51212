//! The cloud side of the scaler: in AWS mode each function runs as one ECS service
//! (`levee up --backend aws --function NAME` in its tasks), [`EcsActuator`] sets the services'
//! desired counts from decisions, and [`FleetSignals`] reports the fleet's workers (running and
//! pending tasks of each service) instead of one host's pools. `levee scale` runs the two.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_ecs::error::DisplayErrorContext;
use levee_scaler::{Actuator, Decision, SignalSource, Signals};
use serde::Deserialize;

use super::local::workers_for;
use crate::{Error, Result};

/// DescribeServices takes at most this many services per call.
const DESCRIBE_MAX: usize = 10;

/// Where the services are and how workers map to tasks: the manifest's `[aws.ecs]` section
/// (`cluster`, `service_pattern`, `workers_per_task`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EcsSettings {
    /// The ECS cluster.
    pub cluster: String,
    /// Service name per function; `{function}` is replaced by the function's name.
    pub service_pattern: String,
    /// Workers one task runs; a function's task count is ceil(workers / this).
    pub workers_per_task: u32,
    /// How long the leader's lease lasts unrenewed (`levee scale` processes elect one leader);
    /// a standby takes over within this plus a fifth of it after the leader dies.
    pub leader_lease_ms: u64,
}

impl Default for EcsSettings {
    fn default() -> Self {
        Self {
            cluster: "levee".into(),
            service_pattern: "levee-{function}".into(),
            workers_per_task: 1,
            leader_lease_ms: 10_000,
        }
    }
}

impl EcsSettings {
    /// Checks the settings; errors name the bad setting as the manifest spells it.
    pub fn validate(&self) -> Result<()> {
        if self.cluster.trim().is_empty() {
            return Err(Error::Invalid(
                "aws.ecs.cluster: the ECS cluster name is empty".into(),
            ));
        }
        if !self.service_pattern.contains("{function}") {
            return Err(Error::Invalid(format!(
                "aws.ecs.service_pattern {:?} must contain {{function}} (one service per function)",
                self.service_pattern
            )));
        }
        if !(1_000..=300_000).contains(&self.leader_lease_ms) {
            return Err(Error::Invalid(format!(
                "aws.ecs.leader_lease_ms must be 1000 to 300000, got {}",
                self.leader_lease_ms
            )));
        }
        if self.workers_per_task == 0 {
            return Err(Error::Invalid(
                "aws.ecs.workers_per_task must be at least 1".into(),
            ));
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

/// Running and pending tasks of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fleet {
    pub running: u32,
    pub pending: u32,
}

/// Signals of the whole fleet: queue signals from `inner` (SQS statistics), with each function's
/// `workers` and `starting` taken from its ECS service (running and pending tasks times
/// `workers_per_task`). Where `inner` has no measured service rate (no local pool), one is derived
/// from the queue when the backlog shows every worker was busy: processed per second per worker.
pub struct FleetSignals<S> {
    inner: S,
    client: aws_sdk_ecs::Client,
    settings: EcsSettings,
}

impl<S> FleetSignals<S> {
    /// Fleet signals over `inner`, reading the services of `settings` through `sdk`.
    pub fn new(inner: S, sdk: &SdkConfig, settings: EcsSettings) -> Result<Self> {
        settings.validate()?;
        Ok(Self {
            inner,
            client: aws_sdk_ecs::Client::new(sdk),
            settings,
        })
    }

    /// Running and pending tasks of each function's service (functions without one are absent).
    pub async fn fleets(&self, functions: &[String]) -> Result<BTreeMap<String, Fleet>> {
        let mut by_service: BTreeMap<String, String> = functions
            .iter()
            .map(|f| (self.settings.service(f), f.clone()))
            .collect();
        let services: Vec<String> = by_service.keys().cloned().collect();
        let mut out = BTreeMap::new();
        for chunk in services.chunks(DESCRIBE_MAX) {
            let described = self
                .client
                .describe_services()
                .cluster(&self.settings.cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| Error::Unavailable {
                    service: "ECS".into(),
                    message: format!(
                        "describe-services in cluster {}: {}",
                        self.settings.cluster,
                        DisplayErrorContext(&e)
                    ),
                })?;
            for svc in described.services() {
                let name = svc.service_name().unwrap_or_default();
                if let Some(function) = by_service.remove(name) {
                    let count = |n: i32| u32::try_from(n).unwrap_or(0);
                    out.insert(
                        function,
                        Fleet {
                            running: count(svc.running_count()),
                            pending: count(svc.pending_count()),
                        },
                    );
                }
            }
        }
        Ok(out)
    }
}

/// Applies the fleet to one function's signals (see [`FleetSignals`]).
pub fn apply_fleet(s: &mut levee_scaler::FunctionSignals, fleet: Fleet, workers_per_task: u32) {
    s.workers = fleet.running.saturating_mul(workers_per_task);
    s.starting = fleet.pending.saturating_mul(workers_per_task);
    if s.service_rate_per_worker.is_none() && s.backlog > 0 && s.workers > 0 {
        let rate = s.processed_rate / f64::from(s.workers);
        if rate > 0.0 {
            s.service_rate_per_worker = Some(rate);
        }
    }
}

impl<S: SignalSource + Sync> SignalSource for FleetSignals<S> {
    async fn signals(&mut self, now: Duration) -> levee_scaler::Result<Signals> {
        let mut signals = self.inner.signals(now).await?;
        let functions: Vec<String> = signals.functions.keys().cloned().collect();
        let fleets = self
            .fleets(&functions)
            .await
            .map_err(|e| levee_scaler::Error::Signals(e.to_string()))?;
        for (name, s) in &mut signals.functions {
            // A function without a service has no workers anywhere.
            let fleet = fleets.get(name).copied().unwrap_or_default();
            apply_fleet(s, fleet, self.settings.workers_per_task);
        }
        Ok(signals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_sets_workers_and_a_service_rate_under_backlog() {
        let mut s = levee_scaler::FunctionSignals {
            backlog: 500,
            processed_rate: 120.0,
            workers: 1,
            ..Default::default()
        };
        apply_fleet(
            &mut s,
            Fleet {
                running: 3,
                pending: 1,
            },
            4,
        );
        assert_eq!((s.workers, s.starting), (12, 4));
        assert_eq!(s.service_rate_per_worker, Some(10.0));
        let mut idle = levee_scaler::FunctionSignals {
            processed_rate: 5.0,
            ..Default::default()
        };
        apply_fleet(
            &mut idle,
            Fleet {
                running: 2,
                pending: 0,
            },
            1,
        );
        assert_eq!(
            idle.service_rate_per_worker, None,
            "no backlog: workers were not all busy"
        );
    }

    #[test]
    fn settings_parse_from_the_manifest_section() {
        let s: EcsSettings = toml::from_str("cluster = \"prod\"\nworkers_per_task = 4").unwrap();
        assert_eq!(s.cluster, "prod");
        assert_eq!(s.service_pattern, "levee-{function}");
        assert_eq!(s.tasks(9), 3);
        let bad = toml::from_str::<EcsSettings>("clustr = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("clustr"), "{bad}");
    }

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
