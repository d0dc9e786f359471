//! Client requests and their ed25519 signatures: what a user, a GitOps source or a controller asks
//! the ledger to change, the canonical bytes that get signed, and the checks a replica runs before
//! it accepts a request (DESIGN.md BFT rule 2).
//!
//! Signed bytes: `b"nexus/request/v1\n"` followed by the request's digest, the blake3 hash of its
//! compact JSON with the keys sorted at every level ([`Request::canonical_json`]). Signing the
//! digest keeps ed25519's internal SHA-512 pass short for large requests (a GitOps sync of
//! thousands of objects); blake3 is fast and collision resistant.
//!
//! The digest is taken over the JSON text a stored record carries ([`RawSignedRequest`]): a
//! replica accepting a client's request re-encodes it canonically and checks the signature over
//! that; a request item gossiped between replicas is checked over its own text and stored byte
//! for byte (honest replicas only gossip canonical items; any other text verifies only if the
//! key holder signed exactly that text).

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use nexus_schemas::ObjectKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::codec::{CodecError, Reader, Writer, sorted_json};

/// Domain separator in front of the request digest in the signed bytes.
pub const REQUEST_DOMAIN: &[u8] = b"nexus/request/v1\n";

/// Where a change came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Source {
    /// `nexus apply` / `nexus delete` by a person.
    Cli,
    /// A synced git commit (DESIGN.md BFT rule 3: replicas re-check repo, commit and tree).
    Gitops {
        /// The GitSource object that synced it, as `namespace/name`.
        git_source: String,
        repo: String,
        commit: String,
        tree: String,
        author: String,
        committer: String,
        message: String,
        /// blake3 (hex) of every object git holds at `commit` under the source's path, as sorted
        /// `kind/namespace/name <content hash>` lines: the proposer's claim, recomputed by every
        /// replica from its own fetch before it accepts the request. Empty only in entries
        /// written before claims existed.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        claim: String,
        /// Set when `commit` does not descend from the source's previously synced commit (a
        /// force-push rewrote the branch, or the source now follows other history): that
        /// previous commit. Replicas check it against their own fetch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        forced_over: Option<String>,
    },
    /// A control-plane loop.
    Controller { name: String },
}

impl Source {
    /// `cli`, `gitops` or `controller`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Source::Cli => "cli",
            Source::Gitops { .. } => "gitops",
            Source::Controller { .. } => "controller",
        }
    }

    /// Who owns objects this source creates: `apply`, `gitops:<ns/name>` or `controller:<name>`.
    pub fn owner(&self) -> String {
        match self {
            Source::Cli => "apply".into(),
            Source::Gitops { git_source, .. } => format!("gitops:{git_source}"),
            Source::Controller { name } => format!("controller:{name}"),
        }
    }

    /// The git commit, for git-sourced changes.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Source::Gitops { commit, .. } => Some(commit),
            _ => None,
        }
    }

    /// The GitSource (`namespace/name`), for git-sourced changes.
    pub fn git_source(&self) -> Option<&str> {
        match self {
            Source::Gitops { git_source, .. } => Some(git_source),
            _ => None,
        }
    }
}

/// One operation of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create or update an object (a `nexus/v1` manifest as JSON). `if_version`: the object's
    /// current resource version must equal it; `Some(0)` means "must not exist yet".
    Apply {
        object: Value,
        if_version: Option<u64>,
    },
    /// Delete an object; `if_version` as for `Apply`.
    Delete {
        key: ObjectKey,
        if_version: Option<u64>,
    },
    /// A node agent registered for the first time, again after being lost, or with a new
    /// address, key or capacity (replicas only; see [`crate::nodes`]).
    NodeJoin { node: crate::event::NodeInfo },
    /// A node's labels changed (replicas only).
    NodeLabels {
        name: String,
        labels: std::collections::BTreeMap<String, String>,
    },
    /// The submitting replica attests that node `name` stopped heartbeating (`lost: true`), or
    /// withdraws that (`lost: false`). The node is lost once f+1 replicas attested it.
    NodeLostAttest { name: String, lost: bool },
    /// Add a replica to the validator set (users only). It takes effect
    /// [`crate::replicated::MEMBERSHIP_DELAY`] heights after the entry holding it; one change
    /// may be pending at a time (docs/membership.md).
    AddValidator { validator: crate::event::Validator },
    /// Remove a replica, by name, from the validator set (users only; same rules).
    RemoveValidator { name: String },
}

