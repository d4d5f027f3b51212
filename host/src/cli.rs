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
        /// HTTP listen address (default: the manifest's, else 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        /// Data directory for the embedded backend and compiled modules (default: the manifest's, else .levee).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Backend: embedded (one SQLite file) or aws (SQS, DynamoDB, S3 from the AWS configuration).
        #[arg(long, value_parser = parse_backend)]
        backend: Option<Backend>,
        /// Run workers for this function only (repeatable); e.g. one ECS service per function.
        #[arg(long = "function", value_name = "NAME")]
        functions: Vec<String>,
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
        /// How long to send, in seconds.
        #[arg(long)]
        duration: u64,
        /// Rate during the surge, in messages per second.
        #[arg(long, requires = "surge_at")]
        surge_rate: Option<f64>,
        /// When the surge starts, in seconds from the beginning.
        #[arg(long, requires = "surge_rate")]
        surge_at: Option<u64>,
        /// How long the surge lasts, in seconds.
        #[arg(long, default_value_t = 30)]
        surge_for: u64,
        /// Seconds to keep watching the platform after sending stops.
        #[arg(long, default_value_t = 10)]
        tail: u64,
        /// The function to send to.
        #[arg(long, default_value = "inbound")]
        function: String,
        #[command(flatten)]
        addr: AddrArg,
    },
    /// Rehearse an incident on loopback under load and print a verdict (`levee drill` lists the
    /// drills).
    Drill(crate::drill::DrillArgs),
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
    /// List the dead letters of FUNCTION with the reason each one failed.
    List {
        function: String,
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

/// Where the running platform listens.
#[derive(Debug, clap::Args)]
pub struct AddrArg {
    /// Address of the running `levee up`.
    #[arg(long, default_value = DEFAULT_ADDR, env = "LEVEE_ADDR")]
    pub addr: String,
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
