//! Entries: the unit consensus decides and the store appends — a height, the previous entry's
//! hash, a timestamp, the signed requests, the events they caused, and the entry's own hash.
//!
//! ## Hash (format v1)
//! ```text
//! hash = blake3( "nexus/entry/v1\n"
//!              | height u64le | prev_hash [32] | timestamp_ms u64le
//!              | n_requests u32le | n_events u32le
//!              | for each request: u32le len | request record   (SignedRequest::to_bytes)
//!              | for each event:   u32le len | event record )   (Event::to_bytes)
//! ```
//! Genesis (height 1) has `prev_hash` = 32 zero bytes. The commit certificate that consensus
//! produces is stored beside the entry and is not part of the hash (it signs the hash).
//! Because the hash covers the exact stored record bytes, `audit verify` recomputes it from the
//! stored rows without decoding the events.

use std::fmt;

use thiserror::Error;

use crate::codec::{CodecError, Reader, Writer};
use crate::event::Event;
use crate::request::SignedRequest;

/// Domain separator of the entry hash.
pub const ENTRY_DOMAIN: &[u8] = b"nexus/entry/v1\n";

/// blake3 hash of an entry.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryHash(pub [u8; 32]);

impl EntryHash {
    /// The `prev_hash` of the first entry.
    pub const ZERO: EntryHash = EntryHash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({})", self.short())
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One link of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub height: u64,
    pub prev_hash: EntryHash,
    pub timestamp_ms: u64,
    pub requests: Vec<SignedRequest>,
    /// Grouped by request: `events[i].request` never decreases.
    pub events: Vec<Event>,
    pub hash: EntryHash,
}

/// An entry that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryError {
    #[error("event {event} names request {request} but the entry has {requests} requests")]
    BadRequestIndex {
        event: usize,
        request: u32,
        requests: usize,
    },
    #[error("event {event} is out of order: events must be grouped by request")]
    OutOfOrder { event: usize },
    #[error("height must be at least 1")]
    ZeroHeight,
}

/// Incremental computation of the entry hash (see the module doc). Records are gathered into
/// large slices before hashing so blake3 can hash many chunks at once (SIMD).
#[derive(Debug, Clone)]
pub struct EntryHasher {
    hasher: blake3::Hasher,
    buf: Vec<u8>,
}

/// Bytes gathered before they are handed to blake3.
const HASH_BUFFER: usize = 256 * 1024;

impl EntryHasher {
    pub fn new(
        height: u64,
        prev_hash: &EntryHash,
        timestamp_ms: u64,
        n_requests: u32,
        n_events: u32,
    ) -> Self {
        let mut buf = Vec::with_capacity(HASH_BUFFER);
        buf.extend_from_slice(ENTRY_DOMAIN);
        buf.extend_from_slice(&height.to_le_bytes());
        buf.extend_from_slice(&prev_hash.0);
        buf.extend_from_slice(&timestamp_ms.to_le_bytes());
        buf.extend_from_slice(&n_requests.to_le_bytes());
        buf.extend_from_slice(&n_events.to_le_bytes());
        EntryHasher {
            hasher: blake3::Hasher::new(),
            buf,
        }
    }

    /// Adds the next record: all requests first, then all events, in order.
    pub fn record(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= HASH_BUFFER {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }

    pub fn finish(&self) -> EntryHash {
        let mut h = self.hasher.clone();
        h.update(&self.buf);
        EntryHash(*h.finalize().as_bytes())
    }
}

/// An entry as stored: the header row and one row per request and per event.
#[derive(Debug, Clone)]
pub struct EncodedEntry {
    pub header: EntryHeader,
    pub requests: Vec<Vec<u8>>,
    pub events: Vec<Vec<u8>>,
}

/// The stored header row of an entry.
///
/// Record format v1: `u8 1 | height u64 | prev_hash [32] | timestamp_ms u64 | n_requests u32 |
/// n_events u32 | hash [32]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub height: u64,
    pub prev_hash: EntryHash,
    pub timestamp_ms: u64,
    pub n_requests: u32,
    pub n_events: u32,
    pub hash: EntryHash,
}

const HEADER_V1: u8 = 1;

impl EntryHeader {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(93);
        w.u8(HEADER_V1)
            .u64(self.height)
            .array(&self.prev_hash.0)
            .u64(self.timestamp_ms);
        w.u32(self.n_requests)
            .u32(self.n_events)
            .array(&self.hash.0);
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<EntryHeader, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("entry header", HEADER_V1)?;
        let h = EntryHeader {
            height: r.u64()?,
            prev_hash: EntryHash(r.array()?),
            timestamp_ms: r.u64()?,
            n_requests: r.u32()?,
            n_events: r.u32()?,
            hash: EntryHash(r.array()?),
        };
        r.finish()?;
        Ok(h)
    }

    /// A hasher primed with this header's fields.
    pub fn hasher(&self) -> EntryHasher {
        EntryHasher::new(
            self.height,
            &self.prev_hash,
            self.timestamp_ms,
            self.n_requests,
            self.n_events,
        )
    }
}

