//! Events: the facts an entry records (an object applied or deleted, a node joined or was lost, the
//! validator set changed), and their stored binary record.
//!
//! An event names the signed request that caused it by its index in the entry's request list, so
//! the actor, source and request id come from the signed request (stored once per request) and an
//! offline `audit verify` can re-check who asked for it.
//!
//! Record format v1: `u8 version=1 | u32 request index | u8 tag | fields`, where object events
//! start with the key (`kind | namespace | name`) so audit scans can read it without parsing the
//! object. Strings and JSON text are `u32` length + UTF-8; objects are canonical JSON text.

use std::collections::BTreeMap;

use nexus_schemas::{ContentHash, Kind, ObjectKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codec::{CodecError, Reader, Writer, parse_json, sorted_json};

/// A node as it registers with the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// QUIC address of its agent, e.g. `10.0.0.5:7443`.
    pub address: String,
    /// ed25519 key of the node's certificate.
    pub public_key: [u8; 32],
    pub labels: BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
}

/// A consensus validator: a replica (its certificate is `replica:<name>` with this key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    pub name: String,
    pub public_key: [u8; 32],
    pub address: String,
    pub power: u64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// An object was created or its canonical content changed. `generation` starts at 1 on
    /// creation (also after a delete) and bumps on each content change.
    ObjectApplied {
        key: ObjectKey,
        object: Value,
        content_hash: ContentHash,
        generation: u64,
    },
    /// An object was deleted; `generation` is the last one it had.
    ObjectDeleted {
        key: ObjectKey,
        generation: u64,
    },
    NodeJoined {
        node: NodeInfo,
    },
    NodeLabelsChanged {
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// A node was declared lost; takes effect only with f+1 attestations (BFT rule 5).
    NodeLost {
        name: String,
        attested_by: Vec<String>,
    },
    /// Replica `replica` attests that node `name` stopped heartbeating (`lost: true`) or
    /// withdraws its attestation (`lost: false`); see [`crate::nodes`].
    NodeLostAttestation {
        name: String,
        replica: String,
        lost: bool,
    },
    /// The validator set changes at `effective_height`.
    MembershipChanged {
        validators: Vec<Validator>,
        effective_height: u64,
    },
}

impl EventBody {
    /// The object this event is about, if any.
    pub fn object_key(&self) -> Option<&ObjectKey> {
        match self {
            EventBody::ObjectApplied { key, .. } | EventBody::ObjectDeleted { key, .. } => {
                Some(key)
            }
            _ => None,
        }
    }

    /// Short name: `object_applied`, `object_deleted`, `node_joined`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::ObjectApplied { .. } => "object_applied",
            EventBody::ObjectDeleted { .. } => "object_deleted",
            EventBody::NodeJoined { .. } => "node_joined",
            EventBody::NodeLabelsChanged { .. } => "node_labels_changed",
            EventBody::NodeLost { .. } => "node_lost",
            EventBody::MembershipChanged { .. } => "membership_changed",
            EventBody::NodeLostAttestation { .. } => "node_lost_attestation",
        }
    }
}

/// An event and the index of the signed request (in the same entry) that caused it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub request: u32,
    pub body: EventBody,
}

const EVENT_V1: u8 = 1;
const TAG_APPLIED: u8 = 1;
const TAG_DELETED: u8 = 2;
const TAG_NODE_JOINED: u8 = 3;
const TAG_NODE_LABELS: u8 = 4;
const TAG_NODE_LOST: u8 = 5;
const TAG_MEMBERSHIP: u8 = 6;
const TAG_NODE_ATTEST: u8 = 7;

pub(crate) fn put_key(w: &mut Writer, key: &ObjectKey) {
    w.str(key.kind.as_str()).str(&key.namespace).str(&key.name);
}

pub(crate) fn get_key(r: &mut Reader<'_>) -> Result<ObjectKey, CodecError> {
    let kind = kind_from_str(r.str("kind")?)?;
    Ok(ObjectKey::new(
        kind,
        r.string("namespace")?,
        r.string("name")?,
    ))
}

pub(crate) fn put_node(w: &mut Writer, node: &NodeInfo) {
    w.str(&node.name).str(&node.address).array(&node.public_key);
    put_labels(w, &node.labels);
    w.u64(node.cpu_millis).u64(node.memory_bytes).u32(node.gpus);
}

