//! A request checked once on this replica. A request reaches every replica several times: from
//! its client or as gossip, in the proposal of the batch that holds it, and in the decided
//! batch. Decoding it, verifying its signature and validating every object it applies (JSON
//! Schema, semantic checks, canonical form and content hash) are pure functions of its bytes,
//! so a replica does them once and keeps the result ([`PreparedCache`]), and execution plans the
//! request with the objects parsed then ([`Prepared::plan`]).
//!
//! An item that travels between replicas is kept byte for byte: its signature covers the JSON
//! text it carries (the digest is the blake3 of that text, see [`crate::request`]), entries
//! store it as it is, and a batch's id is rebuilt from the stored items. A client's request is
//! re-encoded canonically when it arrives ([`Prepared::new`]), so honest replicas only ever
//! gossip canonical items.
//!
//! Nothing here trusts another replica: every replica prepares the requests it sees from their
//! bytes itself; the cache only saves it from doing so twice.

use std::collections::HashMap;
use std::sync::Arc;

use crate::plan::{ParsedObject, Plan, RequestError, parse_object, plan_request_with};
use crate::request::{Op, RawSignedRequest, SignatureError, SignedRequest, digest_of_json};
use crate::state::ObjectView;

/// A request with everything about it that depends on its bytes alone.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub signed: SignedRequest,
    /// The canonical stored record ([`SignedRequest::to_bytes`]).
    pub bytes: Vec<u8>,
    /// blake3 of `bytes`: what pools and caches know the item by.
    pub key: [u8; 32],
    /// The request's digest ([`crate::Request::digest`]).
    pub digest: [u8; 32],
    /// Whether the signature holds for the embedded public key.
    pub signature: Result<(), SignatureError>,
    /// Per operation: for an apply, its object validated and canonicalized (or why it is not a
    /// valid object); `None` for other operations.
    pub objects: Vec<Option<Result<ParsedObject, RequestError>>>,
}

impl Prepared {
    /// Prepares a request a client sent: encoded canonically, then decoded again from those
    /// bytes (what every other replica decodes: a float spelled otherwise by the client must not
    /// parse to a value the canonical text does not give), one signature check, every object
    /// validated.
    pub fn new(signed: SignedRequest) -> Prepared {
        let (bytes, digest) = signed.encode_with_digest();
        let signed = SignedRequest::from_bytes(&bytes).unwrap_or(signed);
        let key = *blake3::hash(&bytes).as_bytes();
        let signature = signed.verify_digest(&digest);
        let objects = parse_objects(&signed);
        Prepared {
            signed,
            bytes,
            key,
            digest,
            signature,
            objects,
        }
    }

    /// Prepares a request item as it travels between replicas, kept as it is: the signature is
    /// checked over the JSON text the item carries (no re-encoding). `None` when it does not
    /// decode.
    pub fn decode(item: &[u8]) -> Option<Prepared> {
        let raw = RawSignedRequest::decode(item).ok()?;
        let digest = digest_of_json(raw.json);
        let request = serde_json::from_str(raw.json).ok()?;
        let signed = SignedRequest {
            request,
            public_key: raw.public_key,
            signature: raw.signature,
        };
        let signature = signed.verify_digest(&digest);
        let objects = parse_objects(&signed);
        Some(Prepared {
            signed,
            bytes: item.to_vec(),
            key: *blake3::hash(item).as_bytes(),
            digest,
            signature,
            objects,
        })
    }

