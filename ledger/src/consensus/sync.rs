//! Catch-up bookkeeping (pure): which peer to ask for which decided heights, received records
//! waiting for their height, and the one record currently being verified by the core.

use std::collections::{BTreeMap, VecDeque};

use super::codec::Decided;
use super::types::ValidatorKey;

/// Heights beyond the current one whose records are kept while we catch up.
const WINDOW: u64 = 256;
/// Candidate records kept per height (one per answering peer, roughly).
const PER_HEIGHT: usize = 4;

/// What the node should ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub peer: ValidatorKey,
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SyncState {
    tips: BTreeMap<ValidatorKey, u64>,
    strikes: BTreeMap<ValidatorKey, u32>,
    inflight: Option<ValidatorKey>,
    buffer: BTreeMap<u64, VecDeque<(ValidatorKey, Decided)>>,
    /// The record handed to the core: (height, peer, status ticks since).
    feeding: Option<(u64, ValidatorKey, u32)>,
    pub requests_sent: u64,
    pub records_rejected: u64,
}

impl SyncState {
    /// A peer says (or shows) it has decided up to `tip`.
    pub fn note_tip(&mut self, peer: ValidatorKey, tip: u64) {
        let t = self.tips.entry(peer).or_insert(0);
        *t = (*t).max(tip);
    }

    /// The highest tip any peer claims.
    pub fn best_tip(&self) -> u64 {
        self.tips.values().copied().max().unwrap_or(0)
    }

    /// A request to send now, if we are behind, nothing is outstanding and no record for the
    /// current height is buffered.
    pub fn want(&mut self, current: u64, max_heights: u64) -> Option<Request> {
        if self.inflight.is_some() || self.feeding.is_some() || self.has_candidate(current) {
            return None;
        }
        let peer = self
            .tips
            .iter()
            .filter(|(_, tip)| **tip >= current)
            .min_by_key(|(k, tip)| {
                (
                    self.strikes.get(*k).copied().unwrap_or(0),
                    u64::MAX - **tip,
                    **k,
                )
            })
            .map(|(k, tip)| (*k, *tip))?;
        let to = peer.1.min(current.saturating_add(max_heights.max(1) - 1));
        self.inflight = Some(peer.0);
        self.requests_sent += 1;
        Some(Request {
            peer: peer.0,
            from: current,
            to,
        })
    }

    /// The outstanding request timed out.
    pub fn timed_out(&mut self) {
        if let Some(p) = self.inflight.take() {
            self.strike(p);
        }
    }

    fn strike(&mut self, peer: ValidatorKey) {
        *self.strikes.entry(peer).or_insert(0) += 1;
        // A peer that failed us keeps its claim only until it repeats it.
        self.tips.remove(&peer);
    }

    /// Records arrived from `peer`.
    pub fn accept(&mut self, peer: ValidatorKey, records: Vec<Decided>, current: u64) {
        if self.inflight == Some(peer) {
            self.inflight = None;
        }
        let useful: Vec<_> = records
            .into_iter()
            .filter(|d| d.height >= current && d.height <= current.saturating_add(WINDOW))
            .collect();
        if useful.is_empty() {
            self.tips.remove(&peer);
            return;
        }
        for d in useful {
            let q = self.buffer.entry(d.height).or_default();
            if q.len() < PER_HEIGHT && !q.iter().any(|(p, _)| *p == peer) {
                q.push_back((peer, d));
            }
        }
    }

    fn has_candidate(&self, height: u64) -> bool {
        self.buffer.get(&height).is_some_and(|q| !q.is_empty())
    }

    /// The next record to hand to the core for `current`, if none is being verified.
    pub fn next_candidate(&mut self, current: u64) -> Option<(ValidatorKey, Decided)> {
        if self.feeding.is_some() {
            return None;
        }
        let q = self.buffer.get_mut(&current)?;
        let (peer, d) = q.pop_front()?;
        self.feeding = Some((current, peer, 0));
        Some((peer, d))
    }

    /// The record being verified was refused (bad certificate or bytes).
    pub fn rejected(&mut self) {
        if let Some((_, peer, _)) = self.feeding.take() {
            self.records_rejected += 1;
            self.strike(peer);
        }
    }

    /// Periodic: a handed-over record that led nowhere for two ticks (the core ignored it)
    /// no longer blocks the next one.
    pub fn tick(&mut self) {
        if let Some((_, _, ticks)) = &mut self.feeding {
            *ticks += 1;
            if *ticks >= 2 {
                self.feeding = None;
            }
        }
    }

    /// Consensus moved to `height`: drop what is now useless.
    pub fn new_height(&mut self, height: u64) {
        self.feeding = None;
        self.buffer = self.buffer.split_off(&height);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::signing::CommitCert;
    use crate::consensus::types::Batch;

    fn rec(h: u64) -> Decided {
        let batch = Batch::new(vec![]);
        Decided {
            height: h,
            cert: CommitCert {
                height: h,
                round: 0,
                batch_id: batch.id(),
                signatures: vec![],
            },
            batch,
        }
    }

    #[test]
    fn asks_the_best_peer_once_and_rotates_after_failures() {
        let (a, b) = (ValidatorKey([1; 32]), ValidatorKey([2; 32]));
        let mut s = SyncState::default();
        assert_eq!(s.want(5, 10), None, "nobody is ahead");
        s.note_tip(a, 9);
        s.note_tip(b, 30);
        let r = s.want(5, 10).unwrap();
        assert_eq!((r.peer, r.from, r.to), (b, 5, 14));
        assert_eq!(s.want(5, 10), None, "one request at a time");
        s.timed_out();
        assert_eq!(s.want(5, 10).unwrap().peer, a);
        s.accept(a, vec![rec(4), rec(5), rec(6)], 5);
        assert_eq!(s.want(5, 10), None, "a candidate is buffered");
        assert_eq!(s.next_candidate(5).unwrap().1.height, 5);
        assert!(s.next_candidate(5).is_none(), "one at a time");
        s.rejected();
        s.new_height(6);
        assert_eq!(s.next_candidate(6).unwrap().1.height, 6);
    }
}
