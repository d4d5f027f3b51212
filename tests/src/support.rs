//! Guest builds, manifests, in-process platforms and `levee` child processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use levee::manifest::Manifest;
use levee::platform::{Platform, StartOptions};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A `cargo` command without the variables cargo sets for a test process (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, …). Build scripts that watch one of them (ring watches `CARGO_MANIFEST_DIR`)
/// would otherwise see it change and rebuild half the dependency tree, once in here and again in
/// the next outer build.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_for_tests = key == "OUT_DIR"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_for_tests {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Builds every guest component once per test process (cargo serialises concurrent builds) and
/// returns the directory holding the `.wasm` files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root().join("functions");
        let target = root.join("target");
        let status = cargo()
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--workspace",
            ])
            .current_dir(&root)
            // The outer build's target dir and flags must not leak into the guest build.
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the guest components");
        assert!(
            status.success(),
            "building functions/ for wasm32-wasip2 failed"
        );
        target.join("wasm32-wasip2").join("release")
    })
}

/// Path of a built guest component, e.g. `guest("search-index")`.
pub fn guest(name: &str) -> PathBuf {
    guests().join(format!("{}.wasm", name.replace('-', "_")))
}

/// One `[functions.NAME]` entry of a test manifest.
#[derive(Debug, Clone)]
pub struct Fn {
    pub name: String,
    pub module: String,
    pub extra: String,
}

impl Fn {
    /// A function named `name` running the guest `module` with manifest lines `extra`.
    pub fn new(name: &str, module: &str, extra: &str) -> Self {
        Self {
            name: name.into(),
            module: module.into(),
            extra: extra.into(),
        }
    }
}

/// Writes a manifest for `fns` into `dir` and returns its path.
pub fn write_manifest(dir: &Path, fns: &[Fn]) -> PathBuf {
    write_manifest_with(dir, "", fns)
}

/// Like [`write_manifest`], with extra `[platform]` lines and sections before the functions
/// (`platform_extra` starts inside `[platform]`).
pub fn write_manifest_with(dir: &Path, platform_extra: &str, fns: &[Fn]) -> PathBuf {
    let mut text = format!("[platform]\ndata_dir = \"data\"\n{platform_extra}\n\n");
    for f in fns {
        text.push_str(&format!(
            "[functions.{}]\nmodule = \"{}\"\npublic = true\n{}\n\n",
            f.name,
            guest(&f.module).display(),
            f.extra
        ));
    }
    let path = dir.join("levee.toml");
    std::fs::write(&path, text).expect("writing the test manifest");
    path
}

/// The sample pipeline (inbound → routing → notify, inbound → search-index).
pub fn pipeline_fns(concurrency: u32) -> Vec<Fn> {
    let c = format!("concurrency = {concurrency}\nbackoff_ms = 50");
    vec![
        Fn::new(
            "inbound",
            "inbound",
            &format!("emits_to = [\"routing\", \"search-index\"]\n{c}"),
        ),
        Fn::new(
            "routing",
            "routing",
            &format!("emits_to = [\"notify\"]\n{c}"),
        ),
        Fn::new("search-index", "search-index", &c),
        Fn::new("notify", "notify", &c),
    ]
}

/// Logs of in-process platforms to stderr when `LEVEE_TEST_LOG` is set (an `EnvFilter`, e.g.
/// `levee=debug`), for looking into a failing test.
pub fn init_test_log() {
    if let Ok(filter) = std::env::var("LEVEE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Starts a platform in this process with workers running, with `opts` (workers forced on).
pub async fn start_with(manifest: &Path, mut opts: StartOptions) -> Arc<Platform> {
    init_test_log();
    let m = Manifest::load(manifest).expect("test manifest is valid");
    opts.run_workers = true;
    Platform::start(m, opts).await.expect("platform starts")
}

/// Starts a platform in this process with workers running.
pub async fn start(manifest: &Path) -> Arc<Platform> {
    let m = Manifest::load(manifest).expect("test manifest is valid");
    Platform::start(
        m,
        StartOptions {
            run_workers: true,
            ..Default::default()
        },
    )
    .await
    .expect("platform starts")
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond().await
}

/// Path of the `levee` binary next to the test binaries, built if missing.
pub fn levee_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> → target/<profile>/levee
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let bin = profile_dir.join("levee");
        let status = cargo()
            // The same selection as `cargo test --workspace`, so features unify the same way
            // and this is a no-op after the test build instead of a second build of everything.
            .args(["build", "--workspace", "--bins", "--tests"])
            .current_dir(repo_root())
            .status()
            .expect("running cargo to build the levee binary");
        assert!(status.success(), "building the levee binary failed");
        assert!(bin.exists(), "levee binary not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `levee up` child process, killed on drop.
pub struct LeveeProcess {
    pub child: Child,
    pub addr: String,
    /// The admin key `levee up` on loopback writes to its data directory.
    pub key: String,
}

impl LeveeProcess {
    /// Runs `levee up --manifest M --listen 127.0.0.1:PORT` and waits for /healthz.
    pub fn up(manifest: &Path, port: u16) -> Self {
        Self::up_with(manifest, port, &[], &[])
    }

    /// Like [`LeveeProcess::up`] with more arguments and environment variables.
    pub fn up_with(manifest: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let log = manifest.with_file_name(format!("levee-{port}.log"));
        let child = Command::new(levee_bin())
            .args(["up", "--manifest"])
            .arg(manifest)
            .args(["--listen", &addr])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawning levee up");
        let key_file = Manifest::load(manifest)
            .expect("test manifest is valid")
            .data_dir()
            .join("admin.key");
        let mut p = Self {
            child,
            addr,
            key: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(k) = std::fs::read_to_string(&key_file)
                && std::net::TcpStream::connect(&p.addr).is_ok()
            {
                p.key = k.trim().to_string();
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "levee up did not listen on {} within 60 s; log: {}",
            p.addr,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Runs a client command of the `levee` CLI against this platform with its admin key.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(levee_bin())
            .args(args)
            .args(["--addr", &self.addr])
            .env("LEVEE_KEY", &self.key)
            .output()
            .expect("running levee");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LeveeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `levee` CLI with `args`; returns (exit code, stdout, stderr).
pub fn levee(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(levee_bin())
        .args(args)
        .output()
        .expect("running levee");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The same component with a custom section appended: a rebuild that changes the module's
/// hash and nothing it does.
pub fn rebuilt(module: &str, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(guest(module)).unwrap();
    let name = b"levee-test-rebuild";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0); // custom section
    let mut n = payload.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            bytes.push(b);
            break;
        }
        bytes.push(b | 0x80);
    }
    bytes.extend_from_slice(&payload);
    bytes
}
