//! The replica driver: crash recovery (WAL replay), the input queue fed one input at a time
//! through Malachite's `process!`, proposal validation, decided-value commits, catch-up and
//! the pending pool. Deterministic: its behaviour is a function of the calls it receives.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use arc_malachitebft_core_consensus::{
    Input, MAX_FUTURE_ROUND_LOOKAHEAD, Params, PeerId, State, ValuePayload, process,
};
use arc_malachitebft_core_types::{
    ExtendedCommitCertificate, Round, SignedProposal, ValueResponse, VoteExtensionPolicy,
    VoteExtensions,
};

use super::codec::{Decided, WireMsg, decode_wal_entry, decode_wire, encode_batch};
use super::effects::Io;
use super::pool::Pool;
use super::signing::{CommitCert, Signer, Verifier};
use super::store::DecidedStore;
use super::sync::SyncState;
use super::timers::{TimerId, TimerKey, TimerTable};
use super::types::{BatchId, Height, NexusCtx, ValidatorKey, ValidatorSet};
use super::wal::Wal;
use super::{App, Consensus, Host, NodeConfig, NodeError, NodeStatus, PeerStatus, Stats};

/// Future heights (and inputs per height) the core buffers for us.
const QUEUE_HEIGHTS: usize = 16;
const QUEUE_PER_HEIGHT: usize = 1024;
/// Proposals for future heights we hold for validation once that height starts.
const FUTURE_HEIGHTS: u64 = 8;
const FUTURE_PER_HEIGHT: usize = 16;

/// One consensus replica. `H` talks to peers and keeps time, `W` is the write-ahead log, `S` the
/// decided store, `A` the application.
pub struct Node<H: Host, W: Wal, S: DecidedStore, A: App> {
    state: Option<State<NexusCtx>>,
    io: Io<H, W, S, A>,
    queue: VecDeque<Input<NexusCtx>>,
    future: BTreeMap<u64, Vec<SignedProposal<NexusCtx>>>,
    /// Validity verdicts for batches proposed at the current height.
    verdicts: HashMap<BatchId, bool>,
    validations_per_round: HashMap<u32, u8>,
    verdict_height: u64,
    replay_enabled: bool,
    /// With `lazy_heights`: the height to start (and its validator set) once there is work.
    held: Option<(u64, ValidatorSet)>,
    /// A peer showed that it works on the held height, or is past it: start it.
    wake: bool,
    /// Consensus messages that arrived while holding, handled once the height starts.
    stash: Vec<(ValidatorKey, WireMsg)>,
    /// Status beacons of peers.
    peers: BTreeMap<ValidatorKey, PeerStatus>,
}

impl<H: Host, W: Wal, S: DecidedStore, A: App> std::fmt::Debug for Node<H, W, S, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("status", &self.status())
            .finish()
    }
}

/// The peer id Malachite's sync path carries: an identity multihash of the validator key.
pub(crate) fn peer_id(key: &ValidatorKey) -> Option<PeerId> {
    let mut bytes = vec![0x00, 32];
    bytes.extend_from_slice(&key.0);
    PeerId::from_bytes(&bytes).ok()
}

impl<H: Host, W: Wal, S: DecidedStore, A: App> Node<H, W, S, A> {
    /// A node that does nothing until [`Node::start`].
    pub fn new(cfg: NodeConfig, signer: Signer, host: H, wal: W, store: S, app: A) -> Self {
        // Remembered verifications: the votes of a commit certificate were checked one by one
        // as they arrived; checking the certificate then costs hashes, not signatures.
        let cache = std::sync::Arc::new(std::sync::Mutex::new(Default::default()));
        let verifier = Verifier::with_cache(signer.chain(), cache);
        Self::with_verifier(cfg, signer, verifier, host, wal, store, app)
    }

