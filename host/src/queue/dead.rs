//! Dead-letter views shared by every backend: bounded summaries and pages
//! ([`DeadLetterSummary`], [`DlqPage`]) and the death history a redrive carries
//! ([`PastDeath`], kept as bounded JSON on the message).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Most dead letters in one [`DlqPage`]: a page stays small whatever the client asks for.
pub const MAX_DLQ_PAGE: usize = 100;

/// Bytes of a body shown in a [`DeadLetterSummary::preview`].
pub const PREVIEW_BYTES: usize = 256;

/// Past deaths a message carries; older ones are dropped so the record stays bounded.
pub const MAX_HISTORY: usize = 10;

/// Longest reason kept in a [`PastDeath`], in bytes: the history travels with the message (an
/// SQS attribute counts against the message size), so ten of them must stay small.
pub const HISTORY_REASON_BYTES: usize = 256;

/// An earlier death of a message that was redriven since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastDeath {
    /// Receives it had used when it died.
    pub receive_count: u32,
    /// Why it died (cut to [`HISTORY_REASON_BYTES`]).
    pub reason: String,
    /// When it died, in ms since the Unix epoch.
    pub dead_at_ms: u64,
}

/// A dead letter without its body: what a listing shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    pub id: String,
    pub reason: String,
    pub receive_count: u32,
    /// When it was dead-lettered, in ms since the Unix epoch.
    pub dead_at_ms: u64,
    /// The body's length in bytes.
    pub size: u64,
    /// The body's first [`PREVIEW_BYTES`] bytes as lossy UTF-8, cut on a character boundary
    /// (never longer than [`PREVIEW_BYTES`] bytes).
    pub preview: String,
    /// The message's attributes (Levee's reserved ones removed), each value cut to
    /// [`SUMMARY_ATTRIBUTE_BYTES`].
    pub attributes: Vec<(String, String)>,
    /// Earlier deaths, oldest first, each ended by a redrive.
    pub history: Vec<PastDeath>,
}

/// One page of a dead-letter queue, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DlqPage {
    pub letters: Vec<DeadLetterSummary>,
    /// The cursor for the next page (`after`); `None` at the end.
    pub next: Option<String>,
}

/// Longest attribute value shown in a summary, in bytes (longer ones are cut on a character
/// boundary): a page's size must not depend on what senders put in attributes.
pub const SUMMARY_ATTRIBUTE_BYTES: usize = 1024;

/// Attributes as a summary shows them: values cut to [`SUMMARY_ATTRIBUTE_BYTES`].
pub fn summary_attributes(mut attributes: Vec<(String, String)>) -> Vec<(String, String)> {
    for (_, v) in &mut attributes {
        truncate_on_char(v, SUMMARY_ATTRIBUTE_BYTES);
    }
    attributes
}

/// `limit` clamped to 1..=[`MAX_DLQ_PAGE`].
pub fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_DLQ_PAGE)
}

/// The preview of a body of which `head` is the start (at most [`PREVIEW_BYTES`] are used):
/// a character cut by the limit is dropped rather than shown as U+FFFD, invalid bytes become
/// U+FFFD, and the result is cut again so it never exceeds [`PREVIEW_BYTES`] bytes.
pub fn preview(head: &[u8]) -> String {
    let mut end = head.len().min(PREVIEW_BYTES);
    if end < head.len() || end == PREVIEW_BYTES {
        end -= incomplete_tail(&head[..end]);
    }
    let mut text = String::from_utf8_lossy(&head[..end]).into_owned();
    truncate_on_char(&mut text, PREVIEW_BYTES);
    text
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 sequence cut short.
fn incomplete_tail(bytes: &[u8]) -> usize {
    // A sequence is at most 4 bytes: look at the last 3 for its lead byte.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte: its lead is further back
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate_on_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

/// The history after one more death, keeping the last [`MAX_HISTORY`].
pub fn push_death(mut history: Vec<PastDeath>, death: PastDeath) -> Vec<PastDeath> {
    let mut death = death;
    truncate_on_char(&mut death.reason, HISTORY_REASON_BYTES);
    history.push(death);
    if history.len() > MAX_HISTORY {
        history.drain(..history.len() - MAX_HISTORY);
    }
    history
}

/// The JSON a backend stores a history as.
pub fn encode_history(history: &[PastDeath]) -> String {
    serde_json::to_string(history).expect("a history always serialises")
}

/// A stored history; `None` (never redriven) is empty.
pub fn decode_history(raw: Option<&str>) -> Result<Vec<PastDeath>> {
    match raw {
        None | Some("") => Ok(Vec::new()),
        Some(raw) => serde_json::from_str(raw).map_err(|e| Error::Backend {
            service: "queue".into(),
            message: format!("a dead letter's stored history is corrupt: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_on_a_character_boundary_within_the_limit() {
        assert_eq!(preview(b"short"), "short");
        // 255 ASCII bytes then a 3-byte character cut after its first byte.
        let mut body = vec![b'a'; 255];
        body.extend_from_slice("€uro".as_bytes());
        assert_eq!(preview(&body), "a".repeat(255));
        // Invalid bytes become U+FFFD (3 bytes each) and the result is cut again.
        let p = preview(&[0xFF; 300]);
        assert!(p.len() <= PREVIEW_BYTES && p.chars().all(|c| c == '\u{FFFD}'));
        assert_eq!(p.len(), 255);
        // A complete character ending exactly at the limit is kept.
        let mut exact = vec![b'a'; 253];
        exact.extend_from_slice("€".as_bytes());
        assert_eq!(preview(&exact), format!("{}€", "a".repeat(253)));
    }

    #[test]
    fn history_keeps_the_last_ten_with_short_reasons() {
        let mut h = Vec::new();
        for i in 0..12 {
            h = push_death(
                h,
                PastDeath {
                    receive_count: i,
                    reason: "x".repeat(1000),
                    dead_at_ms: u64::from(i),
                },
            );
        }
        assert_eq!(h.len(), MAX_HISTORY);
        assert_eq!((h[0].receive_count, h[9].receive_count), (2, 11));
        assert!(h.iter().all(|d| d.reason.len() == HISTORY_REASON_BYTES));
        assert_eq!(decode_history(Some(&encode_history(&h))).unwrap(), h);
        assert!(decode_history(None).unwrap().is_empty());
        assert!(decode_history(Some("{")).is_err());
    }
}
