//! The effect handler: everything Malachite's core asks of the host during `process!` (sign,
//! verify, log, flush, publish, time, decide), answered synchronously and without ever
//! returning `Err` (an `Err` would abort the input halfway through).
//!
//! Outgoing messages wait in an outbox until the node releases it ([`Io::release`]): once per
//! batch of inputs, and before a decided height is committed or the WAL moves to a new height.
//! Releasing flushes the WAL once if any own vote or proposal is waiting, then sends everything,
//! so a proposal and the proposer's own prevote (or several votes) share one fsync.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use arc_malachitebft_core_consensus::{
    ConsensusMsg, Effect, Input, LivenessMsg, LocallyProposedValue, ProposedValue, Resumable,
    Resume, SignedConsensusMsg, VoteExtensionError,
};
use arc_malachitebft_core_types::{
    CertificateError, CommitCertificate, LinearTimeouts, Round, Validity, ValueOrigin,
};
use arc_malachitebft_signing::VerifierExt;

use super::codec::{WireMsg, decode_batch, encode_wal_entry, encode_wire};
use super::pool::Pool;
use super::signing::{Signer, Verifier, run_ready};
use super::sync::SyncState;
use super::timers::{TimerId, TimerKey, TimerTable};
use super::types::{Batch, Height, NexusCtx};
use super::wal::Wal;
use super::{App, Host, NodeConfig, NodeError, Stats};

/// The host side of the node: IO handles plus the bookkeeping effects need. Kept apart from
/// Malachite's `State`, which `process!` borrows while this handles effects.
pub(crate) struct Io<H, W, S, A> {
    pub host: H,
    pub wal: W,
    pub store: S,
    pub app: A,
    pub cfg: NodeConfig,
    pub timeouts: LinearTimeouts,
    pub signer: Signer,
    pub verifier: Verifier,
    pub timers: TimerTable,
    pub pool: Pool,
    pub sync: SyncState,
    /// While replaying the WAL: the encoded entries already in it (not appended again).
    pub replay: Option<HashSet<Vec<u8>>>,
    /// Our own proposed values found in the WAL for the current height, by round.
    pub recovered: BTreeMap<u32, Batch>,
    /// A `GetValue` waiting for items (or for the empty-batch delay).
    pub get_value: Option<(Height, Round)>,
    /// Inputs produced while handling effects, fed after `process!` returns.
    pub feedback: Vec<Input<NexusCtx>>,
    /// Set by `Decide`; the value is committed once `process!` returns.
    pub pending_decide: Option<CommitCertificate<NexusCtx>>,
    /// Set by `Finalize`; the next height starts after the decision is committed.
    pub finalized: Option<Height>,
    /// Height whose value was handed over by sync.
    pub sync_fed: Option<u64>,
    pub fatal: Option<NodeError>,
    pub stats: Stats,
    /// Mutation testing only: when false, messages go out without the WAL flush.
    pub flush_before_publish: bool,
    /// Messages waiting for [`Io::release`]: `None` = broadcast, `Some(peer)` = send.
    pub outbox: Vec<(Option<super::types::ValidatorKey>, Vec<u8>)>,
    /// Whether the outbox holds an own vote or proposal (the WAL must be flushed first).
    pub outbox_signed: bool,
    /// This replica is the whole validator set: its votes reach nobody, so they need no flush
    /// before they are "sent" (a decided height is then committed durably instead).
    pub solo: bool,
}

impl<H: Host, W: Wal, S, A> Io<H, W, S, A> {
    /// Arm a timer through the host.
    pub fn arm(&mut self, key: TimerKey, after: Duration) {
        let generation = self.timers.arm(key);
        self.host.set_timer(TimerId(key), generation, after);
    }

    /// Make appended WAL entries durable. On failure the node halts: nothing more is sent.
    fn flush_wal(&mut self) -> bool {
        if self.fatal.is_some() {
            return false;
        }
        match self.wal.flush() {
            Ok(()) => true,
            Err(e) => {
                self.fatal = Some(NodeError::Wal(e));
                false
            }
        }
    }

    /// Queue a message for every peer.
    pub fn broadcast(&mut self, msg: &WireMsg) {
        if self.fatal.is_none() {
            self.outbox.push((None, encode_wire(msg)));
        }
    }

