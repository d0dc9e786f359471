//! Messages between `nexus` (CLI, GitOps) and a replica: submit, dry-run, get, watch, history,
//! audit, verify, status.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use nexus_schemas::diff::{ChangeSet, FieldChange};

/// A signed request (the ledger's binary encoding), for `nexus.submit` and `nexus.dry_run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    #[serde(with = "crate::hex_bytes")]
    pub signed: Vec<u8>,
}

/// What happened to one object (kubectl's created / configured / unchanged / deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `created`, `configured`, `unchanged` or `deleted`.
    pub action: String,
    pub generation: u64,
    pub resource_version: u64,
}

/// The answer to `nexus.submit`: the request is in a durable (and, when replicated, decided)
/// entry at `height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub height: u64,
    pub request_id: String,
    pub outcomes: Vec<Outcome>,
    /// True when the request id was already committed (this is the original answer).
    pub duplicate: bool,
}

/// The answer to `nexus.dry_run`: per-object outcomes and the change set against live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRunResponse {
    pub height: u64,
    pub outcomes: Vec<Outcome>,
    pub changes: ChangeSet,
}

/// Selects objects by kind, namespace and name (unset = all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Only objects whose labels include all of these.
    #[serde(default)]
    pub labels: Vec<(String, String)>,
}

/// `nexus.get`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRequest {
    pub selector: Selector,
    /// Read through the log (a linearizable read) instead of the local replica's state.
    #[serde(default)]
    pub consistent: bool,
}

/// A live object and its bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// The canonical object.
    pub object: Value,
    pub content_hash: String,
    pub generation: u64,
    pub resource_version: u64,
    pub created_height: u64,
    pub updated_height: u64,
    pub last_actor: String,
    /// `apply`, `gitops:<namespace>/<name>` or `controller:<name>`.
    pub owner: String,
    /// Kind-specific live status (replicas ready, endpoints, conditions), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl ObjectInfo {
    /// `kind`, `namespace`, `name` of the object.
    pub fn key(&self) -> (String, String, String) {
        let s = |p: &str| {
            self.object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
    }
}

/// The answer to `nexus.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The height the answer reflects.
    pub height: u64,
    pub objects: Vec<ObjectInfo>,
}

/// `nexus.watch`: the current objects, then every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub selector: Selector,
}

/// One watch item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub height: u64,
    /// `ADDED`, `MODIFIED`, `DELETED`, or `SYNCED` (the initial list is complete; no object).
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectInfo>,
}

/// `nexus.history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub limit: Option<usize>,
}

/// One version of an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub height: u64,
    pub timestamp_ms: u64,
    pub actor: String,
    /// The ledger's source: `{"type":"cli"}`, `{"type":"gitops","repo":..,"commit":..}`, ...
    pub source: Value,
    pub request_id: String,
    /// `created`, `configured` or `deleted`.
    pub action: String,
    pub generation: u64,
    pub object: Option<Value>,
    /// Changes from the previous version.
    pub changes: Vec<FieldChange>,
}

/// The answer to `nexus.history`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryResponse {
    pub versions: Vec<VersionInfo>,
}

/// `nexus.audit`: every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRequest {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub actor: Option<String>,
    /// `cli`, `gitops` or `controller`.
    pub source: Option<String>,
    /// A git commit id or prefix.
    pub commit: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// The most recent N matches (all when unset).
    pub limit: Option<usize>,
}

/// `nexus.verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    /// Verify entries `1..=up_to` only and report that entry as the head (to compare replicas
    /// at one height while they keep deciding).
    #[serde(default)]
    pub up_to: Option<u64>,
    /// Also check the query indexes (object, actor, source, commit, time) against the log.
    #[serde(default)]
    pub indexes: bool,
}

/// The answer to `nexus.verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResponse {
    pub replica: String,
    pub ok: bool,
    pub entries: u64,
    pub requests: u64,
    pub events: u64,
    pub head_height: u64,
    pub head_hash: String,
    /// The first problem, naming its height.
    pub first_bad_height: Option<u64>,
    pub problems: Vec<String>,
    pub elapsed_ms: u64,
    /// Entries whose commit certificate verified against their height's validator set.
    #[serde(default)]
    pub certified: u64,
    /// Entries written before the ledger was replicated (no certificate).
    #[serde(default)]
    pub uncertified: u64,
}

/// `nexus.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {}

/// One replica as seen by the answering replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub name: String,
    pub addr: String,
    pub height: u64,
    pub round: Option<u32>,
    /// `healthy`, `lagging`, `unreachable`.
    pub health: String,
    pub lag: u64,
}

/// The answer to `nexus.status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub cluster: String,
    pub replica: String,
    pub height: u64,
    pub head_hash: String,
    pub objects: usize,
    pub replicas: Vec<ReplicaStatus>,
    /// Nodes, capacity, allocations and conditions (filled by the agents issue).
    #[serde(default)]
    pub nodes: Vec<Value>,
    #[serde(default)]
    pub conditions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_request_bytes_travel_as_hex() {
        let r = SubmitRequest {
            signed: vec![0, 1, 0xab],
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"signed":"0001ab"}"#);
        assert_eq!(serde_json::from_str::<SubmitRequest>(&j).unwrap(), r);
        assert!(serde_json::from_str::<SubmitRequest>(r#"{"signed":"zz"}"#).is_err());
    }
}
