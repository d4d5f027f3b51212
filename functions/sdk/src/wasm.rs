//! The wasm32 side: bindings generated from `levee.wit`, the [`WasmContext`] that calls the
//! host imports (outbound HTTP through `wasi_http.rs`, from `dyn Context::http`), and the glue behind
//! [`export!`](crate::export).

use crate::{Context, Error, Message, Page};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "capability",
        pub_export_macro: true,
        export_macro_name: "__export_capability",
        default_bindings_module: "::levee_sdk::__bindings",
        generate_all,
    });
}

use bindings::levee::function::{emit, kv, types};
use bindings::wasi::config::store as config;

impl From<types::Error> for Error {
    fn from(e: types::Error) -> Self {
        match e {
            types::Error::Retryable(m) => Error::Retryable(m),
            types::Error::Permanent(m) => Error::Permanent(m),
        }
    }
}

impl From<Error> for types::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Retryable(m) => types::Error::Retryable(m),
            Error::Permanent(m) => types::Error::Permanent(m),
        }
    }
}

/// The [`Context`] backed by the host's `kv` and `emit` imports.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmContext;

impl Context for WasmContext {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(kv::get(key)?)
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
        Ok(kv::put(key, value)?)
    }

    fn put_if_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, Error> {
        Ok(kv::put_if_absent(key, value)?)
    }

    fn delete(&mut self, key: &str) -> Result<(), Error> {
        Ok(kv::delete(key)?)
    }

    fn add(&mut self, key: &str, by: i64) -> Result<(), Error> {
        Ok(kv::add(key, by)?)
    }

    fn scan(&mut self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Page, Error> {
        let page = kv::scan(prefix, cursor, limit)?;
        Ok(Page {
            entries: page.entries.into_iter().map(|e| (e.key, e.value)).collect(),
            next: page.next,
        })
    }

    fn send(&mut self, function: &str, body: &[u8]) -> Result<(), Error> {
        Ok(emit::send(function, body)?)
    }

    fn config(&mut self, key: &str) -> Result<Option<String>, Error> {
        config::get(key).map_err(|e| Error::retryable(format!("config `{key}`: {e:?}")))
    }

    // Not `http`: `dyn Context::http` sends through `wasi_http` itself, so that a component
    // whose handler never calls it has no `wasi:http` imports.
    fn host_http(&self) -> bool {
        true
    }
}

/// Runs `handler` on one delivery; called by the code `export!` generates.
#[doc(hidden)]
pub fn dispatch(msg: types::Message, handler: crate::Handler) -> Result<(), types::Error> {
    let msg = Message {
        id: msg.id,
        body: msg.body,
        attributes: msg.attributes,
        receive_count: msg.receive_count,
    };
    handler(&msg, &mut WasmContext).map_err(Into::into)
}
