//! One leader among several `levee scale` processes: a lease item in the kv store (the DynamoDB
//! table on AWS), taken and renewed with a version-checked write, so two scalers never set
//! desired counts at once. A standby retries every [`LeaderSettings::retry`]; when the leader
//! dies its lease runs out and a standby takes over within `lease + retry`. A leader that
//! stops cleanly hands the lease back at once. Clocks are assumed in step to well within a
//! lease (NTP on AWS keeps them within milliseconds).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::ids::now_ms;
use crate::store::{CommitOutcome, KvCommit, Store};

/// Namespace of the lease (function names cannot start with `_`).
pub const LEADER_NS: &str = "_levee_scaler";
const LEADER_KEY: &str = "leader";

/// Lease timing: how long a lease lasts unrenewed, how often the leader renews it and how often
/// a standby tries to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSettings {
    pub lease: Duration,
    pub renew: Duration,
    pub retry: Duration,
}

impl Default for LeaderSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            renew: Duration::from_secs(3),
            retry: Duration::from_secs(2),
        }
    }
}

impl LeaderSettings {
    /// Settings with a lease of `lease`: renewed every third of it, retried every fifth.
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            lease,
            renew: lease / 3,
            retry: lease / 5,
        }
    }

    /// The longest a fleet goes without a leader after the leader dies.
    pub fn takeover_bound(&self) -> Duration {
        self.lease + self.retry
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    holder: String,
    until_ms: u64,
}

/// A candidate's handle on the lease.
pub struct Lease {
    store: Arc<dyn Store>,
    holder: String,
    settings: LeaderSettings,
}

/// Who holds the lease, as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: String,
    pub remaining: Duration,
}

impl Lease {
    /// A candidate named `holder` (unique per process: host name and pid, say).
    pub fn new(store: Arc<dyn Store>, holder: impl Into<String>, settings: LeaderSettings) -> Self {
        Self {
            store,
            holder: holder.into(),
            settings,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn settings(&self) -> LeaderSettings {
        self.settings
    }

    /// The current holder, if the lease is live.
    pub async fn state(&self) -> Result<Option<LeaseState>> {
        let v = self.store.get_versioned(LEADER_NS, LEADER_KEY).await?;
        Ok(v.value
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            .filter(|h| h.until_ms > now_ms())
            .map(|h| LeaseState {
                remaining: Duration::from_millis(h.until_ms - now_ms()),
                holder: h.holder,
            }))
    }

    /// Takes the lease if it is free or expired, or renews it if this candidate holds it.
    /// `Ok(false)`: another candidate holds it (or won the race for it).
    pub async fn acquire(&self) -> Result<bool> {
        let read = self.store.get_versioned(LEADER_NS, LEADER_KEY).await?;
        let current = read
            .value
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Holder>(b).ok());
        if let Some(h) = &current
            && h.holder != self.holder
            && h.until_ms > now_ms()
        {
            return Ok(false);
        }
        let until_ms = now_ms() + self.settings.lease.as_millis() as u64;
        self.write(read.version, until_ms).await
    }

    /// Gives the lease back (if held), so a standby takes over without waiting for it to run out.
    pub async fn release(&self) -> Result<()> {
        let read = self.store.get_versioned(LEADER_NS, LEADER_KEY).await?;
        let mine = read
            .value
            .as_ref()
            .and_then(|b| serde_json::from_slice::<Holder>(b).ok())
            .is_some_and(|h| h.holder == self.holder);
        if mine {
            self.write(read.version, 0).await?;
        }
        Ok(())
    }

    async fn write(&self, version: u64, until_ms: u64) -> Result<bool> {
        let value = serde_json::to_vec(&Holder {
            holder: self.holder.clone(),
            until_ms,
        })
        .expect("a holder serialises");
        let commit = KvCommit {
            adds: Vec::new(),
            ns: LEADER_NS.into(),
            reads: vec![(LEADER_KEY.into(), version)],
            writes: vec![(LEADER_KEY.into(), Some(Bytes::from(value)))],
            record: None,
        };
        Ok(matches!(
            self.store.commit(&commit).await?,
            CommitOutcome::Committed { .. }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn lease(store: &Arc<dyn Store>, name: &str, ms: u64) -> Lease {
        Lease::new(
            store.clone(),
            name,
            LeaderSettings::with_lease(Duration::from_millis(ms)),
        )
    }

    #[tokio::test]
    async fn one_candidate_holds_the_lease_until_it_runs_out_or_is_released() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = lease(&store, "a", 300);
        let b = lease(&store, "b", 300);
        assert!(a.acquire().await.unwrap());
        assert!(!b.acquire().await.unwrap(), "a holds it");
        assert!(a.acquire().await.unwrap(), "a renews");
        assert_eq!(a.state().await.unwrap().unwrap().holder, "a");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(b.acquire().await.unwrap(), "a's lease ran out");
        assert!(!a.acquire().await.unwrap(), "b holds it now");
        b.release().await.unwrap();
        assert_eq!(a.state().await.unwrap(), None);
        assert!(a.acquire().await.unwrap(), "released: taken at once");
    }

    #[tokio::test]
    async fn two_candidates_racing_for_a_free_lease_get_one_leader() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for _ in 0..20 {
            let cands: Vec<Lease> = (0..4)
                .map(|i| lease(&store, &format!("c{i}"), 60_000))
                .collect();
            let won = futures::future::join_all(cands.iter().map(|c| c.acquire())).await;
            let winners = won.into_iter().filter(|w| *w.as_ref().unwrap()).count();
            assert_eq!(winners, 1);
            let holder = cands[0].state().await.unwrap().unwrap().holder;
            cands
                .iter()
                .find(|c| c.holder() == holder)
                .unwrap()
                .release()
                .await
                .unwrap();
        }
    }
}
