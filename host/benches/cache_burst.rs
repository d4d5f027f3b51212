//! Burst benchmark of the cache layer: a store with realistic latency and a concurrency capacity
//! (so it saturates), a workload at a base rate, then a burst of 10x on a hot key set, then the
//! base rate again, with and without `CachedStore` in front. Prints per phase the store reads per
//! second, invocation p50/p99 (measured from when the invocation was due, so queueing counts),
//! errors and the hit ratio; then the cost of a cache hit against a plain in-memory get.
//!
//! Run: `cargo bench -p levee --bench cache_burst` (set `CACHE_BURST_SCALE=0.5` to halve the
//! phase lengths).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use levee::store::{CacheConfig, CachedStore, FaultyStore, MemoryStore};
use levee::{PutOptions, Store};

const NS: &str = "router";
const KEYS: usize = 10_000;
const HOT_KEYS: usize = 100;
const BASE_RATE: f64 = 500.0;
const BURST_FACTOR: f64 = 10.0;
const STORE_LATENCY: Duration = Duration::from_millis(1);
const STORE_CAPACITY: usize = 8;

#[derive(Clone, Copy)]
struct Phase {
    name: &'static str,
    rate: f64,
    secs: f64,
    /// Share of invocations that read a hot key.
    hot_share: f64,
}

