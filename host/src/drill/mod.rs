//! `levee drill`: rehearsals of the seed incidents (`../shared/seeds/`). A drill starts what it
//! needs in this process on loopback ([`Loopback`]: the manifest's pipeline on the embedded
//! backend in a fresh data directory, its HTTP API on `127.0.0.1:0`), replays one incident under
//! steady load, prints progress on stderr, and ends with a verdict and its figures ([`Outcome`]),
//! also as one JSON line with `--json`. Exit code 0 on pass, 1 on fail.
//!
//! Adding a drill: a module with a `clap::Args` struct that implements [`Drill`] (see
//! [`store_outage`]), and one line in the [`drills!`] registry below.

pub mod bad_release;
pub mod blind;
pub mod flood;
pub mod provider;
pub mod provider_limit;
pub mod store_outage;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cli::ManifestArg;
use crate::manifest::{Backend, Manifest};
use crate::platform::{Platform, StartOptions, Status};
use crate::scaling::load::{MAX_DURATION, MAX_RATE};
use crate::{Error, Result};

/// Declares the drills: each line is `"name" => Variant(args type)`, with the type's doc comment
/// as its one-line summary in `levee drill --list` and its `--help`.
macro_rules! drills {
    ($($name:literal => $variant:ident($args:ty)),* $(,)?) => {
        /// One drill and its flags.
        #[derive(Debug, clap::Subcommand)]
        pub enum DrillCommand {
            $(
                #[command(name = $name)]
                $variant($args),
            )*
            // Any other name: reported with the list of drills rather than clap's bare error.
            #[command(external_subcommand)]
            Unknown(Vec<String>),
        }

        impl DrillCommand {
            fn drill(&self) -> Option<&dyn Drill> {
                match self {
                    $(DrillCommand::$variant(d) => Some(d),)*
                    DrillCommand::Unknown(_) => None,
                }
            }
        }

        /// The names of the drills, in registry order.
        pub const DRILLS: &[&str] = &[$($name),*];
    };
}

drills! {
    "store-outage" => StoreOutage(store_outage::StoreOutage),
    "flood" => Flood(flood::Flood),
    "blind" => Blind(blind::Blind),
    "provider-limit" => ProviderLimit(provider_limit::ProviderLimit),
    "bad-release" => BadRelease(bad_release::BadRelease),
}

/// `levee drill [--list] [NAME [FLAGS]]`.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Run `levee drill` or `levee drill --list` for the drills, \
                  `levee drill NAME --help` for the flags of one."
)]
pub struct DrillArgs {
    /// List the drills, one line each (the same as `levee drill` without a name).
    #[arg(long)]
    pub list: bool,
    #[command(subcommand)]
    pub drill: Option<DrillCommand>,
}

/// What every drill is: its flags shared with the others, and the run itself.
#[async_trait]
pub trait Drill: Send + Sync {
    /// The flags every drill has.
    fn common(&self) -> &Common;
    /// Runs the drill to its end; `progress` takes the lines shown while it runs.
    async fn run(&self, progress: &mut Progress) -> Result<Outcome>;
}

/// Flags every drill has.
#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub manifest: ManifestArg,
    /// Steady load during the whole drill, in valid inbound messages per second (sent over HTTP;
    /// a message counts as accepted once the API answered 202).
    #[arg(long, default_value_t = 200.0, value_name = "MSG_PER_S")]
    pub rate: f64,
    /// Healthy running before the incident starts.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub warmup: Duration,
    /// Longest wait, once the load stops, for every queue to empty and nothing to be in flight;
    /// the drill fails if the backlog is still there.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
    /// Keep the drill's data directory (a fresh one under the temp directory) and print where it
    /// is, instead of removing it at the end.
    #[arg(long)]
    pub keep_data: bool,
    /// Print the figures and the verdict as one JSON line on stdout (the readable report then
    /// goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl Common {
    /// Checks the shared flags; errors name the flag.
    pub fn validate(&self) -> Result<()> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE) {
            return Err(Error::Invalid(format!(
                "--rate must be above 0 and at most {MAX_RATE} msg/s, got {}",
                self.rate
            )));
        }
        for (flag, d) in [
            ("--warmup", self.warmup),
            ("--drain-timeout", self.drain_timeout),
        ] {
            if d > MAX_DURATION {
                return Err(Error::Invalid(format!(
                    "{flag} must be at most {}, got {}",
                    secs(MAX_DURATION),
                    secs(d)
                )));
            }
        }
        if self.drain_timeout.is_zero() {
            return Err(Error::Invalid("--drain-timeout must be above 0".into()));
        }
        Ok(())
    }

    /// The manifest of `--manifest`.
    pub fn load_manifest(&self) -> Result<Manifest> {
        Manifest::load(&self.manifest.path)
    }
}

