//! The ECS side of the scaler against the AWS emulator: the coordinated policy's decision for the
//! sample pipeline sets the desired count of one ECS service per function, and the fleet's
//! controller (`levee scale`) does so by itself from the SQS queues of a live backlog.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_ecs::types::{ContainerDefinition, Service};
use levee::manifest::Manifest;
use levee::scaling::{EcsActuator, EcsSettings, graph_from_manifest, spawn_fleet};
use levee_scaler::{Actuator, Coordinated, FunctionSignals, Policy, Signals};
use levee_tests::emulator::unique;
use levee_tests::with_emulator;

const MANIFEST: &str = r#"
[functions.inbound]
module = "inbound.wasm"
emits_to = ["routing", "search-index"]
concurrency = 2
max_workers = 12
[functions.routing]
module = "routing.wasm"
emits_to = ["notify"]
concurrency = 1
max_workers = 12
[functions.search-index]
module = "search_index.wasm"
concurrency = 1
min_workers = 0
max_workers = 6
[functions.notify]
module = "notify.wasm"
concurrency = 1
max_workers = 12
"#;

async fn desired_counts(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    services: &[String],
) -> BTreeMap<String, i32> {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .set_services(Some(services.to_vec()))
        .send()
        .await
        .expect("describe-services");
    out.services()
        .iter()
        .map(|s: &Service| {
            (
                s.service_name().unwrap_or_default().to_string(),
                s.desired_count(),
            )
        })
        .collect()
}

