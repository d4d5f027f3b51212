//! The ECS actuator against the AWS emulator: the coordinated policy's decision for the sample
//! pipeline sets the desired count of one ECS service per function.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_ecs::types::{ContainerDefinition, Service};
use levee::manifest::Manifest;
use levee::scaling::{EcsActuator, EcsSettings, graph_from_manifest};
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

#[tokio::test]
async fn decisions_set_the_desired_count_of_each_function_service() {
    let emu = with_emulator!();
    let sdk = emu.sdk_config().await;
    let ecs = aws_sdk_ecs::Client::new(&sdk);
    let cluster = unique("ecs");
    ecs.create_cluster()
        .cluster_name(&cluster)
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
    let manifest = Manifest::parse(MANIFEST, Path::new(".")).unwrap();
    let settings = EcsSettings {
        cluster: cluster.clone(),
        service_pattern: format!("{cluster}-{{function}}"),
        workers_per_task: 2,
    };
    let mut services = Vec::new();
    for name in manifest.functions.keys() {
        let service = settings.service(name);
        ecs.create_service()
            .cluster(&cluster)
            .service_name(&service)
            .task_definition(&family)
            .desired_count(1)
            .send()
            .await
            .expect("create-service");
        services.push(service);
    }

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
