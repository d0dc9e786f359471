//! Codec round trips, truncation and garbage resistance.

use super::*;
use crate::consensus::signing::{ChainId, Signer};
use crate::consensus::types::batch_id_of;

fn sample_msgs() -> Vec<WireMsg> {
    let s = Signer::from_seed(ChainId::from_name("t"), [3; 32]);
    let batch = Batch::new(vec![b"a".to_vec(), vec![], b"ccc".to_vec()]);
    let vote = s.sign_vote(Vote {
        vote_type: VoteType::Precommit,
        height: Height(7),
        round: Round::new(2),
        value: NilOrVal::Val(batch.id()),
        validator: s.address(),
        extension: None,
    });
    let prop = s.sign_proposal(Proposal {
        height: Height(7),
        round: Round::new(2),
        value: batch.clone(),
        pol_round: Round::new(1),
        proposer: s.address(),
    });
    let cert = CommitCert {
        height: 7,
        round: 2,
        batch_id: batch.id(),
        signatures: vec![(s.address(), vote.signature.to_bytes())],
    };
    vec![
        WireMsg::Proposal(prop),
        WireMsg::Vote(vote.clone()),
        WireMsg::Polka(PolkaCertificate::new(
            Height(7),
            Round::new(2),
            batch.id(),
            vec![],
        )),
        WireMsg::RoundCert(RoundCertificate::new_from_votes(
            Height(7),
            Round::new(2),
            RoundCertificateType::Precommit,
            vec![vote],
        )),
        WireMsg::Status {
            tip: 6,
            height: 7,
            round: Round::Nil,
        },
        WireMsg::SyncRequest { from: 1, to: 9 },
        WireMsg::SyncResponse(vec![Decided {
            height: 7,
            batch,
            cert,
        }]),
        WireMsg::Items(vec![b"x".to_vec(), b"yz".to_vec()]),
    ]
}

#[test]
fn wire_messages_round_trip_and_every_truncation_is_rejected() {
    for m in sample_msgs() {
        let b = encode_wire(&m);
        assert_eq!(decode_wire(&b), Ok(m.clone()));
        for cut in 0..b.len() {
            assert!(decode_wire(&b[..cut]).is_err(), "{m:?} cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(decode_wire(&long), Err(CodecError::Trailing(1)));
    }
}

#[test]
fn garbage_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..400usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = decode_wire(&bytes);
        let _ = decode_wal_entry(&bytes);
        let _ = decode_decided(&bytes);
        let mut with_header = vec![CODEC_VERSION, (len % 9) as u8];
        with_header.extend_from_slice(&bytes);
        let _ = decode_wire(&with_header);
        let _ = decode_wal_entry(&with_header);
    }
    // A huge declared count is refused before allocating.
    let mut b = vec![CODEC_VERSION, 8];
    b.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_wire(&b), Err(CodecError::TooLong { .. })));
}

#[test]
fn wal_entries_round_trip() {
    let msgs = sample_msgs();
    let (WireMsg::Vote(v), WireMsg::Proposal(p)) = (&msgs[1], &msgs[0]) else {
        unreachable!()
    };
    let inputs = vec![
        Input::Vote(v.clone()),
        Input::Proposal(p.clone()),
        Input::ProposedValue(
            ProposedValue {
                height: Height(7),
                round: Round::new(2),
                valid_round: Round::Nil,
                proposer: p.proposer,
                value: p.value.clone(),
                validity: Validity::Valid,
            },
            ValueOrigin::Consensus,
        ),
        Input::TimeoutElapsed(Timeout::prevote(Round::new(4))),
    ];
    for i in inputs {
        let b = encode_wal_entry(&i).unwrap();
        assert_eq!(decode_wal_entry(&b).unwrap(), i);
    }
    assert_eq!(
        encode_wal_entry(&Input::TimeoutElapsed(Timeout::propose(Round::new(0)))).map(|b| b.len()),
        Ok(8)
    );
    let batch = Batch::new(vec![b"q".to_vec()]);
    assert_eq!(
        decode_batch(&encode_batch(&batch)).unwrap().id(),
        batch.id()
    );
    assert_eq!(batch.id(), batch_id_of(batch.items()));
}
