//! The stack `levee infra render` makes, created by CloudFormation on the emulator (moto), with
//! Levee running against the stack's own resources: the pipeline flows on two hosts that share
//! the queues with no double effects, `levee provision` finds everything and collides with
//! nothing, a stack update keeps the desired counts the scaler set, and two `levee scale`
//! processes elect one leader, the standby taking over when the leader is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use levee::store::Store;
use levee::{DynamoStore, Queue};
use levee_tests::emulator::{Emulator, emulator, unique};
use levee_tests::{Fn, LeveeProcess, free_port, levee, levee_bin, pipeline_fns, repo_root};
use serde_json::Value;

/// The AWS CLI installed with the emulator (localstack/start.sh puts it in .venv-moto).
fn aws(emu: &Emulator, args: &[&str]) -> Value {
    let cli = repo_root().join(".venv-moto/bin/aws");
    let cli = if cli.exists() {
        cli
    } else {
        PathBuf::from("aws")
    };
    let out = Command::new(&cli)
        .args([
            "--endpoint-url",
            &emu.endpoint,
            "--region",
            "us-east-1",
            "--output",
            "json",
        ])
        .args(args)
        .envs(aws_env(emu))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", cli.display()));
    assert!(
        out.status.success(),
        "aws {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text.into_owned()))
    }
}

fn aws_env(emu: &Emulator) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", emu.endpoint.clone()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// A rendered and created stack.
struct Stack {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    manifest: PathBuf,
    name: String,
    prefix: String,
    table: String,
    cluster: String,
    template: PathBuf,
    params: Vec<String>,
    emu: Emulator,
}

fn stack_manifest(dir: &Path, id: &str, lease_ms: u64) -> PathBuf {
    let mut fns: Vec<Fn> = pipeline_fns(2);
    // A max_receive of its own, to see it reach the queue's redrive policy.
    fns[1].extra.push_str("\nmax_receive = 7");
    let extra = format!(
        "backend = \"aws\"\nscaler = \"coordinated\"\n\n[aws]\nqueue_prefix = \"{id}-\"\n\
         table = \"{id}-kv\"\nbucket = \"{id}-blobs\"\n\n[aws.ecs]\ncluster = \"{id}\"\n\
         service_pattern = \"{id}-{{function}}\"\nleader_lease_ms = {lease_ms}"
    );
    levee_tests::write_manifest_with(dir, &extra, &fns)
}

