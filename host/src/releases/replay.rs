//! The replay gate: before a candidate's canary starts, it and the stable version run every
//! recorded event of the function's corpus (one file per event, its bytes the message body) in
//! a dry run: kv is read but nothing is committed, emitted messages are dropped, and no
//! outbound call is granted. An event the stable version handles and the candidate fails is a
//! regression, and the deploy is refused naming it.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::platform::MAX_BODY_BYTES;
use crate::queue::ReceivedMessage;
use crate::runtime::Function;
use crate::{Error, Result};

/// Most events a corpus may hold (each runs twice per deploy).
pub const MAX_EVENTS: usize = 1000;

/// Events failed by both versions listed in a report.
const MAX_SHOWN: usize = 5;

/// One recorded event.
pub struct Event {
    pub name: String,
    pub body: Vec<u8>,
}

/// An event the candidate fails and the stable version handles.
#[derive(Debug, Clone, Serialize)]
pub struct Regression {
    pub event: String,
    pub reason: String,
}

/// What the gate found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// The corpus folder (None when the function has none).
    pub corpus: Option<String>,
    pub events: usize,
    /// Events both versions handled.
    pub passed: usize,
    /// Events both versions failed (bad input, not the candidate's fault).
    pub both_failed: usize,
    /// The first few of those, with the stable version's reason (a corpus that no version
    /// passes gates nothing: fix the events or the manifest).
    pub both_failed_events: Vec<Regression>,
    pub regressions: Vec<Regression>,
    pub elapsed_ms: u64,
}

/// Reads a corpus folder: every regular file not starting with `.` and not a `README`, in
/// name order. A missing folder is an empty corpus.
pub fn read_corpus(dir: &Path) -> Result<Vec<Event>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
    };
    let mut paths = vec![];
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.to_ascii_lowercase().starts_with("readme") {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) {
            paths.push((name, e.path()));
        }
    }
    paths.sort();
    if paths.len() > MAX_EVENTS {
        return Err(Error::Invalid(format!(
            "the replay corpus {} has {} events; at most {MAX_EVENTS}",
            dir.display(),
            paths.len()
        )));
    }
    paths
        .into_iter()
        .map(|(name, path)| {
            let body = std::fs::read(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if body.is_empty() || body.len() > MAX_BODY_BYTES {
                return Err(Error::Invalid(format!(
                    "replay event {name} is {} bytes; an event is 1 to {MAX_BODY_BYTES} bytes",
                    body.len()
                )));
            }
            Ok(Event { name, body })
        })
        .collect()
}

/// Runs every event on both versions (dry runs, on blocking threads) and compares.
pub async fn run(
    corpus: Option<&Path>,
    events: Vec<Event>,
    stable: Arc<Function>,
    candidate: Arc<Function>,
) -> Report {
    let started = Instant::now();
    let mut report = Report {
        corpus: corpus.map(|p| p.display().to_string()),
        events: events.len(),
        ..Default::default()
    };
    for (i, event) in events.into_iter().enumerate() {
        let msg = ReceivedMessage {
            id: format!("replay-{i:04}"),
            receipt: String::new(),
            body: event.body,
            attributes: vec![],
            receive_count: 1,
            sent_at_ms: crate::ids::now_ms(),
            last_error: None,
        };
        let old = dry_run(&stable, &msg).await;
        let new = dry_run(&candidate, &msg).await;
        match (old, new) {
            (_, Ok(())) => report.passed += 1,
            (Err(reason), Err(_)) => {
                report.both_failed += 1;
                if report.both_failed_events.len() < MAX_SHOWN {
                    report.both_failed_events.push(Regression {
                        event: event.name,
                        reason,
                    });
                }
            }
            (Ok(()), Err(reason)) => report.regressions.push(Regression {
                event: event.name,
                reason,
            }),
        }
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

async fn dry_run(f: &Arc<Function>, msg: &ReceivedMessage) -> std::result::Result<(), String> {
    f.invoke(msg)
        .await
        .outcome
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corpus_is_its_files_in_name_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b-large.json"), b"{\"x\":2}").unwrap();
        std::fs::write(dir.path().join("a-small.json"), b"{\"x\":1}").unwrap();
        std::fs::write(dir.path().join("README.md"), b"notes").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        let events = read_corpus(dir.path()).unwrap();
        let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a-small.json", "b-large.json"]);
        assert!(read_corpus(&dir.path().join("missing")).unwrap().is_empty());
        std::fs::write(dir.path().join("c-empty.json"), b"").unwrap();
        let e = read_corpus(dir.path()).err().unwrap().to_string();
        assert!(e.contains("c-empty.json"), "{e}");
    }
}
