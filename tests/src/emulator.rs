//! An AWS emulator (moto or LocalStack) for tests of the SQS, DynamoDB and S3 backends.
//!
//! [`emulator`] finds one: `LEVEE_TEST_AWS_ENDPOINT` (or `AWS_ENDPOINT_URL`) if it answers,
//! otherwise it runs `localstack/start.sh --no-provision`, which starts LocalStack with Docker or
//! the offline moto server (installed into `<repo>/.venv-moto` on first use) on port 4566 and leaves
//! it running for later runs (`localstack/stop.sh` stops it). Without an emulator the test is
//! skipped with a loud message, except in CI (`CI=true`), where that is a failure.
//!
//! Tests share one emulator: each builds its backends with [`Emulator::settings`], which gives
//! resource names unique to the test.

use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use levee::AwsSettings;

/// A reachable emulator endpoint.
#[derive(Debug, Clone)]
pub struct Emulator {
    pub endpoint: String,
}

static ENDPOINT: OnceLock<Option<String>> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The emulator for this test binary, started if needed; `None` (after a loud SKIPPED message)
/// when none can be had outside CI. Panics in CI when no emulator is available.
pub fn emulator() -> Option<Emulator> {
    ENDPOINT
        .get_or_init(find_or_start)
        .clone()
        .map(|endpoint| Emulator { endpoint })
}

/// Runs a test body with the emulator, or returns (skipping) when there is none.
#[macro_export]
macro_rules! with_emulator {
    () => {
        match $crate::emulator::emulator() {
            Some(e) => e,
            None => return,
        }
    };
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn find_or_start() -> Option<String> {
    for var in ["LEVEE_TEST_AWS_ENDPOINT", "AWS_ENDPOINT_URL"] {
        if let Ok(url) = std::env::var(var)
            && !url.is_empty()
        {
            if answers(&url) {
                return Some(url);
            }
            eprintln!(
                "emulator: {var}={url} does not answer; starting one with localstack/start.sh"
            );
        }
    }
    let failure = match start() {
        Ok(url) if answers(&url) => return Some(url),
        Ok(url) => format!("localstack/start.sh reported {url}, but nothing answers there"),
        Err(e) => e,
    };
    if in_ci() {
        panic!(
            "CI=true and no AWS emulator is available: {failure}. The emulator suite must run in CI: \
             make localstack/start.sh work (Docker, or Python 3 with access to PyPI for moto)."
        );
    }
    // Straight to the stderr handle: `eprintln!` would be captured by the test harness and the
    // skip would go unnoticed.
    let _ = writeln!(
        std::io::stderr(),
        "\n==================================================================\n\
         SKIPPED: emulator not available ({failure}).\n\
         Start one with localstack/start.sh, or set LEVEE_TEST_AWS_ENDPOINT.\n\
         =================================================================="
    );
    None
}

fn start() -> Result<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../localstack/start.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--no-provision")
        .output()
        .map_err(|e| format!("cannot run `bash {}`: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            stderr.trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("export AWS_ENDPOINT_URL="))
        .map(|u| u.trim().to_string())
        .ok_or_else(|| format!("{} printed no AWS_ENDPOINT_URL: {stdout}", script.display()))
}

/// Whether something accepts TCP connections at the URL's host and port.
pub fn answers(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let default_port = if url.starts_with("https://") { 443 } else { 80 };
    let target = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let Ok(addrs) = target.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

impl Emulator {
    /// SDK configuration for the emulator: its endpoint, `us-east-1`, test credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new("us-east-1"))
            .test_credentials()
            .load()
            .await
    }

    /// Settings whose queue prefix, table and bucket are unique to this call, so tests sharing the
    /// emulator never see each other's resources.
    pub fn settings(&self, tag: &str) -> AwsSettings {
        let id = unique(tag);
        AwsSettings {
            queue_prefix: format!("{id}-"),
            table: format!("{id}-kv"),
            bucket: format!("{id}-blobs"),
            ..AwsSettings::default()
        }
    }
}

/// A name unique to this run and call, lowercase (valid for SQS, DynamoDB and S3): the emulator
/// outlives test runs, so the run part mixes the clock with the process id.
pub fn unique(tag: &str) -> String {
    static RUN: OnceLock<u32> = OnceLock::new();
    let run = *RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        ((nanos ^ (u64::from(std::process::id()) << 32)) % 0xffff_ffff) as u32
    });
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("t{run:08x}-{}-{tag}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Provisions the queues, table and bucket of `fns` on the emulator under names unique to `tag`
/// (checking that all of them were created, none found), and starts a platform on the AWS
/// backends with its workers running. `None` when there is no emulator (outside CI).
pub async fn aws_platform(
    dir: &std::path::Path,
    tag: &str,
    fns: &[crate::Fn],
) -> Option<std::sync::Arc<levee::platform::Platform>> {
    Some(aws_platforms(dir, tag, fns, 1).await?.remove(0))
}

/// Like [`aws_platform`], with `hosts` platforms over the same queues, table and bucket (each
/// with its own data directory), as several hosts of one fleet.
pub async fn aws_platforms(
    dir: &std::path::Path,
    tag: &str,
    fns: &[crate::Fn],
    hosts: usize,
) -> Option<Vec<std::sync::Arc<levee::platform::Platform>>> {
    Some(aws_fleet(dir, tag, fns, hosts).await?.0)
}

/// Like [`aws_platforms`], also returning the SDK configuration and the resource names, so a
/// test can look at the backends directly.
pub async fn aws_fleet(
    dir: &std::path::Path,
    tag: &str,
    fns: &[crate::Fn],
    hosts: usize,
) -> Option<(
    Vec<std::sync::Arc<levee::platform::Platform>>,
    SdkConfig,
    AwsSettings,
)> {
    let emu = emulator()?;
    let sdk = emu.sdk_config().await;
    let s = emu.settings(tag);
    let extra = format!(
        "backend = \"aws\"\n\n[aws]\nqueue_prefix = \"{}\"\ntable = \"{}\"\nbucket = \"{}\"",
        s.queue_prefix, s.table, s.bucket
    );
    let specs: Vec<_> = fns
        .iter()
        .map(|f| levee::QueueSpec {
            name: f.name.clone(),
            max_receive: 5,
        })
        .collect();
    let report = levee::provision(&sdk, &s, &specs).await.expect("provision");
    assert_eq!(
        report.created(),
        2 * fns.len() + 2,
        "a queue and a DLQ per function, a table and a bucket: {report}"
    );
    let manifest = crate::write_manifest_with(dir, &extra, fns);
    let mut platforms = Vec::with_capacity(hosts);
    for i in 0..hosts {
        let opts = levee::platform::StartOptions {
            aws_sdk: Some(sdk.clone()),
            data_dir: Some(dir.join(format!("host-{i}"))),
            ..Default::default()
        };
        platforms.push(crate::start_with(&manifest, opts).await);
    }
    Some((platforms, sdk, s))
}