#[derive(Default)]
struct PhaseResult {
    latencies: Vec<Duration>,
    errors: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn key(i: usize) -> String {
    format!("customer-{i:05}")
}

/// Runs the phases against `store`; returns per phase (results, store reads, wall time,
/// cache hits and misses if cached).
async fn run(
    store: Arc<dyn Store>,
    faulty: Arc<FaultyStore<MemoryStore>>,
    cached: Option<CachedStore<FaultyStore<MemoryStore>>>,
    phases: &[Phase],
) -> Vec<(PhaseResult, u64, Duration, Option<(u64, u64)>)> {
    let mut out = Vec::new();
    let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift: cheap and reproducible, so both runs see the same key sequence.
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for phase in phases {
        let results = Arc::new(Mutex::new(PhaseResult::default()));
        let reads_before = faulty.stats().gets;
        let cache_before = cached
            .as_ref()
            .map(|c| c.metrics())
            .map(|m| (m.hits, m.misses));
        let started = Instant::now();
        let total = (phase.rate * phase.secs) as u64;
        let mut issued = 0u64;
        let mut tasks = Vec::with_capacity(total as usize);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while issued < total {
            tick.tick().await;
            let due = ((started.elapsed().as_secs_f64() * phase.rate) as u64).min(total);
            while issued < due {
                let due_at = started + Duration::from_secs_f64(issued as f64 / phase.rate);
                let r = next();
                let k = if (r % 1_000) as f64 / 1_000.0 < phase.hot_share {
                    key((r >> 16) as usize % HOT_KEYS)
                } else {
                    key((r >> 16) as usize % KEYS)
                };
                let store = store.clone();
                let results = results.clone();
                tasks.push(tokio::spawn(async move {
                    let outcome = store.get(NS, &k).await;
                    let latency = due_at.elapsed();
                    let mut r = results.lock().unwrap();
                    match outcome {
                        Ok(_) => r.latencies.push(latency),
                        Err(_) => r.errors += 1,
                    }
                }));
                issued += 1;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let wall = started.elapsed();
        let reads = faulty.stats().gets - reads_before;
        let cache = cached
            .as_ref()
            .map(|c| c.metrics())
            .zip(cache_before)
            .map(|(m, (h, mi))| (m.hits - h, m.misses - mi));
        let result = std::mem::take(&mut *results.lock().unwrap());
        out.push((result, reads, wall, cache));
    }
    out
}

async fn fresh_store() -> Arc<FaultyStore<MemoryStore>> {
    let memory = Arc::new(MemoryStore::new());
    for i in 0..KEYS {
        memory
            .put(
                NS,
                &key(i),
                Bytes::from(vec![b'x'; 256]),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let faulty = Arc::new(FaultyStore::new(memory));
    faulty.set_latency(STORE_LATENCY);
    faulty.set_capacity(Some(STORE_CAPACITY)).unwrap();
    faulty
}

async fn burst(scale: f64) {
    let phases = [
        Phase {
            name: "base",
            rate: BASE_RATE,
            secs: 3.0 * scale,
            hot_share: 0.1,
        },
        Phase {
            name: "burst 10x",
            rate: BASE_RATE * BURST_FACTOR,
            secs: 3.0 * scale,
            hot_share: 0.9,
        },
        Phase {
            name: "after",
            rate: BASE_RATE,
            secs: 2.0 * scale,
            hot_share: 0.1,
        },
    ];
    println!(
        "store: MemoryStore + {} ms latency, capacity {} concurrent calls; {} keys, {} hot; base {}/s, burst {}/s (90% hot)",
        STORE_LATENCY.as_millis(),
        STORE_CAPACITY,
        KEYS,
        HOT_KEYS,
        BASE_RATE,
        BASE_RATE * BURST_FACTOR
    );
    println!(
        "| setup | phase | invocations | errors | store reads/s | p50 | p99 | hit ratio |\n|---|---|---|---|---|---|---|---|"
    );
    for with_cache in [false, true] {
        let faulty = fresh_store().await;
        let cached = with_cache
            .then(|| CachedStore::new("bench", faulty.clone(), &CacheConfig::default()).unwrap());
        let store: Arc<dyn Store> = match &cached {
            Some(c) => Arc::new(c.clone()),
            None => faulty.clone(),
        };
        let results = run(store, faulty.clone(), cached.clone(), &phases).await;
        for (phase, (mut r, reads, wall, cache)) in phases.iter().zip(results) {
            r.latencies.sort();
            let hit_ratio = match cache {
                Some((h, m)) if h + m > 0 => format!("{:.1}%", 100.0 * h as f64 / (h + m) as f64),
                _ => "-".into(),
            };
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {} |",
                if with_cache { "cached" } else { "no cache" },
                phase.name,
                r.latencies.len() as u64 + r.errors,
                r.errors,
                reads as f64 / wall.as_secs_f64(),
                percentile(&r.latencies, 0.50).as_secs_f64() * 1e3,
                percentile(&r.latencies, 0.99).as_secs_f64() * 1e3,
                hit_ratio,
            );
        }
        if let Some(c) = &cached {
            let m = c.metrics();
            println!(
                "|   | cache totals: store_reads {}, coalesced_waits {}, rejected {}, timeouts {}, breaker {} | | | | | | |",
                m.store_reads, m.coalesced_waits, m.rejected, m.timeouts, m.breaker
            );
        }
    }
}

async fn time_gets(store: &dyn Store, keys: &[String], rounds: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..rounds {
        for k in keys {
            std::hint::black_box(store.get(NS, k).await.unwrap());
        }
    }
    started.elapsed().as_nanos() as f64 / (rounds * keys.len()) as f64
}

async fn hit_cost() {
    let memory = Arc::new(MemoryStore::new());
    let keys: Vec<String> = (0..1_000).map(key).collect();
    for k in &keys {
        memory
            .put(NS, k, Bytes::from(vec![b'x'; 256]), PutOptions::default())
            .await
            .unwrap();
    }
    let cached = CachedStore::new("bench", memory.clone(), &CacheConfig::default()).unwrap();
    // Warm: every key cached, so the timed loop measures hits only.
    time_gets(&cached, &keys, 1).await;
    let rounds = 200;
    let plain = time_gets(memory.as_ref(), &keys, rounds).await;
    let hit = time_gets(&cached, &keys, rounds).await;
    let m = cached.metrics();
    assert_eq!(
        m.store_reads,
        keys.len() as u64,
        "the timed loop must only hit"
    );
    println!("\n| get (1,000 keys, 256 B values, one thread) | ns per get |\n|---|---|");
    println!("| MemoryStore (plain map behind a lock) | {plain:.0} |");
    println!("| CachedStore hit (moka + freshness check) | {hit:.0} |");
}

fn main() {
    let scale = std::env::var("CACHE_BURST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(burst(scale));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(hit_cost());
}