pub(crate) fn get_node(r: &mut Reader<'_>) -> Result<NodeInfo, CodecError> {
    let name = r.string("node name")?;
    let address = r.string("node address")?;
    let public_key = r.array::<32>()?;
    let labels = get_labels(r)?;
    Ok(NodeInfo {
        name,
        address,
        public_key,
        labels,
        cpu_millis: r.u64()?,
        memory_bytes: r.u64()?,
        gpus: r.u32()?,
    })
}

pub(crate) fn put_validators(w: &mut Writer, validators: &[Validator]) {
    w.u32(validators.len() as u32);
    for v in validators {
        w.str(&v.name)
            .array(&v.public_key)
            .str(&v.address)
            .u64(v.power);
    }
}

pub(crate) fn get_validators(r: &mut Reader<'_>) -> Result<Vec<Validator>, CodecError> {
    let n = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Validator {
            name: r.string("validator name")?,
            public_key: r.array::<32>()?,
            address: r.string("validator address")?,
            power: r.u64()?,
        });
    }
    Ok(out)
}

fn put_labels(w: &mut Writer, labels: &BTreeMap<String, String>) {
    w.u32(labels.len() as u32);
    for (k, v) in labels {
        w.str(k).str(v);
    }
}

fn get_labels(r: &mut Reader<'_>) -> Result<BTreeMap<String, String>, CodecError> {
    let n = r.u32()?;
    let mut out = BTreeMap::new();
    for _ in 0..n {
        out.insert(r.string("label")?, r.string("label")?);
    }
    Ok(out)
}

/// Parses a kind name as stored.
pub(crate) fn kind_from_str(s: &str) -> Result<Kind, CodecError> {
    Kind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| CodecError::Invalid(format!("unknown kind {s:?}")))
}

/// The borrowed start of an event record: enough to filter without parsing the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventHead<'a> {
    pub request: u32,
    pub tag: u8,
    /// (kind, namespace, name) for object events.
    pub key: Option<(&'a str, &'a str, &'a str)>,
}

impl<'a> EventHead<'a> {
    /// Reads the head of an event record.
    pub fn decode(bytes: &'a [u8]) -> Result<EventHead<'a>, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("event record", EVENT_V1)?;
        let request = r.u32()?;
        let tag = r.u8()?;
        let key = match tag {
            TAG_APPLIED | TAG_DELETED => {
                Some((r.str("kind")?, r.str("namespace")?, r.str("name")?))
            }
            TAG_NODE_JOINED..=TAG_NODE_ATTEST => None,
            tag => return Err(CodecError::Tag { what: "event", tag }),
        };
        Ok(EventHead { request, tag, key })
    }
}

