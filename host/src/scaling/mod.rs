//! The host side of the scaler: the dependency graph from the manifest ([`graph_from_manifest`]), the
//! live signal source over queue stats and pool counters ([`QueueSignals`]), actuators for local worker
//! pools ([`PoolActuator`]) and ECS services ([`EcsActuator`]), the policy chosen in the manifest
//! ([`policy_for`], [`spawn_local`] for `levee up`), the `levee sim` runner ([`sim`]) and the
//! `levee load` generator ([`load`]).

mod contention;
mod ecs;
pub mod fleet;
mod graph;
pub mod leader;
pub mod load;
mod local;
pub mod published;
pub mod sim;
mod source;
pub mod surge;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use levee_scaler::{
    Coordinated, CoordinatedConfig, Decision, Graph, Independent, IndependentConfig, LambdaLike,
    LambdaLikeConfig, Policy, Signals, StatusHandle,
};
use tokio::sync::watch;

pub use ecs::{EcsActuator, EcsSettings, Fleet, FleetSignals, apply_fleet};
pub use graph::{PRIOR_FAN_OUT, graph_from_manifest};
pub use leader::{LEADER_NS, LeaderSettings, Lease};
pub use local::{PoolActuator, workers_for};
pub use source::{QueueSignals, Sample, function_signals};

use crate::manifest::{Backend, Manifest};
use crate::queue::Queue;
use crate::worker::WorkerPool;
use crate::{Error, Result};

/// A policy chosen at run time (the controller is generic over a sized policy).
pub struct AnyPolicy(pub Box<dyn Policy>);

impl Policy for AnyPolicy {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn interval(&self) -> Duration {
        self.0.interval()
    }
    fn decide(&mut self, graph: &Graph, signals: &Signals, now: Duration) -> Decision {
        self.0.decide(graph, signals, now)
    }
}

/// The policy `[platform] scaler` names, with the manifest's windows applied; `None` for `off`.
pub fn policy_for(manifest: &Manifest) -> Option<AnyPolicy> {
    let p = &manifest.platform;
    let window = p.scale_down_window_ms.map(Duration::from_millis);
    let idle = p.idle_window_ms.map(Duration::from_millis);
    let policy: Box<dyn Policy> = match p.scaler.policy_name()? {
        "coordinated" => {
            let mut c = CoordinatedConfig::default();
            c.scale_down_window = window.unwrap_or(c.scale_down_window);
            c.idle_window = idle.unwrap_or(c.idle_window);
            Box::new(Coordinated::new(c))
        }
        "independent" => {
            let mut c = IndependentConfig::default();
            c.scale_down_window = window.unwrap_or(c.scale_down_window);
            c.cooldown = idle.unwrap_or(c.cooldown);
            Box::new(Independent::new(c))
        }
        // Lambda has neither window: idle concurrency costs nothing there.
        _ => Box::new(LambdaLike::new(LambdaLikeConfig::default())),
    };
    Some(AnyPolicy(policy))
}

