//! Function releases: `levee deploy` checks a component against the `levee:function` world,
//! stores it by content hash in blobs, precompiles it, replays the function's corpus against it
//! (the gate) and records it as a new version of the function, on canary. Every host polls the
//! release records and swaps versions in place (hot reload: a running invocation finishes on
//! the version it started with). Hosts that run a function's workers judge its canary against
//! the stable version over the same window and promote it step by step or roll it back; the
//! version-checked record makes exactly one host's decision win.
//!
//! The manifest's `module` is release 1 of each function. Its limits, grants and `emits_to`
//! stay in the manifest; only the code has versions.

pub mod canary;
pub mod record;
pub mod replay;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};

use crate::blobs::Blobs;
use crate::manifest::{CanarySpec, Manifest};
use crate::outbound::Outbound;
use crate::runtime::{Active, Canary, Function, FunctionDef, FunctionSlot, Runtime};
use crate::store::{CommitOutcome, KvCommit, Store};
use crate::{Error, Result};
use canary::Verdict;
pub use record::{Module, Record, State};

/// The key of a function's release record in its [`releases_ns`].
pub const RECORD_KEY: &str = "record";

/// The namespace (DynamoDB partition) of `function`'s release record: one per function, so a
/// function's task role can be granted exactly its own (`levee infra render`).
pub fn releases_ns(function: &str) -> String {
    format!("_levee_releases/{function}")
}
/// Largest module `levee deploy` accepts (a CPython component is about 40 MiB).
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// How often every host reads the release records (the delay before a deploy or rollback made
/// on another host takes effect here).
pub const POLL: Duration = Duration::from_millis(250);
/// Version-checked writes of a record tried before giving up (hosts racing on one record).
const UPDATE_ROUNDS: usize = 16;

/// What `levee deploy` answers.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub function: String,
    /// The new release number (absent when refused).
    pub release: Option<u32>,
    pub sha256: String,
    pub version: String,
    pub bytes: u64,
    /// `canary`, `stable`, or `refused` (by the replay gate).
    pub state: String,
    /// Share of messages it takes now, in percent.
    pub share_pct: f64,
    pub compile_ms: u64,
    pub replay: replay::Report,
}

/// How `levee deploy` goes.
#[derive(Debug, Clone, Copy)]
pub struct DeployOptions {
    /// Start a canary (else the version is stable at once).
    pub canary: bool,
    /// Run the replay gate (skipping it is for emergencies, and for the drill).
    pub replay: bool,
}

impl Default for DeployOptions {
    fn default() -> Self {
        DeployOptions {
            canary: true,
            replay: true,
        }
    }
}

/// `levee versions`: a function's record, with what this host sees of it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionsView {
    #[serde(flatten)]
    pub record: Record,
    /// The newest release activated on this host and how long after its activation it served
    /// its first message, in ms (absent until it has).
    pub activated: Option<u32>,
    pub first_served_ms: Option<f64>,
    /// The canary's comparison window on this host: each version's outcomes.
    pub window: Option<WindowView>,
}

/// Each version's outcomes since the current canary step began, on this host.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    pub stable_ok: u64,
    pub stable_failed: u64,
    pub stable_p95_ms: f64,
    pub canary_ok: u64,
    pub canary_failed: u64,
    pub canary_p95_ms: f64,
}

/// The release service of one platform.
pub struct Releases {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    blobs: Arc<dyn Blobs>,
    slots: BTreeMap<String, Arc<FunctionSlot>>,
    defs: BTreeMap<String, FunctionDef>,
    canaries: BTreeMap<String, CanarySpec>,
    replay_dirs: BTreeMap<String, PathBuf>,
    /// Functions whose workers run here: this host judges their canaries.
    judges: BTreeSet<String>,
    /// Functions whose records this host reads and writes: all of them, but on a host of a
    /// fleet that runs some functions' workers only (its task role reaches only theirs).
    followed: BTreeSet<String>,
    /// Loaded versions by (function, sha256), for the versions records name.
    loaded: Mutex<HashMap<(String, String), Arc<Function>>>,
    /// The record each function runs, and its store version.
    applied: Mutex<HashMap<String, (Record, u64)>>,
    deploying: Semaphore,
}

fn missing_record(name: &str) -> Error {
    Error::Backend {
        service: "releases".into(),
        message: format!("{name} has no release record"),
    }
}

/// A function as the platform loaded it from its manifest `module`.
pub struct Loaded {
    pub def: FunctionDef,
    pub function: Arc<Function>,
    pub bytes: Vec<u8>,
}

