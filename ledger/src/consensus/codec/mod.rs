//! The explicit, versioned binary codec for consensus: WAL entries, wire messages and decided
//! records. Big-endian integers, u32 length prefixes, one version byte then one tag byte.
//! Decoding is total: any byte string yields a value or a `CodecError`, never a panic, and
//! allocations are bounded by the input length.

use arc_malachitebft_core_consensus::{Input, ProposedValue};
use arc_malachitebft_core_types::{
    NilOrVal, PolkaCertificate, PolkaSignature, Round, RoundCertificate, RoundCertificateType,
    RoundSignature, SignedMessage, SignedProposal, SignedVote, Timeout, TimeoutKind, Validity,
    ValueOrigin, VoteType,
};
use arc_malachitebft_signing_ed25519::Signature;

use super::signing::CommitCert;
use super::types::{Batch, BatchId, Height, NexusCtx, Proposal, ValidatorKey, Vote};

/// Format version written first in every WAL entry, wire message and decided record.
pub const CODEC_VERSION: u8 = 1;

/// Most signatures a certificate may carry.
pub const MAX_CERT_SIGNATURES: usize = 1024;
/// Most decided records in one sync response.
pub const MAX_SYNC_RECORDS: usize = 256;

/// A decoding or encoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input ended early")]
    Truncated,
    #[error("unsupported codec version {0}")]
    Version(u8),
    #[error("unknown tag {tag} for {what}")]
    Tag { what: &'static str, tag: u8 },
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("{what}: {len} exceeds the limit")]
    TooLong { what: &'static str, len: usize },
    #[error("{0} must have a defined round")]
    NilRound(&'static str),
    #[error("this consensus input is not written to the WAL")]
    NotLogged,
}

type R<T> = Result<T, CodecError>;

#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.raw(b);
    }
    fn round(&mut self, r: Round) {
        match r.as_u32() {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.u32(v);
            }
        }
    }
    fn key(&mut self, k: &ValidatorKey) {
        self.raw(&k.0);
    }
    fn sig(&mut self, s: &Signature) {
        self.raw(&s.to_bytes());
    }
    fn nil_or_id(&mut self, v: &NilOrVal<BatchId>) {
        match v {
            NilOrVal::Nil => self.u8(0),
            NilOrVal::Val(id) => {
                self.u8(1);
                self.raw(&id.0);
            }
        }
    }
    fn vote_type(&mut self, t: VoteType) {
        self.u8(match t {
            VoteType::Prevote => 0,
            VoteType::Precommit => 1,
        });
    }
    fn batch(&mut self, b: &Batch) {
        self.u32(b.items().len() as u32);
        for item in b.items() {
            self.bytes(item);
        }
    }
    fn vote(&mut self, v: &SignedVote<NexusCtx>) {
        self.vote_type(v.vote_type);
        self.u64(v.height.0);
        self.round(v.round);
        self.nil_or_id(&v.value);
        self.key(&v.validator);
        match &v.extension {
            None => self.u8(0),
            Some(e) => {
                self.u8(1);
                self.bytes(&e.message);
                self.sig(&e.signature);
            }
        }
        self.sig(&v.signature);
    }
    fn proposal(&mut self, p: &SignedProposal<NexusCtx>) {
        self.u64(p.height.0);
        self.round(p.round);
        self.round(p.pol_round);
        self.key(&p.proposer);
        self.batch(&p.value);
        self.sig(&p.signature);
    }
    fn polka(&mut self, c: &PolkaCertificate<NexusCtx>) {
        self.u64(c.height.0);
        self.round(c.round);
        self.raw(&c.value_id.0);
        self.u32(c.polka_signatures.len() as u32);
        for s in &c.polka_signatures {
            self.key(&s.address);
            self.sig(&s.signature);
        }
    }
    fn round_cert(&mut self, c: &RoundCertificate<NexusCtx>) {
        self.u64(c.height.0);
        self.round(c.round);
        self.u8(match c.cert_type {
            RoundCertificateType::Skip => 0,
            RoundCertificateType::Precommit => 1,
        });
        self.u32(c.round_signatures.len() as u32);
        for s in &c.round_signatures {
            self.vote_type(s.vote_type);
            self.nil_or_id(&s.value_id);
            self.key(&s.address);
            self.sig(&s.signature);
        }
    }
    fn commit(&mut self, c: &CommitCert) {
        self.u64(c.height);
        self.u32(c.round);
        self.raw(&c.batch_id.0);
        self.u32(c.signatures.len() as u32);
        for (k, s) in &c.signatures {
            self.key(k);
            self.raw(s);
        }
    }
    fn timeout(&mut self, t: &Timeout) {
        match t.kind {
            TimeoutKind::Propose => self.u8(0),
            TimeoutKind::Prevote => self.u8(1),
            TimeoutKind::Precommit => self.u8(2),
            TimeoutKind::Rebroadcast => self.u8(3),
            TimeoutKind::FinalizeHeight(d) => {
                self.u8(4);
                self.u64(d.as_secs());
                self.u32(d.subsec_nanos());
            }
        }
        self.round(t.round);
    }
}

struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.b.len() < n {
            return Err(CodecError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn arr<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.arr::<1>()?[0])
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    /// A count of elements each at least `min` bytes long; bounded by what remains.
    fn count(&mut self, what: &'static str, min: usize, max: usize) -> R<usize> {
        let n = self.u32()? as usize;
        if n > max || n.saturating_mul(min.max(1)) > self.b.len() {
            return Err(CodecError::TooLong { what, len: n });
        }
        Ok(n)
    }
    fn bytes(&mut self) -> R<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn round(&mut self) -> R<Round> {
        match self.u8()? {
            0 => Ok(Round::Nil),
            1 => Ok(Round::new(self.u32()?)),
            tag => Err(CodecError::Tag { what: "round", tag }),
        }
    }
    fn defined_round(&mut self, what: &'static str) -> R<Round> {
        let r = self.round()?;
        if r.is_nil() {
            return Err(CodecError::NilRound(what));
        }
        Ok(r)
    }
    fn key(&mut self) -> R<ValidatorKey> {
        Ok(ValidatorKey(self.arr()?))
    }
    fn sig(&mut self) -> R<Signature> {
        Ok(Signature::from_bytes(self.arr()?))
    }
    fn nil_or_id(&mut self) -> R<NilOrVal<BatchId>> {
        match self.u8()? {
            0 => Ok(NilOrVal::Nil),
            1 => Ok(NilOrVal::Val(BatchId(self.arr()?))),
            tag => Err(CodecError::Tag {
                what: "value id",
                tag,
            }),
        }
    }
    fn vote_type(&mut self) -> R<VoteType> {
        match self.u8()? {
            0 => Ok(VoteType::Prevote),
            1 => Ok(VoteType::Precommit),
            tag => Err(CodecError::Tag {
                what: "vote type",
                tag,
            }),
        }
    }
    fn batch(&mut self) -> R<Batch> {
        let n = self.count("batch items", 4, usize::MAX)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.bytes()?);
        }
        Ok(Batch::new(items))
    }
    fn vote(&mut self) -> R<SignedVote<NexusCtx>> {
        let vote_type = self.vote_type()?;
        let height = Height(self.u64()?);
        let round = self.defined_round("vote")?;
        let value = self.nil_or_id()?;
        let validator = self.key()?;
        let extension = match self.u8()? {
            0 => None,
            1 => {
                let msg = self.bytes()?;
                Some(SignedMessage::new(msg, self.sig()?))
            }
            tag => {
                return Err(CodecError::Tag {
                    what: "extension",
                    tag,
                });
            }
        };
        let vote = Vote {
            vote_type,
            height,
            round,
            value,
            validator,
            extension,
        };
        Ok(SignedMessage::new(vote, self.sig()?))
    }
    fn proposal(&mut self) -> R<SignedProposal<NexusCtx>> {
        let height = Height(self.u64()?);
        let round = self.defined_round("proposal")?;
        let pol_round = self.round()?;
        let proposer = self.key()?;
        let value = self.batch()?;
        let p = Proposal {
            height,
            round,
            value,
            pol_round,
            proposer,
        };
        Ok(SignedMessage::new(p, self.sig()?))
    }
    fn polka(&mut self) -> R<PolkaCertificate<NexusCtx>> {
        let height = Height(self.u64()?);
        let round = self.defined_round("polka certificate")?;
        let value_id = BatchId(self.arr()?);
        let n = self.count("polka signatures", 96, MAX_CERT_SIGNATURES)?;
        let mut sigs = Vec::with_capacity(n);
        for _ in 0..n {
            let address = self.key()?;
            sigs.push(PolkaSignature::new(address, self.sig()?));
        }
        Ok(PolkaCertificate {
            height,
            round,
            value_id,
            polka_signatures: sigs,
        })
    }
    fn round_cert(&mut self) -> R<RoundCertificate<NexusCtx>> {
        let height = Height(self.u64()?);
        let round = self.defined_round("round certificate")?;
        let cert_type = match self.u8()? {
            0 => RoundCertificateType::Skip,
            1 => RoundCertificateType::Precommit,
            tag => {
                return Err(CodecError::Tag {
                    what: "round certificate type",
                    tag,
                });
            }
        };
        let n = self.count("round signatures", 98, MAX_CERT_SIGNATURES)?;
        let mut sigs = Vec::with_capacity(n);
        for _ in 0..n {
            let vt = self.vote_type()?;
            let id = self.nil_or_id()?;
            let address = self.key()?;
            sigs.push(RoundSignature::new(vt, id, address, self.sig()?));
        }
        Ok(RoundCertificate {
            height,
            round,
            cert_type,
            round_signatures: sigs,
        })
    }
    fn commit(&mut self) -> R<CommitCert> {
        let height = self.u64()?;
        let round = self.u32()?;
        let batch_id = BatchId(self.arr()?);
        let n = self.count("commit signatures", 96, MAX_CERT_SIGNATURES)?;
        let mut signatures = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.key()?;
            signatures.push((k, self.arr::<64>()?));
        }
        Ok(CommitCert {
            height,
            round,
            batch_id,
            signatures,
        })
    }
    fn timeout(&mut self) -> R<Timeout> {
        let kind = match self.u8()? {
            0 => TimeoutKind::Propose,
            1 => TimeoutKind::Prevote,
            2 => TimeoutKind::Precommit,
            3 => TimeoutKind::Rebroadcast,
            4 => {
                let secs = self.u64()?;
                let nanos = self.u32()?.min(999_999_999);
                TimeoutKind::FinalizeHeight(std::time::Duration::new(secs, nanos))
            }
            tag => {
                return Err(CodecError::Tag {
                    what: "timeout",
                    tag,
                });
            }
        };
        Ok(Timeout::new(self.defined_round("timeout")?, kind))
    }
    fn finish(self) -> R<()> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Trailing(self.b.len()))
        }
    }
}