/// Builds the entry at `height` on top of `prev_hash` and computes its hash. Pure: consensus
/// decides the requests and timestamp, every replica plans the same events and gets the same hash.
pub fn build_entry(
    prev_hash: EntryHash,
    height: u64,
    timestamp_ms: u64,
    requests: Vec<SignedRequest>,
    events: Vec<Event>,
) -> Result<Entry, EntryError> {
    check_entry(height, requests.len(), &events)?;
    let mut entry = Entry {
        height,
        prev_hash,
        timestamp_ms,
        requests,
        events,
        hash: EntryHash::ZERO,
    };
    entry.hash = entry.encode().header.hash;
    Ok(entry)
}

/// [`build_entry`] for a caller that has each request's stored record already
/// (`request_records[i]` decodes to `requests[i]`; it is stored and hashed as it is, which for
/// a request item taken from a peer may not be its canonical re-encoding): the entry and its
/// stored rows, each request and event encoded once.
pub fn build_entry_encoded(
    prev_hash: EntryHash,
    height: u64,
    timestamp_ms: u64,
    requests: Vec<SignedRequest>,
    request_records: Vec<Vec<u8>>,
    events: Vec<Event>,
) -> Result<(Entry, EncodedEntry), EntryError> {
    check_entry(height, requests.len(), &events)?;
    debug_assert_eq!(requests.len(), request_records.len());
    let events_bytes = events.iter().map(Event::to_bytes).collect();
    let enc = EncodedEntry::new(
        height,
        prev_hash,
        timestamp_ms,
        request_records,
        events_bytes,
    );
    let entry = Entry {
        height,
        prev_hash,
        timestamp_ms,
        requests,
        events,
        hash: enc.header.hash,
    };
    Ok((entry, enc))
}

fn check_entry(height: u64, requests: usize, events: &[Event]) -> Result<(), EntryError> {
    if height == 0 {
        return Err(EntryError::ZeroHeight);
    }
    let mut last = 0;
    for (i, e) in events.iter().enumerate() {
        if e.request as usize >= requests {
            return Err(EntryError::BadRequestIndex {
                event: i,
                request: e.request,
                requests,
            });
        }
        if e.request < last {
            return Err(EntryError::OutOfOrder { event: i });
        }
        last = e.request;
    }
    Ok(())
}

impl Entry {
    /// The stored rows, with the hash computed from them (`self.hash` is not consulted).
    pub fn encode(&self) -> EncodedEntry {
        let requests: Vec<Vec<u8>> = self.requests.iter().map(SignedRequest::to_bytes).collect();
        let events: Vec<Vec<u8>> = self.events.iter().map(Event::to_bytes).collect();
        EncodedEntry::new(
            self.height,
            self.prev_hash,
            self.timestamp_ms,
            requests,
            events,
        )
    }

    /// Recomputes the hash from the content.
    pub fn compute_hash(&self) -> EntryHash {
        self.encode().header.hash
    }

    /// Decodes stored rows. Does not check the hash (see [`EncodedEntry::check_hash`]).
    pub fn decode(
        header: &EntryHeader,
        requests: &[impl AsRef<[u8]>],
        events: &[impl AsRef<[u8]>],
    ) -> Result<Entry, CodecError> {
        if requests.len() != header.n_requests as usize || events.len() != header.n_events as usize
        {
            return Err(CodecError::Invalid(format!(
                "header says {} requests and {} events, found {} and {}",
                header.n_requests,
                header.n_events,
                requests.len(),
                events.len()
            )));
        }
        let requests = requests
            .iter()
            .map(|r| SignedRequest::from_bytes(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let events = events
            .iter()
            .map(|e| Event::from_bytes(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Entry {
            height: header.height,
            prev_hash: header.prev_hash,
            timestamp_ms: header.timestamp_ms,
            requests,
            events,
            hash: header.hash,
        })
    }

    /// The events caused by request `index`.
    pub fn events_of(&self, index: u32) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.request == index)
    }
}

impl EncodedEntry {
    /// The rows of an entry with its header and hash computed from them.
    pub fn new(
        height: u64,
        prev_hash: EntryHash,
        timestamp_ms: u64,
        requests: Vec<Vec<u8>>,
        events: Vec<Vec<u8>>,
    ) -> EncodedEntry {
        let mut header = EntryHeader {
            height,
            prev_hash,
            timestamp_ms,
            n_requests: requests.len() as u32,
            n_events: events.len() as u32,
            hash: EntryHash::ZERO,
        };
        let mut hasher = header.hasher();
        requests
            .iter()
            .chain(events.iter())
            .for_each(|r| hasher.record(r));
        header.hash = hasher.finish();
        EncodedEntry {
            header,
            requests,
            events,
        }
    }

