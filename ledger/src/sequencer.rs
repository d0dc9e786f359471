//! The ordering seam: where a batch of pending requests becomes the decided value of a height.
//!
//! The ledger's writer collects concurrent submissions into a [`Proposal`] and asks its
//! [`Sequencer`] to decide the next height. [`SingleNode`] decides at once (one replica, no
//! certificate). The BFT engine (`consensus/`, Malachite) implements the same trait: it proposes
//! the batch when this replica is the proposer, votes, and returns whichever value the height
//! decided — possibly another replica's batch — with its commit certificate. The writer then plans
//! the decided requests against the state, builds the entry, and appends it with the certificate.
//! Requests of the proposal that did not make it into the decision stay pending for the next
//! height; decided requests that did not come through this replica are verified again before
//! they are planned.

use thiserror::Error;

use crate::request::SignedRequest;

/// What this replica would like the next height to contain.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub requests: Vec<SignedRequest>,
    /// Proposed entry time (ms since the Unix epoch), never before the previous entry's.
    pub timestamp_ms: u64,
}

/// What the height decided.
#[derive(Debug, Clone)]
pub struct Decision {
    pub requests: Vec<SignedRequest>,
    pub timestamp_ms: u64,
    /// The commit certificate (2f+1 signatures over the value), stored beside the entry.
    pub certificate: Option<Vec<u8>>,
}

/// Ordering failed (for example, this replica lost its quorum and is shutting down).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("ordering failed: {0}")]
pub struct SequencerError(pub String);

/// Decides the value of each height, in order.
pub trait Sequencer: Send + 'static {
    /// Decides `height` (always the log's next height), blocking until it is decided.
    fn decide(&mut self, height: u64, proposal: Proposal) -> Result<Decision, SequencerError>;
}

/// The single-replica sequencer: every proposal is decided immediately, without a certificate.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleNode;

impl Sequencer for SingleNode {
    fn decide(&mut self, _height: u64, proposal: Proposal) -> Result<Decision, SequencerError> {
        Ok(Decision {
            requests: proposal.requests,
            timestamp_ms: proposal.timestamp_ms,
            certificate: None,
        })
    }
}
