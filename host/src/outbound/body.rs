//! A response body cut off at the grant's size bound. It also holds the destination's
//! concurrency slot, so a request counts as in flight until its answer is read or dropped.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::Error as HttpErr;

pub(super) struct Bounded {
    inner: Incoming,
    left: u64,
    limit: u64,
    _slot: OwnedSemaphorePermit,
}

impl Bounded {
    pub(super) fn new(inner: Incoming, limit: u64, slot: OwnedSemaphorePermit) -> Self {
        Bounded {
            inner,
            left: limit,
            limit,
            _slot: slot,
        }
    }
}

impl Body for Bounded {
    type Data = Bytes;
    type Error = HttpErr;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpErr>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => Poll::Ready(None),
            Some(Err(e)) => Poll::Ready(Some(Err(HttpErr::from(e)))),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.left {
                        this.left = 0;
                        return Poll::Ready(Some(Err(HttpErr::HttpResponseBodySize(Some(
                            this.limit,
                        )))));
                    }
                    this.left -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
