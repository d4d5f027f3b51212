//! `levee scale`: the fleet scaler as a process. Several may run (the rendered stack runs two);
//! they elect one leader through a lease in the table ([`Lease`]), and only the leader runs the
//! controller that sets the function services' desired counts. A leader that cannot renew its
//! lease steps down before the lease could pass to another, so two never act at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::leader::{LeaderSettings, Lease};
use super::{fleet_config, spawn_fleet, workers_for};
use crate::Result;
use crate::manifest::{Backend, Manifest};

/// A name for this candidate: host, process and a random part (a restarted task on the same
/// host is a new candidate).
pub fn candidate_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Runs `levee scale` until `shutdown` resolves: stands by, leads while it holds the lease,
/// hands the lease back on the way out.
pub async fn run(
    mut manifest: Manifest,
    sdk: aws_config::SdkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    manifest.platform.backend = Backend::Aws;
    let (ecs, _) = fleet_config(&manifest)?;
    let backends = crate::backends::open(&manifest, &manifest.data_dir(), Some(&sdk)).await?;
    let settings = LeaderSettings::with_lease(Duration::from_millis(ecs.leader_lease_ms));
    let lease = Lease::new(backends.store.clone(), candidate_name(), settings);
    println!(
        "levee scale: {} policy, ECS cluster {}, services {}; candidate {} (lease {} s: a \
         standby takes over within {} s of a leader's death)",
        manifest.platform.scaler.policy_name().unwrap_or("-"),
        ecs.cluster,
        ecs.service_pattern,
        lease.holder(),
        settings.lease.as_secs_f64(),
        settings.takeover_bound().as_secs_f64(),
    );
    tokio::pin!(shutdown);
    loop {
        // Standby: try for the lease until it is ours.
        let mut said_standby = false;
        loop {
            match lease.acquire().await {
                Ok(true) => break,
                Ok(false) => {
                    if !said_standby {
                        let holder = lease.state().await.ok().flatten().map(|s| s.holder);
                        println!(
                            "levee scale: standby (leader: {})",
                            holder.as_deref().unwrap_or("?")
                        );
                        said_standby = true;
                    }
                }
                Err(e) => eprintln!("levee scale: cannot read the leader lease: {e}"),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(settings.retry) => {}
            }
        }
        let mut held_until = Instant::now() + settings.lease;
        println!("levee scale: leader ({})", lease.holder());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut status = spawn_fleet(
            &manifest,
            backends.queue.clone(),
            backends.store.clone(),
            &sdk,
            stop_rx,
        )?;
        let mut renew = tokio::time::interval_at(Instant::now() + settings.renew, settings.renew);
        let mut last = BTreeMap::new();
        let mut last_error = None;
        let done = loop {
            tokio::select! {
                _ = &mut shutdown => break true,
                _ = renew.tick() => {
                    let asked = Instant::now();
                    match lease.acquire().await {
                        Ok(true) => held_until = asked + settings.lease,
                        Ok(false) => {
                            eprintln!("levee scale: another candidate holds the lease; standing by");
                            break false;
                        }
                        Err(e) => {
                            eprintln!("levee scale: cannot renew the leader lease: {e}");
                            // Step down before the lease can run out under us.
                            if Instant::now() + settings.renew >= held_until {
                                eprintln!("levee scale: stepping down (the lease would expire before the next renewal)");
                                break false;
                            }
                        }
                    }
                }
                alive = status.changed() => {
                    if !alive {
                        break false;
                    }
                    report(&status, &ecs, &mut last, &mut last_error);
                }
            }
        };
        let _ = stop_tx.send(true);
        if done {
            if let Err(e) = lease.release().await {
                eprintln!(
                    "levee scale: could not hand back the lease (it runs out by itself): {e}"
                );
            }
            return Ok(());
        }
    }
}

fn report(
    status: &levee_scaler::StatusHandle,
    ecs: &super::EcsSettings,
    last: &mut BTreeMap<String, u32>,
    last_error: &mut Option<Duration>,
) {
    let st = status.get();
    if let Some((at, e)) = &st.last_error
        && last_error.as_ref() != Some(at)
    {
        eprintln!("levee scale: {e}");
        *last_error = Some(*at);
    }
    let Some(d) = &st.decision else { return };
    for (name, f) in &d.functions {
        let workers = workers_for(f);
        if last.insert(name.clone(), workers) != Some(workers) {
            println!(
                "{name:<14} workers {workers:<3} tasks {:<3} {}",
                ecs.tasks(workers),
                f.reason
            );
        }
    }
}