/// A change request, as a client builds and signs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Client-chosen id (e.g. 16 random bytes as hex); a retry with the same id by the same actor
    /// is applied once and answered with the original result.
    pub id: String,
    /// Identity, e.g. `user:alice`; must match the certificate the request arrived with.
    pub actor: String,
    pub source: Source,
    pub ops: Vec<Op>,
    /// The client's clock when it built the request (informational, not trusted).
    pub created_at_ms: u64,
}

impl Request {
    /// Compact JSON with sorted keys.
    pub fn canonical_json(&self) -> String {
        // Serializing our own types cannot fail: every map key is a string.
        sorted_json(&serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// blake3 of the canonical JSON: identifies the request's content (a retry has the same
    /// digest; a different request reusing an id does not).
    pub fn digest(&self) -> [u8; 32] {
        digest_of_json(&self.canonical_json())
    }

    /// The bytes a signature covers: domain separator + digest.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes_of(&self.digest())
    }
}

/// blake3 of a request's canonical JSON text.
pub fn digest_of_json(json: &str) -> [u8; 32] {
    *blake3::hash(json.as_bytes()).as_bytes()
}

fn signing_bytes_of(digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_DOMAIN.len() + 32);
    out.extend_from_slice(REQUEST_DOMAIN);
    out.extend_from_slice(digest);
    out
}

/// The parts of a request that audit output shows, read without materializing the operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    pub id: String,
    pub actor: String,
    pub source: Source,
    pub created_at_ms: u64,
}

impl RequestHead {
    /// Reads the head from a request's JSON (operations are skipped, not parsed).
    pub fn from_json(json: &str) -> Result<RequestHead, CodecError> {
        serde_json::from_str(json).map_err(|e| CodecError::Json {
            what: "request",
            message: e.to_string(),
        })
    }

    /// Reads the head of a stored request record without touching its operations.
    ///
    /// Canonical request JSON has its keys in the order `actor, created_at_ms, id, ops, source`,
    /// and quotes inside strings are escaped, so the first `,"ops":` is the top-level key and the
    /// last `,"source":` too. Splicing out what lies between leaves a small JSON object with the
    /// head fields. Anything unexpected falls back to parsing the whole text.
    pub fn from_record(bytes: &[u8]) -> Result<RequestHead, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("request record", RECORD_V1)?;
        let json = r.bytes()?;
        const OPS: &[u8] = b",\"ops\":";
        const SOURCE: &[u8] = b",\"source\":";
        let ops = json.windows(OPS.len()).position(|w| w == OPS);
        let source = json.windows(SOURCE.len()).rposition(|w| w == SOURCE);
        if let (Some(o), Some(s)) = (ops, source)
            && o < s
        {
            let mut small = Vec::with_capacity(o + json.len() - s);
            small.extend_from_slice(&json[..o]);
            small.extend_from_slice(&json[s..]);
            if let Ok(head) = serde_json::from_slice(&small) {
                return Ok(head);
            }
        }
        let text = std::str::from_utf8(json).map_err(|_| CodecError::Utf8 {
            what: "request json",
        })?;
        RequestHead::from_json(text)
    }
}

/// Version of [`RequestHead::to_bytes`].
const HEAD_V1: u8 = 1;

impl RequestHead {
    /// The small record the audit index keeps beside each request (outside the hash chain;
    /// `audit verify` checks it against the signed record): `u8 1 | created u64 | id | actor |
    /// source JSON`.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing our own enum to JSON cannot fail.
        let source = serde_json::to_string(&self.source).unwrap_or_default();
        let mut w = Writer::with_capacity(32 + self.id.len() + self.actor.len() + source.len());
        w.u8(HEAD_V1)
            .u64(self.created_at_ms)
            .str(&self.id)
            .str(&self.actor)
            .str(&source);
        w.finish()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<RequestHead, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("request head", HEAD_V1)?;
        let created_at_ms = r.u64()?;
        let id = r.string("request id")?;
        let actor = r.string("request actor")?;
        let source =
            serde_json::from_str(r.str("request source")?).map_err(|e| CodecError::Json {
                what: "request source",
                message: e.to_string(),
            })?;
        r.finish()?;
        Ok(RequestHead {
            id,
            actor,
            source,
            created_at_ms,
        })
    }
}