fn open(bytes: &[u8]) -> R<(u8, Rd<'_>)> {
    let mut r = Rd { b: bytes };
    let v = r.u8()?;
    if v != CODEC_VERSION {
        return Err(CodecError::Version(v));
    }
    let tag = r.u8()?;
    Ok((tag, r))
}

fn start(tag: u8) -> W {
    let mut w = W::default();
    w.u8(CODEC_VERSION);
    w.u8(tag);
    w
}

/// The canonical encoding of a batch's items (`count ‖ (len ‖ bytes)*`): the bytes served by
/// sync and hashed into the [`BatchId`].
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut w = W::default();
    w.batch(batch);
    w.0
}

/// Decode [`encode_batch`] output.
pub fn decode_batch(bytes: &[u8]) -> R<Batch> {
    let mut r = Rd { b: bytes };
    let b = r.batch()?;
    r.finish()?;
    Ok(b)
}

// WAL entries -------------------------------------------------------------------------------

/// Encode one of the five WAL-logged consensus inputs; other inputs are `NotLogged`.
pub fn encode_wal_entry(input: &Input<NexusCtx>) -> R<Vec<u8>> {
    let w = match input {
        Input::Vote(v) => {
            let mut w = start(1);
            w.vote(v);
            w
        }
        Input::Proposal(p) => {
            let mut w = start(2);
            w.proposal(p);
            w
        }
        Input::ProposedValue(pv, _origin) => {
            let mut w = start(3);
            w.u64(pv.height.0);
            w.round(pv.round);
            w.round(pv.valid_round);
            w.key(&pv.proposer);
            w.u8(u8::from(pv.validity.is_valid()));
            w.batch(&pv.value);
            w
        }
        Input::PolkaCertificate(c) => {
            let mut w = start(4);
            w.polka(c);
            w
        }
        Input::TimeoutElapsed(t) => {
            let mut w = start(5);
            w.timeout(t);
            w
        }
        _ => return Err(CodecError::NotLogged),
    };
    Ok(w.0)
}

