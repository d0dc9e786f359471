//! Safety invariants checked after every simulation step: per-height agreement, a valid
//! certificate for every decision (re-verified independently), gap-free identical chains, and
//! at most one signed message per (signer, kind, height, round) from honest replicas.

use std::collections::{BTreeMap, HashMap, HashSet};

use arc_malachitebft_core_types::{NilOrVal, Round, VoteType};
use arc_malachitebft_signing_ed25519::PublicKey;

use super::env::Membership;
use crate::consensus::codec::{WireMsg, decode_wire};
use crate::consensus::signing::{ChainId, Verifier, verify_commit_cert};
use crate::consensus::store::{DecidedStore, MemStore};
use crate::consensus::types::{BatchId, ValidatorKey, batch_id_of};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Vote(NilOrVal<BatchId>),
    Proposal(BatchId, Round),
}

/// The invariant checker.
pub struct Checker {
    honest: HashSet<ValidatorKey>,
    membership: Membership,
    /// Independent verifier: no cache shared with the replicas.
    fresh: Verifier,
    /// Cheap verifier for message signatures (shares the replicas' positive cache).
    cached: Verifier,
    decided: BTreeMap<u64, BatchId>,
    checked: HashMap<ValidatorKey, u64>,
    signed: HashMap<(ValidatorKey, u8, u64, u32), Content>,
    pub violations: Vec<String>,
    pub equivocations_seen_from_byzantine: u64,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checker({} heights)", self.decided.len())
    }
}

impl Checker {
    pub fn new(
        chain: ChainId,
        honest: HashSet<ValidatorKey>,
        membership: Membership,
        cached: Verifier,
    ) -> Self {
        Checker {
            honest,
            membership,
            fresh: Verifier::new(chain),
            cached,
            decided: BTreeMap::new(),
            checked: HashMap::new(),
            signed: HashMap::new(),
            violations: Vec::new(),
            equivocations_seen_from_byzantine: 0,
        }
    }

    /// Heights decided by anyone so far.
    pub fn decided_heights(&self) -> u64 {
        self.decided.keys().next_back().copied().unwrap_or(0)
    }

    /// Record a message seen on the wire; flag an honest signer signing two different
    /// messages for one (kind, height, round).
    pub fn observe(&mut self, bytes: &[u8]) {
        let (signer, kind, h, r, content, ok) = match decode_wire(bytes) {
            Ok(WireMsg::Vote(v)) => {
                let kind = match v.vote_type {
                    VoteType::Prevote => 0,
                    VoteType::Precommit => 1,
                };
                let ok = |c: &Verifier| {
                    PublicKey::from_bytes(v.validator.0)
                        .is_ok_and(|pk| c.verify_vote(&v.message, &v.signature, &pk))
                };
                (
                    v.validator,
                    kind,
                    v.height.0,
                    v.round,
                    Content::Vote(v.value),
                    ok(&self.cached),
                )
            }
            Ok(WireMsg::Proposal(p)) => {
                let ok = PublicKey::from_bytes(p.proposer.0)
                    .is_ok_and(|pk| self.cached.verify_proposal(&p.message, &p.signature, &pk));
                let c = Content::Proposal(p.value.id(), p.pol_round);
                (p.proposer, 2, p.height.0, p.round, c, ok)
            }
            _ => return,
        };
        let Some(r) = r.as_u32() else { return };
        if !ok {
            return;
        }
        let key = (signer, kind, h, r);
        match self.signed.get(&key) {
            None => {
                self.signed.insert(key, content);
            }
            Some(prev) if *prev == content => {}
            Some(prev) => {
                if self.honest.contains(&signer) {
                    self.violations.push(format!(
                        "equivocation: honest {signer} signed {prev:?} and {content:?} as kind {kind} at height {h} round {r}"
                    ));
                } else {
                    self.equivocations_seen_from_byzantine += 1;
                }
            }
        }
    }

    /// Check the new part of an honest replica's decided store.
    pub fn check_store(&mut self, who: ValidatorKey, store: &MemStore) {
        let from = self.checked.get(&who).copied().unwrap_or(0);
        let tip = store.last_height().ok().flatten().unwrap_or(0);
        for h in from + 1..=tip {
            let Some(d) = store.records().get(&h) else {
                self.violations
                    .push(format!("{who}: gap in decided heights at {h} (tip {tip})"));
                return;
            };
            let id = d.batch.id();
            if id != batch_id_of(d.batch.items()) || d.cert.batch_id != id || d.cert.height != h {
                self.violations.push(format!(
                    "{who}: record at {h} does not match its certificate"
                ));
            }
            match (self.membership)(h) {
                None => self.violations.push(format!("no validator set at {h}")),
                Some(vs) => {
                    if let Err(e) = verify_commit_cert(&self.fresh, &d.cert, &vs) {
                        self.violations
                            .push(format!("{who}: invalid certificate at {h}: {e}"));
                    }
                }
            }
            match self.decided.get(&h) {
                Some(prev) if *prev != id => self.violations.push(format!(
                    "agreement: {who} decided {id} at height {h}, another honest replica decided {prev}"
                )),
                Some(_) => {}
                None => {
                    self.decided.insert(h, id);
                }
            }
        }
        self.checked.insert(who, tip);
    }

    /// A simulated crash undid commits above `height`: re-check them when they come back.
    pub fn rewind(&mut self, who: ValidatorKey, height: u64) {
        if let Some(c) = self.checked.get_mut(&who) {
            *c = (*c).min(height);
        }
    }

    /// Final check: honest chains are identical on their common prefix.
    pub fn check_prefixes(&mut self, stores: &[(ValidatorKey, &MemStore)]) {
        for (i, (a, sa)) in stores.iter().enumerate() {
            for (b, sb) in &stores[i + 1..] {
                for (h, da) in sa.records() {
                    if let Some(db) = sb.records().get(h)
                        && da.batch.id() != db.batch.id()
                    {
                        self.violations
                            .push(format!("chains of {a} and {b} differ at height {h}"));
                    }
                }
            }
        }
    }
}
