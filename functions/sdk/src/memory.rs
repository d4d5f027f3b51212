//! An in-memory [`Context`]: a real kv map and a record of emitted messages, with the host's
//! key, value and scan limits. Unit tests run handlers against it, and the host's native
//! baseline benchmark uses it to time a handler without Wasm.
//!
//! Used directly, every call applies at once. [`MemoryContext::invoke`] (or
//! [`MemoryContext::transaction`]) runs a handler the way the host does: writes and emits are
//! buffered, visible to the handler's own reads and scans, and applied only if it returns `Ok`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::de::DeserializeOwned;

use crate::context::{MAX_SCAN_LIMIT, Page};
use crate::http::{Request, Response};
use crate::{Context, Error, Message};

/// Longest kv key the host accepts, in bytes (same as the host store).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest kv value the host accepts, in bytes (same as the host store).
pub const MAX_VALUE_LEN: usize = 350 * 1024;
/// Most distinct keys one invocation may write (put, put-if-absent that wrote, delete).
pub const MAX_TXN_KEYS: usize = 1000;
/// Most bytes of values one invocation may have buffered for commit.
pub const MAX_TXN_BYTES: usize = 8 << 20;

/// A message a handler emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The receiving function.
    pub function: String,
    /// The message body.
    pub body: Vec<u8>,
}

impl Emitted {
    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::permanent(format!(
                "message emitted to \"{}\" is not the expected JSON: {e}",
                self.function
            ))
        })
    }
}

/// What a [`MemoryContext`] answers outbound requests with.
type Respond = dyn Fn(&Request) -> Result<Response, Error> + Send + Sync;

#[derive(Clone)]
struct Responder(std::sync::Arc<Respond>);

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

/// An in-memory kv namespace plus the messages emitted so far, config values, and outbound
/// requests answered by a closure (and recorded).
#[derive(Debug, Clone, Default)]
pub struct MemoryContext {
    kv: BTreeMap<String, Vec<u8>>,
    emitted: Vec<Emitted>,
    emits_to: Option<BTreeSet<String>>,
    failure: Option<Error>,
    writes: u64,
    config: BTreeMap<String, String>,
    responder: Option<Responder>,
    requests: Vec<Request>,
}