/// Where a version's module is kept in blobs: by function (so a task role is granted its own
/// prefix) and content hash.
pub fn module_key(function: &str, sha256: &str) -> String {
    format!("modules/{function}/{sha256}.wasm")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Releases {
    /// Records each manifest module (release 1, or a new stable release when the manifest's
    /// module changed since), stores it in blobs, and loads the versions the records name.
    pub async fn start(
        manifest: &Manifest,
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        blobs: Arc<dyn Blobs>,
        loaded: BTreeMap<String, Loaded>,
        judges: BTreeSet<String>,
        followed: BTreeSet<String>,
    ) -> Result<Arc<Self>> {
        let mut defs = BTreeMap::new();
        let mut slots = BTreeMap::new();
        let mut cache = HashMap::new();
        for (name, l) in loaded {
            let sha = sha256_hex(&l.bytes);
            cache.insert((name.clone(), sha), l.function.clone());
            slots.insert(name.clone(), FunctionSlot::new(l.function.clone(), 1));
            defs.insert(name, l.def);
        }
        let canaries = manifest
            .functions
            .iter()
            .map(|(n, f)| (n.clone(), f.canary.clone()))
            .collect();
        let replay_dirs = manifest
            .functions
            .iter()
            .map(|(n, f)| (n.clone(), manifest.replay_dir(n, f)))
            .collect();
        let r = Arc::new(Releases {
            runtime,
            store,
            blobs,
            slots,
            defs,
            canaries,
            replay_dirs,
            judges,
            followed,
            loaded: Mutex::new(cache),
            applied: Mutex::new(HashMap::new()),
            deploying: Semaphore::new(1),
        });
        for name in r.followed.clone() {
            r.record_manifest_module(&name, manifest).await?;
            r.refresh(&name).await?;
        }
        Ok(r)
    }

    /// The swappable versions of each function.
    pub fn slots(&self) -> &BTreeMap<String, Arc<FunctionSlot>> {
        &self.slots
    }

    async fn record_manifest_module(&self, name: &str, manifest: &Manifest) -> Result<()> {
        let path = manifest.module_path(&manifest.functions[name]);
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let module = Module {
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
        };
        self.put_blob(name, &module.sha256, bytes).await?;
        let now = crate::ids::now_ms();
        self.update(name, |r| match r {
            None => Ok(Some(Record::first(name, &module, now))),
            Some(r) if r.by_hash(&module.sha256).is_some() => Ok(None),
            Some(r) => {
                // The operator changed the manifest's module and restarted: as before releases
                // existed, that code runs, recorded as a stable release.
                let mut r = r.clone();
                r.canary = None;
                for v in &mut r.versions {
                    if v.state == State::Canary {
                        v.state = State::RolledBack;
                        v.reason = Some("the manifest's module changed".into());
                    }
                }
                r.deploy(&module, None, now)?;
                if let Some(v) = r.versions.last_mut() {
                    v.source = "manifest".into();
                }
                Ok(Some(r))
            }
        })
        .await
        .map(|_| ())
    }

    async fn put_blob(&self, name: &str, sha256: &str, bytes: Vec<u8>) -> Result<()> {
        let key = module_key(name, sha256);
        if self.blobs.head(&key, 0).await?.is_none() {
            self.blobs.put(&key, Bytes::from(bytes)).await?;
        }
        Ok(())
    }

    /// Reads a record and its store version (0: none yet).
    async fn read(&self, name: &str) -> Result<(Option<Record>, u64)> {
        let v = self
            .store
            .get_versioned(&releases_ns(name), RECORD_KEY)
            .await?;
        let record = match &v.value {
            None => None,
            Some(b) => Some(serde_json::from_slice(b).map_err(|e| Error::Backend {
                service: "releases".into(),
                message: format!("the release record of {name} does not parse: {e}"),
            })?),
        };
        Ok((record, v.version))
    }

    /// Changes a record with a version-checked write, reading again when another host wrote
    /// it meanwhile. `change` returns the new record, or None to leave it.
    async fn update(
        &self,
        name: &str,
        change: impl Fn(Option<&Record>) -> Result<Option<Record>>,
    ) -> Result<Option<Record>> {
        for _ in 0..UPDATE_ROUNDS {
            let (current, version) = self.read(name).await?;
            let Some(next) = change(current.as_ref())? else {
                return Ok(None);
            };
            let value = serde_json::to_vec(&next).map_err(|e| Error::Invalid(e.to_string()))?;
            let commit = KvCommit {
                ns: releases_ns(name),
                reads: vec![(RECORD_KEY.to_string(), version)],
                writes: vec![(RECORD_KEY.to_string(), Some(Bytes::from(value)))],
                ..Default::default()
            };
            match self.store.commit(&commit).await? {
                CommitOutcome::Committed { .. } => return Ok(Some(next)),
                CommitOutcome::Conflict { .. } | CommitOutcome::Duplicate => continue,
            }
        }
        Err(Error::Unavailable {
            service: "releases".into(),
            message: format!("the release record of {name} kept changing; try again"),
        })
    }

    /// Applies the stored record of `name` if it changed since this host last applied it.
    async fn refresh(&self, name: &str) -> Result<()> {
        let (record, version) = self.read(name).await?;
        let Some(record) = record else { return Ok(()) };
        let seen = self
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|(_, v)| *v);
        if seen == Some(version) {
            return Ok(());
        }
        self.apply(name, record, version).await
    }

    /// Loads the versions `record` names and swaps them in.
    async fn apply(&self, name: &str, record: Record, version: u64) -> Result<()> {
        let Some(slot) = self.slots.get(name) else {
            return Ok(());
        };
        let stable_v = record.stable_version().clone();
        let stable = self.load(name, &stable_v.sha256, false).await?;
        let canary = match &record.canary {
            Some(c) => {
                let v = record.get(c.release).ok_or_else(|| Error::Backend {
                    service: "releases".into(),
                    message: format!(
                        "{name}'s record names a canary release {} it does not hold",
                        c.release
                    ),
                })?;
                Some(Canary {
                    function: self.load(name, &v.sha256, false).await?,
                    release: c.release,
                    share: c.share_pct / 100.0,
                })
            }
            None => None,
        };
        let first_apply = !self
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name);
        let before = slot.active();
        let newest = canary.as_ref().map_or(record.stable, |c| c.release);
        let changed = before.stable_release != record.stable
            || before
                .canary
                .as_ref()
                .map(|c| (c.release, c.share.to_bits()))
                != canary.as_ref().map(|c| (c.release, c.share.to_bits()));
        slot.swap(
            Active {
                stable,
                stable_release: record.stable,
                canary,
            },
            // The versions a host starts with are not activations.
            (!first_apply).then_some(newest),
        );
        if changed {
            let what = match &record.canary {
                Some(c) => format!(
                    "release {} stable, release {} on canary at {}%",
                    record.stable, c.release, c.share_pct
                ),
                None => format!("release {} stable ({})", record.stable, stable_v.version),
            };
            tracing::info!(function = %name, release = newest, "now running {what}");
        }
        // Keep loaded only what a record still names (plus the manifest's module).
        let keep: BTreeSet<&str> = record
            .versions
            .iter()
            .filter(|v| matches!(v.state, State::Stable | State::Canary))
            .map(|v| v.sha256.as_str())
            .collect();
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(f, sha), _| f != name || keep.contains(sha.as_str()));
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), (record, version));
        Ok(())
    }

    /// A version of `name` ready to run: from memory, else from blobs (compiled once per host,
    /// then from the artifact cache). `dry` loads it with no outbound grants, for the gate.
    async fn load(&self, name: &str, sha256: &str, dry: bool) -> Result<Arc<Function>> {
        if !dry
            && let Some(f) = self
                .loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(name.to_string(), sha256.to_string()))
        {
            return Ok(f.clone());
        }
        let bytes = self
            .blobs
            .get(&module_key(name, sha256))
            .await?
            .ok_or_else(|| Error::Backend {
                service: "releases".into(),
                message: format!("module {sha256} of {name} is missing from blobs"),
            })?;
        let f = self.compile(name, sha256, bytes.to_vec(), dry).await?.0;
        if !dry {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((name.to_string(), sha256.to_string()), f.clone());
        }
        Ok(f)
    }

    async fn compile(
        &self,
        name: &str,
        sha256: &str,
        bytes: Vec<u8>,
        dry: bool,
    ) -> Result<(Arc<Function>, Duration)> {
        let mut def = self
            .defs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("unknown function `{name}`")))?;
        def.module = PathBuf::from(format!("module {}", &sha256[..12]));
        if dry {
            def.outbound = Arc::new(Outbound::none(name));
        }
        let runtime = self.runtime.clone();
        let started = Instant::now();
        let f = tokio::task::spawn_blocking(move || runtime.load_bytes(def, &bytes))
            .await
            .map_err(|e| Error::Runtime(format!("compiling panicked: {e}")))??;
        Ok((f, started.elapsed()))
    }

    /// `levee deploy`: checks, stores, precompiles and gates a module, then records it as a
    /// new release (on canary unless `canary` is false or the function's first step is 100%).
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        opts: DeployOptions,
    ) -> Result<DeployReport> {
        let canary = opts.canary;
        if !self.defs.contains_key(name) {
            let known: Vec<&str> = self.defs.keys().map(String::as_str).collect();
            return Err(Error::Invalid(format!(
                "unknown function `{name}`: `levee deploy` deploys only the functions the manifest declares ({}); add it there with its limits, grants and emits_to first",
                known.join(", ")
            )));
        }
        self.check_followed(name)?;
        let Ok(_one) = self.deploying.try_acquire() else {
            return Err(Error::Conflict(
                "another deploy is running on this host; try again when it finishes".into(),
            ));
        };
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(Error::Invalid(format!(
                "the module is {} bytes; at most {MAX_MODULE_BYTES}",
                bytes.len()
            )));
        }
        let sha256 = sha256_hex(&bytes);
        let module = Module {
            sha256: sha256.clone(),
            bytes: bytes.len() as u64,
        };
        // Compiling and linking checks the world: a missing export or an import Levee cannot
        // satisfy is named by the linker. The artifact is cached, so activation is fast.
        let (candidate, compile) = self.compile(name, &sha256, bytes.clone(), false).await?;
        self.put_blob(name, &sha256, bytes.clone()).await?;
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((name.to_string(), sha256.clone()), candidate);
        let (record, _) = self.read(name).await?;
        let record = record.ok_or_else(|| Error::Backend {
            service: "releases".into(),
            message: format!("{name} has no release record"),
        })?;
        let stable_sha = record.stable_version().sha256.clone();
        let dir = &self.replay_dirs[name];
        let events = if opts.replay {
            replay::read_corpus(dir)?
        } else {
            tracing::warn!(function = %name, "deploy without the replay gate (asked for)");
            vec![]
        };
        let report = if events.is_empty() {
            replay::Report::default()
        } else {
            let stable = self.load(name, &stable_sha, true).await?;
            let dry = self.compile(name, &sha256, bytes, true).await?.0;
            replay::run(Some(dir), events, stable, dry).await
        };
        let mut out = DeployReport {
            function: name.to_string(),
            release: None,
            version: sha256[..12].to_string(),
            sha256: sha256.clone(),
            bytes: module.bytes,
            state: "refused".into(),
            share_pct: 0.0,
            compile_ms: compile.as_millis() as u64,
            replay: report,
        };
        let now = crate::ids::now_ms();
        if !out.replay.regressions.is_empty() {
            let names: Vec<&str> = out
                .replay
                .regressions
                .iter()
                .map(|r| r.event.as_str())
                .collect();
            let what = format!(
                "module {} refused by the replay gate: it fails {} that release {} handles",
                &sha256[..12],
                names.join(", "),
                record.stable
            );
            tracing::warn!(function = %name, "{what}");
            let w = what.clone();
            self.update(name, move |r| {
                let mut r = r.cloned().ok_or_else(|| missing_record(name))?;
                r.events.push(record::Event {
                    at_ms: now,
                    release: 0,
                    what: w.clone(),
                });
                let over = r.events.len().saturating_sub(record::MAX_EVENTS);
                r.events.drain(..over);
                Ok(Some(r))
            })
            .await?;
            return Ok(out);
        }
        let spec = &self.canaries[name];
        let first = canary.then(|| spec.steps[0]);
        let updated = self
            .update(name, |r| {
                let mut r = r.cloned().ok_or_else(|| missing_record(name))?;
                r.deploy(&module, first, now)?;
                Ok(Some(r))
            })
            .await?
            .expect("deploy always writes");
        let release = updated.by_hash(&sha256).map_or(0, |v| v.release);
        out.release = Some(release);
        out.state = updated
            .get(release)
            .map(|v| v.state.to_string())
            .unwrap_or_default();
        out.share_pct = updated.canary.as_ref().map_or(100.0, |c| c.share_pct);
        tracing::info!(function = %name, release, "deployed module {} ({} bytes, compiled in {} ms): {} at {}%", &sha256[..12], module.bytes, out.compile_ms, out.state, out.share_pct);
        self.refresh(name).await?;
        Ok(out)
    }

    /// `levee rollback`: ends the canary, or makes `target` (a release number or hash prefix;
    /// default: the previous stable version) stable.
    pub async fn rollback(&self, name: &str, target: Option<&str>) -> Result<Record> {
        if !self.defs.contains_key(name) {
            return Err(Error::Invalid(format!("unknown function `{name}`")));
        }
        self.check_followed(name)?;
        let now = crate::ids::now_ms();
        let record = self
            .update(name, |r| {
                let mut r = r
                    .cloned()
                    .ok_or_else(|| Error::Invalid(format!("{name} has no release record")))?;
                let t = target.map(|t| r.resolve(t)).transpose()?;
                r.rollback(t, now)?;
                Ok(Some(r))
            })
            .await?
            .expect("rollback always writes");
        tracing::warn!(function = %name, release = record.stable, "rolled back by the operator; release {} is stable", record.stable);
        self.refresh(name).await?;
        Ok(record)
    }

    /// `levee versions`.
    pub async fn view(&self, name: &str) -> Result<VersionsView> {
        let Some(slot) = self.slots.get(name) else {
            return Err(Error::Invalid(format!("unknown function `{name}`")));
        };
        self.check_followed(name)?;
        self.refresh(name).await?;
        let (record, _) = self.read(name).await?;
        let record =
            record.ok_or_else(|| Error::Invalid(format!("{name} has no release record")))?;
        let (activated, first) = slot.first_served().unzip();
        let window = record.canary.as_ref().map(|_| {
            let (s, c) = slot.window();
            WindowView {
                stable_ok: s.ok,
                stable_failed: s.failed,
                stable_p95_ms: s.p95_ms,
                canary_ok: c.ok,
                canary_failed: c.failed,
                canary_p95_ms: c.p95_ms,
            }
        });
        Ok(VersionsView {
            record,
            activated,
            first_served_ms: first.flatten().map(|d| d.as_secs_f64() * 1000.0),
            window,
        })
    }

    fn check_followed(&self, name: &str) -> Result<()> {
        if self.followed.contains(name) {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "this host runs only the workers of {}; deploy, list and roll back {name} through the API (the ingress)",
            self.followed.iter().cloned().collect::<Vec<_>>().join(", ")
        )))
    }

    /// The record a function runs on this host (for `levee status`), without a store call.
    pub fn applied(&self, name: &str) -> Option<Record> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|(r, _)| r.clone())
    }

    /// Polls the records every [`POLL`], applies what changed and judges the canaries of the
    /// functions whose workers run here.
    pub fn spawn_controller(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                for name in &me.followed {
                    if let Err(e) = me.refresh(name).await {
                        tracing::warn!(function = %name, "could not read the release record (retrying): {e}");
                        continue;
                    }
                    if me.judges.contains(name)
                        && let Err(e) = me.judge(name).await
                    {
                        tracing::warn!(function = %name, "could not record the canary's verdict (retrying): {e}");
                    }
                }
            }
        });
    }

    async fn judge(&self, name: &str) -> Result<()> {
        let Some(record) = self.applied(name) else {
            return Ok(());
        };
        let Some(c) = record.canary.clone() else {
            return Ok(());
        };
        let spec = &self.canaries[name];
        let (stable, cand) = self.slots[name].window();
        let now = crate::ids::now_ms();
        let verdict = canary::judge(spec, &stable, &cand, now.saturating_sub(c.step_started_ms));
        let same = move |r: &Record| r.canary.as_ref() == Some(&c);
        match verdict {
            Verdict::Hold => return Ok(()),
            Verdict::Promote => {
                let done = self
                    .update(name, |r| match r {
                        Some(r) if same(r) => {
                            let mut r = r.clone();
                            r.promote(&spec.steps, now)?;
                            Ok(Some(r))
                        }
                        _ => Ok(None),
                    })
                    .await?;
                if let Some(r) = done {
                    match &r.canary {
                        Some(c) => {
                            tracing::info!(function = %name, release = c.release, "canary promoted to {}% of messages", c.share_pct)
                        }
                        None => {
                            tracing::info!(function = %name, release = r.stable, "canary promoted: release {} is stable", r.stable)
                        }
                    }
                }
            }
            Verdict::Reject(reason) => {
                let done = self
                    .update(name, |r| match r {
                        Some(r) if same(r) => {
                            let mut r = r.clone();
                            r.reject_canary(&reason, now)?;
                            Ok(Some(r))
                        }
                        _ => Ok(None),
                    })
                    .await?;
                if done.is_some() {
                    tracing::warn!(function = %name, "canary rolled back automatically: {reason}; its failed messages ran again on the stable version (no attempt used)");
                }
            }
        }
        self.refresh(name).await
    }
}
