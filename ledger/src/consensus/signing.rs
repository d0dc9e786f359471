//! ed25519 signing for consensus: domain-separated preimages, the Malachite `Signer`/`Verifier`
//! impls (which never return `Err`), and certificate verification usable outside consensus.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use arc_malachitebft_core_types::{
    CertificateError, CommitCertificate, CommitSignature, NilOrVal, Round, SignedMessage,
    SignedProposal, SignedVote, ThresholdParams, ValidatorProof, VoteExtensionScope, VoteType,
};
use arc_malachitebft_signing::{Error as SigningError, VerificationResult, VerifierExt};
use arc_malachitebft_signing_ed25519::{PublicKey, Signature};
use async_trait::async_trait;

use super::types::{BatchId, Height, NexusCtx, Proposal, ValidatorKey, ValidatorSet, Vote};

/// Checks a consensus signature with ed25519-dalek's strict verification (RFC 8032 with
/// canonical encodings, no small-order keys or `R`): about two thirds of the cost of
/// `ed25519-consensus`'s permissive check here, with the decompressed key remembered. It
/// accepts every signature an honest signer makes (Malachite signs with `ed25519-consensus`,
/// which produces standard signatures); every honest replica applies the same rule.
fn verify_strict(key: &PublicKey, preimage: &[u8], sig: &Signature) -> bool {
    let Some(key) = crate::request::verifying_key(key.as_bytes()) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(&sig.to_bytes());
    key.verify_strict(preimage, &sig).is_ok()
}

/// Identifies one cluster; part of every signed preimage so signatures never cross clusters.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChainId(pub [u8; 32]);

impl ChainId {
    /// Derive a chain id from a human-readable cluster name.
    pub fn from_name(name: &str) -> Self {
        ChainId(blake3::derive_key(
            "nexus consensus chain id v1",
            name.as_bytes(),
        ))
    }
}

fn put_round(out: &mut Vec<u8>, round: Round) {
    match round.as_u32() {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            out.extend_from_slice(&r.to_be_bytes());
        }
    }
}

/// The bytes a validator signs for a vote:
/// `"nexus/vote/v1\0" ‖ chain ‖ type ‖ height ‖ round ‖ nil-flag ‖ id ‖ address`.
pub fn vote_preimage(chain: &ChainId, vote: &Vote) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"nexus/vote/v1\0");
    out.extend_from_slice(&chain.0);
    out.push(match vote.vote_type {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    });
    out.extend_from_slice(&vote.height.0.to_be_bytes());
    put_round(&mut out, vote.round);
    match &vote.value {
        NilOrVal::Nil => out.push(0),
        NilOrVal::Val(id) => {
            out.push(1);
            out.extend_from_slice(&id.0);
        }
    }
    out.extend_from_slice(&vote.validator.0);
    out
}

/// The bytes a proposer signs: `"nexus/proposal/v1\0" ‖ chain ‖ height ‖ round ‖ pol_round ‖
/// batch id ‖ proposer`. The batch is covered through its id, which receivers recompute.
pub fn proposal_preimage(chain: &ChainId, p: &Proposal) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"nexus/proposal/v1\0");
    out.extend_from_slice(&chain.0);
    out.extend_from_slice(&p.height.0.to_be_bytes());
    put_round(&mut out, p.round);
    put_round(&mut out, p.pol_round);
    out.extend_from_slice(&p.value.id().0);
    out.extend_from_slice(&p.proposer.0);
    out
}

fn extension_preimage(
    chain: &ChainId,
    scope: &VoteExtensionScope<NexusCtx>,
    ext: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + ext.len());
    out.extend_from_slice(b"nexus/vote-extension/v1\0");
    out.extend_from_slice(&chain.0);
    out.extend_from_slice(&scope.height.0.to_be_bytes());
    put_round(&mut out, scope.round);
    out.extend_from_slice(&scope.value_id.0);
    out.extend_from_slice(&scope.validator_address.0);
    out.extend_from_slice(&(ext.len() as u64).to_be_bytes());
    out.extend_from_slice(ext);
    out
}

/// Positive-only memo of verified `(key, preimage, signature)` triples, bounded. Sharing one
/// between verifiers is sound: only exact triples that verified are remembered.
#[derive(Debug, Default)]
pub struct VerifyCache {
    seen: HashSet<[u8; 32]>,
}