impl MemoryContext {
    /// An empty namespace that may emit to any function.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a config value (what `[functions.NAME.config]` or `.secrets` would give).
    pub fn with_config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_string(), value.to_string());
        self
    }

    /// Answers every outbound request with `respond` (without it, requests fail permanently).
    pub fn respond_with(
        &mut self,
        respond: impl Fn(&Request) -> Result<Response, Error> + Send + Sync + 'static,
    ) {
        self.responder = Some(Responder(std::sync::Arc::new(respond)));
    }

    /// The outbound requests made so far, in order (committed or not: they are effects).
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// Sends `request` to the responder, as `http` on a `&mut dyn Context` does (so tests can
    /// call it on the context itself).
    pub fn http(&mut self, request: &Request) -> Result<Response, Error> {
        self.do_http(request)
    }

    fn do_http(&mut self, request: &Request) -> Result<Response, Error> {
        self.requests.push(request.clone());
        match &self.responder {
            Some(r) => (r.0)(request),
            None => Err(Error::permanent(format!(
                "outbound request to {} failed: denied: no responder set (MemoryContext::respond_with)",
                request.url
            ))),
        }
    }

    /// Restricts `send` to these functions, like the manifest's `emits_to`.
    pub fn with_emits_to<I, S>(mut self, functions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.emits_to = Some(functions.into_iter().map(Into::into).collect());
        self
    }

    /// Makes every following kv and emit call fail with `error` (a store outage), or heals
    /// it with `None`.
    pub fn fail_with(&mut self, error: Option<Error>) {
        self.failure = error;
    }

    /// The raw value under `key`.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.kv.get(key).map(Vec::as_slice)
    }

    /// The value under `key` parsed as JSON.
    pub fn read_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.value(key)
            .map(|bytes| {
                serde_json::from_slice(bytes).map_err(|e| {
                    Error::permanent(format!(
                        "kv value at \"{key}\" is not the expected JSON: {e}"
                    ))
                })
            })
            .transpose()
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.kv.keys().map(String::as_str)
    }

    /// How many successful writes (put, put_if_absent that wrote, delete) happened.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Every message emitted so far, in order.
    pub fn emitted(&self) -> &[Emitted] {
        &self.emitted
    }

    /// The messages emitted to `function`.
    pub fn emitted_to<'a>(&'a self, function: &'a str) -> impl Iterator<Item = &'a Emitted> {
        self.emitted.iter().filter(move |e| e.function == function)
    }

    /// Takes the emitted messages, leaving none recorded.
    pub fn take_emitted(&mut self) -> Vec<Emitted> {
        std::mem::take(&mut self.emitted)
    }

    /// Runs `handler` on `msg` as the host does: one transaction whose kv writes and emits are
    /// applied only if it returns `Ok`; on an error nothing it did is kept.
    pub fn invoke<F>(&mut self, handler: F, msg: &Message) -> Result<(), Error>
    where
        F: FnOnce(&Message, &mut dyn Context) -> Result<(), Error>,
    {
        let mut txn = self.transaction();
        handler(msg, &mut txn)?;
        txn.commit();
        Ok(())
    }

    /// A buffered view of this namespace: a [`Context`] whose writes and emits are applied by
    /// [`Transaction::commit`] and discarded when it is dropped without one. Reads and scans
    /// see its own writes; the per-invocation limits ([`MAX_TXN_KEYS`], [`MAX_TXN_BYTES`])
    /// apply.
    pub fn transaction(&mut self) -> Transaction<'_> {
        Transaction {
            base: self,
            writes: BTreeMap::new(),
            bytes: 0,
            emitted: Vec::new(),
        }
    }

    fn check(&self, key: &str, value: Option<&[u8]>) -> Result<(), Error> {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::permanent(format!(
                "kv key must be 1 to {MAX_KEY_LEN} bytes, got {}",
                key.len()
            )));
        }
        match value {
            Some(v) if v.len() > MAX_VALUE_LEN => Err(Error::permanent(format!(
                "kv value must be at most {MAX_VALUE_LEN} bytes, got {}",
                v.len()
            ))),
            _ => Ok(()),
        }
    }
}

impl Context for MemoryContext {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.check(key, None)?;
        Ok(self.kv.get(key).cloned())
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.check(key, Some(value))?;
        self.kv.insert(key.to_string(), value.to_vec());
        self.writes += 1;
        Ok(())
    }

    fn put_if_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, Error> {
        self.check(key, Some(value))?;
        if self.kv.contains_key(key) {
            return Ok(false);
        }
        self.kv.insert(key.to_string(), value.to_vec());
        self.writes += 1;
        Ok(true)
    }

    fn delete(&mut self, key: &str) -> Result<(), Error> {
        self.check(key, None)?;
        if self.kv.remove(key).is_some() {
            self.writes += 1;
        }
        Ok(())
    }

    fn scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Page, Error> {
        self.check_scan(prefix, limit)?;
        Ok(scan(&self.kv, &NO_WRITES, prefix, cursor, limit))
    }

    fn send(&mut self, function: &str, body: &[u8]) -> Result<(), Error> {
        let emitted = self.check_send(function, body)?;
        self.emitted.push(emitted);
        Ok(())
    }

    fn config(&mut self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.config.get(key).cloned())
    }

    fn outbound_http(&mut self, request: &Request) -> Result<Response, Error> {
        self.do_http(request)
    }
}

impl MemoryContext {
    fn check_scan(&self, prefix: &str, limit: u32) -> Result<(), Error> {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        if prefix.len() > MAX_KEY_LEN {
            return Err(Error::permanent(format!(
                "kv scan prefix must be at most {MAX_KEY_LEN} bytes, got {}",
                prefix.len()
            )));
        }
        if !(1..=MAX_SCAN_LIMIT).contains(&limit) {
            return Err(Error::permanent(format!(
                "kv scan limit must be 1 to {MAX_SCAN_LIMIT}, got {limit}"
            )));
        }
        Ok(())
    }

