//! The IO half of a sync, for the server: fetch the branch into the mirror, note how the head
//! moved (fast-forward or force-push), check the commit's signature when the source requires
//! one, read and validate the manifests, and hand everything to the pure [`plan_sync`].

use std::sync::Arc;

use thiserror::Error;

use super::{LiveObjects, RejectReason, SyncInput, SyncPlan, SyncPolicy, plan_sync};
use crate::repo::{FetchOptions, GitError, HeadMove, Mirror};
use crate::signature::{AllowedSigners, SignedBy, SignersError};
use crate::snapshot::ManifestSet;
use crate::source::SourceConfig;
use crate::verify::Proposal;

/// What the server remembers about a source's last successful sync.
#[derive(Debug, Clone)]
pub struct LastSync {
    pub commit: String,
    /// The manifests of that commit, if still in memory; otherwise they are read again from the
    /// mirror (the commit stays there after a force-push until the mirror is garbage-collected).
    pub manifests: Option<Arc<ManifestSet>>,
}

/// A sync ready for the server to propose.
#[derive(Debug, Clone)]
pub struct PreparedSync {
    pub plan: SyncPlan,
    /// How the branch moved since the last sync (a force-push is recorded, not refused).
    pub head_move: HeadMove,
    /// The validated manifests of the head commit: keep them as the next [`LastSync`].
    pub manifests: Arc<ManifestSet>,
    /// The signer, when the source requires signed commits and the signature checked out.
    pub signed_by: Option<SignedBy>,
}

impl PreparedSync {
    /// The proposal replicas verify (see [`crate::verify::verify_proposal`]).
    pub fn proposal(&self) -> Proposal {
        Proposal::from_plan(&self.plan)
    }
}

/// A sync that could not even be planned (the sync error shown in `nexus gitops status`).
#[derive(Debug, Error)]
pub enum SyncError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("the source's verify.ssh list is invalid: {0}")]
    Signers(#[from] SignersError),
}

/// The policy from a source's spec.
pub fn policy_of(cfg: &SourceConfig) -> SyncPolicy {
    SyncPolicy {
        prune: cfg.spec.prune,
        self_heal: cfg.spec.self_heal,
    }
}

/// Fetches, reads, verifies and plans one sync of `cfg` against `live`.
pub fn prepare_sync(
    mirror: &Mirror,
    cfg: &SourceConfig,
    fetch: &FetchOptions,
    live: &LiveObjects,
    last: Option<&LastSync>,
) -> Result<PreparedSync, SyncError> {
    let signers = cfg.ssh_signers().map(AllowedSigners::parse).transpose()?;
    let head = mirror.fetch_branch(&cfg.spec.branch, fetch)?;
    let head_move = mirror.head_move(last.map(|l| l.commit.as_str()), &head);
    let snapshot = mirror.read_commit(&head, &cfg.path(), &cfg.spec.url)?;
    let manifests = Arc::new(ManifestSet::of_snapshot(&snapshot));
    let policy = policy_of(cfg);
    let mut signed_by = None;
    if let Some(signers) = &signers {
        match mirror.verify_commit_signature(&head, signers) {
            Ok(s) => signed_by = Some(s),
            Err(e) => {
                let plan = SyncPlan::rejected(
                    &cfg.id,
                    &snapshot.provenance,
                    policy,
                    RejectReason::Unverified,
                    e.to_string(),
                    Vec::new(),
                );
                return Ok(PreparedSync {
                    plan,
                    head_move,
                    manifests,
                    signed_by: None,
                });
            }
        }
    }
    let previous = match last {
        Some(LastSync {
            manifests: Some(m), ..
        }) => Some(m.clone()),
        Some(LastSync { commit, .. }) => mirror
            .read_commit(commit, &cfg.path(), &cfg.spec.url)
            .ok()
            .map(|s| Arc::new(ManifestSet::of_snapshot(&s))),
        None => None,
    };
    let plan = plan_sync(&SyncInput {
        source: &cfg.id,
        policy,
        provenance: &snapshot.provenance,
        desired: &manifests,
        live,
        last_synced: previous.as_deref(),
    });
    Ok(PreparedSync {
        plan,
        head_move,
        manifests,
        signed_by,
    })
}
