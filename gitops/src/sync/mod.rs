//! Sync planning, pure: the manifests of a commit + the live objects with their owners + the
//! source's policy -> a [`SyncPlan`]: what to apply and delete, conflicts with objects owned by
//! `apply` or another source (never touched), drift (objects this source owns that changed
//! outside git; reverted only with selfHeal), prune candidates, and the provenance the ledger
//! entry carries. An invalid commit is rejected whole: the plan holds its diagnostics and no
//! changes.

pub mod prepare;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use nexus_schemas::diff::diff_values;
use nexus_schemas::{ChangeSet, Diagnostic, FieldChange, ObjectChange, ObjectKey, Op};
use serde::Serialize;
use serde_json::Value as Json;

use crate::snapshot::{ClaimedObject, GitProvenance, ManifestSet};
use crate::source::{Owner, SourceId};

/// A live object as the ledger's state holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    /// Canonical JSON.
    pub value: Json,
    /// Who created it.
    pub owner: Owner,
    /// The ledger's resource version, echoed into ops as `if_version` so a concurrent change
    /// makes the sync entry fail instead of overwriting it.
    pub resource_version: Option<u64>,
}

/// Live objects by key.
pub type LiveObjects = BTreeMap<ObjectKey, LiveObject>;

/// The parts of a GitSource spec that change what a sync does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Delete owned objects that left git.
    pub prune: bool,
    /// Revert drift on owned objects.
    pub self_heal: bool,
}

/// Everything a sync plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct SyncInput<'a> {
    pub source: &'a SourceId,
    pub policy: SyncPolicy,
    pub provenance: &'a GitProvenance,
    /// The validated manifests at the commit being synced.
    pub desired: &'a ManifestSet,
    pub live: &'a LiveObjects,
    /// What this source wrote at its last synced commit; `None` before the first sync (drift
    /// cannot be told apart from a git change then, so every difference is an update).
    pub last_synced: Option<&'a ManifestSet>,
}

/// One ledger operation of a sync. `if_version`: `Some(0)` = must not exist yet; otherwise the
/// live resource version the plan was computed against.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SyncOp {
    Apply {
        key: ObjectKey,
        object: Json,
        if_version: Option<u64>,
    },
    Delete {
        key: ObjectKey,
        if_version: Option<u64>,
    },
}

impl SyncOp {
    /// The object the op touches.
    pub fn key(&self) -> &ObjectKey {
        match self {
            SyncOp::Apply { key, .. } | SyncOp::Delete { key, .. } => key,
        }
    }
}

/// Why a commit was not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// A manifest has an error (the diagnostics say where).
    InvalidManifests,
    /// The commit's signature is missing or not from an allowed signer.
    Unverified,
}

/// A rejected commit: nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub reason: RejectReason,
    /// One line for `nexus gitops status` (the first error with file:line:col, or the signature
    /// problem).
    pub message: String,
}

/// An object in git that exists live but belongs to someone else: left alone and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub key: ObjectKey,
    /// Its live owner (`apply`, another source, a controller).
    pub owner: Owner,
    /// Where git defines it.
    pub file: String,
    pub line: usize,
    /// Whether git and the live object agree anyway.
    pub same_content: bool,
}

/// How an owned object drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    /// Its content differs from what the source last wrote.
    Modified,
    /// It was deleted outside git.
    Deleted,
}

/// What this sync does about a drifted object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftAction {
    /// selfHeal: git's content is applied again.
    Revert,
    /// No selfHeal and git did not change it: the drift stays and is reported.
    Keep,
    /// The commit changes the object too: git's new content replaces the drift.
    Overwrite,
    /// The object left git and prune deletes it.
    Prune,
}

/// An owned object changed outside git (by `apply` or a controller).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub key: ObjectKey,
    pub kind: DriftKind,
    /// Field changes from what git last wrote to the live object (modified only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    pub action: DriftAction,
}

/// What syncing one commit does.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncPlan {
    pub source: SourceId,
    pub provenance: GitProvenance,
    pub policy: SyncPolicy,
    /// Set when the commit is rejected; then `ops` and `changes` are empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection: Option<Rejection>,
    /// Errors (rejected commits) and warnings, with file:line:col.
    pub diagnostics: Vec<Diagnostic>,
    /// Creates, updates (field-level, live -> git) and deletes, by key.
    pub changes: ChangeSet,
    /// The ledger operations, in key order, one per change.
    pub ops: Vec<SyncOp>,
    pub conflicts: Vec<Conflict>,
    pub drift: Vec<Drift>,
    /// Owned objects that left git. Deleted (and in `ops`) when `policy.prune`; kept otherwise.
    pub prune: Vec<ObjectKey>,
    /// Every object git holds at this commit as (key, content hash): what replicas recompute.
    pub claim: Vec<ClaimedObject>,
}

impl SyncPlan {
    /// A plan that rejects the commit for `reason`, carrying `diagnostics`.
    pub fn rejected(
        source: &SourceId,
        provenance: &GitProvenance,
        policy: SyncPolicy,
        reason: RejectReason,
        message: String,
        diagnostics: Vec<Diagnostic>,
    ) -> SyncPlan {
        SyncPlan {
            source: source.clone(),
            provenance: provenance.clone(),
            policy,
            rejection: Some(Rejection { reason, message }),
            diagnostics,
            changes: ChangeSet::default(),
            ops: Vec::new(),
            conflicts: Vec::new(),
            drift: Vec::new(),
            prune: Vec::new(),
            claim: Vec::new(),
        }
    }

    /// Whether the commit was rejected.
    pub fn is_rejected(&self) -> bool {
        self.rejection.is_some()
    }

