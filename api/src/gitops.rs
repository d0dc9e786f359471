//! GitOps messages: the sync status of git sources (soft state each replica keeps, never in the
//! log) and "sync this source now".

use serde::{Deserialize, Serialize};

/// `nexus.gitops.status`: every source, or one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitopsStatusRequest {
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// A commit as status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub commit: String,
    /// First line of the message.
    pub subject: String,
    /// `Name <email>`.
    pub author: String,
}

/// A validation problem in git, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDiagnostic {
    /// `error` or `warning`.
    pub severity: String,
    pub code: String,
    /// Path inside the repository.
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SyncDiagnostic {
    /// `deploy/api.yaml:3:7: error: ...`.
    pub fn one_line(&self) -> String {
        format!(
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )
    }
}

/// An owned object changed outside git.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftInfo {
    /// `Kind/namespace/name`.
    pub object: String,
    /// `modified` or `deleted`.
    pub kind: String,
    /// `revert` (selfHeal), `keep`, `overwrite` (git changed it too) or `prune`.
    pub action: String,
    /// Changed field paths.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// An object git defines that belongs to someone else: never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub object: String,
    /// Its owner (`apply`, `gitops:ns/other`, ...).
    pub owner: String,
    /// Where git defines it.
    pub file: String,
    pub line: usize,
    pub same_content: bool,
}

/// One git source as this replica sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub namespace: String,
    pub name: String,
    pub url: String,
    pub branch: String,
    pub path: String,
    pub prune: bool,
    pub self_heal: bool,
    /// `poll 10s`, plus `watch` for local repositories and `webhook` when a secret is set.
    pub triggers: Vec<String>,
    /// The branch head at the last fetch.
    pub head: Option<CommitInfo>,
    /// The last commit synced (applied, or found to need no change).
    pub synced: Option<CommitInfo>,
    /// Height of the last entry this source wrote.
    pub synced_height: Option<u64>,
    /// The last commit recorded in the log for this source (what the next sync is checked
    /// against).
    pub recorded_commit: Option<String>,
    /// `initial`, `unchanged`, `fast-forward`, `force-push` or `unknown` (last fetch).
    pub head_move: Option<String>,
    /// When the last sync attempt finished (ms since the Unix epoch) and what started it.
    pub last_attempt_ms: Option<u64>,
    pub last_trigger: Option<String>,
    /// What the last successful sync did (`2 to create, 1 to update, ...`).
    pub last_result: Option<String>,
    /// Set while the source does not sync: the reason in one line.
    pub error: Option<String>,
    /// Validation problems of the head commit (when it is rejected for them).
    #[serde(default)]
    pub diagnostics: Vec<SyncDiagnostic>,
    #[serde(default)]
    pub drift: Vec<DriftInfo>,
    #[serde(default)]
    pub conflicts: Vec<ConflictInfo>,
    /// Owned objects that left git but are kept (`prune: false`).
    #[serde(default)]
    pub not_pruned: Vec<String>,
    /// The commit's signer, when the source requires signed commits.
    pub signed_by: Option<String>,
    /// Objects git holds at the synced commit.
    pub objects: usize,
    /// Sync attempts since this replica started.
    pub attempts: u64,
}

impl SourceStatus {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The answer to `nexus.gitops.status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitopsStatusResponse {
    pub replica: String,
    /// The webhook endpoint's address, when enabled.
    pub webhook: Option<String>,
    pub sources: Vec<SourceStatus>,
}

/// `nexus.gitops.sync`: sync one source now and answer with its status afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitopsSyncRequest {
    pub namespace: String,
    pub name: String,
}

/// The answer to `nexus.gitops.sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitopsSyncResponse {
    pub status: SourceStatus,
}
