//! The Byzantine replica of the simulation: an honest node whose traffic is rewritten on the
//! way out — equivocation, bad signatures, replays, garbage, silence or invalid batches.

use arc_malachitebft_core_types::NilOrVal;

use super::env::{BAD_ITEM, Rng};
use crate::consensus::codec::{CODEC_VERSION, WireMsg, decode_wire, encode_wire};
use crate::consensus::signing::Signer;
use crate::consensus::types::{Batch, BatchId, Proposal, Vote};

/// What the Byzantine replica does for a whole run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ByzMode {
    /// Two different, correctly signed proposals / votes per round, to different peers.
    Equivocate,
    /// Corrupted signatures on its messages, forged certificates in sync answers, and
    /// inflated status claims.
    BadSignatures,
    /// Re-sends old messages it saw on the network.
    Replay,
    /// Random and mutated bytes.
    Garbage,
    /// Sends nothing.
    Silent,
    /// Proposes batches the application rejects (correctly signed).
    InvalidValue,
}

impl ByzMode {
    pub const ALL: [ByzMode; 6] = [
        ByzMode::Equivocate,
        ByzMode::BadSignatures,
        ByzMode::Replay,
        ByzMode::Garbage,
        ByzMode::Silent,
        ByzMode::InvalidValue,
    ];
}

/// State of the Byzantine rewriter.
#[derive(Debug)]
pub struct Byzantine {
    pub mode: ByzMode,
    signer: Signer,
    history: Vec<Vec<u8>>,
}

const HISTORY: usize = 512;

fn flip_sig(sig: &mut arc_malachitebft_signing_ed25519::Signature, rng: &mut Rng) {
    let mut b = sig.to_bytes();
    let i = rng.range(0, 63) as usize;
    b[i] ^= 1 << rng.range(0, 7);
    *sig = arc_malachitebft_signing_ed25519::Signature::from_bytes(b);
}

impl Byzantine {
    pub fn new(mode: ByzMode, signer: Signer) -> Self {
        Byzantine {
            mode,
            signer,
            history: Vec::new(),
        }
    }

    /// Remember traffic for later replays.
    pub fn observe(&mut self, rng: &mut Rng, bytes: &[u8]) {
        if self.mode != ByzMode::Replay {
            return;
        }
        if self.history.len() < HISTORY {
            self.history.push(bytes.to_vec());
        } else {
            let i = rng.range(0, HISTORY as u64 - 1) as usize;
            self.history[i] = bytes.to_vec();
        }
    }

