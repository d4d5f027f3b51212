//! The `levee` binary: parses the command line and runs it.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use hyper::Method;
use levee::cli::{Cli, Command, DlqCommand, KvCommand, read_message};
use levee::client::{call, encode_segment};
use levee::manifest::Manifest;
use levee::platform::{Platform, StartOptions};
use levee::scaling::load::{LoadOptions, Surge};
use levee::scaling::sim::SimOptions;
use std::io::Write as _;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.command, Command::Up { .. }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEVEE_LOG")
        // aws_config warns about every region and credential source it tries (IMDS is refused off
        // EC2); what matters reaches the user as the error of the command.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default},aws_config=error"))
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Up {
            manifest,
            listen,
            data_dir,
            backend,
            functions,
        } => up(manifest.path, listen, data_dir, backend, functions).await,
        Command::Scale { manifest } => scale(manifest.path).await,
        Command::Provision { manifest } => {
            let m = Manifest::load(&manifest.path)?;
            let settings = levee::backends::aws_settings(&m.aws);
            let sdk = levee::aws::load_sdk_config().await?;
            let report = levee::provision(&sdk, &settings, &m.queue_specs()).await?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Send {
            function,
            message,
            addr,
        } => {
            let body = read_message(&message).map_err(anyhow::Error::msg)?;
            let path = format!("/v1/functions/{}/messages", encode_segment(&function));
            let v = call(&addr.addr, Method::POST, &path, body).await?.json()?;
            println!("{}", v["id"].as_str().unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Command::Invoke {
            function,
            message,
            addr,
        } => {
            let body = read_message(&message).map_err(anyhow::Error::msg)?;
            let path = format!("/v1/functions/{}/invoke", encode_segment(&function));
            let v = call(&addr.addr, Method::POST, &path, body).await?.json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(if v["outcome"] == "ok" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Status { json, addr } => {
            let v = call(&addr.addr, Method::GET, "/v1/status", vec![])
                .await?
                .json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Kv {
            command:
                KvCommand::Get {
                    function,
                    key,
                    addr,
                },
        } => {
            let path = format!(
                "/v1/functions/{}/kv/{}",
                encode_segment(&function),
                encode_segment(&key)
            );
            let a = call(&addr.addr, Method::GET, &path, vec![]).await?;
            if a.status.is_success() {
                println!("{}", String::from_utf8_lossy(&a.body));
                Ok(ExitCode::SUCCESS)
            } else {
                a.json()?;
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Dlq {
            command: DlqCommand::List { function, addr },
        } => {
            let path = format!("/v1/functions/{}/dlq", encode_segment(&function));
            let v = call(&addr.addr, Method::GET, &path, vec![]).await?.json()?;
            let msgs = v["messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                println!("no dead letters for {function}");
            }
            for m in msgs {
                println!(
                    "{}  receives={}  reason: {}",
                    m["id"].as_str().unwrap_or(""),
                    m["receive_count"],
                    m["reason"].as_str().unwrap_or("")
                );
                println!("    body: {}", m["body"].as_str().unwrap_or(""));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim {
            trace,
            policy,
            scenario,
            out,
        } => sim(trace, policy, scenario, out),
        Command::Load {
            rate,
            duration,
            surge_rate,
            surge_at,
            surge_for,
            tail,
            function,
            addr,
        } => {
            let opts = LoadOptions {
                addr: addr.addr,
                function,
                rate,
                duration: Duration::from_secs(duration),
                surge: surge_rate.zip(surge_at).map(|(rate, at)| Surge {
                    rate,
                    at: Duration::from_secs(at),
                    length: Duration::from_secs(surge_for),
                }),
                tail: Duration::from_secs(tail),
            };
            let summary = levee::scaling::load::run(&opts, &mut |line| println!("{line}")).await?;
            Ok(if summary.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Drill(args) => Ok(ExitCode::from(levee::drill::run(args).await?)),
        Command::Dlq {
            command: DlqCommand::Redrive { function, addr },
        } => {
            let path = format!("/v1/functions/{}/dlq/redrive", encode_segment(&function));
            let v = call(&addr.addr, Method::POST, &path, vec![])
                .await?
                .json()?;
            println!("redrove {} message(s) of {function}", v["redriven"]);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn up(
    manifest_path: std::path::PathBuf,
    listen: Option<String>,
    data_dir: Option<std::path::PathBuf>,
    backend: Option<levee::manifest::Backend>,
    functions: Vec<String>,
) -> Result<ExitCode> {
    let manifest = Manifest::load(&manifest_path)?;
    let listen = listen.unwrap_or_else(|| manifest.listen());
    let (listener, addr) = levee::ingress::bind(&listen).await?;
    let opts = StartOptions {
        data_dir,
        backend,
        run_workers: true,
        only: (!functions.is_empty()).then_some(functions),
        ..Default::default()
    };
    let platform: Arc<Platform> = Platform::start(manifest, opts)
        .await
        .context("starting the platform")?;
    println!("levee listening on http://{addr}");
    println!("data directory: {}", platform.data_dir().display());
    for (name, spec) in &platform.manifest().functions {
        if !platform.pools().contains_key(name) {
            println!("  {name:<14} (no workers on this host)");
            continue;
        }
        println!(
            "  {name:<14} workers {:<3} ({}..{}) emits_to [{}]",
            spec.concurrency,
            spec.min_workers(),
            spec.max_workers(),
            spec.emits_to.join(", ")
        );
    }
    match platform.manifest().platform.scaler.policy_name() {
        _ if levee::scaling::ecs_mode(platform.manifest()) => {
            println!("scaler: ECS services, sized by `levee scale` (pools keep their concurrency)")
        }
        Some(p) => println!("scaler: {p}"),
        None => println!("scaler: off (pools keep their concurrency)"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(levee::ingress::serve(listener, platform.clone(), stop_rx));
    wait_for_signal().await;
    let grace = platform.shutdown_grace();
    eprintln!(
        "stopping: finishing in-flight messages (at most {} s; messages not started go back at once)…",
        grace.as_secs_f64()
    );
    let _ = stop_tx.send(true);
    if !platform.shutdown_within(grace).await {
        eprintln!(
            "grace period over: messages still running return to their queues when their leases end"
        );
    }
    let _ = server.await;
    eprintln!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// `levee scale`: the fleet's controller, printing each decision that changes a desired count.
async fn scale(manifest_path: std::path::PathBuf) -> Result<ExitCode> {
    let mut manifest = Manifest::load(&manifest_path)?;
    manifest.platform.backend = levee::manifest::Backend::Aws;
    // Settle what the manifest lacks before touching AWS.
    let (ecs, _) = levee::scaling::fleet_config(&manifest)?;
    let sdk = levee::aws::load_sdk_config().await?;
    let data_dir = manifest.data_dir();
    let backends = levee::backends::open(&manifest, &data_dir, Some(&sdk))
        .await
        .context("opening the AWS backends")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut status = levee::scaling::spawn_fleet(&manifest, backends.queue, &sdk, stop_rx)?;
    println!(
        "levee scale: {} policy, ECS cluster {}, services {}",
        manifest.platform.scaler.policy_name().unwrap_or("-"),
        ecs.cluster,
        ecs.service_pattern
    );
    let mut last = std::collections::BTreeMap::new();
    let mut last_error = None;
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            alive = status.changed() => if !alive { break },
        }
        let st = status.get();
        if let Some((at, e)) = &st.last_error
            && last_error.as_ref() != Some(at)
        {
            eprintln!("levee scale: {e}");
            last_error = Some(*at);
        }
        let Some(d) = &st.decision else { continue };
        for (name, f) in &d.functions {
            let workers = levee::scaling::workers_for(f);
            if last.insert(name.clone(), workers) != Some(workers) {
                println!(
                    "{name:<14} workers {workers:<3} tasks {:<3} {}",
                    ecs.tasks(workers),
                    f.reason
                );
            }
        }
    }
    let _ = stop_tx.send(true);
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The REASON column: the scaler's reason, after a pause or conflicts worth knowing about.
fn reason_line(f: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if f["paused"].as_bool() == Some(true) {
        parts.push("PAUSED: infrastructure failing, probing".to_string());
    }
    let n = |k: &str| f[k].as_u64().unwrap_or(0);
    if n("conflicts") > 0 || n("infra_failures") > 0 {
        parts.push(format!(
            "conflicts {}, infra {}",
            n("conflicts"),
            n("infra_failures")
        ));
    }
    parts.push(f["reason"].as_str().unwrap_or("-").to_string());
    parts.join("; ")
}

fn print_status(v: &serde_json::Value) {
    println!(
        "{:<16} {:>8} {:>9} {:>6} {:>8} {:>8} {:>10} {:>7}  REASON",
        "FUNCTION", "VISIBLE", "IN_FLIGHT", "DLQ", "WORKERS", "DESIRED", "PROCESSED", "FAILED"
    );
    for f in v["functions"].as_array().into_iter().flatten() {
        let desired = f["desired"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |d| d.to_string());
        println!(
            "{:<16} {:>8} {:>9} {:>6} {:>8} {:>8} {:>10} {:>7}  {}",
            f["name"].as_str().unwrap_or(""),
            f["visible"].to_string(),
            f["in_flight"].to_string(),
            f["dlq"].to_string(),
            f["workers"].to_string(),
            desired,
            f["processed"].to_string(),
            f["failed"].to_string(),
            reason_line(f)
        );
    }
    for st in v["stores"].as_array().into_iter().flatten() {
        let n = |k: &str| st[k].to_string();
        println!(
            "\nstore {} ({}): breaker {}, cache hits {} misses {} coalesced {} stale {}, store reads {} writes {}, timeouts {} rejected {}",
            st["name"].as_str().unwrap_or(""),
            st["backend"].as_str().unwrap_or(""),
            st["breaker"].as_str().unwrap_or("?"),
            n("hits"),
            n("misses"),
            n("coalesced_waits"),
            n("stale_serves"),
            n("store_reads"),
            n("store_writes"),
            n("timeouts"),
            n("rejected"),
        );
    }
}

fn sim(
    trace: std::path::PathBuf,
    policy: String,
    scenario: String,
    out: std::path::PathBuf,
) -> Result<ExitCode> {
    let opts = SimOptions {
        trace,
        policy,
        scenario,
        out,
    };
    // Progress in 10% steps per policy on stderr (a line per policy when it is not a terminal);
    // the table goes to stdout.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = (String::new(), -1i64);
    let output = levee::scaling::sim::run(&opts, &mut |policy, done| {
        let step = (done * 10.0).floor() as i64;
        if !tty {
            if last.0 != policy {
                last = (policy.to_string(), step);
                eprintln!("simulating {policy}");
            }
            return;
        }
        if last.0 != policy || last.1 != step {
            last = (policy.to_string(), step);
            eprint!("\rsimulating {policy:<12} {:>3}%", step * 10);
            if step >= 10 {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        }
    })?;
    println!("{}", output.table);
    for f in &output.files {
        println!("wrote {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}
