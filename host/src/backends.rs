//! Chooses and opens the backends a manifest asks for.

use std::path::Path;
use std::sync::Arc;

use crate::embedded::EmbeddedDb;
use crate::manifest::{Backend, Manifest};
use crate::queue::Queue;
use crate::store::Store;
use crate::{Error, Result};

/// The queue and store a platform runs on.
pub struct Backends {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn Store>,
}

/// Name of the embedded database file inside the data directory.
pub const EMBEDDED_DB_FILE: &str = "levee.db";

/// Opens the backends for `manifest` (the data directory holds the embedded database).
pub async fn open(manifest: &Manifest, data_dir: &Path) -> Result<Backends> {
    match manifest.platform.backend {
        Backend::Embedded => {
            let db = EmbeddedDb::open(&data_dir.join(EMBEDDED_DB_FILE))?;
            Ok(Backends {
                queue: Arc::new(db.queue()),
                store: Arc::new(db.store()),
            })
        }
        Backend::Aws => Err(Error::Invalid(
            "the aws backend is not available in this build yet".into(),
        )),
    }
}