fn create_stack(tag: &str, lease_ms: u64) -> Option<Stack> {
    let emu = emulator()?;
    let dir = tempfile::tempdir().unwrap();
    let id = unique(tag);
    let manifest = stack_manifest(dir.path(), &id, lease_ms);
    let out = dir.path().join("rendered");
    let name = format!("s{}", id.replace('-', ""))
        .chars()
        .take(32)
        .collect::<String>();
    let (code, stdout, stderr) = levee(&[
        "infra",
        "render",
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--stack",
        &name,
    ]);
    assert_eq!(code, 0, "render: {stdout}{stderr}");
    assert!(stdout.contains("AWS::ECS::Service"), "{stdout}");
    let vpc = aws(&emu, &["ec2", "create-vpc", "--cidr-block", "10.20.0.0/16"])["Vpc"]["VpcId"]
        .as_str()
        .unwrap()
        .to_string();
    let subnet = |cidr: &str| {
        aws(
            &emu,
            &[
                "ec2",
                "create-subnet",
                "--vpc-id",
                &vpc,
                "--cidr-block",
                cidr,
            ],
        )["Subnet"]["SubnetId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (subnet("10.20.1.0/24"), subnet("10.20.2.0/24"));
    let template = out.join("levee.template.json");
    let params = vec![
        "ParameterKey=Image,ParameterValue=public.ecr.aws/levee/levee:test".to_string(),
        format!("ParameterKey=VpcId,ParameterValue={vpc}"),
        format!("ParameterKey=Subnets,ParameterValue={a}\\,{b}"),
        format!("ParameterKey=PublicSubnets,ParameterValue={a}\\,{b}"),
    ];
    let stack = Stack {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        manifest,
        prefix: format!("{id}-"),
        table: format!("{id}-kv"),
        cluster: id.clone(),
        name,
        template,
        params,
        emu,
    };
    stack.apply("create-stack", &[]);
    stack.wait("stack-create-complete");
    Some(stack)
}

impl Stack {
    /// `aws cloudformation VERB` (create-stack, update-stack) of the rendered template with the
    /// stack's parameters and `extra` ones.
    fn apply(&self, verb: &str, extra: &[String]) {
        let mut args = vec![
            "cloudformation".to_string(),
            verb.into(),
            "--stack-name".into(),
            self.name.clone(),
            "--template-body".into(),
            format!("file://{}", self.template.display()),
            "--capabilities".into(),
            "CAPABILITY_NAMED_IAM".into(),
            "--parameters".into(),
        ];
        args.extend(self.params.iter().cloned());
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        aws(&self.emu, &args);
    }

    fn wait(&self, what: &str) {
        aws(
            &self.emu,
            &["cloudformation", "wait", what, "--stack-name", &self.name],
        );
        let d = aws(
            &self.emu,
            &[
                "cloudformation",
                "describe-stacks",
                "--stack-name",
                &self.name,
            ],
        );
        let status = d["Stacks"][0]["StackStatus"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        assert!(
            status.ends_with("_COMPLETE") && !status.contains("ROLLBACK"),
            "{status}: {d}"
        );
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = aws_env(&self.emu);
        env.push(("LEVEE_AWS_MANAGED", "cloudformation".into()));
        env
    }

    fn desired(&self, function: &str) -> i64 {
        let service = format!("{}-{function}", self.cluster);
        let d = aws(
            &self.emu,
            &[
                "ecs",
                "describe-services",
                "--cluster",
                &self.cluster,
                "--services",
                &service,
            ],
        );
        d["services"][0]["desiredCount"]
            .as_i64()
            .unwrap_or_else(|| panic!("service {service} missing: {d}"))
    }

    fn delete(&self) {
        aws(
            &self.emu,
            &["cloudformation", "delete-stack", "--stack-name", &self.name],
        );
    }
}

fn host(stack: &Stack) -> LeveeProcess {
    let env = stack.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    LeveeProcess::up_with(&stack.manifest, free_port(), &[], &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_stack_runs_the_pipeline_on_two_hosts_and_keeps_scaled_counts() {
    let Some(stack) = create_stack("stack", 10_000) else {
        return;
    };
    let emu = stack.emu.clone();
    let sdk = emu.sdk_config().await;

    // The queues are the stack's, with each function's own max_receive.
    let url = aws(
        &emu,
        &[
            "sqs",
            "get-queue-url",
            "--queue-name",
            &format!("{}routing", stack.prefix),
        ],
    )["QueueUrl"]
        .as_str()
        .expect("the stack created the routing queue")
        .to_string();
    let attrs = aws(
        &emu,
        &[
            "sqs",
            "get-queue-attributes",
            "--queue-url",
            &url,
            "--attribute-names",
            "RedrivePolicy",
        ],
    );
    let redrive = attrs["Attributes"]["RedrivePolicy"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        redrive.contains("routing-dlq") && redrive.contains('7'),
        "{redrive}"
    );

    // Two hosts on the stack's resources, as the per-function services would be.
    let hosts = [host(&stack), host(&stack)];
    const N: usize = 30;
    for n in 0..N {
        let msg = serde_json::json!({"org": "acme", "conversation": format!("c-{n}"),
            "channel": "chat", "from": "ann@example.com", "text": "where is my order"});
        let (code, out, err) = hosts[n % 2].cli(&["send", "inbound", &msg.to_string()]);
        assert_eq!(code, 0, "send: {out}{err}");
    }
    let table = DynamoStore::new(&sdk, &stack.table);
    let count = || async {
        table
            .get("notify", "count/acme/general")
            .await
            .unwrap()
            .map(|v| serde_json::from_slice::<u64>(&v).unwrap())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while count().await < N as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut processed = Vec::new();
    for h in &hosts {
        let (code, out, err) = h.cli(&["status", "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let n: u64 = v["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["invocations"].as_u64().unwrap_or(0))
            .sum();
        processed.push(n);
    }
    assert_eq!(
        count().await,
        N as u64,
        "every notification counted once; invocations per host {processed:?}"
    );
    eprintln!("two hosts on the stack's queues: invocations {processed:?} for {N} messages");
    assert!(
        processed.iter().all(|&n| n > 0),
        "both hosts took work: {processed:?}"
    );
    // Both hosts published what they processed; `levee scale` sums it into measured rates.
    let deadline = Instant::now() + Duration::from_secs(20);
    let published = loop {
        let c = levee::scaling::published::fleet_counters(&table, "notify")
            .await
            .unwrap()
            .unwrap_or_default();
        let hosts_seen = table
            .scan(&levee::scaling::published::stats_ns("notify"), "", None, 10)
            .await
            .unwrap()
            .len();
        if (c.completed == N as u64 && hosts_seen == 2) || Instant::now() > deadline {
            break (c, hosts_seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(published.0.completed, N as u64, "{published:?}");
    assert_eq!(published.1, 2, "one item per host");
    // Nothing was dead-lettered.
    let queue = levee::SqsQueue::new(&sdk, stack.prefix.clone());
    for f in ["inbound", "routing", "search-index", "notify"] {
        assert_eq!(queue.stats(f).await.unwrap().dlq, 0, "{f}");
    }
    drop(hosts);

    // `levee provision` on the same manifest finds every resource and creates none.
    let out = Command::new(levee_bin())
        .args(["provision", "--manifest", stack.manifest.to_str().unwrap()])
        .envs(aws_env(&emu))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("0 created"), "{report}");

    // What the scaler sets survives a stack update.
    aws(
        &emu,
        &[
            "ecs",
            "update-service",
            "--cluster",
            &stack.cluster,
            "--service",
            &format!("{}-search-index", stack.cluster),
            "--desired-count",
            "3",
        ],
    );
    stack.apply(
        "update-stack",
        &["ParameterKey=LogRetentionDays,ParameterValue=14".to_string()],
    );
    stack.wait("stack-update-complete");
    assert_eq!(
        stack.desired("search-index"),
        3,
        "a stack update kept the scaler's count"
    );
    stack.delete();
}

/// A `levee scale` process whose output goes to a file.
fn scaler(stack: &Stack, n: usize) -> (Child, PathBuf) {
    let log = stack.dir.join(format!("scale-{n}.log"));
    let child = Command::new(levee_bin())
        .args(["scale", "--manifest", stack.manifest.to_str().unwrap()])
        .envs(stack.env())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, log)
}

fn leads(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains("levee scale: leader"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scalers_elect_one_leader_and_the_standby_takes_over_when_it_dies() {
    const LEASE_MS: u64 = 3_000;
    let Some(stack) = create_stack("leader", LEASE_MS) else {
        return;
    };
    let mut a = scaler(&stack, 0);
    let mut b = scaler(&stack, 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(leads(&a.1) || leads(&b.1)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the other a few retries: it must stay a standby.
    std::thread::sleep(Duration::from_millis(LEASE_MS));
    let (la, lb) = (leads(&a.1), leads(&b.1));
    assert!(la ^ lb, "exactly one leader: a {la}, b {lb}");
    let (leader, standby) = if la { (&mut a, &b) } else { (&mut b, &a) };
    assert!(
        std::fs::read_to_string(&standby.1)
            .unwrap()
            .contains("standby")
    );
    // The leader sized the services from the (empty) queues: min_workers of each function.
    let sized = Instant::now() + Duration::from_secs(30);
    while stack.desired("inbound") == 0 && Instant::now() < sized {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        stack.desired("inbound") > 0,
        "the leader set desired counts"
    );

    leader.0.kill().unwrap();
    leader.0.wait().unwrap();
    let killed = Instant::now();
    let bound = levee::scaling::LeaderSettings::with_lease(Duration::from_millis(LEASE_MS))
        .takeover_bound();
    while !leads(&standby.1) && killed.elapsed() < bound + Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = killed.elapsed();
    assert!(
        leads(&standby.1),
        "the standby took over: {}",
        std::fs::read_to_string(&standby.1).unwrap()
    );
    eprintln!(
        "leader killed: the standby led after {:.2} s (lease {:.1} s, bound {:.1} s)",
        took.as_secs_f64(),
        LEASE_MS as f64 / 1000.0,
        bound.as_secs_f64()
    );
    assert!(
        took < bound + Duration::from_secs(10),
        "took {took:?}, bound {bound:?}"
    );
    let _ = a.0.kill();
    let _ = b.0.kill();
    stack.delete();
}
