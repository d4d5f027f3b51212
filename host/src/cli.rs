//! The `levee` command line: `up` runs the platform; the other commands talk to a running
//! platform over its HTTP API.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::manifest::Backend;

/// Default address the client commands talk to (`levee up` listens there by default).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Levee runs WebAssembly capability functions fed by durable queues, on one machine or on AWS.
#[derive(Debug, Parser)]
#[command(name = "levee", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log lines on stderr: text (colour only on a terminal) or json (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "LEVEE_LOG_FORMAT"
    )]
    pub log_format: crate::telemetry::logs::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `--manifest`, shared by the commands that read the manifest.
#[derive(Debug, clap::Args)]
pub struct ManifestArg {
    /// The platform manifest.
    #[arg(
        long = "manifest",
        short = 'm',
        default_value = "levee.toml",
        env = "LEVEE_MANIFEST"
    )]
    pub path: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: every function in the manifest, with its queue, workers and the HTTP API.
    Up {
        #[command(flatten)]
        manifest: ManifestArg,
        /// HTTP listen address (default: the manifest's, else 127.0.0.1:8080); 0.0.0.0:8080 in a
        /// container, with `[ingress] hosts` naming the load balancer's host.
        #[arg(long, env = "LEVEE_LISTEN")]
        listen: Option<String>,
        /// Data directory for the embedded backend and compiled modules (default: the manifest's, else .levee).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Backend: embedded (one SQLite file) or aws (SQS, DynamoDB, S3 from the AWS configuration).
        #[arg(long, value_parser = parse_backend)]
        backend: Option<Backend>,
        /// Run workers for this function only (repeatable); e.g. one ECS service per function.
        #[arg(
            long = "function",
            value_name = "NAME",
            conflicts_with = "ingress_only"
        )]
        functions: Vec<String>,
        /// Serve the HTTP API only, with no workers (the ingress service behind a load balancer).
        #[arg(long)]
        ingress_only: bool,
    },
    /// Run the scaler of a fleet on AWS: size the functions' ECS services
    ///
    /// Every tick it reads each function's SQS queue and ECS service (`[aws.ecs]` in the
    /// manifest) and sets the services' desired counts. Run one of these beside the function
    /// services (`levee up --backend aws --function NAME`).
    Scale {
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Create (idempotently) the AWS resources the manifest needs: every queue with its
    /// dead-letter queue and redrive policy, the kv table and the blob bucket. Uses the standard
    /// AWS configuration (AWS_ENDPOINT_URL, AWS_REGION, profiles).
    Provision {
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Queue a message for a function; prints the message id.
    Send {
        /// The function to send to.
        function: String,
        /// The message: JSON text, or @FILE to read it from a file.
        message: String,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Run a function's handler once, synchronously, and print the outcome (emitted messages are
    /// shown, not sent; kv writes are real).
    Invoke {
        /// The function to run.
        function: String,
        /// The message: JSON text, or @FILE to read it from a file.
        message: String,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Show every function's queue depths, dead letters, workers and totals.
    Status {
        /// Print the JSON of GET /v1/status instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Show the alerts firing and recently resolved, with the state of their deliveries to the
    /// `[alerting]` webhooks.
    Alerts {
        /// Print the JSON of GET /v1/alerts instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Read a function's key-value namespace.
    Kv {
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Inspect or redrive a function's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Replay an arrival trace through a pipeline model with the real scaling policy; prints the
    /// report table and writes report.md and SVG charts.
    Sim {
        /// The arrival trace: CSV `t_seconds,function,rate_per_second` (see scaler/traces/).
        #[arg(long)]
        trace: PathBuf,
        /// coordinated, independent, lambda-like, or all (side by side).
        #[arg(long, default_value = "coordinated")]
        policy: String,
        /// The pipeline model: jan2025 or apr2020.
        #[arg(long, default_value = "jan2025")]
        scenario: String,
        /// Directory for report.md and the charts.
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
    },
    /// Send generated inbound customer messages to a running `levee up` (loopback only) at a steady
    /// rate with an optional surge, printing each second what was sent and the platform's workers.
    Load {
        /// Steady rate in messages per second.
        #[arg(long)]
        rate: f64,
        /// How long to send, in seconds (at most 3600).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
        duration: u64,
        /// Rate during the surge, in messages per second.
        #[arg(long, requires = "surge_at")]
        surge_rate: Option<f64>,
        /// When the surge starts, in seconds from the beginning.
        #[arg(long, requires = "surge_rate", value_parser = clap::value_parser!(u64).range(0..=3600))]
        surge_at: Option<u64>,
        /// How long the surge lasts, in seconds (1 to 3600: a run is at most an hour).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        surge_for: u64,
        /// How many times the surge comes (1 to 100); each surge prints how soon every pool it
        /// affected reached its new size, and the summary gives their distribution.
        #[arg(long, default_value_t = 1, requires = "surge_rate", value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: u32,
        /// Seconds from one surge's start to the next, with --repeat (longer than --surge-for:
        /// leave the pools time to scale back down, e.g. the manifest's scale_down_window_ms).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
        surge_every: u64,
        /// Seconds to keep watching the platform after sending stops (at most 3600).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
        tail: u64,
        /// The function to send to.
        #[arg(long, default_value = "inbound")]
        function: String,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Manage API keys (stored hashed; a key is printed once, when created).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Deploy to AWS: turn the manifest into CloudFormation (`infra/deploy.sh` runs it).
    Infra {
        #[command(subcommand)]
        command: InfraCommand,
    },
    /// List or lift the ingress's automatic blocks of sources.
    Blocks {
        #[command(subcommand)]
        command: BlocksCommand,
    },
    /// Deploy a new version of a function: check, store, precompile, replay, canary
    ///
    /// The module must be a component of the levee:function world (a missing export or an
    /// import Levee cannot satisfy is named). It is stored by content hash, precompiled, and
    /// run with the stable version against the function's replay corpus (functions/NAME/replay/
    /// or `replay` in the manifest) in a dry run; an event the stable version handles and the
    /// candidate fails refuses the deploy. Then it takes the `[functions.NAME.canary]` steps
    /// (default 5%, 25%, 100%, each held 60 s) and is rolled back automatically on a
    /// regression. Every running host picks it up without a restart. Only functions the
    /// manifest declares can be deployed: their limits, grants and emits_to stay there.
    Deploy {
        /// The function (declared in the manifest).
        function: String,
        /// The component (.wasm).
        module: PathBuf,
        /// Make it stable at once, without a canary (the replay gate still runs).
        #[arg(long)]
        no_canary: bool,
        /// Skip the replay gate (an emergency fix whose corpus is known to fail).
        #[arg(long)]
        skip_replay: bool,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// List a function's versions with their state, module hash and when they changed, and
    /// its recent release history (deploys, promotions, rollbacks).
    Versions {
        /// The function.
        function: String,
        /// Print the JSON of GET /v1/functions/NAME/versions instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Go back: end a canary, or make an earlier version stable again.
    ///
    /// Without VERSION: rolls back the canary if one runs, else returns to the version that
    /// was stable before the current one. VERSION is a release number (3 or r3) or a prefix of
    /// a module hash.
    Rollback {
        /// The function.
        function: String,
        /// The release to make stable.
        #[arg(value_name = "VERSION")]
        target: Option<String>,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Rehearse an incident on loopback under load and print a verdict (`levee drill` lists the
    /// drills).
    Drill(crate::drill::DrillArgs),
    /// Scaffold a function project in Rust, Python or JavaScript, outside this repository
    ///
    /// Writes, into its own folder (default ./NAME, which must not exist or be empty): the
    /// contract (wit/), a handler with a unit test, build.sh, and a README.md with the build
    /// command and the `[functions.NAME]` manifest entry to paste (also printed). Rust vendors
    /// the guest SDK (levee-sdk/) and Levee's Cargo.lock; Python builds with componentize-py,
    /// JavaScript with componentize-js, both pinned to the versions Levee is tested with.
    New {
        /// The function's name: lowercase letters, digits and '-', starting with a letter.
        name: String,
        /// The language of the handler.
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
        /// Where to create the project (default: ./NAME).
        #[arg(long, value_name = "PATH")]
        dir: Option<PathBuf>,
    },
    /// Print the contract a function implements (world `capability` and its WIT dependencies)
    ///
    /// Prints every file under a `// ==> wit/PATH <==` line; with --out, writes them instead as
    /// a wit directory (DIR/levee.wit, DIR/deps/...) for wit-bindgen, componentize-py or
    /// componentize-js.
    Wit {
        /// Write the files into this directory (e.g. `--out wit`) instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print the value under KEY in FUNCTION's namespace.
    Get {
        function: String,
        key: String,
        #[command(flatten)]
        addr: AddrArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead letters of FUNCTION with the reason each one failed, a page at a time
    /// (size and a 256-byte preview of each body).
    List {
        function: String,
        /// Dead letters per page (1 to 100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Continue after this cursor (printed at the end of a page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Print the whole body of one dead letter.
    Show {
        function: String,
        id: String,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Move FUNCTION's dead letters back to its queue.
    Redrive {
        function: String,
        #[command(flatten)]
        addr: AddrArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for an ingress group (`admin` for every route); prints the key once.
    Create {
        /// The ingress group the key sends to, or `admin`.
        #[arg(long)]
        group: String,
        /// A name to recognise it by in `levee keys list`.
        #[arg(long, default_value = "")]
        name: String,
        /// Write the key straight into the manifest's store instead of asking a running platform
        /// (the first admin key of a deployment; uses --manifest and --backend).
        #[arg(long)]
        direct: bool,
        #[command(flatten)]
        manifest: ManifestArg,
        /// Backend for --direct (default: the manifest's).
        #[arg(long, value_parser = parse_backend)]
        backend: Option<Backend>,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Revoke a key by its id (the 12 hex digits after `lvk_`).
    Revoke {
        id: String,
        #[command(flatten)]
        addr: AddrArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlocksCommand {
    /// Sources blocked now, with their rate, baseline and time left.
    List {
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Lift the block of SOURCE (as `levee blocks list` prints it).
    Remove {
        source: String,
        #[command(flatten)]
        addr: AddrArg,
    },
}

/// Where the running platform listens, and the key to call it with.
#[derive(Debug, clap::Args)]
pub struct AddrArg {
    /// Address of the running `levee up`.
    #[arg(long, default_value = DEFAULT_ADDR, env = "LEVEE_ADDR")]
    pub addr: String,
    /// API key (default: the file of --key-file).
    #[arg(
        long = "key",
        env = "LEVEE_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// File holding the API key; `levee up` on loopback writes its admin key to
    /// .levee/admin.key (its data directory).
    #[arg(long, env = "LEVEE_KEY_FILE", default_value = ".levee/admin.key")]
    pub key_file: PathBuf,
}

impl AddrArg {
    /// The key to send: --key / LEVEE_KEY, else the key file's first line if it exists.
    pub fn key(&self) -> Option<String> {
        self.api_key.clone().filter(|k| !k.is_empty()).or_else(|| {
            std::fs::read_to_string(&self.key_file)
                .ok()
                .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
                .filter(|k| !k.is_empty())
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum InfraCommand {
    /// Render the manifest as one CloudFormation template: per function its queue and DLQ, task
    /// role and Fargate service; the kv table, bucket, ECR repository, cluster, the scaler and
    /// the ingress behind a load balancer, log groups and alarms
    ///
    /// With --out, writes levee.template.json, operator-policy.json (what the deploying
    /// operator needs) and names.json (the physical names, for deploy.sh's collision check),
    /// and prints the resource counts; without, prints the template.
    Render {
        #[command(flatten)]
        manifest: ManifestArg,
        /// Directory for the rendered files.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stack name: prefixes roles, log groups and services, and names the repository.
        #[arg(long, default_value = "levee", env = "LEVEE_STACK")]
        stack: String,
    },
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse().map_err(|e: crate::Error| e.to_string())
}

/// Reads a message argument: `@FILE` or inline JSON, which must parse.
pub fn read_message(arg: &str) -> Result<Vec<u8>, String> {
    let (text, from) = match arg.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read message file {path}: {e}"))?,
            format!("file {path}"),
        ),
        None => (arg.to_string(), "the message argument".to_string()),
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| format!("{from} is not valid JSON ({e}); pass JSON text or @FILE"))?;
    Ok(text.into_bytes())
}