impl From<&Request> for RequestHead {
    fn from(r: &Request) -> Self {
        RequestHead {
            id: r.id.clone(),
            actor: r.actor.clone(),
            source: r.source.clone(),
            created_at_ms: r.created_at_ms,
        }
    }
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("request {id}: the public key is not a valid ed25519 key")]
    BadKey { id: String },
    #[error("request {id}: the signature does not match the request and key")]
    BadSignature { id: String },
    #[error(
        "request {id} claims actor {claimed:?} but the connection is authenticated as {authenticated:?}"
    )]
    ActorMismatch {
        id: String,
        claimed: String,
        authenticated: String,
    },
    #[error("request {id}: signed with a key that is not the certificate key of {actor:?}")]
    KeyMismatch { id: String, actor: String },
}

/// A request with the signature of its actor.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedRequest {
    pub request: Request,
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

/// Format version of the stored request record.
const RECORD_V1: u8 = 1;

/// The stored request record: version, canonical request JSON, public key, signature.
fn encode_record(json: &str, public_key: &[u8; 32], signature: &[u8; 64]) -> Vec<u8> {
    let mut w = Writer::with_capacity(json.len() + 110);
    w.u8(RECORD_V1).str(json).array(public_key).array(signature);
    w.finish()
}

impl SignedRequest {
    /// Signs `request` with `key`.
    pub fn sign(request: Request, key: &SigningKey) -> SignedRequest {
        let signature = key.sign(&request.signing_bytes()).to_bytes();
        SignedRequest {
            request,
            public_key: key.verifying_key().to_bytes(),
            signature,
        }
    }

    /// Signs `request` with `key` and returns its stored (and wire) form too, from one canonical
    /// serialization (what [`SignedRequest::sign`] then [`SignedRequest::to_bytes`] give).
    pub fn sign_to_bytes(request: Request, key: &SigningKey) -> (SignedRequest, Vec<u8>) {
        let json = request.canonical_json();
        let signature = key
            .sign(&signing_bytes_of(&digest_of_json(&json)))
            .to_bytes();
        let public_key = key.verifying_key().to_bytes();
        let bytes = encode_record(&json, &public_key, &signature);
        let signed = SignedRequest {
            request,
            public_key,
            signature,
        };
        (signed, bytes)
    }

    /// Checks the signature against the embedded public key.
    pub fn verify(&self) -> Result<(), SignatureError> {
        verify_signature(
            &self.request.id,
            &self.public_key,
            &self.signature,
            &self.request.signing_bytes(),
        )
    }

    /// What a replica checks before accepting: the request names the authenticated actor, is
    /// signed with that actor's certificate key, and the signature is valid.
    pub fn verify_bound(
        &self,
        actor: &str,
        certificate_key: &[u8; 32],
    ) -> Result<(), SignatureError> {
        self.check_binding(actor, certificate_key)?;
        self.verify()
    }

    /// The binding checks of [`SignedRequest::verify_bound`] without the signature itself.
    pub fn check_binding(
        &self,
        actor: &str,
        certificate_key: &[u8; 32],
    ) -> Result<(), SignatureError> {
        let id = &self.request.id;
        if self.request.actor != actor {
            return Err(SignatureError::ActorMismatch {
                id: id.clone(),
                claimed: self.request.actor.clone(),
                authenticated: actor.into(),
            });
        }
        if &self.public_key != certificate_key {
            return Err(SignatureError::KeyMismatch {
                id: id.clone(),
                actor: actor.into(),
            });
        }
        Ok(())
    }

    /// [`SignedRequest::verify`] for a caller that has the request's digest already.
    pub fn verify_digest(&self, digest: &[u8; 32]) -> Result<(), SignatureError> {
        verify_signature(
            &self.request.id,
            &self.public_key,
            &self.signature,
            &signing_bytes_of(digest),
        )
    }