/// Runs `levee drill`: lists the drills, or runs the one named. Returns the exit code: 0 when it
/// passed, 1 when it failed, 130 when Ctrl-C interrupted it (its data directory is removed all
/// the same, unless `--keep-data`).
pub async fn run(args: DrillArgs) -> Result<u8> {
    let drill = match &args.drill {
        None => {
            print!("{}", list());
            return Ok(0);
        }
        Some(_) if args.list => {
            print!("{}", list());
            return Ok(0);
        }
        Some(DrillCommand::Unknown(words)) => {
            return Err(Error::Invalid(format!(
                "unknown drill `{}`; the drills are: {} (`levee drill --list` describes them)",
                words.first().map_or("", String::as_str),
                DRILLS.join(", ")
            )));
        }
        Some(cmd) => cmd.drill().expect("a known drill"),
    };
    drill.common().validate()?;
    let json = drill.common().json;
    let mut progress = Progress::new();
    let outcome = tokio::select! {
        r = drill.run(&mut progress) => r?,
        _ = tokio::signal::ctrl_c() => {
            progress.note("drill interrupted: no verdict");
            return Ok(130);
        }
    };
    progress.finish();
    let report = outcome.render();
    if json {
        eprint!("{report}");
        println!("{}", outcome.json);
    } else {
        print!("{report}");
    }
    Ok(if outcome.passed() { 0 } else { 1 })
}

/// `levee drill --list`: one line per drill, its name and summary (from its `--help`).
pub fn list() -> String {
    let cmd = <DrillCommand as clap::Subcommand>::augment_subcommands(clap::Command::new("drill"));
    let mut s = String::from("drills (`levee drill NAME --help` for the flags of one):\n");
    for sub in cmd.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(s, "  {:<16} {about}", sub.get_name());
    }
    s
}

/// Parses a duration such as `60s`, `1500ms`, `2m`, `1h` or `0.5s`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s, m or h (e.g. 60s, 1500ms, 2m)"
            ));
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; e.g. 60s, 1500ms, 2m"))?;
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration for people: `60 s`, `1.5 s`, `250 ms`.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) && !d.is_zero() {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The end of a drill: its figures, for people and as JSON, and why it failed (nothing: it passed).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub drill: &'static str,
    /// What was run, in one line (timeline and load).
    pub headline: String,
    /// Label and value of each figure, in the order shown.
    pub figures: Vec<(String, String)>,
    /// Why it failed; empty when it passed.
    pub reasons: Vec<String>,
    /// `{"drill", "verdict", "reasons", …figures}` in one line.
    pub json: String,
}

#[derive(Serialize)]
struct Envelope<'a, F: Serialize> {
    drill: &'a str,
    verdict: &'a str,
    reasons: &'a [String],
    #[serde(flatten)]
    figures: &'a F,
}

impl Outcome {
    /// An outcome whose JSON line holds `figures`' fields after `drill`, `verdict` and `reasons`.
    pub fn new<F: Serialize>(
        drill: &'static str,
        headline: String,
        lines: Vec<(String, String)>,
        reasons: Vec<String>,
        figures: &F,
    ) -> Result<Self> {
        let json = serde_json::to_string(&Envelope {
            drill,
            verdict: verdict_word(&reasons),
            reasons: &reasons,
            figures,
        })
        .map_err(|e| Error::Invalid(format!("the drill's figures do not serialise: {e}")))?;
        Ok(Outcome {
            drill,
            headline,
            figures: lines,
            reasons,
            json,
        })
    }

    /// Whether the drill passed.
    pub fn passed(&self) -> bool {
        self.reasons.is_empty()
    }

    /// The readable report: the headline, one line per figure, and the verdict last.
    pub fn render(&self) -> String {
        let mut s = format!("{} drill: {}\n", self.drill, self.headline);
        let width = self.figures.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in &self.figures {
            let _ = writeln!(s, "  {label:<width$}  {value}");
        }
        if self.passed() {
            s.push_str("verdict: pass\n");
        } else {
            let _ = writeln!(s, "verdict: fail ({})", self.reasons.join("; "));
        }
        s
    }
}

