//! Headless Chromium for the dashboard tests: the rendered DOM of a page, a screenshot, and a
//! small reader of the DOM's `data-field` hooks.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a Chromium run may take before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The Chromium binary: `LEVEE_TEST_CHROMIUM`, else `/usr/bin/chromium`, else `chromium` on the
/// PATH. `None` (after a loud SKIPPED message) when there is none; panics when `CI=true`
/// (scripts/test.sh installs Debian's `chromium`).
pub fn chromium() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("LEVEE_TEST_CHROMIUM")
        && !p.is_empty()
    {
        candidates.push(p.into());
    }
    candidates.push("/usr/bin/chromium".into());
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            candidates.push(dir.join("chromium"));
        }
    }
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    if in_ci() {
        panic!(
            "CI=true and no chromium is installed: the dashboard tests must run in CI \
             (scripts/test.sh installs Debian's chromium package)"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n==================================================================\n\
         SKIPPED: chromium not installed (apt-get install chromium, or set LEVEE_TEST_CHROMIUM).\n\
         =================================================================="
    );
    None
}

/// Returns the Chromium binary, or returns from the test (skipping) when there is none.
#[macro_export]
macro_rules! with_chromium {
    () => {
        match $crate::browser::chromium() {
            Some(c) => c,
            None => return,
        }
    };
}

/// A headless Chromium with a fresh profile, no network of its own (no updates, sync or
/// QUIC), and `budget` of virtual time for the page's timers before it reports.
#[derive(Debug, Clone)]
pub struct Headless {
    pub bin: PathBuf,
    pub budget: Duration,
    pub window: (u32, u32),
}

impl Headless {
    pub fn new(bin: PathBuf) -> Self {
        Headless {
            bin,
            budget: Duration::from_millis(8000),
            window: (1400, 1000),
        }
    }

    /// The same browser with another virtual-time budget.
    pub fn clone_with_budget(&self, budget: Duration) -> Self {
        Headless {
            budget,
            ..self.clone()
        }
    }

    fn run(&self, url: &str, extra: &[String]) -> (String, String) {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", self.budget.as_millis()))
        .arg(format!("--window-size={},{}", self.window.0, self.window.1))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting chromium");
        // Read both pipes off this thread so a chatty Chromium cannot block on a full pipe.
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("waiting for chromium") {
                break s;
            }
            if start.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {RUN_TIMEOUT:?} on {url}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        assert!(
            status.success(),
            "chromium failed ({status}) on {url}: {stderr}"
        );
        (stdout, stderr)
    }

    /// The DOM of `url` once the page ran for the virtual-time budget.
    pub fn dump_dom(&self, url: &str) -> String {
        self.run(url, &["--dump-dom".to_string()]).0
    }

    /// Writes a PNG of `url` (window size) to `path` once the page ran for the budget.
    pub fn screenshot(&self, url: &str, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        let _ = std::fs::remove_file(path);
        self.run(url, &[format!("--screenshot={}", path.display())]);
        let png = std::fs::read(path).expect("chromium wrote the screenshot");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
            "{} is a PNG of a rendered page ({} bytes)",
            path.display(),
            png.len()
        );
    }
}

/// Where tests write what a person may look at: `target/test-output/` (next to the test binary's
/// profile directory).
pub fn test_output_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/test-output
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target/");
    target.join("test-output")
}

/// One element of a DOM dump: its attributes and its own text (up to its first child tag).
#[derive(Debug, Clone, Default)]
pub struct Element {
    pub tag: String,
    pub attrs: BTreeMap<String, String>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }
}

/// The elements of serialized HTML (start tags only), in document order.
pub fn elements(html: &str) -> Vec<Element> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'<' || !b.get(i + 1).is_some_and(u8::is_ascii_alphabetic) {
            i += 1;
            continue;
        }
        i += 1;
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' && b[i] != b'/' {
            i += 1;
        }
        let mut e = Element {
            tag: html[start..i].to_ascii_lowercase(),
            ..Default::default()
        };
        // Attributes: name, name=value, name="value", name='value'.
        loop {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            if i >= b.len() || b[i] == b'>' {
                i += 1;
                break;
            }
            let ns = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>' | b'/')
            {
                i += 1;
            }
            let name = html[ns..i].to_ascii_lowercase();
            let mut value = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                    let q = b[i];
                    i += 1;
                    let vs = i;
                    while i < b.len() && b[i] != q {
                        i += 1;
                    }
                    value = unescape(&html[vs..i.min(b.len())]);
                    i += 1;
                } else {
                    let vs = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = unescape(&html[vs..i]);
                }
            }
            e.attrs.insert(name, value);
        }
        let ts = i.min(b.len());
        let te = html[ts..].find('<').map_or(b.len(), |n| ts + n);
        e.text = unescape(&html[ts..te]).trim().to_string();
        out.push(e);
        i = te;
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The `data-field` hooks of a dashboard DOM.
pub struct Dom {
    pub elements: Vec<Element>,
}

impl Dom {
    pub fn parse(html: &str) -> Self {
        Dom {
            elements: elements(html),
        }
    }

    fn find(&self, pred: impl Fn(&Element) -> bool) -> Option<&Element> {
        self.elements.iter().find(|e| pred(e))
    }

    /// The text of the page-wide field `name` (no `data-function` or `data-store`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.find(|e| {
            e.attr("data-field") == Some(name)
                && e.attr("data-function").is_none()
                && e.attr("data-store").is_none()
        })
        .map(|e| e.text.as_str())
    }

    /// The text of function `function`'s field `name`.
    pub fn function_field(&self, function: &str, name: &str) -> Option<&str> {
        self.find(|e| {
            e.attr("data-field") == Some(name) && e.attr("data-function") == Some(function)
        })
        .map(|e| e.text.as_str())
    }

    /// The element of function `function`'s field `name`.
    pub fn function_element(&self, function: &str, name: &str) -> Option<&Element> {
        self.find(|e| {
            e.attr("data-field") == Some(name) && e.attr("data-function") == Some(function)
        })
    }

    /// The text of store `store`'s field `name`.
    pub fn store_field(&self, store: &str, name: &str) -> Option<&str> {
        self.find(|e| e.attr("data-field") == Some(name) && e.attr("data-store") == Some(store))
            .map(|e| e.text.as_str())
    }

    /// Every element with `data-field="name"`.
    pub fn all(&self, name: &str) -> Vec<&Element> {
        self.elements
            .iter()
            .filter(|e| e.attr("data-field") == Some(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_attributes() {
        let html = r#"<div data-function="inbound"><span class="num" data-function="inbound" data-field="visible">12</span>
<dd data-store='kv' data-field=breaker>open &amp; failing</dd><p data-field="banner" hidden></p>
<span data-field="reason" title="a > b">x <b>y</b></span></div>"#;
        let dom = Dom::parse(html);
        assert_eq!(dom.function_field("inbound", "visible"), Some("12"));
        assert_eq!(dom.store_field("kv", "breaker"), Some("open & failing"));
        assert_eq!(dom.field("banner"), Some(""));
        let banner = dom.all("banner")[0];
        assert!(banner.attrs.contains_key("hidden"));
        let reason = dom.all("reason")[0];
        assert_eq!(reason.attr("title"), Some("a > b"));
        assert_eq!(reason.text, "x");
    }
}
