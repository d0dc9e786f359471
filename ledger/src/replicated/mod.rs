//! The replicated ledger: one replica's consensus node (Malachite, see [`crate::consensus`])
//! running on its own thread over the ledger's own store, so every decided height is an entry
//! and its commit certificate is stored beside it.
//!
//! - [`batch`]: the decided value (header + requests + read barriers) and the certificate
//!   record, pure.
//! - [`app`]: the WAL, decided store and application seams over the ledger.
//! - [`runner`]: the node thread (peer messages, timers, client requests, read barriers).
//! - `syncer`: the thread that makes decided entries durable in the background.
//! - `mem` (tests, and the `testutil` feature): an in-process network between replicas.
//!
//! Wiring: [`crate::Ledger::open_replicated`] with a [`ReplicaConfig`] and a [`Network`] that
//! carries bytes to peers (the server's QUIC links); peer bytes come back through
//! [`crate::Ledger::deliver`] with the validator key the transport authenticated.
//!
//! # Invariants
//! - Entry height == consensus height; entry `h` holds exactly the requests decided at `h`, in
//!   order (also the ones that failed or changed nothing then: they have no events and their
//!   answer is kept for retries), so its certificate can be checked against the chain alone.
//! - A client is answered only once its request is in a decided entry; with one validator the
//!   entry is fsynced first, with more the decision is durable on the 2f+1 replicas whose
//!   precommits it carries (each flushed its WAL before sending).
//! - A request id is used once: a decided id is never proposed again, whatever became of it.
//! - Nothing a peer sends reaches the core unchecked: proposals are validated (signatures,
//!   ids, admission, timestamps) before the node votes for them.

pub mod app;
pub mod batch;
#[cfg(any(test, feature = "testutil"))]
pub mod mem;
pub(crate) mod runner;
mod syncer;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use app::{MAX_CLOCK_AHEAD_MS, consensus_set};
pub use runner::Handle;

use crate::consensus::{NodeConfig, PeerStatus, Timeouts, ValidatorKey};
use crate::event::Validator;

/// Heights between the entry that changes the validator set and the first height the new set
/// decides (`MembershipChanged.effective_height = height + MEMBERSHIP_DELAY`). Two heights give
/// every replica one full height, after it learnt of the change, to connect to new members.
pub const MEMBERSHIP_DELAY: u64 = 2;

/// Carries consensus bytes to other replicas. Must not block: queue and return.
pub trait Network: Send + Sync + 'static {
    /// To one replica (by validator key).
    fn send(&self, to: ValidatorKey, msg: Vec<u8>);
    /// To every other replica this one knows.
    fn broadcast(&self, msg: Vec<u8>);
}

/// Who this replica is and how its consensus runs.
#[derive(Clone)]
pub struct ReplicaConfig {
    /// The cluster name: signatures never cross clusters.
    pub cluster: String,
    /// This replica's name (`replica:<name>`).
    pub name: String,
    /// The 32-byte ed25519 seed of this replica's key (its certificate key and validator key).
    pub seed: [u8; 32],
    /// The validator set of height 1 (recorded in the ledger on first start; must then match).
    pub genesis: Vec<Validator>,
    pub timeouts: Timeouts,
    /// A proposer with nothing to propose for a started height waits this long.
    pub empty_batch_delay: Duration,
    /// How often replicas tell each other where they are (drives catch-up and status).
    pub status_interval: Duration,
    /// A submitted request not decided after this long is answered with an error (it may still
    /// be decided later; a retry with the same id is applied at most once).
    pub submit_timeout: Duration,
    /// Least time between two syncs of the ledger file. Decided entries are appended without an
    /// fsync (by the ledger writer thread); their decisions are in the WAL until a sync makes
    /// the ledger durable past them. A longer gap writes fewer pages (the same B-tree pages
    /// change at every height) and takes fewer `fdatasync`s from the disk the WAL shares; a
    /// restart then replays more heights from the WAL.
    pub ledger_sync_gap: Duration,
}

impl std::fmt::Debug for ReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaConfig")
            .field("cluster", &self.cluster)
            .field("name", &self.name)
            .field("genesis", &self.genesis)
            .finish_non_exhaustive()
    }
}

impl ReplicaConfig {
    /// Defaults for `name` in `cluster` with key `seed` and validators `genesis`.
    pub fn new(cluster: &str, name: &str, seed: [u8; 32], genesis: Vec<Validator>) -> Self {
        ReplicaConfig {
            cluster: cluster.into(),
            name: name.into(),
            seed,
            genesis,
            // Replicas of a control plane sit on one network: a round gives up on a silent
            // proposer after 1 s (+250 ms per round), not Tendermint's WAN-friendly 3 s.
            timeouts: Timeouts {
                propose: Duration::from_millis(1000),
                prevote: Duration::from_millis(500),
                precommit: Duration::from_millis(500),
                delta: Duration::from_millis(250),
                rebroadcast: Duration::from_millis(2000),
                max: Duration::from_secs(30),
            },
            empty_batch_delay: Duration::from_millis(200),
            status_interval: Duration::from_millis(1000),
            submit_timeout: Duration::from_secs(60),
            // One sync a second: a third of the ledger bytes of 100 ms (3x fewer page writes per
            // entry, measured), and the syncs no longer slow the WAL flushes of most heights.
            ledger_sync_gap: Duration::from_secs(1),
        }
    }

    pub(crate) fn node_config(&self, max_batch: usize) -> NodeConfig {
        let mut c = NodeConfig::new(crate::consensus::ChainId::from_name(&self.cluster));
        c.timeouts = self.timeouts;
        c.empty_batch_delay = self.empty_batch_delay;
        c.status_interval = self.status_interval;
        c.max_batch_items = max_batch.max(1);
        // Proposals and sync responses must fit the transport's frames with room to spare.
        c.max_batch_bytes = 4 << 20;
        c.sync_max_bytes = 4 << 20;
        c.lazy_heights = true;
        c
    }
}

/// Where a replica's consensus is, for `nexus cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub key: ValidatorKey,
    /// Last decided (and committed) height.
    pub tip: u64,
    /// The height being decided (or waited for while idle) and the round there.
    pub height: u64,
    pub round: Option<u32>,
    pub idle: bool,
    /// The highest tip a peer reported.
    pub best_peer_tip: u64,
    pub pending: usize,
    pub validators: usize,
    pub peers: Vec<PeerStatus>,
    /// Why consensus stopped, if it did.
    pub halted: Option<String>,
    pub decided_by_sync: u64,
    /// Proposals this replica refused to vote for (bad signature, wrong proposer, or a batch
    /// that failed validation: a request refused by admission, a bad timestamp, ...).
    pub rejected_proposals: u64,
    /// The node's clock now (the clock of `PeerStatus::seen_ms`).
    pub now_ms: u64,
}