    fn check_send(&self, function: &str, body: &[u8]) -> Result<Emitted, Error> {
        if let Some(e) = &self.failure {
            return Err(e.clone());
        }
        if let Some(allowed) = &self.emits_to
            && !allowed.contains(function)
        {
            let list: Vec<&str> = allowed.iter().map(String::as_str).collect();
            return Err(Error::permanent(format!(
                "emit to \"{function}\" is not allowed: emits_to is [{}]",
                list.join(", ")
            )));
        }
        Ok(Emitted {
            function: function.to_string(),
            body: body.to_vec(),
        })
    }
}

/// Buffered writes: `Some(value)` for a put, `None` for a delete.
type Writes = BTreeMap<String, Option<Vec<u8>>>;

static NO_WRITES: Writes = BTreeMap::new();

/// A page of `kv` with `writes` laid over it: keys starting with `prefix`, after `cursor`,
/// at most `limit`; `next` is the last key returned when more follow.
fn scan(
    kv: &BTreeMap<String, Vec<u8>>,
    writes: &Writes,
    prefix: &str,
    cursor: Option<&str>,
    limit: u32,
) -> Page {
    let start = match cursor {
        Some(c) if c >= prefix => Bound::Excluded(c),
        _ => Bound::Included(prefix),
    };
    let bounds = (start, Bound::Unbounded);
    let mut stored = kv
        .range::<str, _>(bounds)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k, Some(v)))
        .peekable();
    let mut buffered = writes
        .range::<str, _>(bounds)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k, v.as_ref()))
        .peekable();
    let mut page = Page::default();
    loop {
        let (key, value) = match (stored.peek(), buffered.peek()) {
            (None, None) => break,
            (Some(_), None) => stored.next(),
            (None, Some(_)) => buffered.next(),
            (Some((a, _)), Some((b, _))) => match a.cmp(b) {
                std::cmp::Ordering::Less => stored.next(),
                std::cmp::Ordering::Greater => buffered.next(),
                std::cmp::Ordering::Equal => {
                    stored.next();
                    buffered.next()
                }
            },
        }
        .expect("peeked");
        let Some(value) = value else { continue };
        if page.entries.len() == limit as usize {
            page.next = page.entries.last().map(|(k, _)| k.clone());
            break;
        }
        page.entries.push((key.clone(), value.clone()));
    }
    page
}

/// A handler's view of a [`MemoryContext`] during one invocation: writes and emits are
/// buffered until [`commit`](Transaction::commit); dropping it discards them.
#[derive(Debug)]
pub struct Transaction<'a> {
    base: &'a mut MemoryContext,
    writes: Writes,
    bytes: usize,
    emitted: Vec<Emitted>,
}

impl Transaction<'_> {
    /// Applies the buffered writes and emits to the namespace.
    pub fn commit(self) {
        let base = self.base;
        for (key, value) in self.writes {
            match value {
                Some(value) => {
                    base.kv.insert(key, value);
                    base.writes += 1;
                }
                None => {
                    if base.kv.remove(&key).is_some() {
                        base.writes += 1;
                    }
                }
            }
        }
        base.emitted.extend(self.emitted);
    }

    /// The messages emitted so far in this transaction.
    pub fn emitted(&self) -> &[Emitted] {
        &self.emitted
    }

    fn buffer(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), Error> {
        let old = match self.writes.get(key) {
            Some(old) => old.as_ref().map_or(0, Vec::len),
            None if self.writes.len() >= MAX_TXN_KEYS => {
                return Err(Error::permanent(format!(
                    "an invocation may write at most {MAX_TXN_KEYS} distinct kv keys"
                )));
            }
            None => 0,
        };
        let bytes = self.bytes - old + value.map_or(0, <[u8]>::len);
        if bytes > MAX_TXN_BYTES {
            return Err(Error::permanent(format!(
                "an invocation may write at most {MAX_TXN_BYTES} bytes of kv values, got {bytes}"
            )));
        }
        self.bytes = bytes;
        self.writes
            .insert(key.to_string(), value.map(<[u8]>::to_vec));
        Ok(())
    }
}