    /// The first object that fails the manifest validator, as [`crate::check_objects`] reports
    /// it.
    pub fn check_objects(&self) -> Result<(), RequestError> {
        for o in self.objects.iter().flatten() {
            if let Err(e) = o {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    /// [`Prepared::plan`] that moves the parsed objects into the plan instead of copying them
    /// (execution, which owns the request by then).
    pub fn plan_owned<V: ObjectView + ?Sized>(&mut self, view: &V) -> Result<Plan, RequestError> {
        let objects = &mut self.objects;
        plan_request_with(view, &self.signed.request, &mut |i, object| match objects
            .get_mut(i)
            .and_then(Option::take)
        {
            Some(parsed) => parsed,
            None => parse_object(i, object),
        })
    }

    /// [`crate::plan_request`] with the objects parsed when the request was prepared.
    pub fn plan<V: ObjectView + ?Sized>(&self, view: &V) -> Result<Plan, RequestError> {
        plan_request_with(
            view,
            &self.signed.request,
            &mut |i, object| match self.objects.get(i) {
                Some(Some(parsed)) => parsed.clone(),
                _ => parse_object(i, object),
            },
        )
    }
}

/// Every object a request applies, validated and canonicalized (per operation).
fn parse_objects(signed: &SignedRequest) -> Vec<Option<Result<ParsedObject, RequestError>>> {
    signed
        .request
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| match op {
            Op::Apply { object, .. } => Some(parse_object(i, object)),
            _ => None,
        })
        .collect()
}

/// Requests this replica prepared recently, by [`Prepared::key`]. Bounded: two generations of at
/// most `capacity` items each; when the newer one is full the older one is dropped (an item
/// needed again after that is simply prepared again).
#[derive(Debug)]
pub struct PreparedCache {
    new: HashMap<[u8; 32], Arc<Prepared>>,
    old: HashMap<[u8; 32], Arc<Prepared>>,
    capacity: usize,
}

impl PreparedCache {
    pub fn new(capacity: usize) -> Self {
        PreparedCache {
            new: HashMap::new(),
            old: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<Prepared>> {
        self.new.get(key).or_else(|| self.old.get(key)).cloned()
    }

    pub fn insert(&mut self, p: Arc<Prepared>) {
        if self.new.len() >= self.capacity {
            self.old = std::mem::take(&mut self.new);
        }
        self.new.insert(p.key, p);
    }

    /// The prepared form of `item`: from the cache, or prepared now and remembered (`None`
    /// when it does not decode or is not canonical).
    pub fn prepare(&mut self, item: &[u8]) -> Option<Arc<Prepared>> {
        let key = *blake3::hash(item).as_bytes();
        if let Some(p) = self.get(&key) {
            return Some(p);
        }
        let p = Arc::new(Prepared::decode(item)?);
        self.insert(p.clone());
        Some(p)
    }

    /// Forgets items (decided ones: they are not proposed again).
    pub fn remove(&mut self, key: &[u8; 32]) {
        self.new.remove(key);
        self.old.remove(key);
    }

    pub fn len(&self) -> usize {
        self.new.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan_request;
    use crate::state::State;
    use crate::testutil::*;
    use serde_json::json;

    /// Planning with the objects parsed at preparation gives exactly what planning from scratch
    /// gives, for valid and invalid objects alike.
    #[test]
    fn prepared_plans_equal_fresh_plans() {
        let mut bad = workload("b", 1);
        bad["spec"]["resources"] = json!({"cpu": "12X"});
        let state = State::new();
        for ops in [
            vec![apply(workload("a", 1))],
            vec![apply(workload("a", 1)), apply(bad.clone())],
            vec![
                crate::Op::Delete {
                    key: wkey("zz"),
                    if_version: None,
                },
                apply(bad),
            ],
        ] {
            let s = signed("r", "user:alice", ops);
            let p = Prepared::new(s.clone());
            assert_eq!(p.plan(&state), plan_request(&state, &s.request));
            assert_eq!(p.check_objects(), crate::check_objects(&s.request));
            assert!(p.signature.is_ok());
            assert_eq!(p.bytes, s.to_bytes());
            assert_eq!(p.digest, s.request.digest());
        }
    }

    #[test]
    fn decoded_items_are_kept_as_they_are_and_signatures_cover_their_text() {
        let s = signed("r", "user:alice", vec![apply(workload("a", 1))]);
        let bytes = s.to_bytes();
        let p = Prepared::decode(&bytes).unwrap();
        assert!(p.signature.is_ok());
        assert_eq!(
            (p.bytes.as_slice(), p.digest),
            (bytes.as_slice(), s.request.digest())
        );
        // The same request re-encoded in another form (pretty JSON): it decodes, kept byte for
        // byte, but the signature covered the canonical text, not this one.
        let raw = crate::request::RawSignedRequest::decode(&bytes).unwrap();
        let v: serde_json::Value = serde_json::from_str(raw.json).unwrap();
        let text = serde_json::to_string_pretty(&v).unwrap();
        let mut w = crate::codec::Writer::with_capacity(text.len() + 110);
        w.u8(1)
            .str(&text)
            .array(&raw.public_key)
            .array(&raw.signature);
        let pretty = w.finish();
        assert!(
            SignedRequest::from_bytes(&pretty).is_ok(),
            "the test builds a valid record"
        );
        let p = Prepared::decode(&pretty).unwrap();
        assert_eq!(p.bytes, pretty);
        assert!(p.signature.is_err(), "signed over other text");
        assert!(Prepared::decode(b"garbage").is_none());
        let mut forged = s.clone();
        forged.request.ops = vec![apply(workload("evil", 1))];
        assert!(Prepared::new(forged).signature.is_err());
    }

    #[test]
    fn the_cache_keeps_two_generations() {
        let mut c = PreparedCache::new(2);
        let items: Vec<Vec<u8>> = (0..5)
            .map(|i| signed(&format!("r{i}"), "user:a", vec![apply(workload("a", 1))]).to_bytes())
            .collect();
        for i in &items[..3] {
            assert!(c.prepare(i).is_some());
        }
        assert_eq!(c.len(), 3);
        let k0 = *blake3::hash(&items[0]).as_bytes();
        assert!(c.get(&k0).is_some(), "still in the older generation");
        c.prepare(&items[3]);
        c.prepare(&items[4]);
        assert!(c.get(&k0).is_none(), "dropped with its generation");
        c.remove(&blake3::hash(&items[4]).into());
        assert_eq!(c.len(), 2, "items 2 and 3 are left");
        assert!(c.prepare(b"garbage").is_none());
    }
}