/// Decode a WAL entry. `ProposedValue`s come back with `ValueOrigin::Consensus`.
pub fn decode_wal_entry(bytes: &[u8]) -> R<Input<NexusCtx>> {
    let (tag, mut r) = open(bytes)?;
    let input = match tag {
        1 => Input::Vote(r.vote()?),
        2 => Input::Proposal(r.proposal()?),
        3 => {
            let height = Height(r.u64()?);
            let round = r.round()?;
            let valid_round = r.round()?;
            let proposer = r.key()?;
            let validity = match r.u8()? {
                0 => Validity::Invalid,
                1 => Validity::Valid,
                tag => {
                    return Err(CodecError::Tag {
                        what: "validity",
                        tag,
                    });
                }
            };
            let value = r.batch()?;
            Input::ProposedValue(
                ProposedValue {
                    height,
                    round,
                    valid_round,
                    proposer,
                    value,
                    validity,
                },
                ValueOrigin::Consensus,
            )
        }
        4 => Input::PolkaCertificate(r.polka()?),
        5 => Input::TimeoutElapsed(r.timeout()?),
        tag => {
            return Err(CodecError::Tag {
                what: "WAL entry",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(input)
}

// Decided records ----------------------------------------------------------------------------

/// A decided height: the batch and the commit certificate that proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub height: u64,
    pub batch: Batch,
    pub cert: CommitCert,
}

/// Encode a decided record (stored, and served to lagging peers).
pub fn encode_decided(d: &Decided) -> Vec<u8> {
    let mut w = start(1);
    w.u64(d.height);
    w.commit(&d.cert);
    w.batch(&d.batch);
    w.0
}

fn read_decided(r: &mut Rd<'_>) -> R<Decided> {
    let height = r.u64()?;
    let cert = r.commit()?;
    let batch = r.batch()?;
    Ok(Decided {
        height,
        batch,
        cert,
    })
}

/// Decode a decided record.
pub fn decode_decided(bytes: &[u8]) -> R<Decided> {
    let (tag, mut r) = open(bytes)?;
    if tag != 1 {
        return Err(CodecError::Tag {
            what: "decided record",
            tag,
        });
    }
    let d = read_decided(&mut r)?;
    r.finish()?;
    Ok(d)
}

// Wire messages ------------------------------------------------------------------------------

/// Everything replicas send each other about consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireMsg {
    Proposal(SignedProposal<NexusCtx>),
    Vote(SignedVote<NexusCtx>),
    Polka(PolkaCertificate<NexusCtx>),
    RoundCert(RoundCertificate<NexusCtx>),
    /// Periodic liveness beacon: last decided height and where consensus is.
    Status {
        tip: u64,
        height: u64,
        round: Round,
    },
    /// Ask for decided heights `from..=to`.
    SyncRequest {
        from: u64,
        to: u64,
    },
    SyncResponse(Vec<Decided>),
    /// Pending items gossiped so whichever replica proposes can include them.
    Items(Vec<Vec<u8>>),
}

/// Encode a wire message.
pub fn encode_wire(msg: &WireMsg) -> Vec<u8> {
    let w = match msg {
        WireMsg::Proposal(p) => {
            let mut w = start(1);
            w.proposal(p);
            w
        }
        WireMsg::Vote(v) => {
            let mut w = start(2);
            w.vote(v);
            w
        }
        WireMsg::Polka(c) => {
            let mut w = start(3);
            w.polka(c);
            w
        }
        WireMsg::RoundCert(c) => {
            let mut w = start(4);
            w.round_cert(c);
            w
        }
        WireMsg::Status { tip, height, round } => {
            let mut w = start(5);
            w.u64(*tip);
            w.u64(*height);
            w.round(*round);
            w
        }
        WireMsg::SyncRequest { from, to } => {
            let mut w = start(6);
            w.u64(*from);
            w.u64(*to);
            w
        }
        WireMsg::SyncResponse(records) => {
            let mut w = start(7);
            w.u32(records.len() as u32);
            for d in records {
                w.u64(d.height);
                w.commit(&d.cert);
                w.batch(&d.batch);
            }
            w
        }
        WireMsg::Items(items) => {
            let mut w = start(8);
            w.u32(items.len() as u32);
            for i in items {
                w.bytes(i);
            }
            w
        }
    };
    w.0
}

/// Decode a wire message from an untrusted peer.
pub fn decode_wire(bytes: &[u8]) -> R<WireMsg> {
    let (tag, mut r) = open(bytes)?;
    let msg = match tag {
        1 => WireMsg::Proposal(r.proposal()?),
        2 => WireMsg::Vote(r.vote()?),
        3 => WireMsg::Polka(r.polka()?),
        4 => WireMsg::RoundCert(r.round_cert()?),
        5 => WireMsg::Status {
            tip: r.u64()?,
            height: r.u64()?,
            round: r.round()?,
        },
        6 => WireMsg::SyncRequest {
            from: r.u64()?,
            to: r.u64()?,
        },
        7 => {
            let n = r.count("sync records", 48, MAX_SYNC_RECORDS)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_decided(&mut r)?);
            }
            WireMsg::SyncResponse(v)
        }
        8 => {
            let n = r.count("items", 4, usize::MAX)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(r.bytes()?);
            }
            WireMsg::Items(v)
        }
        tag => {
            return Err(CodecError::Tag {
                what: "wire message",
                tag,
            });
        }
    };
    r.finish()?;
    Ok(msg)
}

#[cfg(test)]
mod tests;
