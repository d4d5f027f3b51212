//! A function's release record: its versions with their states and a bounded history of what
//! happened to them. One JSON document per function in the platform's store, changed only by
//! version-checked commits, so hosts that race (two deploys, two controllers promoting the
//! same step) never both win. The transitions here are pure; `super` loads and saves them.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Versions kept in a record; the oldest superseded or rolled-back ones drop out beyond this.
pub const MAX_VERSIONS: usize = 50;
/// History entries kept in a record.
pub const MAX_EVENTS: usize = 100;

/// What a version is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Takes every message not given to a canary.
    Stable,
    /// On trial with a share of the messages.
    Canary,
    /// Was stable; a later version replaced it.
    Superseded,
    /// Was taken out: by the canary's verdict or by `levee rollback`.
    RolledBack,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Stable => "stable",
            State::Canary => "canary",
            State::Superseded => "superseded",
            State::RolledBack => "rolled-back",
        })
    }
}

/// One version of a function's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    /// Release number: 1, 2, ...
    pub release: u32,
    /// SHA-256 of the module, in hex (its blob is `modules/{sha256}.wasm`).
    pub sha256: String,
    /// The first 12 hex digits (what `levee status` and the logs call its version).
    pub version: String,
    pub bytes: u64,
    pub state: State,
    /// `manifest` (the manifest's `module`) or `deploy`.
    pub source: String,
    pub created_ms: u64,
    /// When its state last changed.
    pub changed_ms: u64,
    /// Why it is in its state, when that was a decision (a rollback's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A canary in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryRun {
    pub release: u32,
    /// Index into the function's `canary.steps`.
    pub step: usize,
    /// The share of messages it takes in this step, in percent.
    pub share_pct: f64,
    pub step_started_ms: u64,
}

/// One line of a record's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub release: u32,
    pub what: String,
}

/// A function's release record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub function: String,
    pub stable: u32,
    #[serde(default)]
    pub canary: Option<CanaryRun>,
    pub versions: Vec<Version>,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// A module to record: its hash and size.
#[derive(Debug, Clone)]
pub struct Module {
    pub sha256: String,
    pub bytes: u64,
}

impl Record {
    /// A record whose only version is the manifest's module, stable.
    pub fn first(function: &str, module: &Module, now: u64) -> Self {
        let mut r = Record {
            function: function.to_string(),
            stable: 1,
            canary: None,
            versions: vec![version(1, module, State::Stable, "manifest", now)],
            events: vec![],
        };
        r.event(now, 1, "recorded the manifest's module as release 1");
        r
    }

    /// The version with this release number.
    pub fn get(&self, release: u32) -> Option<&Version> {
        self.versions.iter().find(|v| v.release == release)
    }