    /// Queue a message for one peer.
    pub fn send(&mut self, to: super::types::ValidatorKey, msg: &WireMsg) {
        if self.fatal.is_none() {
            self.outbox.push((Some(to), encode_wire(msg)));
        }
    }

    /// Send what the outbox holds: first flush the WAL if an own vote or proposal is among it
    /// (on failure the node halts and nothing is sent).
    pub fn release(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let signed = std::mem::take(&mut self.outbox_signed);
        if signed && self.flush_before_publish && !self.solo && !self.flush_wal() {
            self.outbox.clear();
            return;
        }
        if self.fatal.is_some() {
            self.outbox.clear();
            return;
        }
        for (to, msg) in std::mem::take(&mut self.outbox) {
            match to {
                Some(peer) => self.host.send(peer, msg),
                None => self.host.broadcast(msg),
            }
        }
    }

    fn wal_append(&mut self, height: Height, input: &Input<NexusCtx>) {
        if self.fatal.is_some() || self.wal.height() != Some(height.0) {
            return;
        }
        let Ok(bytes) = encode_wal_entry(input) else {
            return;
        };
        if self.replay.as_ref().is_some_and(|set| set.contains(&bytes)) {
            return;
        }
        self.wal.append(bytes);
    }
}

impl<H: Host, W: Wal, S, A: App> Io<H, W, S, A> {
    /// Propose the oldest pending items now (possibly none), as the application builds them.
    pub fn propose_now(&mut self, height: Height, round: Round) {
        self.get_value = None;
        self.timers.cancel(TimerKey::BuildValue);
        let pending = self
            .pool
            .peek_batch(self.cfg.max_batch_items, self.cfg.max_batch_bytes);
        let built = self.app.build(height.0, pending);
        if !built.drop.is_empty() {
            self.pool.remove(&built.drop);
        }
        let value = Batch::new(built.items);
        self.feedback.push(Input::Propose(LocallyProposedValue::new(
            height, round, value,
        )));
    }

    fn on_get_value(&mut self, height: Height, round: Round) {
        if let Some(batch) = round.as_u32().and_then(|r| self.recovered.get(&r)) {
            // The WAL shows we already proposed at this round: propose the same batch.
            let value = batch.clone();
            self.feedback.push(Input::Propose(LocallyProposedValue::new(
                height, round, value,
            )));
            return;
        }
        if !self.pool.is_empty() || self.cfg.empty_batch_delay.is_zero() {
            self.propose_now(height, round);
        } else {
            self.get_value = Some((height, round));
            self.arm(TimerKey::BuildValue, self.cfg.empty_batch_delay);
        }
    }

    fn on_sync_verified(
        &mut self,
        response: arc_malachitebft_core_types::ValueResponse<NexusCtx>,
        proposer: super::types::ValidatorKey,
    ) {
        let cert = &response.certificate;
        match decode_batch(&response.value_bytes) {
            Ok(batch) if batch.id() == cert.value_id => {
                self.sync_fed = Some(cert.height.0);
                self.feedback.push(Input::ProposedValue(
                    ProposedValue {
                        height: cert.height,
                        round: cert.round,
                        valid_round: Round::Nil,
                        proposer,
                        value: batch,
                        validity: Validity::Valid,
                    },
                    ValueOrigin::Sync,
                ));
            }
            _ => self.sync.rejected(),
        }
    }

