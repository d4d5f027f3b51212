//! Deadlines for guests blocked in a host call.
//!
//! Epoch interruption stops only Wasm code: a guest parked in a blocking WASI call
//! (`std::thread::sleep` is `monotonic-clock.subscribe-duration` + `pollable.block`) would run
//! past its deadline for as long as it likes. The sync WASI linker implements every blocking
//! `wasi:io` call by blocking on the async implementation; this module shadows those calls
//! with the same async implementation under `tokio::time::timeout_at(invocation deadline)`.
//! At the deadline the call returns a [`DeadlineExceeded`] trap, which `classify_trap`
//! reports as a timeout, like an epoch interrupt.
//!
//! Shadowed (every `wasi:io` call that can wait): `poll`, `[method]pollable.block`, and on
//! streams `blocking-read`, `blocking-skip`, `blocking-write-and-flush`,
//! `blocking-write-zeroes-and-flush`, `blocking-flush`, `blocking-splice` and the stream
//! destructors (which may wait for a background writer). The other `wasi:io` calls never
//! wait and are delegated to wasmtime-wasi as they are.

use std::future::Future;
use std::time::Instant;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::p2::bindings::io::streams::{
    HostInputStream as AsyncInputStream, HostOutputStream as AsyncOutputStream,
};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;

use super::host::HostState;

/// The trap a blocking host call returns when the invocation's deadline passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DeadlineExceeded {
    /// The WASI call the guest was blocked in.
    pub(super) call: &'static str,
}

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "deadline reached while blocked in {}", self.call)
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Whether a guest's error is a deadline reached inside a blocking host call.
pub(super) fn exceeded(e: &wasmtime::Error) -> bool {
    e.downcast_ref::<DeadlineExceeded>().is_some()
}

/// Shadows the blocking `wasi:io/poll` and `wasi:io/streams` calls that
/// `wasmtime_wasi::p2::add_to_linker_sync` defined (same names and versions, since the same
/// generated bindings define them) with deadline-aware ones. Call it after that.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<HostState, Deadlined>(linker, guarded)?;
    streams::add_to_linker::<HostState, Deadlined>(linker, guarded)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI resource table, seen through the invocation's deadline.
pub(super) struct Guarded<'a> {
    table: &'a mut ResourceTable,
    deadline: Instant,
}

struct Deadlined;

impl HasData for Deadlined {
    type Data<'a> = Guarded<'a>;
}

fn guarded(s: &mut HostState) -> Guarded<'_> {
    let deadline = s.deadline;
    Guarded {
        table: s.ctx().table,
        deadline,
    }
}

/// Runs `fut` to completion, or until `deadline`. Like wasmtime-wasi's sync shims, it blocks on
/// the ambient tokio runtime.
fn within<F: Future>(
    deadline: Instant,
    call: &'static str,
    fut: F,
) -> Result<F::Output, DeadlineExceeded> {
    in_tokio(async move {
        tokio::time::timeout_at(deadline.into(), fut)
            .await
            .map_err(|_| DeadlineExceeded { call })
    })
}

/// [`within`] for a stream call: the deadline is a trap, not a stream error.
fn stream_within<T>(
    deadline: Instant,
    call: &'static str,
    fut: impl Future<Output = StreamResult<T>>,
) -> StreamResult<T> {
    within(deadline, call, fut).map_err(|e| StreamError::Trap(e.into()))?
}

impl poll::Host for Guarded<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let fut = async_poll::Host::poll(&mut *self.table, pollables);
        within(self.deadline, "wasi:io/poll.poll", fut)?
    }
}

impl poll::HostPollable for Guarded<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        <ResourceTable as poll::HostPollable>::ready(self.table, pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let fut = async_poll::HostPollable::block(&mut *self.table, pollable);
        within(self.deadline, "wasi:io/poll.[method]pollable.block", fut)?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        <ResourceTable as poll::HostPollable>::drop(self.table, pollable)
    }
}

impl streams::Host for Guarded<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        <ResourceTable as streams::Host>::convert_stream_error(self.table, err)
    }
}

