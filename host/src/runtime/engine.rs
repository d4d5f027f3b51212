//! Engine configuration: pooling allocator tuned for a fresh instance per message, and the epoch
//! ticker at whose ticks a running guest yields to the async runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::{Error, Result};

/// How often the epoch advances: the longest a guest computes before it yields, so also how
/// late past its deadline a computing guest can be stopped.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Memory kept mapped in a pool slot between instances: re-zeroing beats re-faulting pages.
const KEEP_RESIDENT: usize = 4 << 20;

/// Sizing of the engine's instance pool.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Most instances alive at once (sum of all workers, plus invocations from the API).
    pub max_instances: u32,
    /// Largest per-function memory cap; every pool slot is this size.
    pub max_memory_bytes: usize,
    /// Where compiled artifacts are cached (None: compile every time).
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory_bytes: 64 << 20,
            cache_dir: None,
        }
    }
}

pub(super) fn build(cfg: &RuntimeConfig) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let n = cfg.max_instances.max(1);
    // A wasip2 Rust component holds a few core instances (the program plus adapter shims); a
    // CPython one from componentize-py (`levee new --lang python`) holds 14, and more with each
    // native extension it links, so one component may hold up to 32. The total stays at 8 per
    // instance on average: only the slots in use cost memory.
    pool.total_component_instances(n)
        .total_core_instances(n * 8)
        .max_core_instances_per_component(32)
        .total_memories(n * 2)
        .max_memories_per_component(4)
        .total_tables(n * 4)
        .max_tables_per_component(8)
        .max_memory_size(cfg.max_memory_bytes)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        // Reset only the pages an instance dirtied (Linux 6.7+ `PAGEMAP_SCAN`; elsewhere the
        // memset as before) instead of every accessible byte below KEEP_RESIDENT: the memset
        // was 10% of the runtime bench's CPU; the scan costs about 8% in the kernel.
        .pagemap_scan(Enabled::Auto)
        // One fiber stack per running invocation (guests run on fibers, see `runtime`).
        .total_stacks(n);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| Error::Runtime(format!("creating the wasmtime engine: {e:#}")))
}

/// A thread advancing the engine's epoch every [`EPOCH_TICK`]; stops when dropped.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("levee-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
