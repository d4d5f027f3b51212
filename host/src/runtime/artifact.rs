//! Compiled-artifact cache: components are compiled once and kept on disk under a key made of
//! the module's hash and the engine's compatibility hash, so a restart loads them in microseconds.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Error, Result};

/// The version of a module: the first 12 hex digits of its SHA-256 (what `/metrics`, the logs
/// and `levee status` show).
pub fn version_of(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..6])
}

/// Loads `module` as a component, from the cache when a compatible artifact exists, with its
/// version.
pub(super) fn load(
    engine: &Engine,
    module: &Path,
    cache_dir: Option<&Path>,
) -> Result<(Component, String)> {
    super::check_module_file(module)?;
    let bytes =
        std::fs::read(module).map_err(|e| Error::io(format!("reading {}", module.display()), e))?;
    let version = version_of(&bytes);
    load_bytes(engine, module, &bytes, cache_dir).map(|c| (c, version))
}

/// Like [`load`], for a module already in memory (a deployed version, from blobs); `origin`
/// names it in errors.
pub(super) fn load_bytes(
    engine: &Engine,
    module: &Path,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Component> {
    let Some(dir) = cache_dir else {
        return compile(engine, module, bytes);
    };
    let path = artifact_path(engine, dir, bytes);
    if path.exists() {
        // SAFETY: the artifact was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is in the file name) into Levee's own data directory; wasmtime
        // also checks the header and refuses an incompatible artifact.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(artifact = %path.display(), "recompiling: cached artifact unusable: {e:#}")
            }
        }
    }
    let component = compile(engine, module, bytes)?;
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(artifact = %path.display(), "could not cache compiled artifact: {e}");
    }
    Ok(component)
}

fn compile(engine: &Engine, module: &Path, bytes: &[u8]) -> Result<Component> {
    Component::new(engine, bytes).map_err(|e| {
        Error::Runtime(format!(
            "{} is not a valid WebAssembly component (build guests with --target wasm32-wasip2): {e:#}",
            module.display()
        ))
    })
}

fn artifact_path(engine: &Engine, dir: &Path, bytes: &[u8]) -> PathBuf {
    let module_hash = hex::encode(&Sha256::digest(bytes)[..16]);
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!("{module_hash}-{:016x}.cwasm", h.finish()))
}

fn store(component: &Component, dir: &Path, path: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let bytes = component
        .serialize()
        .map_err(|e| Error::Runtime(format!("{e:#}")))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
}