/// Starts the controller over the platform's pools when the manifest asks for a scaler; it stops when
/// `stop` turns true. Returns the handle on its last decision, or `None` when the scaler is off.
///
/// Under the coordinated policy, a surge in what the ingress accepts (`arrivals`, see
/// [`surge`]) wakes the controller at once, so a step in load is met within a fraction of a
/// second instead of at the next tick.
pub fn spawn_local(
    manifest: &Manifest,
    queue: Arc<dyn Queue>,
    pools: &BTreeMap<String, Arc<WorkerPool>>,
    arrivals: Arc<surge::ArrivalMeter>,
    stop: watch::Receiver<bool>,
) -> Result<Option<StatusHandle>> {
    let Some(policy) = policy_for(manifest) else {
        return Ok(None);
    };
    if ecs_mode(manifest) {
        // The fleet's scaler (`levee scale`) sizes the ECS services; this host keeps its pools.
        tracing::info!(
            "[aws.ecs] is set: worker pools keep their concurrency, `levee scale` sizes the services"
        );
        return Ok(None);
    }
    let graph = Arc::new(graph_from_manifest(manifest)?);
    let mut source = QueueSignals::new(queue, pools.clone()).with_edges(edges(manifest));
    // The baselines keep their own reaction times (KEDA polls, Lambda ramps per minute).
    let mut wake = None;
    if policy.name() == "coordinated" {
        let surges = Arc::new(surge::Surges::default());
        let notify = Arc::new(tokio::sync::Notify::new());
        source = source.with_surges(surges.clone()).with_host_cpu();
        tokio::spawn(surge::watch(arrivals, surges, notify.clone(), stop.clone()));
        wake = Some(notify);
    }
    let mut controller =
        levee_scaler::Controller::new(graph, policy, source, PoolActuator::new(pools.clone()));
    if let Some(wake) = wake {
        controller = controller.with_wake(wake);
    }
    let status = controller.status();
    tokio::spawn(async move {
        controller.run(stopped(stop)).await;
    });
    Ok(Some(status))
}

/// Whether the manifest runs on ECS: the aws backend with an `[aws.ecs]` section.
pub fn ecs_mode(manifest: &Manifest) -> bool {
    manifest.platform.backend == Backend::Aws
        && crate::backends::aws_settings(&manifest.aws).ecs.is_some()
}

/// Starts the fleet's controller (`levee scale`): signals from every function's queue and ECS
/// service, decisions applied to the services' desired counts. Needs the aws backend, an
/// `[aws.ecs]` section and a scaler policy; the error names what is missing.
pub fn spawn_fleet(
    manifest: &Manifest,
    queue: Arc<dyn Queue>,
    store: Arc<dyn crate::store::Store>,
    sdk: &aws_config::SdkConfig,
    stop: watch::Receiver<bool>,
) -> Result<StatusHandle> {
    let (settings, policy) = fleet_config(manifest)?;
    let graph = Arc::new(graph_from_manifest(manifest)?);
    let functions = manifest.functions.keys().cloned().collect();
    let source = QueueSignals::new(queue, BTreeMap::new())
        .with_functions(functions)
        .with_edges(edges(manifest))
        .with_published(store);
    let controller = levee_scaler::Controller::new(
        graph,
        policy,
        FleetSignals::new(source, sdk, settings.clone())?,
        EcsActuator::new(sdk, settings)?,
    );
    let status = controller.status();
    tokio::spawn(async move {
        controller.run(stopped(stop)).await;
    });
    Ok(status)
}

/// What `levee scale` needs from the manifest: the aws backend, `[aws.ecs]` and a policy; the
/// error names what is missing.
pub fn fleet_config(manifest: &Manifest) -> Result<(EcsSettings, AnyPolicy)> {
    if manifest.platform.backend != Backend::Aws {
        return Err(Error::Manifest(
            "platform.backend must be `aws` to scale ECS services (or pass --backend aws)".into(),
        ));
    }
    let Some(settings) = crate::backends::aws_settings(&manifest.aws).ecs else {
        return Err(Error::Manifest(
            "aws.ecs is missing: add an [aws.ecs] section with the cluster of the function services"
                .into(),
        ));
    };
    let Some(policy) = policy_for(manifest) else {
        return Err(Error::Manifest(
            "platform.scaler is `off`: choose coordinated, independent or lambda-like".into(),
        ));
    };
    Ok((settings, policy))
}

fn edges(manifest: &Manifest) -> BTreeMap<String, Vec<String>> {
    manifest
        .functions
        .iter()
        .map(|(name, f)| (name.clone(), f.emits_to.clone()))
        .collect()
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Checks a policy name for the CLI (`coordinated`, `independent`, `lambda-like`).
pub fn check_policy(name: &str) -> Result<()> {
    levee_scaler::by_name(name)
        .map(|_| ())
        .map_err(|e| Error::Invalid(e.to_string()))
}
