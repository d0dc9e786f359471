//! A fast generator of large, valid logs for benchmarks: signed requests with many operations,
//! many events per entry, several entries per transaction, written straight to a [`Store`]
//! (bypassing planning, but with the same generations, hashes and signatures planning would give).

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use nexus_schemas::{ContentHash, Kind, ObjectKey};
use serde_json::{Value, json};

use crate::codec::sorted_json;
use crate::entry::{EntryHash, build_entry};
use crate::event::{Event, EventBody};
use crate::plan::{Action, ObjectOutcome};
use crate::request::{Op, Request, SignedRequest, Source};
use crate::store::{Commit, Store, StoreError};

/// Shape of the generated log.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub events: u64,
    pub events_per_request: usize,
    pub requests_per_entry: usize,
    /// Distinct objects, updated round-robin.
    pub objects: usize,
    /// Distinct actors (each with its own key), round-robin over requests.
    pub actors: usize,
    /// Every n-th request comes from GitOps with its own commit (0 = never).
    pub gitops_every: usize,
    pub entries_per_transaction: usize,
    /// Time of the first entry; each next entry is one second later.
    pub start_ms: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            events: 1_000_000,
            events_per_request: 10,
            requests_per_entry: 100,
            objects: 10_000,
            actors: 100,
            gitops_every: 10,
            entries_per_transaction: 10,
            start_ms: 1_700_000_000_000,
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    pub entries: u64,
    pub requests: u64,
    pub events: u64,
}

/// The key of generated object `i`.
pub fn object_key(i: usize) -> ObjectKey {
    ObjectKey::new(Kind::Workload, format!("ns{}", i % 10), format!("w{i}"))
}

/// The actor name of generated actor `i`.
pub fn actor_name(i: usize) -> String {
    format!("user:u{i}")
}

/// The commit id of generated request `n` (GitOps requests only).
pub fn commit_id(n: u64) -> String {
    hex::encode(&blake3::hash(&n.to_le_bytes()).as_bytes()[..20])
}

/// A Workload manifest of about 450 bytes in canonical form (as the ledger stores it).
pub fn canonical_workload(key: &ObjectKey, replicas: u64) -> Value {
    let manifest = json!({
        "apiVersion": "nexus/v1", "kind": "Workload",
        "metadata": {"name": key.name, "namespace": key.namespace, "labels": {"app": key.name, "tier": "backend"}},
        "spec": {"replicas": replicas, "command": ["/usr/bin/server", "--port", "8080"], "env": {"RUST_LOG": "info"}, "ports": [{"port": 8080}]},
    });
    match serde_json::from_value::<nexus_schemas::Object>(manifest.clone()) {
        Ok(obj) => nexus_schemas::canonical_value(&obj),
        Err(_) => manifest,
    }
}

