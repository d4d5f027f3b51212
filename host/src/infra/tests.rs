use std::path::Path;

use serde_json::Value;

use super::*;

fn manifest(extra: &str, functions: &str) -> Manifest {
    let text = format!("{extra}\n{functions}");
    Manifest::parse(&text, Path::new("/tmp")).unwrap()
}

fn pipeline() -> Manifest {
    manifest(
        "",
        r#"
[functions.inbound]
module = "a.wasm"
public = true
emits_to = ["routing", "search-index"]
max_receive = 5
[functions.routing]
module = "a.wasm"
emits_to = ["notify"]
max_receive = 7
[functions.search-index]
module = "a.wasm"
[functions.notify]
module = "a.wasm"
max_receive = 3
"#,
    )
}

fn res<'a>(t: &'a Value, id: &str) -> &'a Value {
    t["Resources"]
        .get(id)
        .unwrap_or_else(|| panic!("resource {id} missing"))
}

fn statements(policy: &Value) -> Vec<Value> {
    policy["Statement"].as_array().unwrap().clone()
}

fn role_policy<'a>(t: &'a Value, role: &str) -> &'a Value {
    &res(t, role)["Properties"]["Policies"][0]["PolicyDocument"]
}

#[test]
fn each_function_gets_its_queue_with_its_own_max_receive() {
    let out = render(&pipeline(), &RenderOptions::default()).unwrap();
    let t = &out.template;
    let q = &res(t, "RoutingQueue")["Properties"];
    assert_eq!(q["QueueName"], "levee-routing");
    assert_eq!(q["RedrivePolicy"]["maxReceiveCount"], 7);
    assert_eq!(
        q["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0],
        "RoutingDlq"
    );
    assert_eq!(q["MessageRetentionPeriod"], QUEUE_RETENTION_SECS);
    assert_eq!(
        res(t, "NotifyQueue")["Properties"]["RedrivePolicy"]["maxReceiveCount"],
        3
    );
    assert_eq!(
        res(t, "SearchIndexDlq")["Properties"]["QueueName"],
        "levee-search-index-dlq"
    );
    for id in [
        "InboundQueue",
        "InboundDlq",
        "KvTable",
        "BlobBucket",
        "Repository",
    ] {
        assert_eq!(res(t, id)["DeletionPolicy"], "Retain", "{id}");
        assert_eq!(res(t, id)["UpdateReplacePolicy"], "Retain", "{id}");
    }
    let table = &res(t, "KvTable")["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"],
        "expires_at"
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
}

#[test]
fn services_match_what_levee_scale_expects_and_keep_their_counts() {
    let m = manifest(
        "[aws.ecs]\ncluster = \"prod\"\nservice_pattern = \"fn-{function}\"",
        "[functions.a-b]\nmodule = \"a.wasm\"\n[functions.c]\nmodule = \"a.wasm\"",
    );
    let out = render(&m, &RenderOptions::default()).unwrap();
    let t = &out.template;
    assert_eq!(res(t, "Cluster")["Properties"]["ClusterName"], "prod");
    let svc = &res(t, "ABService")["Properties"];
    assert_eq!(
        svc["ServiceName"],
        m.aws.ecs.as_ref().unwrap().service("a-b")
    );
    assert!(
        svc.get("DesiredCount").is_none(),
        "a stack update must not reset what the scaler set"
    );
    let def = &res(t, "ABTaskDefinition")["Properties"]["ContainerDefinitions"][0];
    assert_eq!(
        def["Command"],
        serde_json::json!(["up", "--backend", "aws", "--function", "a-b"])
    );
    let scaler = &res(t, "ScalerTaskDefinition")["Properties"]["ContainerDefinitions"][0];
    assert_eq!(scaler["Command"], serde_json::json!(["scale"]));
    assert!(res(t, "ScalerService")["Properties"]["DesiredCount"].is_object());
    let ing = &res(t, "IngressService")["Properties"];
    assert_eq!(ing["LoadBalancers"][0]["ContainerPort"], CONTAINER_PORT);
}

#[test]
fn a_function_role_reaches_exactly_its_queues_namespace_and_prefixes() {
    let out = render(&pipeline(), &RenderOptions::default()).unwrap();
    let t = &out.template;
    let text = serde_json::to_string(role_policy(t, "RoutingRole")).unwrap();
    assert!(text.contains(":levee-routing\""), "{text}");
    assert!(text.contains(":levee-routing-dlq\""));
    assert!(text.contains(":levee-notify\""), "emits to notify");
    assert!(!text.contains(":levee-inbound"), "not its producer's queue");
    assert!(!text.contains(":levee-search-index"));
    assert!(!text.contains("levee-*"), "no wildcard over queues");
    assert!(!text.contains("ecs:"), "only the scaler updates services");
    let kv = statements(role_policy(t, "RoutingRole"))
        .into_iter()
        .find(|s| s["Sid"] == "KvNamespaces")
        .unwrap();
    assert_eq!(
        kv["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
        serde_json::json!([
            "routing",
            "_levee_done/routing",
            "_levee_stats/routing",
            "_levee_releases/routing"
        ])
    );
    assert!(text.contains("payloads/routing/*"));
    assert!(
        text.contains("modules/routing/*"),
        "its own deployed modules"
    );
    assert!(!text.contains("modules/inbound"));
    assert!(text.contains("payloads/notify/*"), "offloads what it emits");
    assert!(!text.contains("payloads/inbound"));
    // Only the scaler may update services.
    for (id, r) in t["Resources"].as_object().unwrap() {
        if r["Type"] == "AWS::IAM::Role" {
            let p = serde_json::to_string(&r["Properties"]["Policies"]).unwrap();
            assert_eq!(p.contains("ecs:UpdateService"), id == "ScalerRole", "{id}");
            let trust = &r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
            assert_eq!(trust["Principal"]["Service"], "ecs-tasks.amazonaws.com");
            assert!(trust["Condition"]["StringEquals"]["aws:SourceAccount"].is_object());
        }
    }
}

#[test]
fn an_empty_or_invalid_prefix_is_refused_naming_the_field() {
    let fns = "[functions.a]\nmodule = \"a.wasm\"";
    let err = render(
        &manifest("[aws]\nqueue_prefix = \"\"", fns),
        &RenderOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("aws.queue_prefix") && err.contains("empty"),
        "{err}"
    );
    let err = Manifest::parse(
        &format!("[aws]\nqueue_prefix = \"a*\"\n{fns}"),
        Path::new("/tmp"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("aws.queue_prefix"), "{err}");
    let err = render(
        &manifest("[aws]\nqueue_prefix = \"team\"", fns),
        &RenderOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("must end with"), "{err}");
    let err = render(
        &manifest("", fns),
        &RenderOptions {
            stack: "bad stack".into(),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--stack"), "{err}");
}

#[test]
fn colliding_names_are_refused() {
    let err = render(
        &manifest(
            "",
            "[functions.a-b]\nmodule = \"a.wasm\"\n[functions.a--b]\nmodule = \"a.wasm\"",
        ),
        &RenderOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("AB"), "{err}");
    let err = render(
        &manifest("", "[functions.scaler]\nmodule = \"a.wasm\""),
        &RenderOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("levee-scaler"), "{err}");
}

#[test]
fn ten_functions_render_within_cloudformations_limits() {
    let mut fns = String::new();
    for i in 0..10 {
        let next = if i < 9 {
            format!("emits_to = [\"f{}\"]", i + 1)
        } else {
            String::new()
        };
        fns.push_str(&format!(
            "[functions.f{i}]\nmodule = \"a.wasm\"\nmax_receive = {}\n{next}\n",
            i + 1
        ));
    }
    let out = render(&manifest("", &fns), &RenderOptions::default()).unwrap();
    let counts = out.resource_counts();
    assert_eq!(counts["AWS::SQS::Queue"], 20);
    assert_eq!(counts["AWS::ECS::Service"], 12);
    assert_eq!(counts["AWS::IAM::Role"], 13);
    assert_eq!(counts["AWS::CloudWatch::Alarm"], 20);
    let total: usize = counts.values().sum();
    assert!(total <= 500, "{total}");
    assert_eq!(
        res(&out.template, "F9Queue")["Properties"]["RedrivePolicy"]["maxReceiveCount"],
        10
    );
}

#[test]
fn the_manifests_alerts_become_alarms_where_sqs_metrics_tell() {
    let m = manifest(
        "[[alerts]]\nname = \"slow\"\nkind = \"oldest_age\"\nfunction = \"a\"\nthreshold_s = 90\nfor_s = 120\n\n\
         [[alerts]]\nname = \"dead\"\nkind = \"dlq_growth\"\nthreshold = 5\nwindow_s = 300\n\n\
         [[alerts]]\nname = \"breaker\"\nkind = \"breaker_open\"\n",
        "[functions.a]\nmodule = \"a.wasm\"\n[functions.b]\nmodule = \"a.wasm\"",
    );
    let out = render(&m, &RenderOptions::default()).unwrap();
    let t = &out.template;
    let slow = &res(t, "SlowAAlert")["Properties"];
    assert_eq!(slow["MetricName"], "ApproximateAgeOfOldestMessage");
    assert_eq!(slow["Threshold"], 90);
    assert_eq!(slow["EvaluationPeriods"], 2);
    assert_eq!(slow["Dimensions"][0]["Value"], "levee-a");
    for f in ["A", "B"] {
        let dead = &res(t, &format!("Dead{f}Alert"))["Properties"];
        assert_eq!(dead["MetricName"], "NumberOfMessagesSent");
        assert_eq!(dead["Period"], 300);
        assert_eq!(dead["Threshold"], 5);
    }
    assert!(
        t["Resources"].get("BreakerAAlert").is_none(),
        "a host's own view: no CloudWatch metric"
    );
}

#[test]
fn only_the_functions_that_name_a_secret_may_read_it() {
    let m = manifest(
        "",
        r#"
[functions.notify]
module = "a.wasm"
[functions.notify.secrets]
token = { aws = "levee/notify-token" }
other = { env = "NOT_IN_AWS" }
[functions.routing]
module = "a.wasm"
"#,
    );
    let out = render(&m, &RenderOptions::default()).unwrap();
    let t = &out.template;
    let secrets = |role: &str| {
        statements(role_policy(t, role))
            .into_iter()
            .find(|s| s["Sid"] == "Secrets")
    };
    let s = secrets("NotifyRole").expect("notify reads its secret");
    assert_eq!(s["Action"], "secretsmanager:GetSecretValue");
    let text = serde_json::to_string(&s["Resource"]).unwrap();
    assert!(text.contains(":secret:levee/notify-token-??????"), "{text}");
    assert!(!text.contains("NOT_IN_AWS"));
    assert!(secrets("RoutingRole").is_none(), "routing names no secret");
    assert!(
        secrets("IngressRole").is_some(),
        "the ingress runs `invoke`"
    );
}