    /// The stored (and wire) form: version, canonical JSON, public key, signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_with_digest().0
    }

    /// The stored record ([`SignedRequest::to_bytes`]) and the request's digest
    /// ([`Request::digest`]), from one canonical serialization.
    pub fn encode_with_digest(&self) -> (Vec<u8>, [u8; 32]) {
        let json = self.request.canonical_json();
        let digest = digest_of_json(&json);
        (
            encode_record(&json, &self.public_key, &self.signature),
            digest,
        )
    }

    /// Decodes [`SignedRequest::to_bytes`]. Does not verify the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRequest, CodecError> {
        let raw = RawSignedRequest::decode(bytes)?;
        let request = serde_json::from_str(raw.json).map_err(|e| CodecError::Json {
            what: "request",
            message: e.to_string(),
        })?;
        Ok(SignedRequest {
            request,
            public_key: raw.public_key,
            signature: raw.signature,
        })
    }
}

/// A stored request record, borrowed and not parsed: enough to verify its signature offline.
#[derive(Debug, Clone, Copy)]
pub struct RawSignedRequest<'a> {
    pub json: &'a str,
    pub public_key: [u8; 32],
    pub signature: [u8; 64],
}

impl<'a> RawSignedRequest<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        r.version("request record", RECORD_V1)?;
        let json = r.str("request json")?;
        let public_key = r.array::<32>()?;
        let signature = r.array::<64>()?;
        r.finish()?;
        Ok(RawSignedRequest {
            json,
            public_key,
            signature,
        })
    }

    /// Verifies the signature over exactly the stored JSON.
    pub fn verify(&self) -> Result<(), SignatureError> {
        verify_signature(
            "(stored)",
            &self.public_key,
            &self.signature,
            &self.signing_bytes(),
        )
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        signing_bytes_of(&digest_of_json(self.json))
    }

    /// The request's id, actor, source and client time.
    pub fn head(&self) -> Result<RequestHead, CodecError> {
        RequestHead::from_json(self.json)
    }
}

/// Most decompressed public keys remembered.
const KEY_CACHE: usize = 4096;

/// The key decoded from its 32 bytes: remembered, since a handful of clients and replicas sign
/// almost every request and decompressing a point costs about a tenth of a verification. The
/// same bytes always decode to the same key, so the cache changes no verdict.
pub(crate) fn verifying_key(public_key: &[u8; 32]) -> Option<VerifyingKey> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Mutex::default);
    if let Some(k) = keys.lock().ok().and_then(|m| m.get(public_key).copied()) {
        return Some(k);
    }
    let key = VerifyingKey::from_bytes(public_key).ok()?;
    if let Ok(mut m) = keys.lock() {
        if m.len() >= KEY_CACHE {
            m.clear();
        }
        m.insert(*public_key, key);
    }
    Some(key)
}

fn verify_signature(
    id: &str,
    public_key: &[u8; 32],
    signature: &[u8; 64],
    bytes: &[u8],
) -> Result<(), SignatureError> {
    let key = verifying_key(public_key).ok_or_else(|| SignatureError::BadKey { id: id.into() })?;
    let sig = Signature::from_bytes(signature);
    key.verify_strict(bytes, &sig)
        .map_err(|_| SignatureError::BadSignature { id: id.into() })
}

/// A key that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not an ed25519 key: {0}")]
pub struct KeyError(String);

/// The signing key inside a PKCS#8 DER private key (the key of a client certificate).
pub fn signing_key_from_pkcs8_der(der: &[u8]) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_der(der).map_err(|e| KeyError(e.to_string()))
}

