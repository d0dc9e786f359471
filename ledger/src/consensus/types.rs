//! The Malachite `Context` for nexus and its value types: heights, validator keys, batches
//! (the consensus value, identified by blake3), validator sets, votes and proposals.

use std::fmt;
use std::sync::Arc;

use arc_malachitebft_core_types as mc;
use arc_malachitebft_core_types::{LinearTimeouts, NilOrVal, Round, SignedExtension, VoteType};
use arc_malachitebft_signing_ed25519::{Ed25519, PublicKey};

/// A consensus height. Height 1 is the first decided value; 0 means "nothing decided yet".
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// A validator's identity: its 32-byte ed25519 public key (also its consensus address).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorKey(pub [u8; 32]);

impl fmt::Display for ValidatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..6]))
    }
}

impl fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValidatorKey({self})")
    }
}

impl mc::Address for ValidatorKey {}

/// The blake3 identifier of a [`Batch`].
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub [u8; 32]);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..6]))
    }
}

impl fmt::Debug for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchId({self})")
    }
}

/// The consensus value: an ordered batch of opaque items (requests/events), identified by the
/// blake3 hash of its canonical encoding. The id is always computed, never taken from the wire.
#[derive(Clone)]
pub struct Batch {
    id: BatchId,
    items: Arc<[Vec<u8>]>,
}

impl Batch {
    /// Build a batch and compute its id.
    pub fn new(items: Vec<Vec<u8>>) -> Self {
        let id = batch_id_of(&items);
        Batch {
            id,
            items: items.into(),
        }
    }

    /// The batch id (blake3, see [`batch_id_of`]).
    pub fn id(&self) -> BatchId {
        self.id
    }

    /// The items in proposal order.
    pub fn items(&self) -> &[Vec<u8>] {
        &self.items
    }

    /// Whether the batch holds no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The canonical id of a list of items: blake3 in derive-key mode over
/// `count:u32 ‖ (len:u32 ‖ bytes)*` (big-endian), the same bytes [`super::codec::encode_batch`]
/// produces.
pub fn batch_id_of(items: &[Vec<u8>]) -> BatchId {
    let mut h = blake3::Hasher::new_derive_key("nexus consensus batch v1");
    h.update(&(items.len() as u32).to_be_bytes());
    for item in items {
        h.update(&(item.len() as u32).to_be_bytes());
        h.update(item);
    }
    BatchId(*h.finalize().as_bytes())
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for Batch {}
impl PartialOrd for Batch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Batch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({}, {} items)", self.id, self.items.len())
    }
}

impl mc::Value for Batch {
    type Id = BatchId;

    fn id(&self) -> BatchId {
        self.id
    }
}

/// One member of a validator set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    address: ValidatorKey,
    public_key: PublicKey,
    voting_power: u64,
}

impl Validator {
    /// The validator's key.
    pub fn key(&self) -> ValidatorKey {
        self.address
    }

    /// Its voting power.
    pub fn power(&self) -> u64 {
        self.voting_power
    }
}

impl mc::Validator<NexusCtx> for Validator {
    fn address(&self) -> &ValidatorKey {
        &self.address
    }

    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn voting_power(&self) -> u64 {
        self.voting_power
    }
}

/// Why a validator set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorSetError {
    #[error("a validator set needs at least one validator")]
    Empty,
    #[error("validator {0} appears twice")]
    Duplicate(ValidatorKey),
    #[error("validator {0} has zero voting power")]
    ZeroPower(ValidatorKey),
    #[error("validator {0} is not a valid ed25519 public key")]
    InvalidKey(ValidatorKey),
    #[error("total voting power is too large")]
    PowerOverflow,
}

/// The largest total voting power accepted; keeps Malachite's `power * 3` threshold maths from
/// overflowing (it panics on overflow).
pub const MAX_TOTAL_POWER: u64 = u64::MAX / 8;

/// A validator set: unique members, sorted by power (descending) then key (ascending).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Arc<[Validator]>,
    total: u64,
}

impl ValidatorSet {
    /// Build a set from `(key, power)` pairs (any order).
    pub fn new(
        members: impl IntoIterator<Item = (ValidatorKey, u64)>,
    ) -> Result<Self, ValidatorSetError> {
        let mut vals = Vec::new();
        let mut total: u64 = 0;
        for (key, power) in members {
            if power == 0 {
                return Err(ValidatorSetError::ZeroPower(key));
            }
            let public_key =
                PublicKey::from_bytes(key.0).map_err(|_| ValidatorSetError::InvalidKey(key))?;
            total = total
                .checked_add(power)
                .filter(|t| *t <= MAX_TOTAL_POWER)
                .ok_or(ValidatorSetError::PowerOverflow)?;
            vals.push(Validator {
                address: key,
                public_key,
                voting_power: power,
            });
        }
        if vals.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        vals.sort_by(|a, b| {
            b.voting_power
                .cmp(&a.voting_power)
                .then(a.address.cmp(&b.address))
        });
        let mut keys: Vec<ValidatorKey> = vals.iter().map(|v| v.address).collect();
        keys.sort();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(ValidatorSetError::Duplicate(w[0]));
        }
        Ok(ValidatorSet {
            validators: vals.into(),
            total,
        })
    }

    /// Equal-power set (power 1 each).
    pub fn equal(keys: impl IntoIterator<Item = ValidatorKey>) -> Result<Self, ValidatorSetError> {
        Self::new(keys.into_iter().map(|k| (k, 1)))
    }

    /// Members in canonical order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Whether `key` is a member.
    pub fn contains(&self, key: &ValidatorKey) -> bool {
        self.validators.iter().any(|v| v.address == *key)
    }

    /// Sum of all voting power.
    pub fn total_power(&self) -> u64 {
        self.total
    }

    /// The proposer for `(height, round)`: round-robin over the canonical order.
    pub fn proposer(&self, height: Height, round: u32) -> &Validator {
        let n = self.validators.len() as u64;
        let idx = height.0.saturating_sub(1).wrapping_add(u64::from(round)) % n;
        // `n > 0` by construction and `idx < n`.
        &self.validators[idx as usize]
    }
}

