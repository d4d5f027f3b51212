//! The container image's file tree: `infra/image.sh` lays it out from the binary under test and the
//! built guests, and `levee up` run from it (as the image runs it: from `/srv/levee`, with the baked
//! manifest) serves the sample pipeline: one customer message sent to `inbound` goes through
//! routing, search-index and notify. No Docker involved: the tree is what the Dockerfile copies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use levee::manifest::Manifest;
use levee_tests::{guests, levee_bin, repo_root};
use serde_json::Value;

/// `levee up` from the tree, killed on drop; its stdout lines arrive on `lines`.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything read from stdout so far, for failure messages.
    seen: Vec<String>,
    stderr_log: PathBuf,
}

impl Up {
    /// Waits for a stdout line starting with `prefix`; returns the line.
    fn line_starting(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "levee up printed no line starting with {prefix:?} ({e:?}); stdout:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `infra/image.sh --out OUT --binary <levee under test> --guests-from <built guests>`.
fn build_tree(out: &Path) {
    let script = repo_root().join("infra").join("image.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--out")
        .arg(out)
        .arg("--binary")
        .arg(levee_bin())
        .arg("--guests-from")
        .arg(guests())
        .current_dir(repo_root())
        .output()
        .expect("running infra/image.sh");
    assert!(
        output.status.success(),
        "{} failed ({}):\n{}{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A client command of the tree's `levee` against `addr` with `key`: (exit code, stdout, stderr).
fn cli(bin: &Path, addr: &str, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(args)
        .args(["--addr", addr])
        .env("LEVEE_KEY", key)
        .output()
        .expect("running levee");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET /healthz` over a plain TCP connection; the whole response.
fn healthz(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connecting to levee up");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response)
        .expect("reading the /healthz response");
    response
}

/// `processed` of every function in `levee status --json`.
fn processed(status: &Value) -> Vec<(String, u64)> {
    status["functions"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or_default().to_string(),
                        f["processed"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_image_tree_serves_the_sample_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    build_tree(&tree);

    // The layout the Dockerfile copies to /.
    let bin = tree.join("usr/local/bin/levee");
    let srv = tree.join("srv/levee");
    let data = srv.join(".levee");
    assert!(bin.is_file(), "{} is laid out", bin.display());
    let manifest_path = srv.join("levee.toml");
    assert_eq!(
        std::fs::read_to_string(&manifest_path).expect("the baked manifest"),
        std::fs::read_to_string(repo_root().join("levee.toml")).unwrap(),
        "the baked manifest is the repository's levee.toml"
    );
    let manifest = Manifest::load(&manifest_path).expect("the baked manifest loads from the tree");
    for (name, spec) in &manifest.functions {
        let module = manifest.module_path(spec);
        assert!(
            module.starts_with(&srv) && module.is_file(),
            "the module of {name} is in the tree: {}",
            module.display()
        );
    }
    assert!(
        srv.join("functions/inbound/replay/06-large-format-attachments.json")
            .is_file(),
        "inbound's replay corpus is in the tree (the gate of `levee deploy`)"
    );
    assert!(
        std::fs::read_dir(&data)
            .expect("the data directory exists")
            .next()
            .is_none(),
        "the data directory starts empty"
    );

    // As the image runs it: from /srv/levee with LEVEE_MANIFEST naming the baked manifest; here on
    // an ephemeral loopback port, the embedded backend, the data directory inside the tree.
    let stderr_log = tmp.path().join("levee-up.stderr");
    let mut child = Command::new(&bin)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "embedded",
            "--data-dir",
        ])
        .arg(&data)
        .current_dir(&srv)
        .env("LEVEE_MANIFEST", &manifest_path)
        .env_remove("LEVEE_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .expect("spawning levee up from the tree");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    // Drains stdout until levee exits, so the pipe never fills.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut up = Up {
        child,
        lines,
        seen: Vec::new(),
        stderr_log,
    };

    let listening = up.line_starting("levee listening on http://", Duration::from_secs(60));
    let addr = listening
        .trim_start_matches("levee listening on http://")
        .trim()
        .to_string();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "an ephemeral port was bound: {listening}"
    );
    // Printed once the key is in the data directory.
    up.line_starting("admin key", Duration::from_secs(30));
    let key = std::fs::read_to_string(data.join("admin.key"))
        .expect("levee up on loopback writes the admin key to the tree's data directory")
        .trim()
        .to_string();
    assert!(
        data.join("levee.db").is_file(),
        "the embedded backend's database is in the tree's data directory"
    );

    let health = healthz(&addr);
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""status":"ok""#),
        "{health}"
    );

    let msg = r#"{"org": "Acme", "conversation": "c-image", "channel": "email", "from": "Ann@Example.com", "text": "  my order has   not arrived "}"#;
    let (code, out, err) = cli(&bin, &addr, &key, &["send", "inbound", msg]);
    assert_eq!(code, 0, "levee send inbound: {out}{err}");
    assert!(!out.trim().is_empty(), "prints the message id");

    let want = ["inbound", "routing", "search-index", "notify"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (code, out, err) = cli(&bin, &addr, &key, &["status", "--json"]);
        assert_eq!(code, 0, "levee status --json: {out}{err}");
        let status: Value = serde_json::from_str(&out).expect("status JSON");
        let done = processed(&status);
        let settled = want
            .iter()
            .all(|w| done.iter().any(|(name, n)| name == w && *n >= 1));
        if settled || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let done = processed(&status);
    for w in want {
        assert!(
            done.iter().any(|(name, n)| name == w && *n == 1),
            "{w} processed the message once: {done:?}\nstderr of levee up:\n{}",
            up.stderr()
        );
    }
    for f in status["functions"].as_array().unwrap() {
        assert_eq!(f["dlq"], 0, "nothing dead-lettered: {status}");
    }

    // What the handlers left in the embedded store.
    let (code, conv, err) = cli(
        &bin,
        &addr,
        &key,
        &["kv", "get", "inbound", "conv/acme/c-image"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        conv.contains("ann@example.com") && conv.contains("my order has not arrived"),
        "inbound normalised the message: {conv}"
    );
    let (code, assign, err) = cli(
        &bin,
        &addr,
        &key,
        &["kv", "get", "routing", "assign/acme/c-image"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        assign.contains("\"team\""),
        "routing assigned a team: {assign}"
    );

    // SIGTERM, as `docker stop` sends: a clean exit.
    let pid = up.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("running kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = up.child.try_wait().expect("waiting for levee up") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "levee up did not exit within 30 s of SIGTERM; stderr:\n{}",
            up.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        exit.success(),
        "levee up exits 0 on SIGTERM: {exit:?}; stderr:\n{}",
        up.stderr()
    );
}