    /// Like [`Node::new`] with a caller-supplied verifier (e.g. sharing a cache).
    pub fn with_verifier(
        cfg: NodeConfig,
        signer: Signer,
        verifier: Verifier,
        host: H,
        wal: W,
        store: S,
        app: A,
    ) -> Self {
        let timeouts = cfg.timeouts.linear();
        let pool = Pool::new(cfg.pool_max_items);
        Node {
            state: None,
            io: Io {
                host,
                wal,
                store,
                app,
                cfg,
                timeouts,
                signer,
                verifier,
                timers: TimerTable::default(),
                pool,
                sync: SyncState::default(),
                replay: None,
                recovered: BTreeMap::new(),
                get_value: None,
                feedback: Vec::new(),
                pending_decide: None,
                finalized: None,
                sync_fed: None,
                fatal: None,
                stats: Stats::default(),
                flush_before_publish: true,
                outbox: Vec::new(),
                outbox_signed: false,
                solo: false,
            },
            queue: VecDeque::new(),
            future: BTreeMap::new(),
            verdicts: HashMap::new(),
            validations_per_round: HashMap::new(),
            verdict_height: 0,
            replay_enabled: true,
            held: None,
            wake: false,
            stash: Vec::new(),
            peers: BTreeMap::new(),
        }
    }

    /// Mutation testing only: start without replaying the WAL (which is unsafe).
    #[doc(hidden)]
    pub fn disable_wal_replay_for_testing(&mut self) {
        self.replay_enabled = false;
    }

    /// Mutation testing only: send votes and proposals without flushing the WAL first.
    #[doc(hidden)]
    pub fn disable_flush_before_publish_for_testing(&mut self) {
        self.io.flush_before_publish = false;
    }