const VERIFY_CACHE_MAX: usize = 1 << 16;

/// Checks signatures for one chain. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Verifier {
    chain: ChainId,
    cache: Option<Arc<Mutex<VerifyCache>>>,
}

impl Verifier {
    /// A verifier without a cache.
    pub fn new(chain: ChainId) -> Self {
        Verifier { chain, cache: None }
    }

    /// A verifier that remembers successful verifications in `cache`.
    pub fn with_cache(chain: ChainId, cache: Arc<Mutex<VerifyCache>>) -> Self {
        Verifier {
            chain,
            cache: Some(cache),
        }
    }

    /// The chain this verifier checks.
    pub fn chain(&self) -> ChainId {
        self.chain
    }

    fn check(&self, key: &PublicKey, preimage: &[u8], sig: &Signature) -> bool {
        let memo = self.cache.as_ref().map(|_| {
            let mut h = blake3::Hasher::new();
            h.update(key.as_bytes());
            h.update(&sig.to_bytes());
            h.update(preimage);
            *h.finalize().as_bytes()
        });
        if let (Some(cache), Some(m)) = (&self.cache, &memo)
            && let Ok(c) = cache.lock()
            && c.seen.contains(m)
        {
            return true;
        }
        let ok = verify_strict(key, preimage, sig);
        if ok
            && let (Some(cache), Some(m)) = (&self.cache, memo)
            && let Ok(mut c) = cache.lock()
        {
            if c.seen.len() >= VERIFY_CACHE_MAX {
                c.seen.clear();
            }
            c.seen.insert(m);
        }
        ok
    }

    /// Whether `sig` is `key`'s signature of `vote`.
    pub fn verify_vote(&self, vote: &Vote, sig: &Signature, key: &PublicKey) -> bool {
        self.check(key, &vote_preimage(&self.chain, vote), sig)
    }

    /// Whether `sig` is `key`'s signature of `proposal`.
    pub fn verify_proposal(&self, proposal: &Proposal, sig: &Signature, key: &PublicKey) -> bool {
        self.check(key, &proposal_preimage(&self.chain, proposal), sig)
    }
}

/// Signs consensus messages with one validator key. Ed25519 signing is deterministic (RFC 8032),
/// so any correct implementation produces the same bytes for a key and message; this one signs
/// with `ed25519-dalek` (its vectorized backend) instead of Malachite's `ed25519-consensus`
/// signer, whose serial arithmetic was 3 % of the consensus thread at one client.
#[derive(Clone)]
pub struct Signer {
    chain: ChainId,
    key: ed25519_dalek::SigningKey,
    address: ValidatorKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.address)
    }
}

impl Signer {
    /// A signer for `chain` from a 32-byte ed25519 seed.
    pub fn from_seed(chain: ChainId, seed: [u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let address = ValidatorKey(key.verifying_key().to_bytes());
        Signer {
            chain,
            key,
            address,
        }
    }

    /// This signer's validator key.
    pub fn address(&self) -> ValidatorKey {
        self.address
    }

    /// The chain it signs for.
    pub fn chain(&self) -> ChainId {
        self.chain
    }

    fn sign(&self, preimage: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        Signature::from_bytes(self.key.sign(preimage).to_bytes())
    }

    /// Sign a vote.
    pub fn sign_vote(&self, vote: Vote) -> SignedVote<NexusCtx> {
        let sig = self.sign(&vote_preimage(&self.chain, &vote));
        SignedMessage::new(vote, sig)
    }

    /// Sign a proposal.
    pub fn sign_proposal(&self, proposal: Proposal) -> SignedProposal<NexusCtx> {
        let sig = self.sign(&proposal_preimage(&self.chain, &proposal));
        SignedMessage::new(proposal, sig)
    }
}

#[async_trait]
impl arc_malachitebft_signing::Signer<NexusCtx> for Signer {
    async fn sign_vote(&self, vote: Vote) -> Result<SignedVote<NexusCtx>, SigningError> {
        Ok(Signer::sign_vote(self, vote))
    }