impl mc::ValidatorSet<NexusCtx> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> u64 {
        self.total
    }

    fn get_by_address(&self, address: &ValidatorKey) -> Option<&Validator> {
        self.validators.iter().find(|v| v.address == *address)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// A prevote or precommit. Its signed bytes depend only on (type, height, round, value, address)
/// (see `signing::vote_preimage`); the extension is excluded and always `None` in nexus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub vote_type: VoteType,
    pub height: Height,
    pub round: Round,
    pub value: NilOrVal<BatchId>,
    pub validator: ValidatorKey,
    pub extension: Option<SignedExtension<NexusCtx>>,
}

impl mc::Vote<NexusCtx> for Vote {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &NilOrVal<BatchId> {
        &self.value
    }
    fn take_value(self) -> NilOrVal<BatchId> {
        self.value
    }
    fn vote_type(&self) -> VoteType {
        self.vote_type
    }
    fn validator_address(&self) -> &ValidatorKey {
        &self.validator
    }
    fn extension(&self) -> Option<&SignedExtension<NexusCtx>> {
        self.extension.as_ref()
    }
    fn take_extension(&mut self) -> Option<SignedExtension<NexusCtx>> {
        self.extension.take()
    }
    fn extend(self, extension: SignedExtension<NexusCtx>) -> Self {
        Vote {
            extension: Some(extension),
            ..self
        }
    }
}

/// A proposal carrying the whole batch (`ValuePayload::ProposalOnly`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: Batch,
    pub pol_round: Round,
    pub proposer: ValidatorKey,
}

impl mc::Proposal<NexusCtx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }
    fn round(&self) -> Round {
        self.round
    }
    fn value(&self) -> &Batch {
        &self.value
    }
    fn take_value(self) -> Batch {
        self.value
    }
    fn pol_round(&self) -> Round {
        self.pol_round
    }
    fn validator_address(&self) -> &ValidatorKey {
        &self.proposer
    }
}

/// Proposal parts are not used (`ProposalOnly`); the type exists because `Context` requires it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoParts;

impl mc::ProposalPart<NexusCtx> for NoParts {
    fn is_first(&self) -> bool {
        true
    }
    fn is_last(&self) -> bool {
        true
    }
}

/// The nexus consensus context. Stateless: the chain id lives in the signer/verifier.
#[derive(Clone, Copy, Debug, Default)]
pub struct NexusCtx;

impl mc::Context for NexusCtx {
    type Address = ValidatorKey;
    type Height = Height;
    type ProposalPart = NoParts;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = LinearTimeouts;
    type Value = Batch;
    type Vote = Vote;
    type Extension = Vec<u8>;
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        validator_set.proposer(height, round.as_u32().unwrap_or(0))
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: Batch,
        pol_round: Round,
        address: ValidatorKey,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BatchId>,
        address: ValidatorKey,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Prevote,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BatchId>,
        address: ValidatorKey,
    ) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height,
            round,
            value: value_id,
            validator: address,
            extension: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_malachitebft_signing_ed25519::PrivateKey;

    fn key(seed: u8) -> ValidatorKey {
        ValidatorKey(*PrivateKey::from([seed; 32]).public_key().as_bytes())
    }

    #[test]
    fn batch_id_depends_on_item_boundaries() {
        let a = Batch::new(vec![b"ab".to_vec(), b"c".to_vec()]);
        let b = Batch::new(vec![b"a".to_vec(), b"bc".to_vec()]);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), Batch::new(vec![b"ab".to_vec(), b"c".to_vec()]).id());
    }

    #[test]
    fn validator_set_is_sorted_unique_and_round_robin() {
        let (a, b, c) = (key(1), key(2), key(3));
        let vs = ValidatorSet::new([(a, 1), (b, 5), (c, 1)]).unwrap();
        assert_eq!(vs.validators()[0].key(), b);
        assert_eq!(vs.total_power(), 7);
        let p: Vec<_> = (0..3).map(|r| vs.proposer(Height(1), r).key()).collect();
        let mut sorted = p.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3, "each member proposes once per 3 rounds");
        assert_eq!(
            vs.proposer(Height(2), 0).key(),
            vs.proposer(Height(1), 1).key()
        );
        assert_eq!(
            ValidatorSet::new([(a, 1), (a, 2)]),
            Err(ValidatorSetError::Duplicate(a))
        );
        assert_eq!(ValidatorSet::new([]), Err(ValidatorSetError::Empty));
        assert_eq!(
            ValidatorSet::new([(a, 0)]),
            Err(ValidatorSetError::ZeroPower(a))
        );
        assert_eq!(
            ValidatorSet::new([(a, MAX_TOTAL_POWER), (b, 1)]),
            Err(ValidatorSetError::PowerOverflow)
        );
    }
}
