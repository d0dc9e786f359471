//! Replicated ledgers in one process, for tests (here and in crates that build on the ledger,
//! with the `testutil` feature): [`MemNet`] carries consensus bytes between the ledgers
//! registered on it and can cut replicas off; [`test_config`] is a [`ReplicaConfig`] with
//! timings short enough for tests. Nothing here is used by a running replica.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::{Network, ReplicaConfig};
use crate::consensus::{Timeouts, ValidatorKey};
use crate::event::Validator;
use crate::ledger::Ledger;

/// An in-memory network: bytes sent to a registered ledger are delivered at once (on the
/// sender's thread, into the receiver's queue); replicas that are cut neither send nor receive.
#[derive(Default)]
pub struct MemNet {
    ledgers: RwLock<HashMap<ValidatorKey, Arc<Ledger>>>,
    cut: RwLock<HashSet<ValidatorKey>>,
}

impl MemNet {
    /// The network as replica `me` sees it (give it to [`Ledger::open_replicated`]).
    pub fn link(self: &Arc<Self>, me: ValidatorKey) -> Arc<dyn Network> {
        Arc::new(Link {
            me,
            net: self.clone(),
        })
    }

    /// Delivers to `ledger` what is sent to `key` from now on.
    pub fn register(&self, key: ValidatorKey, ledger: Arc<Ledger>) {
        self.write().insert(key, ledger);
    }

    /// Stops delivering to `key` and hands its ledger back.
    pub fn remove(&self, key: &ValidatorKey) -> Option<Arc<Ledger>> {
        self.write().remove(key)
    }

    /// The ledger registered for `key`.
    pub fn get(&self, key: &ValidatorKey) -> Option<Arc<Ledger>> {
        self.read().get(key).cloned()
    }

    /// Cuts `key` off (`true`) or reconnects it.
    pub fn cut(&self, key: ValidatorKey, off: bool) {
        let mut c = self.cut.write().unwrap_or_else(|e| e.into_inner());
        if off {
            c.insert(key);
        } else {
            c.remove(&key);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ValidatorKey, Arc<Ledger>>> {
        self.ledgers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ValidatorKey, Arc<Ledger>>> {
        self.ledgers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, from: ValidatorKey, to: &ValidatorKey, msg: Vec<u8>) {
        {
            let cut = self.cut.read().unwrap_or_else(|e| e.into_inner());
            if cut.contains(&from) || cut.contains(to) {
                return;
            }
        }
        if let Some(l) = self.get(to) {
            l.deliver(from, msg);
        }
    }
}

struct Link {
    me: ValidatorKey,
    net: Arc<MemNet>,
}

impl Network for Link {
    fn send(&self, to: ValidatorKey, msg: Vec<u8>) {
        self.net.deliver(self.me, &to, msg);
    }

    fn broadcast(&self, msg: Vec<u8>) {
        let peers: Vec<ValidatorKey> = self
            .net
            .read()
            .keys()
            .filter(|k| **k != self.me)
            .copied()
            .collect();
        for p in peers {
            self.net.deliver(self.me, &p, msg.clone());
        }
    }
}

/// A replica configuration with test timings: rounds give up on a silent proposer after
/// 400 ms, idle proposers wait 50 ms, status (and re-gossip of pending items) every 100 ms.
pub fn test_config(
    cluster: &str,
    name: &str,
    seed: [u8; 32],
    genesis: Vec<Validator>,
) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::new(cluster, name, seed, genesis);
    cfg.timeouts = Timeouts {
        propose: Duration::from_millis(400),
        prevote: Duration::from_millis(200),
        precommit: Duration::from_millis(200),
        delta: Duration::from_millis(100),
        rebroadcast: Duration::from_millis(500),
        max: Duration::from_secs(3),
    };
    cfg.empty_batch_delay = Duration::from_millis(50);
    cfg.status_interval = Duration::from_millis(100);
    cfg
}