    async fn sign_proposal(
        &self,
        proposal: Proposal,
    ) -> Result<SignedProposal<NexusCtx>, SigningError> {
        Ok(Signer::sign_proposal(self, proposal))
    }

    async fn sign_vote_extension(
        &self,
        scope: VoteExtensionScope<NexusCtx>,
        extension: Vec<u8>,
    ) -> Result<SignedMessage<NexusCtx, Vec<u8>>, SigningError> {
        let sig = self.sign(&extension_preimage(&self.chain, &scope, &extension));
        Ok(SignedMessage::new(extension, sig))
    }

    async fn sign_validator_proof(
        &self,
        public_key: Vec<u8>,
        peer_id: Vec<u8>,
    ) -> Result<ValidatorProof<NexusCtx>, SigningError> {
        let sig = self.sign(&ValidatorProof::<NexusCtx>::signing_bytes(
            &public_key,
            &peer_id,
        ));
        Ok(ValidatorProof::new(public_key, peer_id, sig))
    }
}

#[async_trait]
impl arc_malachitebft_signing::Verifier<NexusCtx> for Verifier {
    async fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &Signature,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        Ok(VerificationResult::from_bool(
            self.verify_vote(vote, signature, public_key),
        ))
    }

    async fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &Signature,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        Ok(VerificationResult::from_bool(
            self.verify_proposal(proposal, signature, public_key),
        ))
    }

    async fn verify_signed_vote_extension(
        &self,
        scope: &VoteExtensionScope<NexusCtx>,
        extension: &Vec<u8>,
        signature: &Signature,
        public_key: &PublicKey,
    ) -> Result<VerificationResult, SigningError> {
        let pre = extension_preimage(&self.chain, scope, extension);
        Ok(VerificationResult::from_bool(
            self.check(public_key, &pre, signature),
        ))
    }

    async fn verify_validator_proof(
        &self,
        proof: &ValidatorProof<NexusCtx>,
    ) -> Result<VerificationResult, SigningError> {
        let ok = proof
            .decoded_public_key()
            .is_ok_and(|pk| pk.verify(&proof.preimage(), &proof.signature).is_ok());
        Ok(VerificationResult::from_bool(ok))
    }
}

/// Drive a future that never waits (our signer/verifier futures) to completion.
/// Returns `None` if it would block, which our futures never do.
pub(crate) fn run_ready<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = TaskContext::from_waker(Waker::noop());
    for _ in 0..64 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

/// An engine-neutral commit certificate: 2f+1 precommit signatures for `(height, round, batch)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitCert {
    pub height: u64,
    pub round: u32,
    pub batch_id: BatchId,
    pub signatures: Vec<(ValidatorKey, [u8; 64])>,
}

impl CommitCert {
    /// Convert from Malachite's certificate (`None` if its round is nil).
    pub(crate) fn from_malachite(c: &CommitCertificate<NexusCtx>) -> Option<Self> {
        Some(CommitCert {
            height: c.height.0,
            round: c.round.as_u32()?,
            batch_id: c.value_id,
            signatures: c
                .commit_signatures
                .iter()
                .map(|s| (s.address, s.signature.to_bytes()))
                .collect(),
        })
    }

    /// Convert to Malachite's certificate.
    pub(crate) fn to_malachite(&self) -> CommitCertificate<NexusCtx> {
        CommitCertificate {
            height: Height(self.height),
            round: Round::new(self.round),
            value_id: self.batch_id,
            commit_signatures: self
                .signatures
                .iter()
                .map(|(k, s)| CommitSignature::new(*k, Signature::from_bytes(*s)))
                .collect(),
        }
    }
}

/// Why a certificate was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("invalid signature from {0}")]
    InvalidSignature(ValidatorKey),
    #[error("signer {0} is not in the validator set")]
    UnknownValidator(ValidatorKey),
    #[error("signer {0} appears twice")]
    Duplicate(ValidatorKey),
    #[error("not enough voting power: {signed} of {total}")]
    NotEnoughPower { signed: u64, total: u64 },
    #[error("certificate is for height {cert}, expected {expected}")]
    WrongHeight { cert: u64, expected: u64 },
    #[error("certificate is for batch {cert}, the batch is {batch}")]
    WrongBatch { cert: BatchId, batch: BatchId },
    #[error("certificate rejected: {0}")]
    Other(String),
}

