//! Guest stdout/stderr routed to the host's log, line by line, tagged with the function's name.
//! Bounded: a chatty guest loses lines past the cap, never the host's memory. Secret values are
//! redacted before a line is logged.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::secrets::Redactor;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per stream and invocation before output is dropped.
const CAP: usize = 64 * 1024;

#[derive(Clone)]
pub(super) struct GuestLog {
    inner: Arc<Mutex<Buf>>,
}

struct Buf {
    function: String,
    redactor: Arc<Redactor>,
    stream: &'static str,
    pending: Vec<u8>,
    written: usize,
    dropped: usize,
}

impl GuestLog {
    pub(super) fn new(function: &str, stream: &'static str, redactor: Arc<Redactor>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Buf {
                function: function.to_string(),
                redactor,
                stream,
                pending: Vec::new(),
                written: 0,
                dropped: 0,
            })),
        }
    }

    /// Logs whatever is left, including a last line without a newline.
    pub(super) fn flush_all(&self) {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !b.pending.is_empty() {
            let line = std::mem::take(&mut b.pending);
            emit(&b.function, b.stream, &b.redactor, &line);
        }
        if b.dropped > 0 {
            tracing::warn!(function = %b.function, stream = b.stream, "guest output truncated: {} bytes dropped", b.dropped);
            b.dropped = 0;
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let room = CAP.saturating_sub(b.written);
        let take = bytes.len().min(room);
        b.dropped += bytes.len() - take;
        b.written += take;
        b.pending.extend_from_slice(&bytes[..take]);
        while let Some(pos) = b.pending.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = b.pending.drain(..=pos).collect();
            emit(&b.function, b.stream, &b.redactor, &line[..line.len() - 1]);
        }
    }
}

fn emit(function: &str, stream: &str, redactor: &Redactor, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = redactor.redact(&text);
    tracing::info!(target: "levee::guest", function, stream, "{}", text.trim_end_matches('\r'));
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestLog::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: excess output is dropped, not pushed back on the guest.
        Ok(CAP)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        GuestLog::write(&self, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