/// Appends `cfg.events` events to `store` (which must be empty) and returns what it wrote.
pub fn generate(store: &Store, cfg: &GenConfig) -> Result<GenStats, StoreError> {
    let keys: Vec<SigningKey> = (0..cfg.actors.max(1))
        .map(|i| SigningKey::from_bytes(blake3::hash(&(i as u64).to_le_bytes()).as_bytes()))
        .collect();
    let mut generations = vec![0u64; cfg.objects.max(1)];
    // Canonical once per object; versions differ only in `spec.replicas`.
    let mut bases: Vec<Option<Value>> = vec![None; generations.len()];
    let mut stats = GenStats::default();
    let mut prev = EntryHash::ZERO;
    let mut pending: Vec<Commit> = Vec::new();
    let mut next_object = 0usize;
    let mut request_no = 0u64;
    while stats.events < cfg.events {
        let height = stats.entries + 1;
        let mut requests = Vec::with_capacity(cfg.requests_per_entry);
        let mut events = Vec::with_capacity(cfg.requests_per_entry * cfg.events_per_request);
        let mut outcomes = Vec::with_capacity(cfg.requests_per_entry);
        for r in 0..cfg.requests_per_entry {
            if stats.events >= cfg.events {
                break;
            }
            let n_ops = (cfg.events_per_request as u64).min(cfg.events - stats.events) as usize;
            let mut ops = Vec::with_capacity(n_ops);
            let mut outs = Vec::with_capacity(n_ops);
            for _ in 0..n_ops {
                let i = next_object;
                next_object = (next_object + 1) % generations.len();
                generations[i] += 1;
                let key = object_key(i);
                let mut object = bases[i]
                    .get_or_insert_with(|| canonical_workload(&key, 1))
                    .clone();
                object["spec"]["replicas"] = json!(generations[i]);
                let content_hash =
                    ContentHash(*blake3::hash(sorted_json(&object).as_bytes()).as_bytes());
                let action = if generations[i] == 1 {
                    Action::Created
                } else {
                    Action::Configured
                };
                outs.push(ObjectOutcome {
                    key: key.clone(),
                    action,
                    generation: generations[i],
                    resource_version: height,
                });
                events.push(Event {
                    request: r as u32,
                    body: EventBody::ObjectApplied {
                        key,
                        object: object.clone(),
                        content_hash,
                        generation: generations[i],
                    },
                });
                ops.push(Op::Apply {
                    object,
                    if_version: None,
                });
            }
            let actor = (request_no as usize) % keys.len();
            let source =
                if cfg.gitops_every > 0 && request_no.is_multiple_of(cfg.gitops_every as u64) {
                    Source::Gitops {
                        git_source: "default/apps".into(),
                        repo: "https://git.example/apps.git".into(),
                        commit: commit_id(request_no),
                        tree: commit_id(request_no + 1),
                        author: "Ann".into(),
                        committer: "Ann".into(),
                        message: "deploy".into(),
                        claim: String::new(),
                        forced_over: None,
                    }
                } else {
                    Source::Cli
                };
            let req = Request {
                id: format!("{request_no:016x}"),
                actor: actor_name(actor),
                source,
                ops,
                created_at_ms: cfg.start_ms,
            };
            requests.push(SignedRequest::sign(req, &keys[actor]));
            outcomes.push(outs);
            stats.events += n_ops as u64;
            stats.requests += 1;
            request_no += 1;
        }
        let entry = build_entry(
            prev,
            height,
            cfg.start_ms + 1000 * (height - 1),
            requests,
            events,
        )
        .map_err(|e| StoreError::NotNext {
            height,
            reason: e.to_string(),
        })?;
        prev = entry.hash;
        pending.push(Commit {
            entry: Arc::new(entry),
            certificate: None,
            outcomes,
            errors: Vec::new(),
            encoded: None,
        });
        stats.entries += 1;
        if pending.len() >= cfg.entries_per_transaction.max(1) {
            store.append(&pending)?;
            pending.clear();
        }
    }
    store.append(&pending)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use crate::testutil::tempdir;

    #[test]
    fn generated_logs_verify_and_fold() {
        let dir = tempdir();
        let store = Store::open(dir.path().join("g.redb"), StoreConfig::default()).unwrap();
        let cfg = GenConfig {
            events: 95,
            events_per_request: 4,
            requests_per_entry: 3,
            objects: 20,
            actors: 3,
            gitops_every: 2,
            entries_per_transaction: 2,
            ..GenConfig::default()
        };
        let stats = generate(&store, &cfg).unwrap();
        assert_eq!((stats.events, stats.requests, stats.entries), (95, 24, 8));
        let r = crate::audit::verify(&store).unwrap();
        assert!(r.is_ok(), "{:?}", r.problem);
        let (state, _) = store.load_state().unwrap();
        assert_eq!(state.objects.len(), 20);
        // The stored objects are what planning would have produced.
        let obj: nexus_schemas::Object =
            serde_json::from_value(state.get(&object_key(3)).unwrap().object.clone()).unwrap();
        assert_eq!(
            nexus_schemas::canonical_value(&obj),
            state.get(&object_key(3)).unwrap().object
        );
        assert_eq!(
            nexus_schemas::content_hash(&obj),
            state.get(&object_key(3)).unwrap().content_hash
        );
    }
}