    /// Whether the header's hash matches the rows.
    pub fn check_hash(&self) -> bool {
        let mut hasher = self.header.hasher();
        self.requests
            .iter()
            .chain(self.events.iter())
            .for_each(|r| hasher.record(r));
        hasher.finish() == self.header.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBody;
    use crate::request::{Op, Request, Source};
    use ed25519_dalek::SigningKey;
    use nexus_schemas::{Kind, ObjectKey};

    fn signed(id: &str) -> SignedRequest {
        let key = ObjectKey::new(Kind::Service, "default", id);
        let req = Request {
            id: id.into(),
            actor: "user:alice".into(),
            source: Source::Cli,
            ops: vec![Op::Delete {
                key,
                if_version: None,
            }],
            created_at_ms: 1,
        };
        SignedRequest::sign(req, &SigningKey::from_bytes(&[1; 32]))
    }

    fn deleted(request: u32, name: &str) -> Event {
        Event {
            request,
            body: EventBody::ObjectDeleted {
                key: ObjectKey::new(Kind::Service, "default", name),
                generation: 1,
            },
        }
    }

    #[test]
    fn chain_links_and_hash_is_deterministic() {
        let a = build_entry(
            EntryHash::ZERO,
            1,
            10,
            vec![signed("a")],
            vec![deleted(0, "a")],
        )
        .unwrap();
        let a2 = build_entry(
            EntryHash::ZERO,
            1,
            10,
            vec![signed("a")],
            vec![deleted(0, "a")],
        )
        .unwrap();
        assert_eq!(a.hash, a2.hash);
        assert_ne!(a.hash, EntryHash::ZERO);
        let b = build_entry(
            a.hash,
            2,
            11,
            vec![signed("b"), signed("c")],
            vec![deleted(0, "b"), deleted(1, "c")],
        )
        .unwrap();
        assert_eq!(b.prev_hash, a.hash);
        assert_eq!(b.compute_hash(), b.hash);
        // Every field is covered by the hash.
        let variants = [
            build_entry(
                EntryHash::ZERO,
                2,
                10,
                vec![signed("a")],
                vec![deleted(0, "a")],
            ),
            build_entry(
                EntryHash([1; 32]),
                1,
                10,
                vec![signed("a")],
                vec![deleted(0, "a")],
            ),
            build_entry(
                EntryHash::ZERO,
                1,
                11,
                vec![signed("a")],
                vec![deleted(0, "a")],
            ),
            build_entry(
                EntryHash::ZERO,
                1,
                10,
                vec![signed("x")],
                vec![deleted(0, "a")],
            ),
            build_entry(
                EntryHash::ZERO,
                1,
                10,
                vec![signed("a")],
                vec![deleted(0, "x")],
            ),
            build_entry(EntryHash::ZERO, 1, 10, vec![signed("a")], vec![]),
        ];
        for v in variants {
            assert_ne!(v.unwrap().hash, a.hash);
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let b = build_entry(
            EntryHash([9; 32]),
            7,
            11,
            vec![signed("b"), signed("c")],
            vec![deleted(0, "b"), deleted(1, "c")],
        )
        .unwrap();
        let enc = b.encode();
        assert!(enc.check_hash());
        assert_eq!(
            EntryHeader::from_bytes(&enc.header.to_bytes()).unwrap(),
            enc.header
        );
        assert_eq!(
            Entry::decode(&enc.header, &enc.requests, &enc.events).unwrap(),
            b
        );
        let mut bad = enc.clone();
        bad.events[1][10] ^= 1;
        assert!(!bad.check_hash());
        assert!(Entry::decode(&enc.header, &enc.requests, &enc.events[..1]).is_err());
    }

    #[test]
    fn bad_event_references_are_refused() {
        assert!(matches!(
            build_entry(
                EntryHash::ZERO,
                1,
                0,
                vec![signed("a")],
                vec![deleted(1, "a")]
            ),
            Err(EntryError::BadRequestIndex { .. })
        ));
        assert!(matches!(
            build_entry(
                EntryHash::ZERO,
                1,
                0,
                vec![signed("a"), signed("b")],
                vec![deleted(1, "a"), deleted(0, "b")]
            ),
            Err(EntryError::OutOfOrder { event: 1 })
        ));
        assert!(matches!(
            build_entry(EntryHash::ZERO, 0, 0, vec![], vec![]),
            Err(EntryError::ZeroHeight)
        ));
    }
}