impl Event {
    /// The stored record (format v1, see the module doc).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.u8(EVENT_V1).u32(self.request);
        match &self.body {
            EventBody::ObjectApplied {
                key,
                object,
                content_hash,
                generation,
            } => {
                w.u8(TAG_APPLIED);
                put_key(&mut w, key);
                w.u64(*generation)
                    .array(&content_hash.0)
                    .str(&sorted_json(object));
            }
            EventBody::ObjectDeleted { key, generation } => {
                w.u8(TAG_DELETED);
                put_key(&mut w, key);
                w.u64(*generation);
            }
            EventBody::NodeJoined { node } => {
                w.u8(TAG_NODE_JOINED);
                put_node(&mut w, node);
            }
            EventBody::NodeLabelsChanged { name, labels } => {
                w.u8(TAG_NODE_LABELS).str(name);
                put_labels(&mut w, labels);
            }
            EventBody::NodeLost { name, attested_by } => {
                w.u8(TAG_NODE_LOST).str(name).u32(attested_by.len() as u32);
                for a in attested_by {
                    w.str(a);
                }
            }
            EventBody::MembershipChanged {
                validators,
                effective_height,
            } => {
                w.u8(TAG_MEMBERSHIP).u64(*effective_height);
                put_validators(&mut w, validators);
            }
            EventBody::NodeLostAttestation {
                name,
                replica,
                lost,
            } => {
                w.u8(TAG_NODE_ATTEST).str(name).str(replica).bool(*lost);
            }
        }
        w.finish()
    }

    /// Decodes a stored record (parses the object JSON of `ObjectApplied`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Event, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("event record", EVENT_V1)?;
        let request = r.u32()?;
        let tag = r.u8()?;
        let body = match tag {
            TAG_APPLIED | TAG_DELETED => {
                let key = get_key(&mut r)?;
                let generation = r.u64()?;
                if tag == TAG_APPLIED {
                    let content_hash = ContentHash(r.array::<32>()?);
                    let object = parse_json("object", r.str("object")?)?;
                    EventBody::ObjectApplied {
                        key,
                        object,
                        content_hash,
                        generation,
                    }
                } else {
                    EventBody::ObjectDeleted { key, generation }
                }
            }
            TAG_NODE_JOINED => EventBody::NodeJoined {
                node: get_node(&mut r)?,
            },
            TAG_NODE_LABELS => EventBody::NodeLabelsChanged {
                name: r.string("node name")?,
                labels: get_labels(&mut r)?,
            },
            TAG_NODE_LOST => {
                let name = r.string("node name")?;
                let n = r.u32()?;
                let mut attested_by = Vec::new();
                for _ in 0..n {
                    attested_by.push(r.string("attester")?);
                }
                EventBody::NodeLost { name, attested_by }
            }
            TAG_MEMBERSHIP => {
                let effective_height = r.u64()?;
                EventBody::MembershipChanged {
                    validators: get_validators(&mut r)?,
                    effective_height,
                }
            }
            TAG_NODE_ATTEST => EventBody::NodeLostAttestation {
                name: r.string("node name")?,
                replica: r.string("replica")?,
                lost: r.bool()?,
            },
            tag => return Err(CodecError::Tag { what: "event", tag }),
        };
        r.finish()?;
        Ok(Event { request, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Event> {
        let key = ObjectKey::new(Kind::Workload, "default", "api");
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        vec![
            Event {
                request: 0,
                body: EventBody::ObjectApplied {
                    key: key.clone(),
                    object: serde_json::json!({"b": 1, "a": [true, null]}),
                    content_hash: ContentHash([7; 32]),
                    generation: 2,
                },
            },
            Event {
                request: 1,
                body: EventBody::ObjectDeleted { key, generation: 4 },
            },
            Event {
                request: 1,
                body: EventBody::NodeJoined {
                    node: NodeInfo {
                        name: "n1".into(),
                        address: "127.0.0.1:1".into(),
                        public_key: [3; 32],
                        labels: labels.clone(),
                        cpu_millis: 4000,
                        memory_bytes: 1 << 33,
                        gpus: 1,
                    },
                },
            },
            Event {
                request: 2,
                body: EventBody::NodeLabelsChanged {
                    name: "n1".into(),
                    labels,
                },
            },
            Event {
                request: 2,
                body: EventBody::NodeLost {
                    name: "n1".into(),
                    attested_by: vec!["r1".into(), "r2".into()],
                },
            },
            Event {
                request: 3,
                body: EventBody::MembershipChanged {
                    validators: vec![Validator {
                        name: "r1".into(),
                        public_key: [1; 32],
                        address: "a:1".into(),
                        power: 10,
                    }],
                    effective_height: 9,
                },
            },
            Event {
                request: 0,
                body: EventBody::NodeLostAttestation {
                    name: "n1".into(),
                    replica: "replica:r2".into(),
                    lost: true,
                },
            },
        ]
    }

    #[test]
    fn every_event_round_trips() {
        for e in samples() {
            let bytes = e.to_bytes();
            assert_eq!(Event::from_bytes(&bytes).unwrap(), e);
            let head = EventHead::decode(&bytes).unwrap();
            assert_eq!(head.request, e.request);
            assert_eq!(head.key.is_some(), e.body.object_key().is_some());
            for cut in 0..bytes.len() {
                assert!(Event::from_bytes(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn objects_are_stored_canonically() {
        let bytes = samples()[0].to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains(r#"{"a":[true,null],"b":1}"#), "{text}");
    }

    #[test]
    fn unknown_tag_and_version_are_errors() {
        let mut bytes = samples()[1].to_bytes();
        bytes[5] = 99;
        assert!(matches!(
            Event::from_bytes(&bytes),
            Err(CodecError::Tag { tag: 99, .. })
        ));
        bytes[0] = 2;
        assert!(matches!(
            Event::from_bytes(&bytes),
            Err(CodecError::Version { found: 2, .. })
        ));
    }
}
