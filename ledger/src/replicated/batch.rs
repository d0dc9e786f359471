//! The consensus value of the replicated ledger and what is stored beside each entry (pure).
//!
//! A decided batch is `[header, request..., barrier...]`: item 0 is the [`Header`] (the entry's
//! timestamp), then the requests exactly as the entry stores them (`SignedRequest::to_bytes`),
//! then read barriers ([`barrier_item`]: ids of consistent reads that wait for this height). So
//! the batch — and the blake3 id its commit certificate signs — can be rebuilt from an entry's
//! stored request rows plus the header and barriers, which are kept beside the entry in its
//! [`CertRecord`] with the certificate itself.

use crate::codec::{CodecError, Reader, Writer};
use crate::consensus::{BatchId, CommitCert, batch_id_of};

/// First byte of a header item (requests start with their record version, 1).
pub const HEADER_TAG: u8 = 0xB1;
/// First byte of a read-barrier item.
pub const BARRIER_TAG: u8 = 0xBA;
/// Most barriers one batch carries.
pub const MAX_BARRIERS: usize = 4096;

/// A read barrier's id: random bytes chosen by the replica that waits for it.
pub type BarrierId = [u8; 16];

/// Item 0 of every decided batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// The entry's timestamp (ms since the Unix epoch): the proposer's clock, never before the
    /// previous entry's.
    pub timestamp_ms: u64,
}

impl Header {
    /// `u8 0xB1 | u8 version 1 | timestamp u64`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(10);
        w.u8(HEADER_TAG).u8(1).u64(self.timestamp_ms);
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Header, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("batch header tag", HEADER_TAG)?;
        r.version("batch header", 1)?;
        let timestamp_ms = r.u64()?;
        r.finish()?;
        Ok(Header { timestamp_ms })
    }
}

/// A read barrier as a pending item.
pub fn barrier_item(id: &BarrierId) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(BARRIER_TAG);
    v.extend_from_slice(id);
    v
}

/// The barrier id of a pending item, if it is one.
pub fn as_barrier(item: &[u8]) -> Option<BarrierId> {
    match item {
        [BARRIER_TAG, rest @ ..] => rest.try_into().ok(),
        _ => None,
    }
}

/// The items of the batch `[header, requests..., barriers...]`.
pub fn batch_items(header: &[u8], requests: &[Vec<u8>], barriers: &[BarrierId]) -> Vec<Vec<u8>> {
    let mut items = Vec::with_capacity(1 + requests.len() + barriers.len());
    items.push(header.to_vec());
    items.extend(requests.iter().cloned());
    items.extend(barriers.iter().map(barrier_item));
    items
}

/// The id of the batch `[header, requests..., barriers...]`.
pub fn batch_id(header: &[u8], requests: &[Vec<u8>], barriers: &[BarrierId]) -> BatchId {
    batch_id_of(&batch_items(header, requests, barriers))
}

/// A decided batch taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts<'a> {
    pub header: &'a [u8],
    pub requests: &'a [Vec<u8>],
    pub barriers: Vec<BarrierId>,
}

/// Splits a batch into header, requests and barriers; `None` unless it has that shape (a header
/// first, then requests only, then barriers only).
pub fn split(items: &[Vec<u8>]) -> Option<Parts<'_>> {
    let (header, rest) = items.split_first()?;
    if header.first() != Some(&HEADER_TAG) {
        return None;
    }
    let n = rest
        .iter()
        .position(|i| i.first() == Some(&BARRIER_TAG))
        .unwrap_or(rest.len());
    let (requests, tail) = rest.split_at(n);
    if requests.iter().any(|r| r.first() != Some(&1)) {
        return None;
    }
    let barriers = tail
        .iter()
        .map(|b| as_barrier(b))
        .collect::<Option<Vec<_>>>()?;
    if barriers.len() > MAX_BARRIERS {
        return None;
    }
    Some(Parts {
        header,
        requests,
        barriers,
    })
}