    /// Answer one effect. Never returns `Err`.
    pub fn handle(&mut self, effect: Effect<NexusCtx>) -> Result<Resume<NexusCtx>, Infallible> {
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.timers.cancel_consensus();
                r.resume_with(())
            }
            Effect::CancelTimeout(t, r) => {
                self.timers.cancel(TimerKey::Consensus(t));
                r.resume_with(())
            }
            Effect::ScheduleTimeout(t, r) => {
                let after = <LinearTimeouts as arc_malachitebft_core_types::Timeouts<NexusCtx>>::duration_for(&self.timeouts, t);
                self.arm(TimerKey::Consensus(t), after);
                r.resume_with(())
            }
            // The engine flushes here; we need not: every own message is flushed before it is
            // sent, and that flush covers whatever was logged before it (the log is ordered).
            Effect::StartRound(_, _, _, _, r) => r.resume_with(()),
            Effect::PublishConsensusMsg(msg, r) => {
                // The core appended the message before publishing it: it leaves only after the
                // WAL flush that `release` does first.
                let wire = match msg {
                    SignedConsensusMsg::Vote(v) => WireMsg::Vote(v),
                    SignedConsensusMsg::Proposal(p) => WireMsg::Proposal(p),
                };
                self.broadcast(&wire);
                self.outbox_signed = true;
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                let wire = match msg {
                    LivenessMsg::Vote(v) => WireMsg::Vote(v),
                    LivenessMsg::PolkaCertificate(c) => WireMsg::Polka(c),
                    LivenessMsg::SkipRoundCertificate(c) => WireMsg::RoundCert(c),
                };
                self.broadcast(&wire);
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.broadcast(&WireMsg::Vote(v));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.broadcast(&WireMsg::RoundCert(c));
                r.resume_with(())
            }
            Effect::GetValue(height, round, _timeout, r) => {
                self.on_get_value(height, round);
                r.resume_with(())
            }
            // Proposal parts are not used (ProposalOnly): the proposal carries the batch.
            Effect::RestreamProposal(_, _, _, _, _, r) => r.resume_with(()),
            Effect::SignVote(vote, r) => r.resume_with(self.signer.sign_vote(vote)),
            Effect::SignProposal(p, r) => r.resume_with(self.signer.sign_proposal(p)),
            Effect::VerifySignature(msg, key, r) => {
                let ok = match &msg.message {
                    ConsensusMsg::Vote(v) => self.verifier.verify_vote(v, &msg.signature, &key),
                    ConsensusMsg::Proposal(p) => {
                        self.verifier.verify_proposal(p, &msg.signature, &key)
                    }
                };
                r.resume_with(ok)
            }
            Effect::VerifyCommitCertificate(c, vs, th, r) => r.resume_with(
                run_ready(
                    self.verifier
                        .verify_commit_certificate(&NexusCtx, &c, &vs, th),
                )
                .unwrap_or(Err(CertificateError::VerificationError(None))),
            ),
            Effect::VerifyExtendedCommitCertificate(c, vs, th, policy, r) => r.resume_with(
                // Extensions are disabled: the check rejects any certificate carrying one, so
                // there is nothing for the application to judge.
                run_ready(
                    self.verifier
                        .verify_extended_commit_certificate(&NexusCtx, &c, &vs, th, policy),
                )
                .unwrap_or(Err(CertificateError::VerificationError(None))),
            ),
            Effect::VerifyPolkaCertificate(c, vs, th, r) => r.resume_with(
                run_ready(
                    self.verifier
                        .verify_polka_certificate(&NexusCtx, &c, &vs, th),
                )
                .unwrap_or(Err(CertificateError::VerificationError(None))),
            ),
            Effect::VerifyRoundCertificate(c, vs, th, r) => r.resume_with(
                run_ready(
                    self.verifier
                        .verify_round_certificate(&NexusCtx, &c, &vs, th),
                )
                .unwrap_or(Err(CertificateError::VerificationError(None))),
            ),
            Effect::WalAppend(height, input, r) => {
                self.wal_append(height, &input);
                r.resume_with(())
            }
            // Only emitted when extensions are required; nexus disables them.
            Effect::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => {
                r.resume_with(Err(VoteExtensionError::InvalidVoteExtension))
            }
            Effect::CertVerifiedSyncValue(response, proposer, r) => {
                self.on_sync_verified(response, proposer);
                r.resume_with(())
            }
            Effect::CertRejectedSyncValue(_peer, _height, _error, r) => {
                self.sync.rejected();
                r.resume_with(())
            }
            Effect::Decide(cert, _extensions, r) => {
                // Committed once `process!` returns, after the outbox is released (so every own
                // message sent is durable before the decision is). Unsent WAL entries (others'
                // votes) need not be durable: the store is at this height once it commits.
                self.pending_decide = Some(cert);
                r.resume_with(())
            }
            Effect::Finalize(cert, _extensions, evidence, r) => {
                if !evidence.is_empty() {
                    self.stats.misbehaviour_heights += 1;
                }
                self.finalized = Some(cert.height);
                r.resume_with(())
            }
        })
    }
}
