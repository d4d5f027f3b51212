//! What a handler can do besides computing: its kv namespace and emitting to other functions.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// The capabilities the host grants a handler: its own kv namespace and `emit`.
///
/// Handlers take `&mut dyn Context`, so the same code runs against the host imports
/// (`WasmContext`, on wasm32) and against [`MemoryContext`](crate::MemoryContext)
/// (unit tests, native benchmarks). The JSON helpers (`get_json`, `put_json`, `emit_json`, ...)
/// are methods of `dyn Context`.
pub trait Context {
    /// The value stored under `key`, if any.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores `value` under `key`, replacing any previous value.
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Error>;
    /// Stores `value` only if `key` is absent; returns whether it wrote.
    fn put_if_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, Error>;
    /// Removes `key` (absent keys are fine).
    fn delete(&mut self, key: &str) -> Result<(), Error>;
    /// Queues `body` for `function`; the host sends it only if the handler succeeds.
    fn send(&mut self, function: &str, body: &[u8]) -> Result<(), Error>;
}

impl dyn Context + '_ {
    /// The JSON value under `key`. A stored value that is not valid JSON for `T` is a permanent
    /// error: redelivery would read the same bytes.
    pub fn get_json<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, Error> {
        get_json(self, key)
    }

    /// Stores `value` as JSON under `key`.
    pub fn put_json<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        put_json(self, key, value)
    }

    /// Stores `value` as JSON under `key` if absent; returns whether it wrote.
    pub fn put_json_if_absent<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<bool, Error> {
        put_json_if_absent(self, key, value)
    }

    /// Queues `value` as a JSON message for `function`.
    pub fn emit_json<T: Serialize + ?Sized>(
        &mut self,
        function: &str,
        value: &T,
    ) -> Result<(), Error> {
        emit_json(self, function, value)
    }
}

fn get_json<T: DeserializeOwned>(ctx: &mut dyn Context, key: &str) -> Result<Option<T>, Error> {
    match ctx.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::permanent(format!(
                "kv value at \"{key}\" is not the expected JSON: {e}"
            ))
        }),
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::permanent(format!("{what} cannot be serialised as JSON: {e}")))
}

fn put_json<T: Serialize + ?Sized>(
    ctx: &mut dyn Context,
    key: &str,
    value: &T,
) -> Result<(), Error> {
    let bytes = to_json(value, &format!("kv value for \"{key}\""))?;
    ctx.put(key, &bytes)
}

fn put_json_if_absent<T: Serialize + ?Sized>(
    ctx: &mut dyn Context,
    key: &str,
    value: &T,
) -> Result<bool, Error> {
    let bytes = to_json(value, &format!("kv value for \"{key}\""))?;
    ctx.put_if_absent(key, &bytes)
}

fn emit_json<T: Serialize + ?Sized>(
    ctx: &mut dyn Context,
    function: &str,
    value: &T,
) -> Result<(), Error> {
    let bytes = to_json(value, &format!("message to \"{function}\""))?;
    ctx.send(function, &bytes)
}