/// Creates the cluster of `settings`, a task definition and one service per function (desired 1);
/// returns the task definition family.
async fn create_cluster(ecs: &aws_sdk_ecs::Client, cluster: &str) -> String {
    ecs.create_cluster()
        .cluster_name(cluster)
        .send()
        .await
        .expect("create-cluster");
    let family = format!("{cluster}-host");
    ecs.register_task_definition()
        .family(&family)
        .container_definitions(
            ContainerDefinition::builder()
                .name("levee")
                .image("levee:latest")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .expect("register-task-definition");
    family
}

async fn create_services(
    ecs: &aws_sdk_ecs::Client,
    settings: &EcsSettings,
    family: &str,
    manifest: &Manifest,
) -> Vec<String> {
    let mut services = Vec::new();
    for name in manifest.functions.keys() {
        let service = settings.service(name);
        ecs.create_service()
            .cluster(&settings.cluster)
            .service_name(&service)
            .task_definition(family)
            .desired_count(1)
            .send()
            .await
            .expect("create-service");
        services.push(service);
    }
    services
}

#[tokio::test]
async fn the_fleet_controller_sizes_the_services_from_a_live_backlog() {
    let emu = with_emulator!();
    let sdk = emu.sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let aws = emu.settings("fleet");
    let cluster = unique("fleet");
    let family = create_cluster(&ecs, &cluster).await;
    let text = format!(
        "[platform]\nbackend = \"aws\"\nscaler = \"coordinated\"\n\n[aws]\nqueue_prefix = \"{}\"\n\
         table = \"{}\"\nbucket = \"{}\"\n\n[aws.ecs]\ncluster = \"{cluster}\"\n\
         service_pattern = \"{cluster}-{{function}}\"\nworkers_per_task = 1\n{MANIFEST}",
        aws.queue_prefix, aws.table, aws.bucket
    );
    let manifest = Manifest::parse(&text, Path::new(".")).expect("manifest with [aws.ecs]");
    let settings = manifest.aws.ecs.clone().unwrap();
    let services = create_services(&ecs, &settings, &family, &manifest).await;
    levee::provision(&sdk, &aws, &manifest.queue_specs())
        .await
        .expect("provision");
    let dir = tempfile::tempdir().unwrap();
    let backends = levee::backends::open(&manifest, dir.path(), Some(&sdk))
        .await
        .expect("aws backends");
    // A backlog no worker drains (no host runs here): 300 customer messages at inbound.
    for batch in 0..30 {
        let msgs = (0..10)
            .map(|i| {
                levee::OutgoingMessage::new(format!(r#"{{"n": {}}}"#, batch * 10 + i).into_bytes())
            })
            .collect();
        backends.queue.send("inbound", msgs).await.expect("send");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let status = spawn_fleet(
        &manifest,
        backends.queue.clone(),
        backends.store.clone(),
        &sdk,
        stop_rx,
    )
    .expect("fleet controller");
    let inbound = settings.service("inbound");
    let mut got = BTreeMap::new();
    let mut st = status.get();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        got = desired_counts(&ecs, &cluster, &services).await;
        // The controller records a decision in its status after applying it: wait for both.
        st = status.get();
        let recorded = st.decision.as_ref().is_some_and(|d| {
            d.functions.get("inbound").is_some_and(|f| {
                settings.tasks(levee::scaling::workers_for(f)) == got[&inbound] as u32
            })
        });
        if got[&inbound] > 1 && recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        got[&inbound] > 1,
        "inbound's service scaled up for its backlog: {got:?} {st:?}"
    );
    let decision = st.decision.clone().expect("a decision");
    assert_eq!(
        decision.functions.len(),
        4,
        "every function is decided: {decision:?}"
    );
    assert_eq!(
        got[&inbound] as u32,
        settings.tasks(levee::scaling::workers_for(&decision.functions["inbound"])),
        "the desired count is the decision's: {decision:?}"
    );
    assert!(st.last_error.is_none(), "no ECS or SQS error: {st:?}");
    let _ = stop_tx.send(true);

    // Without [aws.ecs] the fleet controller refuses to start, naming the section.
    let plain = Manifest::parse(
        &format!("[platform]\nbackend = \"aws\"\n{MANIFEST}"),
        Path::new("."),
    )
    .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let e = spawn_fleet(
        &plain,
        backends.queue.clone(),
        backends.store.clone(),
        &sdk,
        rx,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("aws.ecs"), "{e}");
}

#[tokio::test]
async fn decisions_set_the_desired_count_of_each_function_service() {
    let emu = with_emulator!();
    let sdk = emu.sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let cluster = unique("ecs");
    let family = create_cluster(&ecs, &cluster).await;
    let manifest = Manifest::parse(MANIFEST, Path::new(".")).unwrap();
    let settings = EcsSettings {
        cluster: cluster.clone(),
        service_pattern: format!("{cluster}-{{function}}"),
        workers_per_task: 2,
        ..EcsSettings::default()
    };
    let services = create_services(&ecs, &settings, &family, &manifest).await;

    // A surge at inbound: 400 msg/s arriving, 2000 waiting, 100 msg/s per worker measured everywhere.
    let graph = graph_from_manifest(&manifest).unwrap();
    let mut signals = Signals::default();
    for name in manifest.functions.keys() {
        let s = FunctionSignals {
            service_rate_per_worker: Some(100.0),
            workers: manifest.functions[name].concurrency,
            ..FunctionSignals::default()
        };
        signals.functions.insert(name.clone(), s);
    }
    let inbound = signals.functions.get_mut("inbound").unwrap();
    inbound.arrival_rate = 400.0;
    inbound.backlog = 2000;
    let mut policy = Coordinated::default();
    let decision = policy.decide(&graph, &signals, Duration::from_secs(10));
    // Feed-forward: routing and notify are sized from inbound's expected outflow in this decision.
    assert!(
        decision.desired("routing") > 1 && decision.desired("notify") > 1,
        "{decision:?}"
    );

    let mut actuator = EcsActuator::new(&sdk, settings.clone()).unwrap();
    actuator.apply(&decision).await.expect("update-service");
    let got = desired_counts(&ecs, &cluster, &services).await;
    for (name, d) in &decision.functions {
        let want = d.desired.div_ceil(2) as i32;
        assert_eq!(got[&settings.service(name)], want, "{name}: {d:?}");
    }
    assert_eq!(actuator.applied().len(), 4);

    // A service that does not exist: the error names it, and the other functions are still applied.
    let mut decision2 = decision.clone();
    let mut ghost = decision2.functions["notify"].clone();
    ghost.desired = 4;
    decision2.functions.insert("ghost".into(), ghost);
    decision2.functions.get_mut("routing").unwrap().desired = 1;
    let e = actuator.apply(&decision2).await.unwrap_err().to_string();
    assert!(e.contains(&settings.service("ghost")), "{e}");
    let got = desired_counts(&ecs, &cluster, &services).await;
    assert_eq!(got[&settings.service("routing")], 1);
}
