//! The redb tables of the store and the encodings of their derived values.
//!
//! Authoritative (covered by the entry hashes): `headers`, `requests`, `events`.
//! Beside the chain: `certificates`. Derived, rebuilt from the log if ever needed: the indexes,
//! `request_heads`, `request_ids` (retry answers) and `snapshots`.

use redb::TableDefinition;

use crate::codec::{CodecError, Reader, Writer};
use crate::event::{get_key, put_key};
use crate::plan::{Action, ObjectOutcome, RequestError};

/// `"head"` -> `height u64 | hash [32] | timestamp u64`; `"format"` -> `u8`.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// height -> entry header record.
pub(crate) const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
/// (height, request index) -> signed request record.
pub(crate) const REQUESTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("requests");
/// (height, event index) -> event record.
pub(crate) const EVENTS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("events");
/// height -> commit certificate bytes (opaque to the store).
pub(crate) const CERTIFICATES: TableDefinition<u64, &[u8]> = TableDefinition::new("certificates");
/// (kind, namespace, name, height, event index).
pub(crate) const BY_OBJECT: TableDefinition<(&str, &str, &str, u64, u32), ()> =
    TableDefinition::new("by_object");
/// (actor, height, request index) -> (first event index, event count).
pub(crate) const BY_ACTOR: TableDefinition<(&str, u64, u32), (u32, u32)> =
    TableDefinition::new("by_actor");
/// (source type, height, request index) -> (first event index, event count).
pub(crate) const BY_SOURCE: TableDefinition<(&str, u64, u32), (u32, u32)> =
    TableDefinition::new("by_source");
/// (git commit, height, request index) -> (first event index, event count).
pub(crate) const BY_COMMIT: TableDefinition<(&str, u64, u32), (u32, u32)> =
    TableDefinition::new("by_commit");
/// (timestamp ms, height).
pub(crate) const BY_TIME: TableDefinition<(u64, u64), ()> = TableDefinition::new("by_time");
/// (height, request index) -> [`crate::request::RequestHead`] bytes: who, which request id and
/// source, so audit output need not read the whole signed request (`audit verify` checks each
/// row against its signed record).
pub(crate) const REQUEST_HEADS: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("request_heads");
/// (actor, request id) -> [`RequestRecord`].
pub(crate) const REQUEST_IDS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("request_ids");
/// height -> snapshot of the state after that height.
pub(crate) const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");

/// Version of the table layout, stored under `meta["format"]`.
pub(crate) const FORMAT: u8 = 1;

/// Where a request was committed and what it did: the answer to a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub height: u64,
    pub index: u32,
    /// The request's digest (blake3 of the JSON text of its stored record).
    pub digest: [u8; 32],
    pub outcomes: Vec<ObjectOutcome>,
    /// Why the request was refused when its decided entry was executed (replicated ledger: an
    /// entry holds every decided request, also those that failed; they have no events).
    pub error: Option<RequestError>,
}

fn action_tag(a: Action) -> u8 {
    match a {
        Action::Created => 1,
        Action::Configured => 2,
        Action::Unchanged => 3,
        Action::Deleted => 4,
    }
}

impl RequestRecord {
    /// Format v1: `u8 1 | height | index | digest | outcomes`; v2 (a refused request) appends
    /// the error as JSON.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.outcomes.len() * 48);
        w.u8(if self.error.is_some() { 2 } else { 1 })
            .u64(self.height)
            .u32(self.index)
            .array(&self.digest)
            .u32(self.outcomes.len() as u32);
        for o in &self.outcomes {
            put_key(&mut w, &o.key);
            w.u8(action_tag(o.action))
                .u64(o.generation)
                .u64(o.resource_version);
        }
        if let Some(e) = &self.error {
            // Serializing our own error type cannot fail.
            w.str(&serde_json::to_string(e).unwrap_or_default());
        }
        w.finish()
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<RequestRecord, CodecError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != 1 && version != 2 {
            return Err(CodecError::Version {
                what: "request id record",
                found: version,
            });
        }
        let (height, index, digest) = (r.u64()?, r.u32()?, r.array()?);
        let mut outcomes = Vec::new();
        for _ in 0..r.u32()? {
            let key = get_key(&mut r)?;
            let action = match r.u8()? {
                1 => Action::Created,
                2 => Action::Configured,
                3 => Action::Unchanged,
                4 => Action::Deleted,
                tag => {
                    return Err(CodecError::Tag {
                        what: "action",
                        tag,
                    });
                }
            };
            outcomes.push(ObjectOutcome {
                key,
                action,
                generation: r.u64()?,
                resource_version: r.u64()?,
            });
        }
        let error = if version == 2 {
            let json = r.str("request error")?;
            Some(serde_json::from_str(json).map_err(|e| CodecError::Json {
                what: "request error",
                message: e.to_string(),
            })?)
        } else {
            None
        };
        r.finish()?;
        Ok(RequestRecord {
            height,
            index,
            digest,
            outcomes,
            error,
        })
    }
}

/// The head of the log as stored in `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub height: u64,
    pub hash: crate::entry::EntryHash,
    pub timestamp_ms: u64,
}

impl Head {
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48);
        w.u64(self.height)
            .array(&self.hash.0)
            .u64(self.timestamp_ms);
        w.finish()
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Head, CodecError> {
        let mut r = Reader::new(bytes);
        let head = Head {
            height: r.u64()?,
            hash: crate::entry::EntryHash(r.array()?),
            timestamp_ms: r.u64()?,
        };
        r.finish()?;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::wkey;

    #[test]
    fn request_record_round_trip() {
        let rec = RequestRecord {
            height: 5,
            index: 2,
            digest: [9; 32],
            outcomes: vec![
                ObjectOutcome {
                    key: wkey("a"),
                    action: Action::Unchanged,
                    generation: 3,
                    resource_version: 4,
                },
                ObjectOutcome {
                    key: wkey("b"),
                    action: Action::Deleted,
                    generation: 1,
                    resource_version: 5,
                },
            ],
            error: None,
        };
        assert_eq!(RequestRecord::from_bytes(&rec.to_bytes()).unwrap(), rec);
        let refused = RequestRecord {
            outcomes: vec![],
            error: Some(RequestError::NotFound { key: wkey("c") }),
            ..rec.clone()
        };
        assert_eq!(
            RequestRecord::from_bytes(&refused.to_bytes()).unwrap(),
            refused
        );
        let head = Head {
            height: 3,
            hash: crate::entry::EntryHash([1; 32]),
            timestamp_ms: 8,
        };
        assert_eq!(Head::from_bytes(&head.to_bytes()).unwrap(), head);
    }
}