    /// The version whose module has this hash, if recorded.
    pub fn by_hash(&self, sha256: &str) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.sha256 == sha256)
    }

    /// The stable version.
    pub fn stable_version(&self) -> &Version {
        self.get(self.stable)
            .expect("a record always holds its stable version")
    }

    /// Resolves what a user typed: a release number, `r3`, or a prefix of a module hash.
    pub fn resolve(&self, what: &str) -> Result<u32> {
        let n = what.strip_prefix('r').unwrap_or(what);
        if let Ok(n) = n.parse::<u32>()
            && self.get(n).is_some()
        {
            return Ok(n);
        }
        let matches: Vec<u32> = self
            .versions
            .iter()
            .filter(|v| what.len() >= 4 && v.sha256.starts_with(what))
            .map(|v| v.release)
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::Invalid(format!(
                "{} has no version `{what}` (a release number or a module hash prefix; see `levee versions {}`)",
                self.function, self.function
            ))),
            _ => Err(Error::Invalid(format!(
                "`{what}` matches several versions of {}; give more of the hash",
                self.function
            ))),
        }
    }

    /// Records a new version. With `first_share` (percent) below 100 it starts a canary at that
    /// share; otherwise it becomes stable at once. A canary in progress must end first.
    pub fn deploy(&mut self, module: &Module, first_share: Option<f64>, now: u64) -> Result<u32> {
        if let Some(c) = &self.canary {
            return Err(Error::Conflict(format!(
                "release {} of {} is on canary at {}%; wait for it to finish or roll it back (`levee rollback {}`)",
                c.release, self.function, c.share_pct, self.function
            )));
        }
        if self.stable_version().sha256 == module.sha256 {
            return Err(Error::Conflict(format!(
                "{} already runs this module as its stable release {}",
                self.function, self.stable
            )));
        }
        let release = self.versions.iter().map(|v| v.release).max().unwrap_or(0) + 1;
        match first_share {
            Some(share) if share < 100.0 => {
                self.versions
                    .push(version(release, module, State::Canary, "deploy", now));
                self.canary = Some(CanaryRun {
                    release,
                    step: 0,
                    share_pct: share,
                    step_started_ms: now,
                });
                self.event(
                    now,
                    release,
                    &format!("deployed; canary at {share}% of messages"),
                );
            }
            _ => {
                self.versions
                    .push(version(release, module, State::Stable, "deploy", now));
                self.replace_stable(release, now, "deployed as stable (no canary)");
            }
        }
        self.trim();
        Ok(release)
    }

    /// Moves the canary to its next step; at 100% it becomes the stable version.
    pub fn promote(&mut self, steps: &[f64], now: u64) -> Result<()> {
        let Some(c) = self.canary.clone() else {
            return Err(Error::Conflict(format!("{} has no canary", self.function)));
        };
        let next = c.step + 1;
        match steps.get(next) {
            Some(&share) if share < 100.0 => {
                self.canary = Some(CanaryRun {
                    release: c.release,
                    step: next,
                    share_pct: share,
                    step_started_ms: now,
                });
                self.event(now, c.release, &format!("promoted to {share}% of messages"));
            }
            _ => {
                self.canary = None;
                self.replace_stable(c.release, now, "promoted to stable (100%)");
            }
        }
        Ok(())
    }

    /// Takes the canary out (its messages go back to the stable version).
    pub fn reject_canary(&mut self, reason: &str, now: u64) -> Result<u32> {
        let Some(c) = self.canary.take() else {
            return Err(Error::Conflict(format!("{} has no canary", self.function)));
        };
        self.set_state(c.release, State::RolledBack, Some(reason), now);
        self.event(now, c.release, &format!("rolled back: {reason}"));
        Ok(c.release)
    }

    /// `levee rollback`: without a target, ends a canary if one runs, else returns to the
    /// version that was stable before this one. With a target, makes it stable.
    pub fn rollback(&mut self, target: Option<u32>, now: u64) -> Result<u32> {
        if target.is_none() && self.canary.is_some() {
            return self.reject_canary("rolled back by the operator", now);
        }
        let target = match target {
            Some(t) => t,
            None => self
                .versions
                .iter()
                .filter(|v| v.state == State::Superseded)
                .max_by_key(|v| v.changed_ms)
                .map(|v| v.release)
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "{} has no earlier stable version to go back to; name one (see `levee versions {}`)",
                        self.function, self.function
                    ))
                })?,
        };
        if self.get(target).is_none() {
            return Err(Error::Invalid(format!(
                "{} has no release {target}",
                self.function
            )));
        }
        if target == self.stable && self.canary.is_none() {
            return Err(Error::Conflict(format!(
                "release {target} is already {}'s stable version",
                self.function
            )));
        }
        if let Some(c) = self.canary.take() {
            self.set_state(
                c.release,
                State::RolledBack,
                Some("rolled back by the operator"),
                now,
            );
        }
        if target != self.stable {
            let old = self.stable;
            self.set_state(
                old,
                State::RolledBack,
                Some("rolled back by the operator"),
                now,
            );
            self.stable = target;
            self.set_state(target, State::Stable, None, now);
            self.event(
                now,
                target,
                &format!("stable again (rolled back from {old})"),
            );
        }
        Ok(target)
    }

    fn replace_stable(&mut self, release: u32, now: u64, what: &str) {
        let old = self.stable;
        if old != release {
            self.set_state(old, State::Superseded, None, now);
        }
        self.stable = release;
        self.set_state(release, State::Stable, None, now);
        self.event(now, release, what);
    }

    fn set_state(&mut self, release: u32, state: State, reason: Option<&str>, now: u64) {
        if let Some(v) = self.versions.iter_mut().find(|v| v.release == release) {
            v.state = state;
            v.changed_ms = now;
            v.reason = reason.map(str::to_string);
        }
    }

    fn event(&mut self, at_ms: u64, release: u32, what: &str) {
        self.events.push(Event {
            at_ms,
            release,
            what: what.to_string(),
        });
        let over = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..over);
    }

    /// Drops the oldest versions that run nowhere, beyond [`MAX_VERSIONS`].
    fn trim(&mut self) {
        while self.versions.len() > MAX_VERSIONS {
            let Some(i) = self
                .versions
                .iter()
                .position(|v| matches!(v.state, State::Superseded | State::RolledBack))
            else {
                break;
            };
            self.versions.remove(i);
        }
    }
}

