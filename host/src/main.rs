//! The `levee` binary: parses the command line and runs it.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use hyper::Method;
use levee::cli::{
    BlocksCommand, Cli, Command, DlqCommand, InfraCommand, KeysCommand, KvCommand, read_message,
};
use levee::client::{call, encode_segment};
use levee::manifest::Manifest;
use levee::platform::{Platform, StartOptions};
use levee::scaling::load::{LoadOptions, Surge};
use levee::scaling::sim::SimOptions;
use std::io::Write as _;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: levee::Allocator = levee::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    levee::telemetry::logs::init(
        cli.log_format,
        matches!(cli.command, Command::Up { .. } | Command::Scale { .. }),
    );
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

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Up {
            manifest,
            listen,
            data_dir,
            backend,
            functions,
            ingress_only,
        } => {
            up(
                manifest.path,
                listen,
                data_dir,
                backend,
                functions,
                ingress_only,
            )
            .await
        }
        Command::Scale { manifest } => {
            let m = Manifest::load(&manifest.path)?;
            let sdk = levee::aws::load_sdk_config().await?;
            levee::scaling::fleet::run(m, sdk, wait_for_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Infra {
            command:
                InfraCommand::Render {
                    manifest,
                    out,
                    stack,
                },
        } => infra_render(manifest.path, out, stack),
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
            let v = call(&addr.addr, addr.key().as_deref(), Method::POST, &path, body)
                .await?
                .json()?;
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
            let v = call(&addr.addr, addr.key().as_deref(), Method::POST, &path, body)
                .await?
                .json()?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(if v["outcome"] == "ok" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Status { json, addr } => {
            let v = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::GET,
                "/v1/status",
                vec![],
            )
            .await?
            .json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Alerts { json, addr } => {
            let v = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::GET,
                "/v1/alerts",
                vec![],
            )
            .await?
            .json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", levee::alerts::render_table(&v));
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
            let a = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::GET,
                &path,
                vec![],
            )
            .await?;
            if a.status.is_success() {
                println!("{}", String::from_utf8_lossy(&a.body));
                Ok(ExitCode::SUCCESS)
            } else {
                a.json()?;
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Dlq {
            command:
                DlqCommand::List {
                    function,
                    limit,
                    after,
                    addr,
                },
        } => dlq_list(&function, limit, after, &addr).await,
        Command::Dlq {
            command: DlqCommand::Show { function, id, addr },
        } => {
            let path = format!(
                "/v1/functions/{}/dlq/{}/body",
                encode_segment(&function),
                encode_segment(&id)
            );
            let a = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::GET,
                &path,
                vec![],
            )
            .await?;
            if !a.status.is_success() {
                a.json()?;
            }
            std::io::stdout().write_all(&a.body)?;
            println!();
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command } => keys(command).await,
        Command::Blocks { command } => blocks(command).await,
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
            repeat,
            surge_every,
            tail,
            function,
            addr,
        } => {
            let opts = LoadOptions {
                key: addr.key(),
                addr: addr.addr,
                function,
                rate,
                duration: Duration::from_secs(duration),
                surge: surge_rate.zip(surge_at).map(|(rate, at)| Surge {
                    rate,
                    at: Duration::from_secs(at),
                    length: Duration::from_secs(surge_for),
                    repeat,
                    every: Duration::from_secs(surge_every),
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
        Command::Deploy {
            function,
            module,
            no_canary,
            skip_replay,
            addr,
        } => deploy(&function, &module, no_canary, skip_replay, &addr).await,
        Command::Versions {
            function,
            json,
            addr,
        } => {
            let path = format!("/v1/functions/{}/versions", encode_segment(&function));
            let v = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::GET,
                &path,
                vec![],
            )
            .await?
            .json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_versions(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback {
            function,
            target,
            addr,
        } => {
            let path = format!("/v1/functions/{}/rollback", encode_segment(&function));
            let body = serde_json::to_vec(&serde_json::json!({ "to": target }))?;
            let v = call(&addr.addr, addr.key().as_deref(), Method::POST, &path, body)
                .await?
                .json()?;
            let stable = v["stable"].as_u64().unwrap_or(0);
            let hash = v["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["release"].as_u64() == Some(stable))
                .and_then(|x| x["version"].as_str())
                .unwrap_or("?");
            println!(
                "{function}: release {stable} ({hash}) is stable; every host switches within a second"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq {
            command: DlqCommand::Redrive { function, addr },
        } => {
            let path = format!("/v1/functions/{}/dlq/redrive", encode_segment(&function));
            let v = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::POST,
                &path,
                vec![],
            )
            .await?
            .json()?;
            println!("redrove {} message(s) of {function}", v["redriven"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(&name));
            let project = levee::scaffold::create(&name, lang, &dir)?;
            print!("{}", project.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Wit { out: None } => {
            print!("{}", levee::scaffold::wit_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::Wit { out: Some(dir) } => {
            for file in levee::scaffold::write_wit(&dir)? {
                println!("wrote {}", file.display());
            }
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
    ingress_only: bool,
) -> Result<ExitCode> {
    let manifest = Manifest::load(&manifest_path)?;
    let listen = listen.unwrap_or_else(|| manifest.listen());
    let (listener, addr) = levee::ingress::bind(&listen).await?;
    let opts = StartOptions {
        data_dir,
        backend,
        run_workers: !ingress_only,
        only: (!functions.is_empty()).then_some(functions),
        ..Default::default()
    };
    let platform: Arc<Platform> = Platform::start(manifest, opts)
        .await
        .context("starting the platform")?;
    println!("levee listening on http://{addr}");
    println!("data directory: {}", platform.data_dir().display());
    bootstrap_admin_key(&platform, addr).await?;
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

/// On loopback, makes sure `DATA_DIR/admin.key` holds a valid admin key (creating one on the
/// first run), so the CLI on this machine works at once; elsewhere, says how to make one.
async fn bootstrap_admin_key(platform: &Arc<Platform>, addr: std::net::SocketAddr) -> Result<()> {
    let path = platform.data_dir().join("admin.key");
    if !addr.ip().is_loopback() {
        println!(
            "API keys: create the first admin key with `levee keys create --group admin --direct`"
        );
        return Ok(());
    }
    let keys = levee::ingress::keys::Keys::new(platform.raw_store().clone());
    if let Ok(text) = std::fs::read_to_string(&path)
        && keys.is_admin_key(text.trim()).await
    {
        println!(
            "admin key: {} (the CLI reads it from there)",
            path.display()
        );
        return Ok(());
    }
    let (key, record) = keys
        .create(
            levee::ingress::settings::ADMIN_GROUP,
            "bootstrap (levee up on loopback)",
        )
        .await
        .context("creating the first admin key")?;
    write_secret(&path, &key)?;
    println!(
        "admin key {} created: {} (the CLI reads it from there)",
        record.id,
        path.display()
    );
    Ok(())
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &std::path::Path, secret: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

async fn dlq_list(
    function: &str,
    limit: u32,
    after: Option<String>,
    addr: &levee::cli::AddrArg,
) -> Result<ExitCode> {
    let mut path = format!(
        "/v1/functions/{}/dlq?limit={limit}",
        encode_segment(function)
    );
    if let Some(a) = &after {
        path.push_str(&format!("&after={}", encode_segment(a)));
    }
    let v = call(
        &addr.addr,
        addr.key().as_deref(),
        Method::GET,
        &path,
        vec![],
    )
    .await?
    .json()?;
    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
    if msgs.is_empty() && after.is_none() {
        println!("no dead letters for {function}");
    }
    for m in msgs {
        println!(
            "{}  receives={}  size={}  reason: {}",
            m["id"].as_str().unwrap_or(""),
            m["receive_count"],
            m["size"],
            m["reason"].as_str().unwrap_or("")
        );
        for h in m["history"].as_array().into_iter().flatten() {
            println!(
                "    earlier: receives={} reason: {}",
                h["receive_count"],
                h["reason"].as_str().unwrap_or("")
            );
        }
        println!("    preview: {}", m["preview"].as_str().unwrap_or(""));
    }
    if let Some(next) = v["next"].as_str() {
        println!("more: levee dlq list {function} --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create {
            group,
            name,
            direct: true,
            manifest,
            backend,
            ..
        } => {
            let mut m = Manifest::load(&manifest.path)?;
            if let Some(b) = backend {
                m.platform.backend = b;
            }
            let sdk = match m.platform.backend {
                levee::manifest::Backend::Aws => Some(levee::aws::load_sdk_config().await?),
                levee::manifest::Backend::Embedded => None,
            };
            let data_dir = m.data_dir();
            std::fs::create_dir_all(&data_dir)?;
            let backends = levee::backends::open(&m, &data_dir, sdk.as_ref())
                .await
                .context("opening the manifest's store")?;
            let keys = levee::ingress::keys::Keys::new(backends.store);
            let known = m.ingress.all_groups();
            if group != levee::ingress::settings::ADMIN_GROUP && !known.contains_key(&group) {
                let names: Vec<&str> = known.keys().map(String::as_str).collect();
                anyhow::bail!(
                    "no ingress group `{group}`; groups: admin, {}",
                    names.join(", ")
                );
            }
            let (key, record) = keys.create(&group, &name).await?;
            eprintln!(
                "key {} for group {} (shown once; store it now)",
                record.id, record.group
            );
            println!("{key}");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Create {
            group, name, addr, ..
        } => {
            let body = serde_json::to_vec(&serde_json::json!({"group": group, "name": name}))?;
            let v = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::POST,
                "/v1/keys",
                body,
            )
            .await?
            .json()?;
            eprintln!(
                "key {} for group {} (shown once; store it now)",
                v["id"].as_str().unwrap_or(""),
                v["group"].as_str().unwrap_or("")
            );
            println!("{}", v["key"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::List { addr } => {
            let v = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::GET,
                "/v1/keys",
                vec![],
            )
            .await?
            .json()?;
            println!(
                "{:<14} {:<12} {:<9} {:<14} NAME",
                "ID", "GROUP", "STATE", "CREATED"
            );
            for k in v["keys"].as_array().into_iter().flatten() {
                let state = if k["revoked_ms"].is_null() {
                    "active"
                } else {
                    "revoked"
                };
                println!(
                    "{:<14} {:<12} {:<9} {:<14} {}",
                    k["id"].as_str().unwrap_or(""),
                    k["group"].as_str().unwrap_or(""),
                    state,
                    k["created_ms"],
                    k["name"].as_str().unwrap_or("")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { id, addr } => {
            let path = format!("/v1/keys/{}", encode_segment(&id));
            call(
                &addr.addr,
                addr.key().as_deref(),
                Method::DELETE,
                &path,
                vec![],
            )
            .await?
            .json()?;
            println!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn blocks(command: BlocksCommand) -> Result<ExitCode> {
    match command {
        BlocksCommand::List { addr } => {
            let v = call(
                &addr.addr,
                addr.key().as_deref(),
                Method::GET,
                "/v1/blocks",
                vec![],
            )
            .await?
            .json()?;
            let list = v["blocks"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!(
                    "no blocked sources ({} blocked since start)",
                    v["blocked_total"]
                );
            }
            for b in list {
                println!(
                    "{}  {:.0} req/s against a baseline of {:.1}/s, {} s left",
                    b["source"].as_str().unwrap_or(""),
                    b["rate"].as_f64().unwrap_or(0.0),
                    b["baseline"].as_f64().unwrap_or(0.0),
                    b["remaining_s"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BlocksCommand::Remove { source, addr } => {
            let path = format!("/v1/blocks/{}", encode_segment(&source));
            call(
                &addr.addr,
                addr.key().as_deref(),
                Method::DELETE,
                &path,
                vec![],
            )
            .await?
            .json()?;
            println!("lifted the block of {source}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `levee scale`: the fleet's controller, printing each decision that changes a desired count.
fn infra_render(
    manifest_path: std::path::PathBuf,
    out: Option<std::path::PathBuf>,
    stack: String,
) -> Result<ExitCode> {
    let manifest = Manifest::load(&manifest_path)?;
    let rendered = levee::infra::render(&manifest, &levee::infra::RenderOptions { stack })?;
    let Some(dir) = out else {
        println!("{}", serde_json::to_string_pretty(&rendered.template)?);
        return Ok(ExitCode::SUCCESS);
    };
    for path in rendered.write_to(&dir)? {
        println!("wrote {}", path.display());
    }
    let counts = rendered.resource_counts();
    let total: usize = counts.values().sum();
    println!(
        "stack {}: {total} resources for {} functions",
        rendered.names.stack,
        manifest.functions.len()
    );
    for (kind, n) in counts {
        println!("  {n:>3}  {kind}");
    }
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
/// `levee deploy`: uploads the module and prints what the platform did with it.
async fn deploy(
    function: &str,
    module: &std::path::Path,
    no_canary: bool,
    skip_replay: bool,
    addr: &levee::cli::AddrArg,
) -> Result<ExitCode> {
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    eprintln!(
        "uploading {} ({:.1} MiB) to {}; checking, compiling and replaying it there...",
        module.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        addr.addr
    );
    let path = format!(
        "/v1/functions/{}/versions?canary={}&replay={}",
        encode_segment(function),
        !no_canary,
        !skip_replay
    );
    let started = std::time::Instant::now();
    let a = levee::client::call_typed(
        &addr.addr,
        addr.key().as_deref(),
        None,
        Method::POST,
        &path,
        "application/wasm",
        bytes,
    )
    .await?;
    let refused = a.status.as_u16() == 422;
    let v: serde_json::Value = if refused {
        serde_json::from_slice(&a.body).unwrap_or_default()
    } else {
        a.json()?
    };
    let replay = &v["replay"];
    if replay["events"].as_u64().unwrap_or(0) > 0 {
        println!(
            "replay: {} events from {}: {} passed, {} failed on both versions, {} regressions ({} ms)",
            replay["events"],
            replay["corpus"].as_str().unwrap_or("?"),
            replay["passed"],
            replay["both_failed"],
            replay["regressions"].as_array().map_or(0, Vec::len),
            replay["elapsed_ms"]
        );
    } else if !refused || v.get("replay").is_some() {
        println!(
            "replay: no recorded events for {function} (add them to functions/{function}/replay/)"
        );
    }
    for r in replay["both_failed_events"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!(
            "  failed on both versions {}: {}",
            r["event"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("?")
        );
    }
    for r in replay["regressions"].as_array().into_iter().flatten() {
        println!(
            "  REGRESSION {}: {}",
            r["event"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("?")
        );
    }
    if refused {
        let reason = v["error"].as_str().unwrap_or("the module was refused");
        eprintln!("error: {reason} (HTTP 422)");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "{function}: release {} (module {}, {} bytes, compiled in {} ms) is {} at {}% of messages ({:.1} s)",
        v["release"],
        v["version"].as_str().unwrap_or("?"),
        v["bytes"],
        v["compile_ms"],
        v["state"].as_str().unwrap_or("?"),
        v["share_pct"],
        started.elapsed().as_secs_f64()
    );
    if v["state"] == "canary" {
        println!(
            "watch it with `levee versions {function}`; roll it back with `levee rollback {function}`"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_versions(v: &serde_json::Value) {
    let when = |ms: &serde_json::Value| {
        ms.as_u64().map_or_else(
            || "-".to_string(),
            |ms| httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_millis(ms)),
        )
    };
    println!(
        "{:<8} {:<13} {:<12} {:>10} {:<9} {:<30} REASON",
        "RELEASE", "VERSION", "STATE", "BYTES", "SOURCE", "CHANGED"
    );
    for x in v["versions"].as_array().into_iter().flatten().rev() {
        let mut state = x["state"].as_str().unwrap_or("?").to_string();
        if state == "canary"
            && let Some(share) = v["canary"]["share_pct"].as_f64()
        {
            state = format!("canary {share}%");
        }
        println!(
            "{:<8} {:<13} {:<12} {:>10} {:<9} {:<30} {}",
            format!("r{}", x["release"]),
            x["version"].as_str().unwrap_or("?"),
            state,
            x["bytes"],
            x["source"].as_str().unwrap_or("?"),
            when(&x["changed_ms"]),
            x["reason"].as_str().unwrap_or("")
        );
    }
    if let Some(w) = v["window"].as_object() {
        println!(
            "\ncanary window on this host: stable {} ok / {} failed (p95 {} ms), canary {} ok / {} failed (p95 {} ms)",
            w["stable_ok"],
            w["stable_failed"],
            w["stable_p95_ms"],
            w["canary_ok"],
            w["canary_failed"],
            w["canary_p95_ms"]
        );
    }
    if let (Some(r), Some(ms)) = (v["activated"].as_u64(), v["first_served_ms"].as_f64()) {
        println!(
            "release {r} served its first message on this host {ms:.1} ms after its activation"
        );
    }
    println!("\nhistory:");
    for e in v["events"].as_array().into_iter().flatten().rev().take(10) {
        let r = e["release"].as_u64().unwrap_or(0);
        println!(
            "  {}  {}  {}",
            when(&e["at_ms"]),
            if r == 0 {
                "-".to_string()
            } else {
                format!("r{r}")
            },
            e["what"].as_str().unwrap_or("")
        );
    }
}

fn reason_line(f: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(c) = f["canary"].as_object() {
        parts.push(format!(
            "r{} stable, r{} canary {}%",
            f["release"], c["release"], c["share_pct"]
        ));
    } else if let Some(e) = f["last_release_event"].as_str()
        && !e.starts_with("recorded the manifest's module")
    {
        parts.push(format!("r{}: {e}", f["release"]));
    }
    if f["paused"].as_bool() == Some(true) {
        parts.push("PAUSED: infrastructure failing, probing".to_string());
    }
    for d in f["destinations"].as_array().into_iter().flatten() {
        let breaker = d["breaker"].as_str().unwrap_or("?");
        if let Some(ms) = d["throttled_ms"].as_u64() {
            parts.push(format!(
                "{} throttled for {ms} ms",
                d["origin"].as_str().unwrap_or("?")
            ));
        } else if breaker != "closed" {
            parts.push(format!(
                "{} breaker {breaker}",
                d["origin"].as_str().unwrap_or("?")
            ));
        }
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
    let ing = &v["ingress"];
    if ing.is_object() {
        println!(
            "\ningress: connections {}/{} (shed {}), body bytes in flight {}, blocked now {} (since start {}){}",
            ing["connections"],
            ing["max_connections"],
            ing["shed_connections"],
            ing["body_bytes_in_flight"],
            ing["blocks"].as_array().map_or(0, Vec::len),
            ing["blocked_total"],
            if ing["protections"] == false {
                ", PROTECTIONS OFF"
            } else {
                ""
            }
        );
        println!(
            "{:<12} {:>6} {:>7} {:>9} {:>8} {:>7} {:>7}",
            "GROUP", "IN_USE", "WAITING", "REQUESTS", "LIMITED", "SHED", "BLOCKED"
        );
        for g in ing["groups"].as_array().into_iter().flatten() {
            println!(
                "{:<12} {:>6} {:>7} {:>9} {:>8} {:>7} {:>7}",
                g["name"].as_str().unwrap_or(""),
                g["in_use"].to_string(),
                g["waiting"].to_string(),
                g["requests"].to_string(),
                g["limited"].to_string(),
                g["shed"].to_string(),
                g["blocked"].to_string()
            );
        }
        for b in ing["blocks"].as_array().into_iter().flatten() {
            println!(
                "blocked: {} ({:.0} req/s, baseline {:.1}/s, {} s left)",
                b["source"].as_str().unwrap_or(""),
                b["rate"].as_f64().unwrap_or(0.0),
                b["baseline"].as_f64().unwrap_or(0.0),
                b["remaining_s"]
            );
        }
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
