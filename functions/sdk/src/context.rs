//! What a handler can do besides computing: its kv namespace, emitting to other functions, its
//! config and secrets, and outbound HTTP.
//!
//! Every invocation is a transaction. The host buffers the handler's kv writes (its reads see
//! them) and commits them together with the emitted messages and the deletion of the source
//! message, only if the handler returns `Ok`. Every key the handler reads is version-checked at
//! commit: if another invocation changed it meanwhile, nothing is applied and the handler runs
//! again with fresh reads, at no attempt. So read-modify-write through `get` then `put` (or
//! `update_json`, `incr`) is correct under any
//! concurrency, and a handler may run more than once before one run commits: its only effect
//! outside kv and emit is outbound HTTP, which should go to providers that honour the
//! `idempotency-key` header the host adds.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::http::{Request, Response};

/// Most items one [`Context::scan`] call may ask for (the host's bound).
pub const MAX_SCAN_LIMIT: u32 = 1000;

/// A page of a scan: `(key, value)` items in key order, and the cursor of the next page if
/// more items with the prefix follow (pass it as `cursor` to continue).
///
/// `V` is the raw value (`Vec<u8>`) for [`Context::scan`] and the parsed type for
/// `scan_json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<V = Vec<u8>> {
    /// The items, in key order.
    pub entries: Vec<(String, V)>,
    /// The key to pass as `cursor` for the next page; `None` when this page is the last.
    pub next: Option<String>,
}

impl<V> Default for Page<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            next: None,
        }
    }
}

/// The capabilities the host grants a handler: its own kv namespace, `emit`, its config and
/// secrets, and outbound HTTP to the destinations it is granted.
///
/// Handlers take `&mut dyn Context`, so the same code runs against the host imports
/// (`WasmContext`, on wasm32) and against [`MemoryContext`](crate::MemoryContext)
/// (unit tests, native benchmarks). The JSON and read-modify-write helpers (`get_json`,
/// `put_json`, `emit_json`, `update_json`, `incr`, `scan_all`, ...) are methods of
/// `dyn Context`.
pub trait Context {
    /// The value stored under `key`, if any (the invocation's own writes included). The key's
    /// version is checked when the invocation commits.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores `value` under `key`, replacing any previous value (buffered until commit).
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Error>;
    /// Stores `value` only if `key` is absent; returns whether it wrote.
    fn put_if_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, Error>;
    /// Removes `key` (absent keys are fine).
    fn delete(&mut self, key: &str) -> Result<(), Error>;
    /// Up to `limit` items (1 to [`MAX_SCAN_LIMIT`]; anything else is a permanent error) whose
    /// keys start with `prefix`, in key order, after the key `cursor` (exclusive; the `next` of
    /// the previous page). Scans see the invocation's own writes but are not version-checked:
    /// a key another invocation adds meanwhile may be missing. `get` the keys that matter.
    fn scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Page, Error>;
    /// Adds `by` to the integer counter at `key` (a JSON integer; absent counts as 0) when the
    /// invocation commits, without reading it: concurrent adds to one counter never conflict,
    /// which makes this the way to keep hot counters (per team, per org). A later `get` of the
    /// key in the same invocation reads it (version-checked) with the delta applied. Use
    /// [`incr`](Self::incr) when the handler needs the new value. A stored value that is not an
    /// integer, or an overflow, fails the commit permanently.
    ///
    /// The default (for contexts without a blind add) is a read-modify-write.
    fn add(&mut self, key: &str, by: i64) -> Result<(), Error> {
        let now: i64 = match self.get(key)? {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| {
                    Error::permanent(format!(
                        "kv.add on \"{key}\": the stored value is not an integer"
                    ))
                })?,
        };
        let new = now.checked_add(by).ok_or_else(|| {
            Error::permanent(format!("kv.add on \"{key}\" would overflow: {now} + {by}"))
        })?;
        self.put(key, new.to_string().as_bytes())
    }
    /// Queues `body` for `function`; the host sends it only if the handler succeeds.
    fn send(&mut self, function: &str, body: &[u8]) -> Result<(), Error>;
    /// The manifest's `config` value or resolved secret named `key`
    /// (`[functions.NAME.config]`, `[functions.NAME.secrets]`), if any.
    fn config(&mut self, key: &str) -> Result<Option<String>, Error> {
        let _ = key;
        Ok(None)
    }
    /// What `http` on `dyn Context` does outside Wasm: handlers call `ctx.http(&request)`
    /// (see there), and test contexts such as [`MemoryContext`](crate::MemoryContext)
    /// implement this. The default makes no request.
    fn outbound_http(&mut self, request: &Request) -> Result<Response, Error> {
        Err(Error::permanent(format!(
            "this context makes no outbound requests ({} {})",
            request.method, request.url
        )))
    }
    /// Whether `http` on `dyn Context` goes to the host's `wasi:http` (the Wasm context).
    #[doc(hidden)]
    fn host_http(&self) -> bool {
        false
    }
}

