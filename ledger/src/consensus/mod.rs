//! BFT ordering of opaque batches with Malachite's no-IO Tendermint core, behind nexus's own
//! engine-neutral boundary: submit items, receive decided batches with commit certificates.
//!
//! Layout:
//! - [`types`]: the Malachite `Context` (heights, validator keys, batches, votes, proposals).
//! - [`signing`]: domain-separated ed25519 signing, certificate verification.
//! - [`codec`]: the versioned binary codec for WAL entries, wire messages, decided records.
//! - [`wal`], [`store`]: the write-ahead log and the decided store (traits, redb, in-memory).
//! - [`node`]: the driver that feeds inputs through `process!` and handles every effect.
//! - [`sim`]: the deterministic simulator used by the tests.
//!
//! # Wiring
//! A [`Node`] is a synchronous state machine; run it on one thread (it may fsync) and feed it:
//! - [`Consensus::on_message`] for every frame a peer sends, with the validator key the
//!   transport authenticated (QUIC + mTLS: the peer certificate is bound to that key);
//! - [`Consensus::on_timer`] when a timer set through [`Host::set_timer`] expires (the host
//!   never cancels timers; stale expiries are ignored by generation);
//! - [`Consensus::submit`] for client requests (opaque bytes; the node gossips them).
//!
//! The host implements [`Host`] (send/broadcast to the other replicas, timers, a clock), a
//! [`wal::Wal`] (e.g. [`RedbWal`]), a [`store::DecidedStore`] (e.g. [`RedbStore`], or the
//! ledger's own tables: it must hold every height, empty batches included, because catch-up
//! serves by height) and an [`App`]: the validator set per height, the validity check run
//! before voting (client signatures, git content), and `on_decided`, called once per height
//! after the record is durable and before the next height starts.
//!
//! # Guarantees relied on
//! - Every own vote or proposal is in the WAL and flushed before it is sent; a decided height
//!   is flushed to the WAL, then committed to the store, then the WAL moves to the next height.
//! - On start, the node resumes at the height after the last stored one and replays the WAL
//!   if it holds that height: re-derived messages reuse the recorded signatures.
//! - Sync records are verified by the core (`VerifyExtendedCommitCertificate`): a certificate
//!   with any bad, duplicate or unknown signature is refused as a whole.
//! - Nothing a peer sends can make the node panic: bytes are decoded by [`codec`] first.

use std::time::Duration;

use arc_malachitebft_core_types::LinearTimeouts;

pub mod codec;
mod effects;
pub mod file_wal;
pub mod node;
mod pool;
pub mod signing;
pub mod sim;
pub mod store;
mod sync;
#[cfg(test)]
mod tests;
pub mod timers;
pub mod types;
pub mod wal;

pub use codec::{CodecError, Decided};
pub use file_wal::FileWal;
pub use node::Node;
pub use signing::{CertError, ChainId, CommitCert, Signer, Verifier, verify_commit_cert};
pub use store::{DecidedStore, MemStore, RedbStore, StoreError};
pub use timers::TimerId;
pub use types::{Batch, BatchId, ValidatorKey, ValidatorSet, ValidatorSetError, batch_id_of};
pub use wal::{MemWal, RedbWal, Wal, WalError};

/// What nexus sees of consensus, whatever the engine.
pub trait Consensus {
    /// Offer items for ordering. They are gossiped to the other replicas so whichever proposes
    /// next can include them. Returns how many were new.
    fn submit(&mut self, items: Vec<Vec<u8>>) -> Result<usize, NodeError>;
    /// A message from peer `from` (the validator key its transport authenticated).
    fn on_message(&mut self, from: ValidatorKey, bytes: &[u8]) -> Result<(), NodeError>;
    /// A timer set through [`Host::set_timer`] expired.
    fn on_timer(&mut self, timer: TimerId, generation: u64) -> Result<(), NodeError>;
    /// The decided record at `height`, if any.
    fn decided(&self, height: u64) -> Result<Option<Decided>, NodeError>;
    /// Where this replica is.
    fn status(&self) -> NodeStatus;
}

/// The node's window on the world: peers, timers and the clock. Implementations must not call
/// back into the node from these methods.
pub trait Host {
    /// Send `msg` to one peer.
    fn send(&mut self, to: ValidatorKey, msg: Vec<u8>);
    /// Send `msg` to every peer.
    fn broadcast(&mut self, msg: Vec<u8>);
    /// Call [`Consensus::on_timer`] with `(timer, generation)` after `after`. Timers are never
    /// cancelled through the host: a stale expiry is recognised and ignored by the node.
    fn set_timer(&mut self, timer: TimerId, generation: u64, after: Duration);
    /// Milliseconds on a monotonic clock (used for reporting only; decisions never read it).
    fn now_ms(&self) -> u64;
}