fn verdict_word(reasons: &[String]) -> &'static str {
    if reasons.is_empty() { "pass" } else { "fail" }
}

/// Lines shown while a drill runs, on stderr. On a terminal the current line is rewritten in
/// place (each phase keeps its last line); otherwise a plain line every few seconds and at
/// every change of phase.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    start: Instant,
    every: Duration,
    last: Option<(String, Instant)>,
    open: bool,
}

/// How often a plain (not a terminal) progress line is printed within one phase.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Progress on stderr, in place when it is a terminal.
    pub fn new() -> Self {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Progress {
            tty,
            start: Instant::now(),
            every: if tty {
                Duration::from_secs(1)
            } else {
                PLAIN_EVERY
            },
            last: None,
            open: false,
        }
    }

    /// Time since the drill's clock started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Starts the clock the lines show anew (e.g. once the platform is up and the load begins).
    pub fn restart_clock(&mut self) {
        self.start = Instant::now();
    }

    /// Shows `text` for `phase` if a line is due (a new phase, or `every` since the last line).
    pub fn show(&mut self, phase: &str, text: &str) {
        let now = Instant::now();
        let new_phase = self.last.as_ref().is_none_or(|(p, _)| p != phase);
        // A tenth of slack, so readings taken every second print every `every` despite jitter.
        let due = new_phase
            || self
                .last
                .as_ref()
                .is_some_and(|(_, at)| now + self.every / 10 >= *at + self.every);
        if !due {
            return;
        }
        let line = format!(
            "t={:>5.1}s {phase:<9} {text}",
            self.start.elapsed().as_secs_f64()
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            if new_phase && self.open {
                let _ = writeln!(err);
            }
            let _ = write!(err, "\r\x1b[2K{line}");
            self.open = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.last = Some((phase.to_string(), now));
    }

    /// A line of its own (not a progress line), e.g. what is being started.
    pub fn note(&mut self, text: &str) {
        self.finish();
        eprintln!("{text}");
    }

    /// Ends the line being rewritten, if any.
    pub fn finish(&mut self) {
        if self.open {
            eprintln!();
            self.open = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh data directory under the temp directory, removed on drop unless kept.
#[derive(Debug)]
struct DataDir {
    path: PathBuf,
    keep: bool,
}

impl DataDir {
    fn create(drill: &str, keep: bool) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "levee-drill-{drill}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(std::env::temp_dir())
            .and_then(|()| std::fs::create_dir(&path))
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(DataDir { path, keep })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The manifest's platform running in this process for a drill: embedded backend in a fresh data
/// directory, workers on, and the HTTP API on a free loopback port.
pub struct Loopback {
    pub platform: Arc<Platform>,
    /// Where the HTTP API listens (127.0.0.1 and a port the system chose).
    pub addr: SocketAddr,
    /// The HTTP API's live state (groups, blocks).
    pub ingress: Arc<crate::ingress::Ingress>,
    /// An admin key for the drill's own calls.
    pub admin_key: String,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    data: DataDir,
}

impl Loopback {
    /// Starts `manifest` for `drill` with `opts` (data directory, backend and workers are set
    /// here; the rest, such as store faults or `only` some functions' workers, come from the
    /// caller).
    pub async fn start(
        drill: &str,
        manifest: Manifest,
        common: &Common,
        mut opts: StartOptions,
    ) -> Result<Self> {
        let data = DataDir::create(drill, common.keep_data)?;
        opts.data_dir = Some(data.path.clone());
        opts.backend = Some(Backend::Embedded);
        opts.run_workers = true;
        let (listener, addr) = crate::ingress::bind("127.0.0.1:0").await?;
        let platform = Platform::start(manifest, opts).await?;
        let (stop, stop_rx) = watch::channel(false);
        let ingress = crate::ingress::Ingress::new(platform.clone(), addr);
        let (admin_key, _) = ingress
            .keys
            .create(crate::ingress::settings::ADMIN_GROUP, drill)
            .await?;
        let server = tokio::spawn(crate::ingress::serve_ingress(
            listener,
            ingress.clone(),
            stop_rx,
        ));
        Ok(Loopback {
            platform,
            addr,
            ingress,
            admin_key,
            stop,
            server,
            data,
        })
    }

    /// The data directory in use.
    pub fn data_dir(&self) -> &Path {
        &self.data.path
    }

    /// Stops the API and the workers (in-flight messages finish), then removes the data
    /// directory unless `--keep-data`; returns the directory when it was kept.
    pub async fn stop(self) -> Option<PathBuf> {
        let _ = self.stop.send(true);
        self.platform.shutdown().await;
        let _ = self.server.await;
        let kept = self.data.keep.then(|| self.data.path.clone());
        drop(self.platform);
        drop(self.data);
        kept
    }
}

/// Messages waiting or being handled, over every function (visible + in flight + delayed).
pub fn backlog(status: &Status) -> u64 {
    status
        .functions
        .iter()
        .map(|f| f.visible + f.in_flight + f.delayed)
        .sum()
}

/// Dead letters over every function.
pub fn dead_letters(status: &Status) -> u64 {
    status.functions.iter().map(|f| f.dlq).sum()
}

/// Processed (completed) messages per function.
pub fn processed(status: &Status) -> BTreeMap<String, u64> {
    status
        .functions
        .iter()
        .map(|f| (f.name.clone(), f.processed))
        .collect()
}

/// Accepted messages completed at every last stage so far (the least over them).
pub fn completed(status: &Status, per_message: &BTreeMap<String, u64>) -> u64 {
    let done = processed(status);
    per_message
        .iter()
        .map(|(sink, per)| done.get(sink).copied().unwrap_or(0) / per.max(&1))
        .min()
        .unwrap_or(0)
}

/// How many completions at each last stage (a function that emits to nobody) one message sent
/// to `entry` makes, if every function emits one message to each function of its `emits_to`:
/// the number of paths from `entry` to it. For the sample pipeline, one each at `notify` and
/// `search-index`.
pub fn completions_per_message(manifest: &Manifest, entry: &str) -> Result<BTreeMap<String, u64>> {
    fn walk(
        m: &Manifest,
        name: &str,
        path: &mut Vec<String>,
        out: &mut BTreeMap<String, u64>,
    ) -> Result<()> {
        if path.iter().any(|p| p == name) {
            return Err(Error::Invalid(format!(
                "the pipeline has a cycle ({} → {name}); a drill cannot count its completions",
                path.join(" → ")
            )));
        }
        let spec = m.functions.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "the manifest has no function `{name}` (it has: {})",
                m.functions.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if spec.emits_to.is_empty() {
            *out.entry(name.to_string()).or_default() += 1;
            return Ok(());
        }
        path.push(name.to_string());
        for next in &spec.emits_to {
            walk(m, next, path, out)?;
        }
        path.pop();
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(manifest, entry, &mut Vec::new(), &mut out)?;
    Ok(out)
}

/// How often [`wait_drained`] reads the status.
pub const DRAIN_POLL: Duration = Duration::from_millis(200);

/// Waits until every queue is empty and nothing is in flight, at most `timeout`; `sample` sees
/// each status read. Returns when it was first seen drained, or `None` on timeout. Each
/// function's figures are read on their own, so a message moving between two queues could be
/// missed by one reading: it counts as drained only when two readings in a row show no backlog
/// and the same processed counts.
pub async fn wait_drained(
    platform: &Platform,
    timeout: Duration,
    sample: &mut (dyn FnMut(&Status) + Send),
) -> Result<Option<Instant>> {
    let deadline = Instant::now() + timeout;
    let mut empty_since: Option<(Instant, BTreeMap<String, u64>)> = None;
    loop {
        let now = Instant::now();
        let status = platform.status().await?;
        sample(&status);
        if backlog(&status) == 0 {
            let done = processed(&status);
            match &empty_since {
                Some((at, before)) if *before == done => return Ok(Some(*at)),
                _ => empty_since = Some((now, done)),
            }
        } else {
            empty_since = None;
        }
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// The most resident memory this process has had (VmHWM of /proc/self/status), in MiB; `None`
/// where there is no /proc.
pub fn peak_rss_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&text)
}

/// The resident memory of this process now (VmRSS), in MiB; `None` where there is no /proc.
pub fn rss_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    status_mib(&text, "VmRSS:")
}

fn parse_vm_hwm(status: &str) -> Option<f64> {
    status_mib(status, "VmHWM:")
}

/// A `Name:   N kB` line of /proc/self/status, in MiB.
fn status_mib(status: &str, field: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations_take_units() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("60s"), Duration::from_secs(60));
        assert_eq!(ok("1500ms"), Duration::from_millis(1500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("0.5s"), Duration::from_millis(500));
        assert_eq!(ok("45"), Duration::from_secs(45));
        assert!(parse_duration("10 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-5s").is_err());
        assert_eq!(secs(Duration::from_secs(60)), "60 s");
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(secs(Duration::from_millis(250)), "250 ms");
    }

    #[test]
    fn the_registry_lists_every_drill() {
        let text = list();
        for name in DRILLS {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("{name} listed: {text}"));
            assert!(line.len() > name.len() + 10, "with a summary: {line}");
        }
    }

    #[test]
    fn drill_flags_parse() {
        let cli = crate::cli::Cli::try_parse_from([
            "levee",
            "drill",
            "store-outage",
            "--duration",
            "4s",
            "--rate",
            "50",
            "--drain-timeout",
            "2m",
            "--json",
        ])
        .unwrap();
        let crate::cli::Command::Drill(args) = cli.command else {
            panic!("drill")
        };
        let Some(DrillCommand::StoreOutage(d)) = args.drill else {
            panic!("store-outage")
        };
        assert_eq!(d.duration, Duration::from_secs(4));
        assert_eq!(d.common.rate, 50.0);
        assert_eq!(d.common.drain_timeout, Duration::from_secs(120));
        assert_eq!(d.common.warmup, Duration::from_secs(5));
        assert!(d.common.json && !d.common.keep_data);
        let args = |a: &[&str]| {
            let mut v = vec!["levee", "drill"];
            v.extend_from_slice(a);
            match crate::cli::Cli::try_parse_from(v).unwrap().command {
                crate::cli::Command::Drill(d) => d,
                _ => panic!("drill"),
            }
        };
        assert!(args(&[]).drill.is_none());
        assert!(args(&["--list"]).list);
        assert!(matches!(
            args(&["flood-of-the-century"]).drill,
            Some(DrillCommand::Unknown(w)) if w[0] == "flood-of-the-century"
        ));
        assert!(
            crate::cli::Cli::try_parse_from(["levee", "drill", "store-outage", "--rate", "x"])
                .is_err()
        );
    }

    #[test]
    fn completions_count_paths_to_the_last_stages() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.wasm");
        std::fs::write(&module, b"").unwrap();
        let fun = |name: &str, emits: &str| {
            format!(
                "[functions.{name}]\nmodule = \"{}\"\nemits_to = [{emits}]\n",
                module.display()
            )
        };
        let text = [
            fun("inbound", "\"routing\", \"search-index\""),
            fun("routing", "\"notify\""),
            fun("search-index", ""),
            fun("notify", ""),
        ]
        .concat();
        let m = Manifest::parse(&text, dir.path()).unwrap();
        let c = completions_per_message(&m, "inbound").unwrap();
        assert_eq!(
            c,
            BTreeMap::from([("notify".into(), 1), ("search-index".into(), 1)])
        );
        let diamond = [
            fun("a", "\"b\", \"c\""),
            fun("b", "\"d\""),
            fun("c", "\"d\""),
            fun("d", ""),
        ]
        .concat();
        let m = Manifest::parse(&diamond, dir.path()).unwrap();
        assert_eq!(
            completions_per_message(&m, "a").unwrap(),
            BTreeMap::from([("d".into(), 2)])
        );
        let err = completions_per_message(&m, "nope").unwrap_err().to_string();
        assert!(err.contains("no function `nope`"), "{err}");
    }

    #[test]
    fn vm_hwm_in_mib() {
        let status = "Name:\tlevee\nVmPeak:\t  999 kB\nVmHWM:\t   204800 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(200.0));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
        assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
    }

    #[test]
    fn outcomes_render_the_verdict_last_and_json_in_one_line() {
        #[derive(Serialize)]
        struct F {
            accepted: u64,
        }
        let lines = vec![("messages accepted".to_string(), "10".to_string())];
        let pass =
            Outcome::new("x", "h".into(), lines.clone(), vec![], &F { accepted: 10 }).unwrap();
        assert!(
            pass.render().ends_with("verdict: pass\n"),
            "{}",
            pass.render()
        );
        assert_eq!(
            pass.json,
            r#"{"drill":"x","verdict":"pass","reasons":[],"accepted":10}"#
        );
        let fail = Outcome::new(
            "x",
            "h".into(),
            lines,
            vec!["a".into(), "b".into()],
            &F { accepted: 0 },
        )
        .unwrap();
        assert!(!fail.passed());
        assert!(fail.render().ends_with("verdict: fail (a; b)\n"));
        assert!(!fail.json.contains('\n'));
    }
}