    pub fn host(&self) -> &H {
        &self.io.host
    }
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.io.host
    }
    pub fn wal(&self) -> &W {
        &self.io.wal
    }
    #[cfg(test)]
    pub(crate) fn wal_mut_for_tests(&mut self) -> &mut W {
        &mut self.io.wal
    }
    pub fn store(&self) -> &S {
        &self.io.store
    }
    pub fn app(&self) -> &A {
        &self.io.app
    }
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.io.app
    }
    pub fn key(&self) -> ValidatorKey {
        self.io.signer.address()
    }

    /// Take the node apart (a crash: state and timers are dropped, storage survives).
    pub fn into_parts(self) -> (H, W, S, A) {
        (self.io.host, self.io.wal, self.io.store, self.io.app)
    }

    /// Recover and start: resume at the height after the last decided one, replaying the WAL
    /// if it holds entries for that height.
    pub fn start(&mut self) -> Result<(), NodeError> {
        if self.state.is_some() {
            return self.alive();
        }
        let result = self.recover();
        if let Err(e) = &result
            && self.state.is_some()
            && self.io.fatal.is_none()
        {
            self.io.fatal = Some(e.clone());
        }
        result
    }

    fn recover(&mut self) -> Result<(), NodeError> {
        let h = self.io.store.last_height()?.map_or(1, |t| t + 1);
        let Some(vs) = self.io.app.validator_set(h) else {
            return Err(NodeError::NoValidatorSet(h));
        };
        let params = Params {
            address: self.io.signer.address(),
            threshold_params: Default::default(),
            value_payload: ValuePayload::ProposalOnly,
            enabled: true,
        };
        self.state = Some(State::new(
            NexusCtx,
            Height(h),
            vs.clone(),
            params,
            QUEUE_HEIGHTS,
            QUEUE_PER_HEIGHT,
        ));
        let mut entries = Vec::new();
        let mut raw = HashSet::new();
        if self.io.wal.height() == Some(h) && self.replay_enabled {
            for bytes in self.io.wal.entries()? {
                let input = decode_wal_entry(&bytes).map_err(NodeError::WalCorrupt)?;
                if let Input::ProposedValue(pv, _) = &input
                    && pv.proposer == self.key()
                    && let Some(r) = pv.round.as_u32()
                {
                    self.io
                        .recovered
                        .entry(r)
                        .or_insert_with(|| pv.value.clone());
                }
                entries.push(input);
                raw.insert(bytes);
            }
        } else {
            self.io.wal.reset(h)?;
        }
        self.io.replay = (!entries.is_empty()).then_some(raw);
        if entries.is_empty() && self.io.cfg.lazy_heights {
            // Nothing was logged at this height: wait for work like after any decision.
            self.enter_height(h)?;
            self.io.solo = is_solo(&vs, &self.key());
            self.held = Some((h, vs));
            // The first status beacon goes out at once: peers learn where a (re)started
            // replica is without waiting an interval, while what they last heard from its
            // previous run may already look stale (`nexus cluster status`: unreachable).
            self.io.arm(TimerKey::Status, Duration::ZERO);
            return self.drain();
        }
        self.feed(Input::StartHeight(
            Height(h),
            vs,
            false,
            None,
            VoteExtensionPolicy::Disabled,
        ))?;
        if !entries.is_empty() {
            if let Some(st) = self.state.as_mut() {
                st.record_recovered_own_precommit_extensions(entries.iter());
                st.index_wal_entries(entries.iter());
            }
            for e in entries {
                self.io.stats.replayed_entries += 1;
                self.feed(e)?;
            }
            if let Some(st) = self.state.as_mut() {
                st.reset_entries_index();
            }
            self.io.replay = None;
        }
        // The first status beacon goes out at once, as above.
        self.io.arm(TimerKey::Status, Duration::ZERO);
        self.drain()
    }

    fn alive(&self) -> Result<(), NodeError> {
        match &self.io.fatal {
            Some(e) => Err(NodeError::Halted(e.to_string())),
            None if self.state.is_none() => Err(NodeError::NotStarted),
            None => Ok(()),
        }
    }

    fn halt(&mut self, e: NodeError) -> Result<(), NodeError> {
        tracing::error!(node = %self.key(), "consensus halted: {e}");
        if self.io.fatal.is_none() {
            self.io.fatal = Some(e.clone());
        }
        Err(e)
    }

    fn height(&self) -> u64 {
        self.state.as_ref().map_or(0, |s| s.height().0)
    }

    /// The height being decided, or waited for when idle.
    fn current(&self) -> u64 {
        self.held
            .as_ref()
            .map_or_else(|| self.height(), |(h, _)| *h)
    }

    /// Prepare the IO side for `StartHeight(h)`.
    fn enter_height(&mut self, h: u64) -> Result<(), NodeError> {
        // Whatever waits to be sent belongs to the previous height's log: send it first.
        self.io.release();
        if let Some(e) = self.io.fatal.clone() {
            return self.halt(e);
        }
        if self.io.wal.height() != Some(h) {
            if let Err(e) = self.io.wal.reset(h) {
                return self.halt(e.into());
            }
            self.io.recovered.clear();
        }
        self.io.get_value = None;
        self.io.sync.new_height(h);
        self.future = self.future.split_off(&h);
        Ok(())
    }

    /// Run one input through the core, then act on what it decided.
    fn feed(&mut self, input: Input<NexusCtx>) -> Result<(), NodeError> {
        if let Some(e) = &self.io.fatal {
            return Err(NodeError::Halted(e.to_string()));
        }
        if let Input::StartHeight(h, vs, ..) = &input {
            self.enter_height(h.0)?;
            self.io.solo = is_solo(vs, &self.key());
        }
        let Some(state) = self.state.as_mut() else {
            return Err(NodeError::NotStarted);
        };
        let io = &mut self.io;
        let result: Result<(), arc_malachitebft_core_consensus::Error<NexusCtx>> =
            process!(input: input, state: state, metrics: &(), with: e => io.handle(e));
        if let Err(e) = result {
            return self.halt(NodeError::Core(e.to_string()));
        }
        if let Some(e) = self.io.fatal.clone() {
            return self.halt(e);
        }
        if let Some(cert) = self.io.pending_decide.take() {
            self.commit_decided(&cert)?;
        }
        self.queue.extend(self.io.feedback.drain(..));
        if let Some(h) = self.io.finalized.take() {
            let next = h.0 + 1;
            let Some(vs) = self.io.app.validator_set(next) else {
                return self.halt(NodeError::NoValidatorSet(next));
            };
            if self.io.cfg.lazy_heights {
                // The decided height's timers must not fire into the idle core.
                self.io.timers.cancel_consensus();
                self.held = Some((next, vs));
                self.wake = false;
            } else {
                self.start_height(next, vs);
            }
        }
        Ok(())
    }

    fn start_height(&mut self, h: u64, vs: ValidatorSet) {
        self.queue.push_back(Input::StartHeight(
            Height(h),
            vs,
            false,
            None,
            VoteExtensionPolicy::Disabled,
        ));
    }

    /// Start the held height if there is work: pending items, or a peer on it or past it.
    fn maybe_wake(&mut self) {
        let Some((h, _)) = &self.held else { return };
        let h = *h;
        let behind = self.io.sync.best_tip() >= h;
        if (self.wake || behind || !self.io.pool.is_empty())
            && let Some((h, vs)) = self.held.take()
        {
            self.wake = false;
            self.start_height(h, vs);
            for (from, msg) in std::mem::take(&mut self.stash) {
                // Cannot fail: consensus messages only queue inputs.
                let _ = self.on_wire(from, msg);
            }
        }
    }

    fn commit_decided(
        &mut self,
        cert: &arc_malachitebft_core_types::CommitCertificate<NexusCtx>,
    ) -> Result<(), NodeError> {
        let decided = self.state.as_ref().and_then(|s| s.decided_value());
        let Some((_, batch)) = decided.filter(|(_, b)| b.id() == cert.value_id) else {
            return self.halt(NodeError::Core("decision without its value".into()));
        };
        let Some(cc) = CommitCert::from_malachite(cert) else {
            return self.halt(NodeError::Core("certificate with a nil round".into()));
        };
        let h = cc.height;
        // Own messages sent before this point must be durable before the decision is.
        self.io.release();
        if self.io.fatal.is_some() {
            return Ok(());
        }
        match self.io.store.get(h) {
            Err(e) => return self.halt(e.into()),
            Ok(Some(stored)) if stored.batch.id() != batch.id() => {
                return self.halt(NodeError::Conflict {
                    height: h,
                    stored: stored.batch.id(),
                    new: batch.id(),
                });
            }
            Ok(Some(_)) => return Ok(()), // replayed decision, already stored
            Ok(None) => {}
        }
        let d = Decided {
            height: h,
            batch,
            cert: cc,
        };
        if let Err(e) = self.io.store.commit(&d) {
            return self.halt(e.into());
        }
        self.io.pool.remove_decided(d.batch.items());
        self.io.stats.decided += 1;
        if self.io.sync_fed.take() == Some(h) {
            self.io.stats.decided_by_sync += 1;
        } else if d.cert.round > 0 {
            // Operators want to see these: each failed round costs a timeout (a proposer that
            // was down, slow, cut off, or whose proposal was refused).
            let round = d.cert.round;
            tracing::info!(
                height = h,
                round,
                "height {h} was decided in round {round}, after {round} round(s) without a decision"
            );
        }
        self.io.app.on_decided(&d);
        Ok(())
    }

    /// Process queued inputs until none is left, then send what they produced.
    fn drain(&mut self) -> Result<(), NodeError> {
        loop {
            self.pump();
            let Some(input) = self.queue.pop_front() else {
                self.io.release();
                return match self.io.fatal.clone() {
                    Some(e) => self.halt(e),
                    None => Ok(()),
                };
            };
            if let Err(e) = self.feed(input) {
                self.io.release();
                return Err(e);
            }
        }
    }

    /// Move work that became ready (proposals for the new height, sync records, sync
    /// requests) into the queue.
    fn pump(&mut self) {
        self.maybe_wake();
        if self.held.is_some() {
            return;
        }
        let cur = self.height();
        if let Some(props) = self.future.remove(&cur) {
            for p in props {
                self.check_proposal(p);
            }
        }
        if let Some((peer, d)) = self.io.sync.next_candidate(cur) {
            match peer_id(&peer) {
                Some(pid) => {
                    let cert = ExtendedCommitCertificate::from_commit_certificate_and_extensions(
                        d.cert.to_malachite(),
                        VoteExtensions::default(),
                    );
                    let bytes = bytes::Bytes::from(encode_batch(&d.batch));
                    self.queue
                        .push_back(Input::SyncValueResponse(ValueResponse::new(
                            pid, bytes, cert,
                        )));
                }
                None => self.io.sync.rejected(),
            }
        }
        if let Some(req) = self.io.sync.want(cur, self.io.cfg.sync_max_heights) {
            self.io.stats.sync_requests += 1;
            let msg = WireMsg::SyncRequest {
                from: req.from,
                to: req.to,
            };
            self.io.send(req.peer, &msg);
            let after = self.io.cfg.sync_timeout;
            self.io.arm(TimerKey::SyncRetry, after);
        }
    }

    /// Validate a proposal for the current height before the core sees it: in ProposalOnly
    /// mode the core marks every proposed value valid, so invalid batches stop here.
    fn check_proposal(&mut self, p: SignedProposal<NexusCtx>) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let h = state.height();
        if p.height != h {
            return;
        }
        if self.verdict_height != h.0 {
            self.verdicts.clear();
            self.validations_per_round.clear();
            self.verdict_height = h.0;
        }
        let round = p.round.as_u32().unwrap_or(0);
        let current_round = state.round().as_u32().unwrap_or(0);
        if round > current_round.saturating_add(MAX_FUTURE_ROUND_LOOKAHEAD) {
            return; // the core would drop it too; do not pay for validation
        }
        let expected = state.validator_set().proposer(h, round);
        let authentic = expected.key() == p.proposer
            && self.io.verifier.verify_proposal(
                &p.message,
                &p.signature,
                arc_malachitebft_core_types::Validator::public_key(expected),
            );
        if !authentic {
            self.io.stats.rejected_proposals += 1;
            return;
        }
        let id = p.value.id();
        let valid = match self.verdicts.get(&id) {
            Some(v) => *v,
            None => {
                // A proposer may show us at most two distinct batches per round (the core's
                // own cap), so an equivocating proposer cannot make us validate without end.
                let seen = self.validations_per_round.entry(round).or_insert(0);
                if *seen >= 2 {
                    self.io.stats.rejected_proposals += 1;
                    return;
                }
                *seen += 1;
                let v = self.io.app.validate(h.0, &p.value);
                self.verdicts.insert(id, v);
                v
            }
        };
        if valid {
            self.queue.push_back(Input::Proposal(p));
        } else {
            self.io.stats.rejected_proposals += 1;
        }
    }

    fn on_proposal(&mut self, from: ValidatorKey, p: SignedProposal<NexusCtx>) {
        let cur = self.height();
        let h = p.height.0;
        if h < cur {
            return;
        }
        if h > cur {
            self.io.sync.note_tip(from, h - 1);
            if h <= cur + FUTURE_HEIGHTS {
                let v = self.future.entry(h).or_default();
                if v.len() < FUTURE_PER_HEIGHT && !v.contains(&p) {
                    v.push(p);
                }
            }
            return;
        }
        self.check_proposal(p);
    }

    fn on_wire(&mut self, from: ValidatorKey, msg: WireMsg) -> Result<(), NodeError> {
        let cur = self.height();
        if let Some((held, _)) = &self.held {
            let at = match &msg {
                WireMsg::Proposal(p) => Some(p.height.0),
                WireMsg::Vote(v) => Some(v.height.0),
                WireMsg::Polka(c) => Some(c.height.0),
                WireMsg::RoundCert(c) => Some(c.height.0),
                WireMsg::Status { height, round, .. } => {
                    Some(if round.is_defined() { *height } else { 0 })
                }
                _ => None,
            };
            if at.is_some_and(|h| h >= *held) {
                self.wake = true;
            }
            if matches!(
                msg,
                WireMsg::Proposal(_) | WireMsg::Vote(_) | WireMsg::Polka(_) | WireMsg::RoundCert(_)
            ) {
                // The core must not see them before its height starts.
                if self.stash.len() < QUEUE_PER_HEIGHT {
                    self.stash.push((from, msg));
                }
                return Ok(());
            }
        }
        match msg {
            WireMsg::Proposal(p) => self.on_proposal(from, p),
            WireMsg::Vote(v) => {
                if v.height.0 > cur {
                    self.io.sync.note_tip(from, v.height.0 - 1);
                }
                self.queue.push_back(Input::Vote(v));
            }
            WireMsg::Polka(c) => self.queue.push_back(Input::PolkaCertificate(c)),
            WireMsg::RoundCert(c) => self.queue.push_back(Input::RoundCertificate(c)),
            WireMsg::Status { tip, height, round } => {
                self.io.sync.note_tip(from, tip);
                let seen_ms = self.io.host.now_ms();
                self.peers.insert(
                    from,
                    PeerStatus {
                        key: from,
                        tip,
                        height,
                        round: round.as_u32(),
                        seen_ms,
                    },
                );
            }
            WireMsg::SyncRequest { from: lo, to } => {
                let hi = to.min(lo.saturating_add(self.io.cfg.sync_max_heights.max(1) - 1));
                let lo = lo.max(1);
                let mut records = if lo <= hi {
                    match self.io.store.range(lo, hi, self.io.cfg.sync_max_bytes) {
                        Ok(r) => r,
                        Err(e) => {
                            // Serving is best effort; a failing store halts us on commit.
                            tracing::warn!("cannot serve heights {lo}..={hi}: {e}");
                            return Ok(());
                        }
                    }
                } else {
                    Vec::new()
                };
                records.truncate(super::codec::MAX_SYNC_RECORDS);
                self.io.send(from, &WireMsg::SyncResponse(records));
            }
            WireMsg::SyncResponse(records) => {
                // Records whose certificate cannot match them are dropped before the core.
                let records = records
                    .into_iter()
                    .filter(|d| d.cert.height == d.height && d.cert.batch_id == d.batch.id())
                    .collect();
                // The retry timer stays armed: when it fires with no request outstanding it
                // does nothing, and a newer request re-arms it.
                self.io.sync.accept(from, records, cur);
            }
            WireMsg::Items(items) => {
                for item in items {
                    if self.io.app.admit(&item) {
                        self.io.pool.add_gossiped(item);
                    }
                }
                self.maybe_propose_waiting();
            }
        }
        Ok(())
    }

    /// Several peer messages at once: their inputs are processed together, so one outbox
    /// release (one WAL flush) covers every vote they cause.
    pub fn on_messages(&mut self, msgs: Vec<(ValidatorKey, Vec<u8>)>) -> Result<(), NodeError> {
        self.alive()?;
        for (from, bytes) in msgs {
            match decode_wire(&bytes) {
                Ok(msg) => self.on_wire(from, msg)?,
                Err(_) => self.io.stats.undecodable_messages += 1,
            }
        }
        self.drain()
    }

    /// A proposer waiting for items proposes as soon as there are some.
    fn maybe_propose_waiting(&mut self) {
        let Some((h, r)) = self.io.get_value else {
            return;
        };
        let current = self
            .state
            .as_ref()
            .is_some_and(|s| s.height() == h && s.round() == r);
        if !current {
            self.io.get_value = None;
        } else if !self.io.pool.is_empty() {
            self.io.propose_now(h, r);
            self.queue.extend(self.io.feedback.drain(..));
        }
    }
}