impl Context for Transaction<'_> {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.base.check(key, None)?;
        Ok(match self.writes.get(key) {
            Some(buffered) => buffered.clone(),
            None => self.base.kv.get(key).cloned(),
        })
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.base.check(key, Some(value))?;
        self.buffer(key, Some(value))
    }

    fn put_if_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, Error> {
        if self.get(key)?.is_some() {
            return Ok(false);
        }
        self.put(key, value)?;
        Ok(true)
    }

    fn delete(&mut self, key: &str) -> Result<(), Error> {
        self.base.check(key, None)?;
        self.buffer(key, None)
    }

    fn scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Page, Error> {
        self.base.check_scan(prefix, limit)?;
        Ok(scan(&self.base.kv, &self.writes, prefix, cursor, limit))
    }

    fn send(&mut self, function: &str, body: &[u8]) -> Result<(), Error> {
        let emitted = self.base.check_send(function, body)?;
        self.emitted.push(emitted);
        Ok(())
    }

    fn config(&mut self, key: &str) -> Result<Option<String>, Error> {
        Ok(self.base.config.get(key).cloned())
    }

    fn outbound_http(&mut self, request: &Request) -> Result<Response, Error> {
        self.base.do_http(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn kv_round_trip_and_put_if_absent() {
        let mut ctx = MemoryContext::new();
        assert_eq!(ctx.get("k").unwrap(), None);
        ctx.put("k", b"1").unwrap();
        assert!(!ctx.put_if_absent("k", b"2").unwrap());
        assert_eq!(ctx.get("k").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(ctx.put_if_absent("j", b"3").unwrap());
        ctx.delete("k").unwrap();
        ctx.delete("k").unwrap();
        assert_eq!(ctx.keys().collect::<Vec<_>>(), vec!["j"]);
        assert_eq!(ctx.writes(), 3);
    }

    #[test]
    fn http_reaches_the_responder_on_the_context_and_through_dyn_context() {
        let mut ctx = MemoryContext::new();
        let req = Request::post("https://x.example/a").body("1");
        assert!(ctx.http(&req).is_err(), "no responder set yet");
        ctx.respond_with(|r| Ok(Response::new(200, r.url.clone())));
        assert_eq!(ctx.http(&req).unwrap().status, 200);
        let dyn_ctx: &mut dyn Context = &mut ctx;
        let answer = dyn_ctx
            .http(&Request::post("https://x.example/b").body("2"))
            .unwrap();
        assert_eq!(answer.body, b"https://x.example/b");
        assert_eq!(ctx.requests().len(), 3);
    }

    #[test]
    fn json_helpers_round_trip() {
        let mut ctx = MemoryContext::new();
        let dyn_ctx: &mut dyn Context = &mut ctx;
        dyn_ctx.put_json("a", &json!({"n": 1})).unwrap();
        let v: Value = dyn_ctx.get_json("a").unwrap().unwrap();
        assert_eq!(v["n"], 1);
        assert!(dyn_ctx.put_json_if_absent("b", &[1, 2]).unwrap());
        dyn_ctx.emit_json("routing", &json!({"x": true})).unwrap();
        assert_eq!(ctx.read_json::<Vec<u8>>("b").unwrap(), Some(vec![1, 2]));
        let sent: Vec<_> = ctx.emitted_to("routing").collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].json::<Value>().unwrap()["x"], true);
    }

    #[test]
    fn corrupt_json_is_a_permanent_error_naming_the_key() {
        let mut ctx = MemoryContext::new();
        ctx.put("conv/x", b"{oops").unwrap();
        let e = (&mut ctx as &mut dyn Context)
            .get_json::<Value>("conv/x")
            .unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().contains("\"conv/x\""), "{e}");
    }

    #[test]
    fn host_limits_are_enforced() {
        let mut ctx = MemoryContext::new();
        assert!(
            ctx.put("", b"x")
                .unwrap_err()
                .message()
                .contains("kv key must be")
        );
        let big = vec![0u8; MAX_VALUE_LEN + 1];
        assert!(
            ctx.put("k", &big)
                .unwrap_err()
                .message()
                .contains("kv value must be")
        );
        assert!(ctx.put("k", &big[..MAX_VALUE_LEN]).is_ok());
    }

    #[test]
    fn emits_to_restricts_send() {
        let mut ctx = MemoryContext::new().with_emits_to(["notify"]);
        ctx.send("notify", b"{}").unwrap();
        let e = ctx.send("billing", b"{}").unwrap_err();
        assert_eq!(
            e.message(),
            r#"emit to "billing" is not allowed: emits_to is [notify]"#
        );
        assert_eq!(ctx.take_emitted().len(), 1);
        assert!(ctx.emitted().is_empty());
    }

    fn keys(page: &Page) -> Vec<&str> {
        page.entries.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn filled() -> MemoryContext {
        let mut ctx = MemoryContext::new();
        for k in ["a/1", "a/2", "a/3", "a/4", "a/5", "ab", "b/1", "a"] {
            ctx.put(k, k.as_bytes()).unwrap();
        }
        ctx
    }

    #[test]
    fn scan_pages_through_a_prefix_in_key_order() {
        let mut ctx = filled();
        let first = ctx.scan("a/", None, 2).unwrap();
        assert_eq!(keys(&first), vec!["a/1", "a/2"]);
        assert_eq!(first.entries[0].1, b"a/1");
        assert_eq!(first.next.as_deref(), Some("a/2"));
        let second = ctx.scan("a/", first.next.as_deref(), 2).unwrap();
        assert_eq!(keys(&second), vec!["a/3", "a/4"]);
        let last = ctx.scan("a/", second.next.as_deref(), 2).unwrap();
        assert_eq!(keys(&last), vec!["a/5"]);
        assert_eq!(last.next, None);
        // Exactly `limit` items left: no next page, since nothing with the prefix follows.
        let exact = ctx.scan("a/", Some("a/3"), 2).unwrap();
        assert_eq!(
            (keys(&exact), exact.next.as_deref()),
            (vec!["a/4", "a/5"], None)
        );
        assert!(ctx.scan("c", None, 10).unwrap().entries.is_empty());
        // A cursor before the prefix starts at the prefix; the empty prefix is everything.
        assert_eq!(keys(&ctx.scan("b/", Some("a"), 10).unwrap()), vec!["b/1"]);
        assert_eq!(ctx.scan("", None, 1000).unwrap().entries.len(), 8);
    }

    #[test]
    fn scan_limits_are_the_hosts() {
        let mut ctx = filled();
        for limit in [0, MAX_SCAN_LIMIT + 1] {
            let e = ctx.scan("a/", None, limit).unwrap_err();
            assert!(!e.is_retryable());
            assert_eq!(
                e.message(),
                format!("kv scan limit must be 1 to 1000, got {limit}")
            );
        }
        assert!(ctx.scan("a/", None, MAX_SCAN_LIMIT).is_ok());
        ctx.fail_with(Some(Error::retryable("store unavailable")));
        assert!(ctx.scan("a/", None, 1).unwrap_err().is_retryable());
    }

    #[test]
    fn scan_all_follows_cursors_up_to_the_bound() {
        let mut ctx = MemoryContext::new();
        for i in 0..2500 {
            ctx.put(&format!("p/{i:05}"), b"1").unwrap();
        }
        ctx.put("q", b"1").unwrap();
        let dyn_ctx: &mut dyn Context = &mut ctx;
        let all = dyn_ctx.scan_all("p/", 10_000).unwrap();
        assert_eq!((all.entries.len(), all.next), (2500, None));
        assert_eq!(all.entries[1234].0, "p/01234");
        let bounded = dyn_ctx.scan_all("p/", 1500).unwrap();
        assert_eq!(bounded.entries.len(), 1500);
        assert_eq!(bounded.next.as_deref(), Some("p/01499"));
        let exact = dyn_ctx.scan_all("p/", 2500).unwrap();
        assert_eq!((exact.entries.len(), exact.next), (2500, None));
        assert!(dyn_ctx.scan_all("p/", 0).unwrap().entries.is_empty());
        dyn_ctx.put_json("j/x", &json!({"n": 1})).unwrap();
        dyn_ctx.put("j/y", b"nope").unwrap();
        let e = dyn_ctx.scan_json::<Value>("j/", 10).unwrap_err();
        assert!(e.message().contains("\"j/y\""), "{e}");
        let parsed = dyn_ctx.scan_json::<Value>("j/", 1).unwrap();
        assert_eq!(parsed.entries, vec![("j/x".to_string(), json!({"n": 1}))]);
        assert_eq!(parsed.next.as_deref(), Some("j/x"));
    }

    #[test]
    fn update_json_writes_only_changes_and_none_deletes() {
        let mut ctx = MemoryContext::new();
        let dyn_ctx: &mut dyn Context = &mut ctx;
        let v = dyn_ctx
            .update_json::<Vec<u32>, _>("l", |old| {
                assert_eq!(old, None);
                Ok(Some(vec![1]))
            })
            .unwrap();
        assert_eq!(v, Some(vec![1]));
        let pushed = dyn_ctx
            .update_json::<Vec<u32>, _>("l", |old| {
                let mut l = old.unwrap();
                l.push(2);
                Ok(Some(l))
            })
            .unwrap();
        assert_eq!(pushed, Some(vec![1, 2]));
        dyn_ctx.update_json::<Vec<u32>, _>("l", Ok).unwrap();
        let e = dyn_ctx
            .update_json::<Vec<u32>, _>("l", |_| Err(Error::permanent("no")))
            .unwrap_err();
        assert_eq!(e, Error::permanent("no"));
        assert_eq!(ctx.writes(), 2, "an unchanged value is not rewritten");
        let dyn_ctx: &mut dyn Context = &mut ctx;
        assert_eq!(
            dyn_ctx
                .update_json::<Vec<u32>, _>("l", |_| Ok(None))
                .unwrap(),
            None
        );
        assert_eq!(ctx.value("l"), None);
        ctx.put("bad", b"{").unwrap();
        let e = (&mut ctx as &mut dyn Context)
            .update_json::<Vec<u32>, _>("bad", |_| Ok(None))
            .unwrap_err();
        assert!(e.message().contains("\"bad\""), "{e}");
    }

    #[test]
    fn incr_counts_and_refuses_to_overflow() {
        let mut ctx = MemoryContext::new();
        let dyn_ctx: &mut dyn Context = &mut ctx;
        assert_eq!(dyn_ctx.incr("n", 1).unwrap(), 1);
        assert_eq!(dyn_ctx.incr("n", 5).unwrap(), 6);
        assert_eq!(dyn_ctx.incr("n", -7).unwrap(), -1);
        assert_eq!(dyn_ctx.incr("n", 0).unwrap(), -1);
        assert_eq!(dyn_ctx.incr("absent", 0).unwrap(), 0);
        assert_eq!(ctx.value("n"), Some(&b"-1"[..]));
        assert_eq!(ctx.value("absent"), None);
        ctx.put("big", i64::MAX.to_string().as_bytes()).unwrap();
        let e = (&mut ctx as &mut dyn Context).incr("big", 1).unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().contains("overflow"), "{e}");
    }

    fn bump_and_emit(msg: &Message, ctx: &mut dyn Context) -> Result<(), Error> {
        ctx.incr("n", 1)?;
        ctx.put("seen", msg.id.as_bytes())?;
        ctx.emit_json("next", &json!({"id": msg.id}))?;
        if msg.text()? == "fail" {
            return Err(Error::retryable("failing after the writes"));
        }
        Ok(())
    }

    #[test]
    fn invoke_commits_on_ok_and_discards_everything_on_error() {
        let mut ctx = MemoryContext::new();
        ctx.invoke(bump_and_emit, &Message::new("m1", "ok"))
            .unwrap();
        let e = ctx
            .invoke(bump_and_emit, &Message::new("m2", "fail"))
            .unwrap_err();
        assert!(e.is_retryable());
        assert_eq!(ctx.read_json::<i64>("n").unwrap(), Some(1));
        assert_eq!(ctx.value("seen"), Some(&b"m1"[..]));
        assert_eq!(ctx.emitted().len(), 1);
        assert_eq!(ctx.writes(), 2);
        // An emit that is not allowed fails the invocation after its writes: none are kept.
        let mut strict = MemoryContext::new().with_emits_to(["other"]);
        assert!(
            strict
                .invoke(bump_and_emit, &Message::new("m1", "ok"))
                .is_err()
        );
        assert_eq!(strict.keys().count(), 0);
    }

    #[test]
    fn a_transaction_sees_its_own_writes_in_gets_and_scans() {
        let mut ctx = filled();
        let mut txn = ctx.transaction();
        txn.put("a/2", b"new").unwrap();
        txn.delete("a/3").unwrap();
        txn.put("a/33", b"added").unwrap();
        assert!(!txn.put_if_absent("a/33", b"again").unwrap());
        assert!(txn.put_if_absent("a/3", b"back").unwrap());
        txn.delete("a/3").unwrap();
        assert_eq!(txn.get("a/2").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(txn.get("a/3").unwrap(), None);
        let page = txn.scan("a/", None, 3).unwrap();
        assert_eq!(keys(&page), vec!["a/1", "a/2", "a/33"]);
        assert_eq!(page.entries[1].1, b"new");
        let rest = txn.scan("a/", page.next.as_deref(), 3).unwrap();
        assert_eq!(
            (keys(&rest), rest.next.as_deref()),
            (vec!["a/4", "a/5"], None)
        );
        drop(txn);
        assert_eq!(ctx.value("a/2"), Some(&b"a/2"[..]), "dropped: discarded");
        let mut txn = ctx.transaction();
        txn.put("a/2", b"new").unwrap();
        txn.delete("a/3").unwrap();
        txn.send("x", b"{}").unwrap();
        assert_eq!(txn.emitted().len(), 1);
        txn.commit();
        assert_eq!(ctx.value("a/2"), Some(&b"new"[..]));
        assert_eq!(ctx.value("a/3"), None);
        assert_eq!(ctx.emitted().len(), 1);
    }

    #[test]
    fn a_transaction_bounds_its_buffered_writes() {
        let mut ctx = MemoryContext::new();
        let mut txn = ctx.transaction();
        for i in 0..MAX_TXN_KEYS {
            txn.put(&format!("k{i}"), b"1").unwrap();
        }
        txn.put("k0", b"rewriting a buffered key is fine").unwrap();
        let e = txn.put("one-more", b"1").unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().contains("at most 1000 distinct kv keys"), "{e}");
        drop(txn);
        let mut txn = ctx.transaction();
        let value = vec![0u8; MAX_VALUE_LEN];
        let mut i = 0;
        let e = loop {
            if let Err(e) = txn.put(&format!("big{i}"), &value) {
                break e;
            }
            i += 1;
        };
        assert_eq!(i, MAX_TXN_BYTES / MAX_VALUE_LEN);
        assert!(e.message().contains("at most 8388608 bytes"), "{e}");
    }

    #[test]
    fn injected_failures_surface_until_healed() {
        let mut ctx = MemoryContext::new();
        ctx.fail_with(Some(Error::retryable("store unavailable")));
        assert!(ctx.get("k").unwrap_err().is_retryable());
        assert!(ctx.send("x", b"").unwrap_err().is_retryable());
        ctx.fail_with(None);
        assert!(ctx.get("k").is_ok());
    }
}
