//! An in-memory [`Context`]: a real kv map and a record of emitted messages, with the host's
//! key and value limits. Unit tests run handlers against it, and the host's native baseline
//! benchmark uses it to time a handler without Wasm.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use crate::{Context, Error};

/// Longest kv key the host accepts, in bytes (same as the host store).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest kv value the host accepts, in bytes (same as the host store).
pub const MAX_VALUE_LEN: usize = 350 * 1024;

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

/// An in-memory kv namespace plus the messages emitted so far.
#[derive(Debug, Clone, Default)]
pub struct MemoryContext {
    kv: BTreeMap<String, Vec<u8>>,
    emitted: Vec<Emitted>,
    emits_to: Option<BTreeSet<String>>,
    failure: Option<Error>,
    writes: u64,
}

impl MemoryContext {
    /// An empty namespace that may emit to any function.
    pub fn new() -> Self {
        Self::default()
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

    fn send(&mut self, function: &str, body: &[u8]) -> Result<(), Error> {
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
        self.emitted.push(Emitted {
            function: function.to_string(),
            body: body.to_vec(),
        });
        Ok(())
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