/// The application's side of consensus.
pub trait App {
    /// The validator set at `height`, a function of decided state (for example, membership
    /// changes decided at `h` apply from `h + k`). `None` stops the node: it cannot run.
    fn validator_set(&self, height: u64) -> Option<ValidatorSet>;
    /// Whether a proposed batch may be voted for at `height` (client signatures, git content,
    /// ...). Must not depend on the local clock or on anything peers cannot also check.
    fn validate(&mut self, height: u64, batch: &Batch) -> bool;
    /// Whether a submitted or gossiped item may enter the pending pool.
    fn admit(&mut self, item: &[u8]) -> bool {
        let _ = item;
        true
    }
    /// The value this replica proposes at `height`, from the oldest pending items (within the
    /// batch limits). The default proposes them as they are. An application may add a header
    /// (a timestamp) and leave out items that became useless (returned in `drop`, which are
    /// removed from the pool without being gossiped again).
    fn build(&mut self, height: u64, pending: Vec<Vec<u8>>) -> Built {
        let _ = height;
        Built {
            items: pending,
            drop: Vec::new(),
        }
    }
    /// A height was decided and durably stored (called once per height, in order, before the
    /// next height starts, so `validator_set(h + 1)` may depend on it).
    fn on_decided(&mut self, decided: &Decided);
}

/// What [`App::build`] made of the pending items.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// The batch to propose.
    pub items: Vec<Vec<u8>>,
    /// Pending items to forget (invalid by now).
    pub drop: Vec<Vec<u8>>,
}

/// Consensus round timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub propose: Duration,
    pub prevote: Duration,
    pub precommit: Duration,
    /// Added per round to each of the three above.
    pub delta: Duration,
    /// Re-send our last votes and round certificate this often.
    pub rebroadcast: Duration,
    /// Upper bound for any round timeout.
    pub max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            propose: Duration::from_millis(3000),
            prevote: Duration::from_millis(1000),
            precommit: Duration::from_millis(1000),
            delta: Duration::from_millis(500),
            rebroadcast: Duration::from_millis(5000),
            max: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    pub(crate) fn linear(&self) -> LinearTimeouts {
        LinearTimeouts {
            propose: self.propose,
            propose_delta: self.delta,
            prevote: self.prevote,
            prevote_delta: self.delta,
            precommit: self.precommit,
            precommit_delta: self.delta,
            rebroadcast: self.rebroadcast,
            max_timeout: self.max,
        }
    }
}

/// Tunables of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub chain: ChainId,
    pub timeouts: Timeouts,
    /// Most items and payload bytes per proposed batch.
    pub max_batch_items: usize,
    pub max_batch_bytes: usize,
    /// A proposer with nothing pending waits this long for items, then proposes an empty batch.
    pub empty_batch_delay: Duration,
    /// How often to broadcast a status beacon (drives catch-up).
    pub status_interval: Duration,
    /// How long to wait for a sync response before asking another peer.
    pub sync_timeout: Duration,
    /// Most heights asked for, and most payload bytes served, per sync request.
    pub sync_max_heights: u64,
    pub sync_max_bytes: usize,
    /// Most pending items held.
    pub pool_max_items: usize,
    /// Start the next height only when there is something to order: pending items, or a peer
    /// that already works on it or is ahead. An idle cluster then decides nothing (no empty
    /// heights, no fsyncs). Pending items are also gossiped again while they wait.
    pub lazy_heights: bool,
}

impl NodeConfig {
    /// Defaults for a cluster called `chain`.
    pub fn new(chain: ChainId) -> Self {
        NodeConfig {
            chain,
            timeouts: Timeouts::default(),
            max_batch_items: 1024,
            max_batch_bytes: 4 << 20,
            empty_batch_delay: Duration::from_millis(1000),
            status_interval: Duration::from_millis(1000),
            sync_timeout: Duration::from_millis(2000),
            sync_max_heights: 64,
            sync_max_bytes: 8 << 20,
            pool_max_items: 100_000,
            lazy_heights: false,
        }
    }
}

/// Why the node stopped or refused a call. After any error except `NotStarted` the node is
/// halted: it signs nothing more and needs an operator (or a restart that replays the WAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("node not started")]
    NotStarted,
    #[error("node halted earlier: {0}")]
    Halted(String),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unreadable WAL entry: {0}")]
    WalCorrupt(CodecError),
    #[error("the application has no validator set for height {0}")]
    NoValidatorSet(u64),
    #[error("consensus core error: {0}")]
    Core(String),
    #[error("decided {new} at height {height} but {stored} is stored")]
    Conflict {
        height: u64,
        stored: BatchId,
        new: BatchId,
    },
}

/// A snapshot of the node for `nexus cluster status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub key: ValidatorKey,
    /// Height being decided.
    pub height: u64,
    /// Round at that height, if started.
    pub round: Option<u32>,
    /// Last decided height.
    pub tip: Option<u64>,
    /// Highest tip a peer reported.
    pub best_peer_tip: u64,
    pub pending_items: usize,
    /// Waiting for something to order before starting `height` (see `lazy_heights`).
    pub idle: bool,
    /// Members of the validator set at `height`.
    pub validators: usize,
    /// What each peer last said about itself (status beacons).
    pub peers: Vec<PeerStatus>,
    pub halted: Option<String>,
    pub stats: Stats,
}

/// A peer as its last status beacon described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub key: ValidatorKey,
    /// Its last decided height.
    pub tip: u64,
    /// The height it works on, and its round there (`None`: not started, idle).
    pub height: u64,
    pub round: Option<u32>,
    /// When the beacon arrived ([`Host::now_ms`]).
    pub seen_ms: u64,
}

/// Counters, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub decided: u64,
    pub decided_by_sync: u64,
    pub undecodable_messages: u64,
    pub rejected_proposals: u64,
    pub sync_requests: u64,
    pub sync_records_rejected: u64,
    /// Heights at which misbehaviour evidence (equivocation) was recorded.
    pub misbehaviour_heights: u64,
    pub replayed_entries: u64,
}