impl<H: Host, W: Wal, S: DecidedStore, A: App> Consensus for Node<H, W, S, A> {
    fn submit(&mut self, items: Vec<Vec<u8>>) -> Result<usize, NodeError> {
        self.alive()?;
        let mut fresh = Vec::new();
        for item in items {
            if self.io.app.admit(&item) && self.io.pool.add(item.clone()) {
                fresh.push(item);
            }
        }
        let n = fresh.len();
        if n > 0 {
            self.io.broadcast(&WireMsg::Items(fresh));
            self.maybe_propose_waiting();
        }
        self.drain()?;
        Ok(n)
    }

    fn on_message(&mut self, from: ValidatorKey, bytes: &[u8]) -> Result<(), NodeError> {
        self.alive()?;
        match decode_wire(bytes) {
            Ok(msg) => self.on_wire(from, msg)?,
            Err(_) => self.io.stats.undecodable_messages += 1,
        }
        self.drain()
    }

    fn on_timer(&mut self, timer: TimerId, generation: u64) -> Result<(), NodeError> {
        self.alive()?;
        let key = timer.0;
        if !self.io.timers.fire(key, generation) {
            return Ok(());
        }
        match key {
            TimerKey::Consensus(t) => self.queue.push_back(Input::TimeoutElapsed(t)),
            TimerKey::BuildValue => {
                if let Some((h, r)) = self.io.get_value {
                    let current = self
                        .state
                        .as_ref()
                        .is_some_and(|s| s.height() == h && s.round() == r);
                    if current {
                        self.io.propose_now(h, r);
                        self.queue.extend(self.io.feedback.drain(..));
                    }
                }
            }
            TimerKey::Status => {
                let round = match (&self.held, &self.state) {
                    (None, Some(s)) => s.round(),
                    _ => Round::Nil,
                };
                let status = WireMsg::Status {
                    tip: self.io.store.last_height()?.unwrap_or(0),
                    height: self.current(),
                    round,
                };
                self.io.broadcast(&status);
                self.io.sync.tick();
                if self.io.cfg.lazy_heights {
                    // Items that waited two ticks go out again (a peer may have missed them).
                    let again = self.io.pool.waiting(2, 256);
                    if !again.is_empty() {
                        self.io.broadcast(&WireMsg::Items(again));
                    }
                    self.io.pool.tick();
                }
                let every = self.io.cfg.status_interval;
                self.io.arm(TimerKey::Status, every);
            }
            TimerKey::SyncRetry => self.io.sync.timed_out(),
        }
        self.drain()
    }

    fn decided(&self, height: u64) -> Result<Option<Decided>, NodeError> {
        Ok(self.io.store.get(height)?)
    }

    fn status(&self) -> NodeStatus {
        let mut stats = self.io.stats.clone();
        stats.sync_records_rejected = self.io.sync.records_rejected;
        let validators = match (&self.held, &self.state) {
            (Some((_, vs)), _) => vs.validators().len(),
            (None, Some(s)) => s.validator_set().validators().len(),
            (None, None) => 0,
        };
        NodeStatus {
            key: self.key(),
            height: self.current(),
            round: match self.held {
                Some(_) => None,
                None => self.state.as_ref().and_then(|s| s.round().as_u32()),
            },
            tip: self.io.store.last_height().ok().flatten(),
            best_peer_tip: self.io.sync.best_tip(),
            pending_items: self.io.pool.len(),
            idle: self.held.is_some(),
            validators,
            peers: self.peers.values().cloned().collect(),
            halted: self.io.fatal.as_ref().map(|e| e.to_string()),
            stats,
        }
    }
}

/// Whether `me` is the only member of `vs`.
fn is_solo(vs: &ValidatorSet, me: &ValidatorKey) -> bool {
    vs.validators().len() == 1 && vs.contains(me)
}
