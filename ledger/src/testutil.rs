//! Helpers shared by the unit tests: objects, keys and signed requests.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use nexus_schemas::{Kind, ObjectKey};
use serde_json::{Value, json};

use crate::request::{Op, Request, SignedRequest, Source};

/// A valid Workload manifest as JSON.
pub fn workload(name: &str, replicas: u64) -> Value {
    json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": name}, "spec": {"command": ["/bin/app"], "replicas": replicas}})
}

pub fn wkey(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Workload, "default", name)
}

pub fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn apply(object: Value) -> Op {
    Op::Apply {
        object,
        if_version: None,
    }
}

pub fn request(id: &str, actor: &str, ops: Vec<Op>) -> Request {
    Request {
        id: id.into(),
        actor: actor.into(),
        source: Source::Cli,
        ops,
        created_at_ms: 0,
    }
}

/// A request signed with the key of seed 1.
pub fn signed(id: &str, actor: &str, ops: Vec<Op>) -> SignedRequest {
    SignedRequest::sign(request(id, actor, ops), &signing_key(1))
}

/// A unique, cleaned-up directory for a test store.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nexus-ledger-")
        .tempdir()
        .expect("temp dir")
}

/// Executes `requests` on `state`, appends the entry, and folds it into `state`.
pub fn commit_requests(
    store: &crate::store::Store,
    state: &mut crate::state::State,
    ts: u64,
    requests: Vec<SignedRequest>,
) -> crate::entry::Entry {
    let ex = crate::execute::execute(state, &requests);
    let commit = ex
        .into_commit(state.head_hash, state.height + 1, ts, None)
        .expect("build");
    store.append(std::slice::from_ref(&commit)).expect("append");
    state.apply_entry(&commit.entry).expect("fold");
    Arc::unwrap_or_clone(commit.entry)
}