impl streams::HostInputStream for Guarded<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        let fut = AsyncInputStream::drop(&mut *self.table, stream);
        within(self.deadline, "wasi:io/streams.[drop]input-stream", fut)?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        <ResourceTable as streams::HostInputStream>::read(self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        let fut = AsyncInputStream::blocking_read(&mut *self.table, stream, len);
        stream_within(
            self.deadline,
            "wasi:io/streams.[method]input-stream.blocking-read",
            fut,
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        <ResourceTable as streams::HostInputStream>::skip(self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        let fut = AsyncInputStream::blocking_skip(&mut *self.table, stream, len);
        stream_within(
            self.deadline,
            "wasi:io/streams.[method]input-stream.blocking-skip",
            fut,
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        <ResourceTable as streams::HostInputStream>::subscribe(self.table, stream)
    }
}

impl streams::HostOutputStream for Guarded<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        let fut = AsyncOutputStream::drop(&mut *self.table, stream);
        within(self.deadline, "wasi:io/streams.[drop]output-stream", fut)?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        <ResourceTable as streams::HostOutputStream>::check_write(self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        <ResourceTable as streams::HostOutputStream>::write(self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        let fut = AsyncOutputStream::blocking_write_and_flush(&mut *self.table, stream, bytes);
        let call = "wasi:io/streams.[method]output-stream.blocking-write-and-flush";
        stream_within(self.deadline, call, fut)
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        let fut = AsyncOutputStream::blocking_write_zeroes_and_flush(&mut *self.table, stream, len);
        let call = "wasi:io/streams.[method]output-stream.blocking-write-zeroes-and-flush";
        stream_within(self.deadline, call, fut)
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        <ResourceTable as streams::HostOutputStream>::subscribe(self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        <ResourceTable as streams::HostOutputStream>::write_zeroes(self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        <ResourceTable as streams::HostOutputStream>::flush(self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        // As wasmtime-wasi's own sync shim does: the async call takes the stream as a borrow.
        let stream = Resource::new_borrow(stream.rep());
        let fut = AsyncOutputStream::blocking_flush(&mut *self.table, stream);
        let call = "wasi:io/streams.[method]output-stream.blocking-flush";
        stream_within(self.deadline, call, fut)
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        <ResourceTable as streams::HostOutputStream>::splice(self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        let fut = AsyncOutputStream::blocking_splice(&mut *self.table, dst, src, len);
        let call = "wasi:io/streams.[method]output-stream.blocking-splice";
        stream_within(self.deadline, call, fut)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use wasmtime_wasi::p2::{Pollable, subscribe};

    use super::*;
    use crate::runtime::{Failure, Limits};
    use crate::store::MemoryStore;

    /// A pollable that is never ready, like a sleep far past the deadline.
    struct Never;

    #[wasmtime_wasi::async_trait]
    impl Pollable for Never {
        async fn ready(&mut self) {
            std::future::pending::<()>().await
        }
    }

    struct Ready;

    #[wasmtime_wasi::async_trait]
    impl Pollable for Ready {
        async fn ready(&mut self) {}
    }

    fn pollable<T: Pollable>(table: &mut ResourceTable, p: T) -> Resource<DynPollable> {
        let r = table.push(p).unwrap();
        subscribe(table, r).unwrap()
    }

    fn guard(table: &mut ResourceTable, in_ms: u64) -> Guarded<'_> {
        Guarded {
            table,
            deadline: Instant::now() + Duration::from_millis(in_ms),
        }
    }

    #[test]
    fn block_on_a_pollable_that_is_never_ready_stops_at_the_deadline() {
        let mut table = ResourceTable::new();
        let p = pollable(&mut table, Never);
        let start = Instant::now();
        let e = poll::HostPollable::block(&mut guard(&mut table, 50), p).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(exceeded(&e), "{e:#}");
        assert_eq!(
            e.to_string(),
            "deadline reached while blocked in wasi:io/poll.[method]pollable.block"
        );
    }

    #[test]
    fn poll_stops_at_the_deadline_and_returns_ready_pollables_before_it() {
        let mut table = ResourceTable::new();
        let never = pollable(&mut table, Never);
        let e = poll::Host::poll(&mut guard(&mut table, 50), vec![never]).unwrap_err();
        assert!(exceeded(&e), "{e:#}");

        let never = pollable(&mut table, Never);
        let ready = pollable(&mut table, Ready);
        let r = poll::Host::poll(&mut guard(&mut table, 60_000), vec![never, ready]).unwrap();
        assert_eq!(r, vec![1]);
        // Past the deadline, a ready pollable is still reported: only waiting is cut short.
        let ready = pollable(&mut table, Ready);
        poll::HostPollable::block(&mut guard(&mut table, 0), ready).unwrap();
    }

    #[test]
    fn a_deadline_in_a_host_call_is_classified_as_a_timeout() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        let state = HostState::new(super::super::host::Wiring {
            name: "f",
            ns: "f".into(),
            store: Arc::new(MemoryStore::new()),
            emits_to: Arc::new(HashSet::new()),
            rt: rt.handle().clone(),
            memory_cap: 1 << 20,
            deadline,
            calls: Arc::new(crate::outbound::Outbound::none("f")).calls("m", deadline),
            config: Arc::default(),
            redactor: Arc::default(),
            speculate: false,
        });
        let limits = Limits {
            memory_bytes: 1 << 20,
            timeout: Duration::from_millis(300),
        };
        let call = "wasi:io/poll.poll";
        let e = wasmtime::Error::new(DeadlineExceeded { call }).context("wasm backtrace");
        assert_eq!(
            super::super::classify_trap(e, &state, &limits),
            Failure::Timeout(limits.timeout)
        );
        let other = wasmtime::Error::msg("unreachable");
        assert!(matches!(
            super::super::classify_trap(other, &state, &limits),
            Failure::Trap(_)
        ));
    }

    #[test]
    fn shadows_what_the_sync_wasi_linker_defined() {
        let engine = wasmtime::Engine::default();
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        add_to_linker(&mut linker).unwrap();
    }
}