impl dyn Context + '_ {
    /// Sends `request` and reads the whole answer (see [`crate::http`]): on wasm32 through the
    /// host's `wasi:http`, in tests through the context's [`Context::outbound_http`]. Unlike kv
    /// and emit this is an effect at once, not at commit: a handler that runs again sends
    /// again, so providers should dedupe on the `idempotency-key` header the host adds.
    ///
    /// Why here and not only in the trait: the Wasm context's `wasi:http` client is linked
    /// into a component only when its code calls this. A component without `wasi:http`
    /// imports has about 100 fewer host functions to bind per instance, which made a fresh
    /// no-op instance ~3 µs (about a fifth) cheaper (BENCHMARKS.md).
    pub fn http(&mut self, request: &Request) -> Result<Response, Error> {
        #[cfg(target_arch = "wasm32")]
        if self.host_http() {
            return crate::wasi_http::send(request);
        }
        self.outbound_http(request)
    }

    /// The JSON value under `key`. A stored value that is not valid JSON for `T` is a permanent
    /// error: redelivery would read the same bytes.
    pub fn get_json<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, Error> {
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => from_json(key, &bytes).map(Some),
        }
    }

    /// Stores `value` as JSON under `key`.
    pub fn put_json<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = to_json(value, &format!("kv value for \"{key}\""))?;
        self.put(key, &bytes)
    }

    /// Stores `value` as JSON under `key` if absent; returns whether it wrote.
    pub fn put_json_if_absent<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<bool, Error> {
        let bytes = to_json(value, &format!("kv value for \"{key}\""))?;
        self.put_if_absent(key, &bytes)
    }

    /// Queues `value` as a JSON message for `function`.
    pub fn emit_json<T: Serialize + ?Sized>(
        &mut self,
        function: &str,
        value: &T,
    ) -> Result<(), Error> {
        let bytes = to_json(value, &format!("message to \"{function}\""))?;
        self.send(function, &bytes)
    }

    /// Read-modify-write of the JSON value at `key`: `f` gets the current value (`None` if
    /// absent) and returns the new one; `Some` stores it, `None` deletes the key. Returns the
    /// new value. Nothing is written when the value does not change, and an error from `f` is
    /// returned as is (the invocation fails, so nothing it wrote is applied).
    ///
    /// Safe under concurrency: the invocation is a transaction and `key` is read, so if
    /// another invocation changes it before this one commits, this one runs again on the fresh
    /// value. `f` may therefore run more than once across runs; it must only compute.
    pub fn update_json<T, F>(&mut self, key: &str, f: F) -> Result<Option<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Option<T>) -> Result<Option<T>, Error>,
    {
        let old = self.get(key)?;
        let current = old.as_deref().map(|b| from_json(key, b)).transpose()?;
        let new = f(current)?;
        match &new {
            Some(value) => {
                let bytes = to_json(value, &format!("kv value for \"{key}\""))?;
                if old.as_deref() != Some(bytes.as_slice()) {
                    self.put(key, &bytes)?;
                }
            }
            None if old.is_some() => self.delete(key)?,
            None => {}
        }
        Ok(new)
    }

    /// Adds `by` to the counter at `key` (a JSON integer; absent counts as 0) and returns the
    /// new value. Overflowing `i64` is a permanent error; `by == 0` only reads.
    ///
    /// Exact under concurrency: the invocation is a transaction and the counter is read, so
    /// concurrent increments are never lost, and one that does not commit (the handler failed)
    /// never counts.
    pub fn incr(&mut self, key: &str, by: i64) -> Result<i64, Error> {
        if by == 0 {
            return Ok(self.get_json(key)?.unwrap_or(0));
        }
        let new = self.update_json::<i64, _>(key, |n| {
            let n = n.unwrap_or(0);
            n.checked_add(by).map(Some).ok_or_else(|| {
                Error::permanent(format!(
                    "kv counter at \"{key}\" would overflow: {n} + {by}"
                ))
            })
        })?;
        Ok(new.unwrap_or(0))
    }

    /// Up to `max_items` items whose keys start with `prefix`, following scan cursors page by
    /// page ([`MAX_SCAN_LIMIT`] at most per call). `next` is set when more items follow the
    /// bound (continue with [`Context::scan`] from it), `None` when this is all of them.
    ///
    /// Like every scan, it sees the invocation's own writes but is not version-checked: an item
    /// another invocation adds concurrently may be missing (read-committed, not serializable).
    pub fn scan_all(&mut self, prefix: &str, max_items: usize) -> Result<Page, Error> {
        let mut page = Page::default();
        let mut cursor: Option<String> = None;
        while page.entries.len() < max_items {
            let want = (max_items - page.entries.len()).min(MAX_SCAN_LIMIT as usize);
            let got = self.scan(prefix, cursor.as_deref(), want as u32)?;
            let progressed = !got.entries.is_empty();
            page.entries.extend(got.entries);
            match got.next {
                Some(next) if progressed => cursor = Some(next),
                _ => return Ok(page),
            }
        }
        if page.entries.len() > max_items {
            page.entries.truncate(max_items);
            cursor = page.entries.last().map(|(k, _)| k.clone());
        }
        page.next = cursor;
        Ok(page)
    }

    /// `scan_all` with every value parsed as JSON `T`; a value that does not
    /// parse is a permanent error naming its key.
    pub fn scan_json<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        max_items: usize,
    ) -> Result<Page<T>, Error> {
        let page = self.scan_all(prefix, max_items)?;
        let entries = page
            .entries
            .into_iter()
            .map(|(key, bytes)| {
                let value = from_json(&key, &bytes)?;
                Ok((key, value))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Page {
            entries,
            next: page.next,
        })
    }
}

fn from_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::permanent(format!(
            "kv value at \"{key}\" is not the expected JSON: {e}"
        ))
    })
}

fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::permanent(format!("{what} cannot be serialised as JSON: {e}")))
}