    /// Whether the sync writes anything.
    pub fn has_changes(&self) -> bool {
        !self.ops.is_empty()
    }

    /// One line: "2 to create, 1 to update, 0 to delete, 5 unchanged; 1 conflict, 1 drifted".
    pub fn summary(&self) -> String {
        if let Some(r) = &self.rejection {
            return format!("rejected: {}", r.message);
        }
        let mut s = self.changes.summary();
        if !self.conflicts.is_empty() {
            s.push_str(&format!("; {} conflict(s)", self.conflicts.len()));
        }
        if !self.drift.is_empty() {
            s.push_str(&format!("; {} drifted", self.drift.len()));
        }
        if !self.policy.prune && !self.prune.is_empty() {
            s.push_str(&format!("; {} not pruned", self.prune.len()));
        }
        s
    }
}

/// Computes what syncing `input.desired` does. Pure and deterministic.
pub fn plan_sync(input: &SyncInput<'_>) -> SyncPlan {
    let SyncInput {
        source,
        policy,
        provenance,
        desired,
        live,
        last_synced,
    } = *input;
    if desired.has_errors() {
        let errors: Vec<&Diagnostic> = desired.errors().collect();
        let message = match errors.as_slice() {
            [one] => one.one_line(),
            [first, rest @ ..] => format!("{} (and {} more errors)", first.one_line(), rest.len()),
            [] => String::new(),
        };
        return SyncPlan::rejected(
            source,
            provenance,
            policy,
            RejectReason::InvalidManifests,
            message,
            desired.diagnostics.clone(),
        );
    }
    let me = source.owner();
    let mut plan = SyncPlan {
        source: source.clone(),
        provenance: provenance.clone(),
        policy,
        rejection: None,
        diagnostics: desired.diagnostics.clone(),
        changes: ChangeSet::default(),
        ops: Vec::new(),
        conflicts: Vec::new(),
        drift: Vec::new(),
        prune: Vec::new(),
        claim: desired.claim(),
    };
    let last = |k: &ObjectKey| last_synced.and_then(|s| s.objects.get(k)).map(|o| &o.value);

    // Every key git holds, plus every live key this source owns, in one sorted pass.
    let mut keys: Vec<&ObjectKey> = desired.objects.keys().collect();
    keys.extend(live.iter().filter(|(_, l)| l.owner == me).map(|(k, _)| k));
    keys.sort();
    keys.dedup();

    for key in keys {
        let want = desired.objects.get(key);
        let have = live.get(key);
        match (want, have) {
            (Some(d), Some(l)) if l.owner != me => plan.conflicts.push(Conflict {
                key: key.clone(),
                owner: l.owner.clone(),
                file: d.file.clone(),
                line: d.line,
                same_content: d.value == l.value,
            }),
            (Some(d), Some(l)) => {
                if d.value == l.value {
                    plan.changes.unchanged += 1;
                    continue;
                }
                let apply = match last(key) {
                    // No baseline, or the live object is what git last wrote: a git change.
                    None => true,
                    Some(s) if *s == l.value => true,
                    Some(s) => {
                        let action = if *s != d.value {
                            DriftAction::Overwrite
                        } else if policy.self_heal {
                            DriftAction::Revert
                        } else {
                            DriftAction::Keep
                        };
                        plan.drift.push(Drift {
                            key: key.clone(),
                            kind: DriftKind::Modified,
                            fields: diff_values(s, &l.value),
                            action,
                        });
                        action != DriftAction::Keep
                    }
                };
                if apply {
                    plan.changes.changes.push(change(
                        key,
                        Op::Update,
                        diff_values(&l.value, &d.value),
                        None,
                    ));
                    plan.ops.push(SyncOp::Apply {
                        key: key.clone(),
                        object: d.value.clone(),
                        if_version: l.resource_version,
                    });
                }
            }
            (Some(d), None) => {
                let apply = match last(key) {
                    None => true,
                    Some(s) => {
                        let action = if *s != d.value {
                            DriftAction::Overwrite
                        } else if policy.self_heal {
                            DriftAction::Revert
                        } else {
                            DriftAction::Keep
                        };
                        plan.drift.push(Drift {
                            key: key.clone(),
                            kind: DriftKind::Deleted,
                            fields: Vec::new(),
                            action,
                        });
                        action != DriftAction::Keep
                    }
                };
                if apply {
                    plan.changes.changes.push(change(
                        key,
                        Op::Create,
                        Vec::new(),
                        Some(d.value.clone()),
                    ));
                    plan.ops.push(SyncOp::Apply {
                        key: key.clone(),
                        object: d.value.clone(),
                        if_version: Some(0),
                    });
                }
            }
            (None, Some(l)) => {
                // Owned by this source (only such live keys were added) and gone from git.
                plan.prune.push(key.clone());
                if !policy.prune {
                    continue;
                }
                if let Some(s) = last(key)
                    && *s != l.value
                {
                    plan.drift.push(Drift {
                        key: key.clone(),
                        kind: DriftKind::Modified,
                        fields: diff_values(s, &l.value),
                        action: DriftAction::Prune,
                    });
                }
                plan.changes.changes.push(change(
                    key,
                    Op::Delete,
                    Vec::new(),
                    Some(l.value.clone()),
                ));
                plan.ops.push(SyncOp::Delete {
                    key: key.clone(),
                    if_version: l.resource_version,
                });
            }
            (None, None) => {}
        }
    }
    plan
}

fn change(key: &ObjectKey, op: Op, fields: Vec<FieldChange>, object: Option<Json>) -> ObjectChange {
    ObjectChange {
        kind: key.kind.to_string(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        op,
        fields,
        object,
        key: Some(key.clone()),
    }
}