/// The raw public key inside a DER SubjectPublicKeyInfo (the key of a TLS certificate).
pub fn public_key_from_spki_der(der: &[u8]) -> Result<[u8; 32], KeyError> {
    VerifyingKey::from_public_key_der(der)
        .map(|k| k.to_bytes())
        .map_err(|e| KeyError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_schemas::Kind;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn request() -> Request {
        Request {
            id: "r1".into(),
            actor: "user:alice".into(),
            source: Source::Cli,
            ops: vec![Op::Delete {
                key: ObjectKey::new(Kind::Service, "default", "web"),
                if_version: Some(3),
            }],
            created_at_ms: 5,
        }
    }

    #[test]
    fn canonical_json_is_sorted_and_stable() {
        let j = request().canonical_json();
        assert_eq!(
            j,
            r#"{"actor":"user:alice","created_at_ms":5,"id":"r1","ops":[{"if_version":3,"key":{"kind":"Service","name":"web","namespace":"default"},"op":"delete"}],"source":{"type":"cli"}}"#
        );
    }

    #[test]
    fn sign_verify_and_binding() {
        let k = key(1);
        let s = SignedRequest::sign(request(), &k);
        let (s2, bytes) = SignedRequest::sign_to_bytes(request(), &k);
        assert_eq!(
            (&s2, bytes),
            (&s, s.to_bytes()),
            "one serialization, the same result"
        );
        s.verify().unwrap();
        s.verify_bound("user:alice", &k.verifying_key().to_bytes())
            .unwrap();
        assert!(matches!(
            s.verify_bound("user:bob", &s.public_key),
            Err(SignatureError::ActorMismatch { .. })
        ));
        assert!(matches!(
            s.verify_bound("user:alice", &key(2).verifying_key().to_bytes()),
            Err(SignatureError::KeyMismatch { .. })
        ));
        let mut forged = s.clone();
        forged.request.ops.clear();
        assert!(matches!(
            forged.verify(),
            Err(SignatureError::BadSignature { .. })
        ));
        let mut wrong_key = s.clone();
        wrong_key.public_key = key(2).verifying_key().to_bytes();
        assert!(wrong_key.verify().is_err());
    }

    #[test]
    fn record_round_trip_and_raw_verify() {
        let s = SignedRequest::sign(request(), &key(1));
        let bytes = s.to_bytes();
        assert_eq!(SignedRequest::from_bytes(&bytes).unwrap(), s);
        let raw = RawSignedRequest::decode(&bytes).unwrap();
        raw.verify().unwrap();
        assert_eq!(raw.head().unwrap(), RequestHead::from(&s.request));
        assert_eq!(
            RequestHead::from_record(&bytes).unwrap(),
            RequestHead::from(&s.request)
        );
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 70] ^= 1; // inside the JSON text
        assert!(
            RawSignedRequest::decode(&bad)
                .map(|r| r.verify().is_err())
                .unwrap_or(true)
        );
        assert!(SignedRequest::from_bytes(&bytes[..10]).is_err());
    }

    #[test]
    fn head_bytes_round_trip_and_refuse_garbage() {
        let mut r = Request {
            id: "7".into(),
            actor: "user:alice".into(),
            source: Source::Cli,
            ops: vec![],
            created_at_ms: 42,
        };
        for source in [
            Source::Cli,
            Source::Controller {
                name: "nodes".into(),
            },
        ] {
            r.source = source;
            let head = RequestHead::from(&r);
            assert_eq!(RequestHead::from_bytes(&head.to_bytes()).unwrap(), head);
        }
        let bytes = RequestHead::from(&r).to_bytes();
        assert!(RequestHead::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(RequestHead::from_bytes(&[2]).is_err());
        assert!(RequestHead::from_bytes(&[]).is_err());
    }

    #[test]
    fn head_from_record_survives_lookalike_keys() {
        let object = serde_json::json!({"metadata": {"labels": {"ops": ",\"source\":{", "x": ",\"ops\":["}}});
        let source = Source::Gitops {
            git_source: "a/b".into(),
            repo: ",\"ops\":[".into(),
            commit: "c".into(),
            tree: "t".into(),
            author: "a".into(),
            committer: "c".into(),
            message: "m ,\"source\": {".into(),
            claim: String::new(),
            forced_over: None,
        };
        let r = Request {
            id: ",\"ops\":".into(),
            actor: "user:,\"source\":".into(),
            source,
            ops: vec![Op::Apply {
                object,
                if_version: None,
            }],
            created_at_ms: 3,
        };
        let bytes = SignedRequest::sign(r.clone(), &key(1)).to_bytes();
        assert_eq!(
            RequestHead::from_record(&bytes).unwrap(),
            RequestHead::from(&r)
        );
    }

    #[test]
    fn pkcs8_keys() {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
        let k = key(7);
        let der = k.to_pkcs8_der().unwrap();
        assert_eq!(
            signing_key_from_pkcs8_der(der.as_bytes())
                .unwrap()
                .to_bytes(),
            k.to_bytes()
        );
        let spki = k.verifying_key().to_public_key_der().unwrap();
        assert_eq!(
            public_key_from_spki_der(spki.as_bytes()).unwrap(),
            k.verifying_key().to_bytes()
        );
        assert!(signing_key_from_pkcs8_der(b"junk").is_err());
    }
}