    /// Rewrite one outgoing message addressed to `dests`; returns what actually goes where.
    pub fn outgoing(
        &mut self,
        rng: &mut Rng,
        bytes: Vec<u8>,
        dests: &[usize],
    ) -> Vec<(usize, Vec<u8>)> {
        let all = |b: Vec<u8>| dests.iter().map(|d| (*d, b.clone())).collect::<Vec<_>>();
        let msg = decode_wire(&bytes).ok();
        match self.mode {
            ByzMode::Silent => Vec::new(),
            ByzMode::Replay => all(bytes),
            ByzMode::Garbage => {
                if rng.chance(0.5) {
                    dests
                        .iter()
                        .map(|d| (*d, self.garbage(rng, &bytes)))
                        .collect()
                } else {
                    all(bytes)
                }
            }
            ByzMode::InvalidValue => match msg {
                Some(WireMsg::Proposal(p)) if p.proposer == self.signer.address() => {
                    let mut items = p.value.items().to_vec();
                    items.push([BAD_ITEM, &rng.bytes(4)].concat());
                    let bad = self.signer.sign_proposal(Proposal {
                        value: Batch::new(items),
                        ..p.message
                    });
                    all(encode_wire(&WireMsg::Proposal(bad)))
                }
                _ => all(bytes),
            },
            ByzMode::Equivocate => {
                let other = match msg {
                    Some(WireMsg::Proposal(p)) if p.proposer == self.signer.address() => {
                        let mut items = p.value.items().to_vec();
                        items.push(rng.bytes(8));
                        let q = self.signer.sign_proposal(Proposal {
                            value: Batch::new(items),
                            ..p.message
                        });
                        Some(encode_wire(&WireMsg::Proposal(q)))
                    }
                    Some(WireMsg::Vote(v)) if v.validator == self.signer.address() => {
                        let value = match v.value {
                            NilOrVal::Nil => {
                                NilOrVal::Val(BatchId(rng.bytes(32).try_into().unwrap_or([9; 32])))
                            }
                            NilOrVal::Val(_) if rng.chance(0.5) => NilOrVal::Nil,
                            NilOrVal::Val(_) => {
                                NilOrVal::Val(BatchId(rng.bytes(32).try_into().unwrap_or([7; 32])))
                            }
                        };
                        let w = self.signer.sign_vote(Vote { value, ..v.message });
                        Some(encode_wire(&WireMsg::Vote(w)))
                    }
                    _ => None,
                };
                match other {
                    None => all(bytes),
                    Some(o) => dests
                        .iter()
                        .map(|d| {
                            if rng.chance(0.5) {
                                (*d, bytes.clone())
                            } else {
                                (*d, o.clone())
                            }
                        })
                        .collect(),
                }
            }
            ByzMode::BadSignatures => {
                let out = match msg {
                    Some(WireMsg::Proposal(mut p)) if rng.chance(0.6) => {
                        flip_sig(&mut p.signature, rng);
                        Some(WireMsg::Proposal(p))
                    }
                    Some(WireMsg::Vote(mut v)) if rng.chance(0.6) => {
                        flip_sig(&mut v.signature, rng);
                        Some(WireMsg::Vote(v))
                    }
                    Some(WireMsg::Status { height, round, .. }) => Some(WireMsg::Status {
                        tip: height + 1000,
                        height: height + 1001,
                        round,
                    }),
                    Some(WireMsg::SyncResponse(mut recs)) => {
                        for d in &mut recs {
                            match rng.range(0, 2) {
                                // A quorum plus one forged signature.
                                0 => d.cert.signatures.push((self.signer.address(), [5; 64])),
                                // A valid-looking certificate for a different batch.
                                1 => {
                                    let mut items = d.batch.items().to_vec();
                                    items.push(b"forged".to_vec());
                                    d.batch = Batch::new(items);
                                    d.cert.batch_id = d.batch.id();
                                }
                                _ => {
                                    if let Some(s) = d.cert.signatures.first_mut() {
                                        s.1[0] ^= 0x80;
                                    }
                                }
                            }
                        }
                        Some(WireMsg::SyncResponse(recs))
                    }
                    _ => None,
                };
                all(out.map_or(bytes, |m| encode_wire(&m)))
            }
        }
    }

    /// Unprompted traffic, called periodically.
    pub fn tick(&mut self, rng: &mut Rng, peers: &[usize]) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        match self.mode {
            ByzMode::Replay if !self.history.is_empty() => {
                for _ in 0..rng.range(1, 4) {
                    let i = rng.range(0, self.history.len() as u64 - 1) as usize;
                    if let Some(d) = rng.pick(peers) {
                        out.push((d, self.history[i].clone()));
                    }
                }
            }
            ByzMode::Garbage => {
                if let Some(d) = rng.pick(peers) {
                    let n = rng.range(0, 300) as usize;
                    let mut b = rng.bytes(n);
                    if rng.chance(0.5) && b.len() >= 2 {
                        b[0] = CODEC_VERSION;
                        b[1] = rng.range(0, 9) as u8;
                    }
                    out.push((d, b));
                }
            }
            ByzMode::BadSignatures => {
                if let Some(d) = rng.pick(peers) {
                    let claim = WireMsg::Status {
                        tip: 1 << 40,
                        height: (1 << 40) + 1,
                        round: arc_malachitebft_core_types::Round::new(0),
                    };
                    out.push((d, encode_wire(&claim)));
                }
            }
            _ => {}
        }
        out
    }

    fn garbage(&self, rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        match rng.range(0, 3) {
            0 => {
                let n = rng.range(0, 200) as usize;
                rng.bytes(n)
            }
            1 if !b.is_empty() => {
                for _ in 0..rng.range(1, 8) {
                    let i = rng.range(0, b.len() as u64 - 1) as usize;
                    b[i] ^= rng.next_u64() as u8 | 1;
                }
                b
            }
            2 => {
                b.truncate(rng.range(0, b.len() as u64) as usize);
                b
            }
            _ => {
                // Valid header, huge declared length.
                let mut v = vec![CODEC_VERSION, rng.range(1, 8) as u8];
                v.extend_from_slice(&u32::MAX.to_be_bytes());
                v.extend_from_slice(&rng.bytes(16));
                v
            }
        }
    }
}