pub(crate) fn cert_error(e: CertificateError<NexusCtx>) -> CertError {
    match e {
        CertificateError::InvalidCommitSignature(s) => CertError::InvalidSignature(s.address),
        CertificateError::UnknownValidator(a) => CertError::UnknownValidator(a),
        CertificateError::DuplicateVote(a) => CertError::Duplicate(a),
        CertificateError::NotEnoughVotingPower { signed, total, .. } => {
            CertError::NotEnoughPower { signed, total }
        }
        other => CertError::Other(other.to_string()),
    }
}

/// Verify a commit certificate against the validator set of its height, through Malachite's
/// `VerifierExt` (any bad, duplicate or unknown signature rejects the whole certificate).
pub fn verify_commit_cert(
    verifier: &Verifier,
    cert: &CommitCert,
    validators: &ValidatorSet,
) -> Result<(), CertError> {
    let mc = cert.to_malachite();
    let fut =
        verifier.verify_commit_certificate(&NexusCtx, &mc, validators, ThresholdParams::default());
    match run_ready(fut) {
        Some(r) => r.map_err(cert_error),
        None => Err(CertError::Other("verifier did not complete".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::Batch;

    fn signers(n: u8) -> Vec<Signer> {
        let chain = ChainId::from_name("test");
        (1..=n).map(|i| Signer::from_seed(chain, [i; 32])).collect()
    }

    fn precommit(h: u64, id: BatchId, who: ValidatorKey) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height: Height(h),
            round: Round::new(0),
            value: NilOrVal::Val(id),
            validator: who,
            extension: None,
        }
    }

    /// Signing moved from Malachite's `ed25519-consensus` signer to `ed25519-dalek`: the bytes
    /// must be the same (RFC 8032 signatures are deterministic), or replicas of two versions
    /// would not recognize each other's keys and old certificates would read differently.
    #[test]
    fn signatures_and_keys_match_malachites_signer() {
        use arc_malachitebft_signing_ed25519::PrivateKey;
        let chain = ChainId::from_name("test");
        for seed in [[1u8; 32], [7; 32], [0xfe; 32]] {
            let ours = Signer::from_seed(chain, seed);
            let theirs = PrivateKey::from(seed);
            assert_eq!(ours.address().0, *theirs.public_key().as_bytes());
            let vote = precommit(9, Batch::new(vec![seed.to_vec()]).id(), ours.address());
            let preimage = vote_preimage(&chain, &vote);
            assert_eq!(
                ours.sign_vote(vote).signature.to_bytes(),
                theirs.sign(&preimage).to_bytes()
            );
        }
    }

    #[test]
    fn certificate_with_one_forged_signature_is_rejected() {
        let s = signers(4);
        let vs = ValidatorSet::equal(s.iter().map(|x| x.address())).unwrap();
        let verifier = Verifier::new(s[0].chain());
        let id = Batch::new(vec![b"x".to_vec()]).id();
        let mut cert = CommitCert {
            height: 1,
            round: 0,
            batch_id: id,
            signatures: s[..3]
                .iter()
                .map(|x| {
                    let sv = x.sign_vote(precommit(1, id, x.address()));
                    (x.address(), sv.signature.to_bytes())
                })
                .collect(),
        };
        assert_eq!(verify_commit_cert(&verifier, &cert, &vs), Ok(()));
        // Quorum intact, plus one forged signature: the whole certificate must be rejected.
        cert.signatures.push((s[3].address(), [7; 64]));
        assert_eq!(
            verify_commit_cert(&verifier, &cert, &vs),
            Err(CertError::InvalidSignature(s[3].address()))
        );
        cert.signatures.pop();
        cert.signatures.pop();
        assert!(matches!(
            verify_commit_cert(&verifier, &cert, &vs),
            Err(CertError::NotEnoughPower {
                signed: 2,
                total: 4
            })
        ));
        // A signature from another chain does not verify.
        let other = Signer::from_seed(ChainId::from_name("other"), [1; 32]);
        let sv = other.sign_vote(precommit(1, id, other.address()));
        assert!(!verifier.verify_vote(
            &sv.message,
            &sv.signature,
            &PublicKey::from_bytes(other.address().0).unwrap()
        ));
    }
}