fn version(release: u32, m: &Module, state: State, source: &str, now: u64) -> Version {
    Version {
        release,
        sha256: m.sha256.clone(),
        version: m.sha256[..12].to_string(),
        bytes: m.bytes,
        state,
        source: source.to_string(),
        created_ms: now,
        changed_ms: now,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: char) -> Module {
        Module {
            sha256: c.to_string().repeat(64),
            bytes: 10,
        }
    }

    #[test]
    fn a_canary_walks_its_steps_and_becomes_stable() {
        let steps = [5.0, 25.0, 100.0];
        let mut r = Record::first("f", &m('a'), 1);
        assert_eq!(r.deploy(&m('b'), Some(5.0), 2).unwrap(), 2);
        assert_eq!(r.get(2).unwrap().state, State::Canary);
        assert!(
            r.deploy(&m('c'), Some(5.0), 3).is_err(),
            "one canary at a time"
        );
        r.promote(&steps, 4).unwrap();
        assert_eq!(r.canary.as_ref().unwrap().share_pct, 25.0);
        r.promote(&steps, 5).unwrap();
        assert!(r.canary.is_none());
        assert_eq!(r.stable, 2);
        assert_eq!(r.get(1).unwrap().state, State::Superseded);
        assert_eq!(r.events.len(), 4);
    }

    #[test]
    fn a_rejected_canary_leaves_the_stable_version_alone() {
        let mut r = Record::first("f", &m('a'), 1);
        r.deploy(&m('b'), Some(5.0), 2).unwrap();
        assert_eq!(r.reject_canary("failure rate 4% vs 0%", 3).unwrap(), 2);
        assert_eq!(r.stable, 1);
        let v = r.get(2).unwrap();
        assert_eq!(v.state, State::RolledBack);
        assert_eq!(v.reason.as_deref(), Some("failure rate 4% vs 0%"));
    }

    #[test]
    fn rollback_returns_to_the_previous_stable_or_a_named_one() {
        let mut r = Record::first("f", &m('a'), 1);
        r.deploy(&m('b'), None, 2).unwrap();
        r.deploy(&m('c'), None, 3).unwrap();
        assert_eq!(r.stable, 3);
        assert_eq!(r.rollback(None, 4).unwrap(), 2);
        assert_eq!(r.get(3).unwrap().state, State::RolledBack);
        assert_eq!(r.rollback(Some(1), 5).unwrap(), 1);
        assert_eq!(r.resolve("r3").unwrap(), 3);
        assert_eq!(r.resolve(&"b".repeat(8)).unwrap(), 2);
        assert!(r.resolve("9").is_err());
        assert!(r.rollback(Some(1), 6).is_err(), "already stable");
        assert!(
            r.deploy(&m('a'), None, 7).is_err(),
            "the stable module again"
        );
    }

    #[test]
    fn the_record_stays_bounded() {
        let mut r = Record::first("f", &m('a'), 1);
        for i in 0..(MAX_VERSIONS as u64 + 20) {
            let module = Module {
                sha256: format!("{i:064x}"),
                bytes: 1,
            };
            r.deploy(&module, None, i + 2).unwrap();
        }
        assert_eq!(r.versions.len(), MAX_VERSIONS);
        assert!(r.events.len() <= MAX_EVENTS);
        assert!(r.get(r.stable).is_some());
    }
}