/// What the store keeps beside an entry of the replicated ledger: the batch header, the read
/// barriers of the batch, and the commit certificate of the height.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRecord {
    /// The header item, byte for byte as decided.
    pub header: Vec<u8>,
    pub barriers: Vec<BarrierId>,
    pub cert: CommitCert,
}

impl CertRecord {
    /// `u8 0xC1 | u8 version 1 | header (u32 len + bytes) | n u32 | barrier [16]* | height u64 |
    /// round u32 | batch id [32] | n u32 | (validator key [32] | signature [64])*`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let c = &self.cert;
        let mut w = Writer::with_capacity(
            64 + self.header.len() + 16 * self.barriers.len() + 96 * c.signatures.len(),
        );
        w.u8(0xC1).u8(1).bytes(&self.header);
        w.u32(self.barriers.len() as u32);
        for b in &self.barriers {
            w.array(b);
        }
        w.u64(c.height).u32(c.round).array(&c.batch_id.0);
        w.u32(c.signatures.len() as u32);
        for (k, s) in &c.signatures {
            w.array(&k.0).array(s);
        }
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<CertRecord, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("certificate record tag", 0xC1)?;
        r.version("certificate record", 1)?;
        let header = r.bytes()?.to_vec();
        let nb = r.u32()? as usize;
        if nb > MAX_BARRIERS {
            return Err(CodecError::Invalid(format!(
                "certificate record: {nb} barriers"
            )));
        }
        let mut barriers = Vec::with_capacity(nb.min(bytes.len() / 16));
        for _ in 0..nb {
            barriers.push(r.array()?);
        }
        let height = r.u64()?;
        let round = r.u32()?;
        let batch_id = BatchId(r.array()?);
        let n = r.u32()? as usize;
        if n > crate::consensus::codec::MAX_CERT_SIGNATURES {
            return Err(CodecError::Invalid(format!(
                "certificate record: {n} signatures"
            )));
        }
        let mut signatures = Vec::with_capacity(n.min(bytes.len() / 96));
        for _ in 0..n {
            signatures.push((crate::consensus::ValidatorKey(r.array()?), r.array()?));
        }
        r.finish()?;
        Ok(CertRecord {
            header,
            barriers,
            cert: CommitCert {
                height,
                round,
                batch_id,
                signatures,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_barrier_and_cert_record_round_trip() {
        let h = Header { timestamp_ms: 42 };
        let bytes = h.to_bytes();
        assert_eq!(bytes[0], HEADER_TAG);
        assert_eq!(Header::from_bytes(&bytes).unwrap(), h);
        for cut in 0..bytes.len() {
            assert!(Header::from_bytes(&bytes[..cut]).is_err());
        }
        assert_eq!(as_barrier(&barrier_item(&[3; 16])), Some([3; 16]));
        assert_eq!(as_barrier(&bytes), None);
        assert_eq!(as_barrier(&[BARRIER_TAG, 1]), None);

        let req = vec![1u8, 2, 3];
        let items = batch_items(&bytes, std::slice::from_ref(&req), &[[5; 16]]);
        let parts = split(&items).unwrap();
        assert_eq!(parts.requests, std::slice::from_ref(&req));
        assert_eq!(parts.barriers, vec![[5; 16]]);
        assert!(split(&items[1..]).is_none(), "no header");
        let mut swapped = items.clone();
        swapped.swap(1, 2);
        assert!(split(&swapped).is_none(), "a request after a barrier");

        let rec = CertRecord {
            header: bytes.clone(),
            barriers: vec![[5; 16]],
            cert: CommitCert {
                height: 5,
                round: 1,
                batch_id: batch_id(&bytes, &[b"r".to_vec()], &[]),
                signatures: vec![(crate::consensus::ValidatorKey([1; 32]), [2; 64])],
            },
        };
        let enc = rec.to_bytes();
        assert_eq!(CertRecord::from_bytes(&enc).unwrap(), rec);
        for cut in 0..enc.len() {
            assert!(CertRecord::from_bytes(&enc[..cut]).is_err());
        }
        assert_ne!(
            batch_id(&bytes, &[b"r".to_vec()], &[]),
            batch_id(&bytes, &[b"r".to_vec()], &[[0; 16]])
        );
    }
}
