//! Replica-side verification of a proposed git sync (DESIGN.md BFT rule 3): fetch the named
//! commit independently, recompute its tree id, metadata and objects, and accept only an exact
//! match. The checks against a commit's content are pure; [`verify_proposal`] adds the fetch,
//! the branch-reachability rule and the signature policy.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use nexus_schemas::ObjectKey;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::repo::{FetchOptions, GitError, Mirror};
use crate::signature::{AllowedSigners, SignatureError, SignedBy, SignersError};
use crate::snapshot::{ClaimedObject, CommitSnapshot, GitProvenance, ManifestSet, claim_digest};
use crate::source::{SourceConfig, SourceId};
use crate::sync::{SyncOp, SyncPlan, SyncPolicy};

/// What a proposer says git holds at the commit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// Every object (key and content hash).
    Objects(Vec<ClaimedObject>),
    /// The [`claim_digest`] of that list, as a ledger entry records it.
    Digest(String),
}

impl Claim {
    /// The digest form.
    pub fn digest(&self) -> String {
        match self {
            Claim::Objects(c) => claim_digest(c),
            Claim::Digest(d) => d.clone(),
        }
    }
}

/// What a proposing replica claims about a git sync.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Proposal {
    pub source: SourceId,
    pub provenance: GitProvenance,
    /// Every object git holds at the commit.
    pub claim: Claim,
    /// The ledger operations the entry carries.
    pub ops: Vec<SyncOp>,
}

impl Proposal {
    /// The proposal for a plan.
    pub fn from_plan(plan: &SyncPlan) -> Proposal {
        Proposal {
            source: plan.source.clone(),
            provenance: plan.provenance.clone(),
            claim: Claim::Objects(plan.claim.clone()),
            ops: plan.ops.clone(),
        }
    }
}

/// How a claimed object set differs from git's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimDiff {
    /// Claimed, but git does not hold them.
    pub not_in_git: Vec<ObjectKey>,
    /// In git, but not claimed.
    pub missing: Vec<ObjectKey>,
    /// In both with different content.
    pub different: Vec<ObjectKey>,
}

impl fmt::Display for ClaimDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |keys: &[ObjectKey]| {
            let mut s: Vec<String> = keys.iter().take(3).map(ToString::to_string).collect();
            if keys.len() > 3 {
                s.push(format!("... {} more", keys.len() - 3));
            }
            s.join(", ")
        };
        let mut parts = Vec::new();
        if !self.not_in_git.is_empty() {
            parts.push(format!("not in git: {}", list(&self.not_in_git)));
        }
        if !self.missing.is_empty() {
            parts.push(format!("left out: {}", list(&self.missing)));
        }
        if !self.different.is_empty() {
            parts.push(format!("content differs: {}", list(&self.different)));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Why a replica refuses a proposed sync.
#[derive(Debug, Error)]
pub enum VerifyRejection {
    #[error("proposal is for source {proposed}, not {expected}")]
    WrongSource {
        proposed: SourceId,
        expected: SourceId,
    },
    #[error("proposal names repository {proposed:?}; the source's repository is {expected:?}")]
    WrongRepo { proposed: String, expected: String },
    #[error("git does not hold commit {commit}: {reason}")]
    CommitNotInGit { commit: String, reason: String },
    #[error("commit {commit} is not on branch {branch} (head {head})")]
    NotOnBranch {
        commit: String,
        branch: String,
        head: String,
    },
    #[error(
        "commit {commit} is older than the last synced commit {last} and is not the branch head"
    )]
    Rollback { commit: String, last: String },
    #[error("{field} does not match git: proposed {proposed:?}, git has {actual:?}")]
    Metadata {
        field: &'static str,
        proposed: String,
        actual: String,
    },
    #[error("commit {commit} has invalid manifests in git ({errors} errors); it cannot be synced")]
    InvalidInGit { commit: String, errors: usize },
    #[error("the proposal's objects are not what git holds: {0}")]
    Objects(ClaimDiff),
    #[error(
        "the proposal's object digest {proposed} is not that of the {objects} objects git holds ({actual})"
    )]
    ClaimDigest {
        proposed: String,
        actual: String,
        objects: usize,
    },
    #[error("operation on {key}: {reason}")]
    Op { key: ObjectKey, reason: String },
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the source's verify.ssh list is invalid: {0}")]
    Signers(#[from] SignersError),
    #[error("verification could not read git: {0}")]
    Git(GitError),
}

/// A proposal that matched git.
#[derive(Debug, Clone)]
pub struct Verified {
    pub manifests: Arc<ManifestSet>,
    pub signed_by: Option<SignedBy>,
}

/// Compares proposed provenance with what git says about the commit.
pub fn check_provenance(
    proposed: &GitProvenance,
    actual: &GitProvenance,
) -> Result<(), VerifyRejection> {
    let fields: [(&'static str, &String, &String); 6] = [
        ("repo", &proposed.repo, &actual.repo),
        ("commit", &proposed.commit, &actual.commit),
        ("tree", &proposed.tree, &actual.tree),
        ("author", &proposed.author, &actual.author),
        ("committer", &proposed.committer, &actual.committer),
        ("message", &proposed.message, &actual.message),
    ];
    for (field, p, a) in fields {
        if p != a {
            return Err(VerifyRejection::Metadata {
                field,
                proposed: p.clone(),
                actual: a.clone(),
            });
        }
    }
    Ok(())
}

/// The difference between a claim and git's objects; empty when they match exactly.
pub fn diff_claim(git: &ManifestSet, claim: &[ClaimedObject]) -> ClaimDiff {
    let mut d = ClaimDiff::default();
    let mut seen = BTreeSet::new();
    for c in claim {
        if !seen.insert(&c.key) {
            d.different.push(c.key.clone());
            continue;
        }
        match git.objects.get(&c.key) {
            None => d.not_in_git.push(c.key.clone()),
            Some(o) if o.hash.to_hex() != c.hash => d.different.push(c.key.clone()),
            Some(_) => {}
        }
    }
    d.missing = git
        .objects
        .keys()
        .filter(|k| !seen.contains(k))
        .cloned()
        .collect();
    d
}

/// Checks the ledger operations against git's objects: every applied object must be exactly
/// git's object under the same key, and a delete needs prune and a key git no longer holds.
pub fn check_ops(
    git: &ManifestSet,
    ops: &[SyncOp],
    policy: SyncPolicy,
) -> Result<(), VerifyRejection> {
    for op in ops {
        match op {
            SyncOp::Apply { key, object, .. } => {
                let reason = match git.objects.get(key) {
                    None => Some("git does not hold this object"),
                    Some(o) if o.value != *object => Some("content differs from git"),
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    return Err(VerifyRejection::Op {
                        key: key.clone(),
                        reason: reason.into(),
                    });
                }
            }
            SyncOp::Delete { key, .. } => {
                let reason = if !policy.prune {
                    Some("the source does not prune")
                } else if git.objects.contains_key(key) {
                    Some("git still holds this object")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(VerifyRejection::Op {
                        key: key.clone(),
                        reason: reason.into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Checks a proposal against a commit read independently. Pure.
pub fn verify_against_snapshot(
    proposal: &Proposal,
    snapshot: &CommitSnapshot,
    policy: SyncPolicy,
) -> Result<ManifestSet, VerifyRejection> {
    check_provenance(&proposal.provenance, &snapshot.provenance)?;
    let git = ManifestSet::of_snapshot(snapshot);
    verify_against_manifests(proposal, &snapshot.provenance, &git, policy)?;
    Ok(git)
}

/// Checks a proposal's objects and ops against `git`, the validated manifests of the commit
/// whose provenance is `actual`. Pure.
pub fn verify_against_manifests(
    proposal: &Proposal,
    actual: &GitProvenance,
    git: &ManifestSet,
    policy: SyncPolicy,
) -> Result<(), VerifyRejection> {
    check_provenance(&proposal.provenance, actual)?;
    if git.has_errors() {
        return Err(VerifyRejection::InvalidInGit {
            commit: actual.commit.clone(),
            errors: git.errors().count(),
        });
    }
    match &proposal.claim {
        Claim::Objects(claim) => {
            let d = diff_claim(git, claim);
            if d != ClaimDiff::default() {
                return Err(VerifyRejection::Objects(d));
            }
        }
        Claim::Digest(proposed) => {
            let actual = claim_digest(&git.claim());
            if *proposed != actual {
                return Err(VerifyRejection::ClaimDigest {
                    proposed: proposed.clone(),
                    actual,
                    objects: git.objects.len(),
                });
            }
        }
    }
    check_ops(git, &proposal.ops, policy)?;
    Ok(())
}

/// The full replica-side check: the proposal names this source and its repository; the commit
/// is fetched into this replica's own mirror and must be the branch head or an ancestor of it
/// (and not older than `last_synced` unless the branch really went back); the signature
/// policy holds; and tree, metadata, objects and ops match git exactly.
pub fn verify_proposal(
    mirror: &Mirror,
    cfg: &SourceConfig,
    proposal: &Proposal,
    last_synced: Option<&str>,
    fetch: &FetchOptions,
) -> Result<Verified, VerifyRejection> {
    verify_proposal_with(mirror, cfg, proposal, last_synced, fetch, None)
}

/// [`verify_proposal`], reusing `known`: manifests this replica validated itself, from its own
/// mirror, for the proposal's commit and the source's path (reading and validating them is the
/// expensive part, and a commit's content never changes). Never pass manifests another replica
/// sent: the check would then trust that replica. The commit is still fetched, located on the
/// branch, signature-checked and read for its metadata and tree.
pub fn verify_proposal_with(
    mirror: &Mirror,
    cfg: &SourceConfig,
    proposal: &Proposal,
    last_synced: Option<&str>,
    fetch: &FetchOptions,
    known: Option<Arc<ManifestSet>>,
) -> Result<Verified, VerifyRejection> {
    if proposal.source != cfg.id {
        return Err(VerifyRejection::WrongSource {
            proposed: proposal.source.clone(),
            expected: cfg.id.clone(),
        });
    }
    if proposal.provenance.repo != cfg.spec.url {
        return Err(VerifyRejection::WrongRepo {
            proposed: proposal.provenance.repo.clone(),
            expected: cfg.spec.url.clone(),
        });
    }
    let commit = proposal.provenance.commit.as_str();
    let branch = cfg.spec.branch.as_str();
    let fresh_head = || {
        mirror.fetch_branch(branch, fetch).map_err(|e| match e {
            GitError::BranchNotFound { .. } => VerifyRejection::CommitNotInGit {
                commit: commit.to_string(),
                reason: e.to_string(),
            },
            other => VerifyRejection::Git(other),
        })
    };
    let goes_back = |head: &str| {
        last_synced.is_some_and(|last| {
            last != commit && commit != head && mirror.is_reachable_from(commit, last)
        })
    };
    // Use the mirror's copy of the branch when it already settles the question; fetch otherwise.
    let head = match mirror.branch_head(branch) {
        Ok(h) if mirror.is_reachable_from(commit, &h) && !goes_back(&h) => h,
        _ => fresh_head()?,
    };
    if !mirror.has_commit(commit) {
        return Err(VerifyRejection::CommitNotInGit {
            commit: commit.to_string(),
            reason: format!("not reachable from {branch} in {}", cfg.spec.url),
        });
    }
    if !mirror.is_reachable_from(commit, &head) {
        return Err(VerifyRejection::NotOnBranch {
            commit: commit.to_string(),
            branch: branch.to_string(),
            head,
        });
    }
    // `head` is freshly fetched whenever this can be true.
    if goes_back(&head) {
        return Err(VerifyRejection::Rollback {
            commit: commit.to_string(),
            last: last_synced.unwrap_or_default().to_string(),
        });
    }
    let signed_by = match cfg.ssh_signers() {
        Some(lines) => {
            let signers = AllowedSigners::parse(lines)?;
            Some(mirror.verify_commit_signature(commit, &signers)?)
        }
        None => None,
    };
    let policy = crate::sync::prepare::policy_of(cfg);
    let (actual, manifests) = match known {
        Some(m) => {
            let actual = mirror
                .provenance(commit, &cfg.path(), &cfg.spec.url)
                .map_err(VerifyRejection::Git)?;
            (actual, m)
        }
        None => {
            let snapshot = mirror
                .read_commit(commit, &cfg.path(), &cfg.spec.url)
                .map_err(VerifyRejection::Git)?;
            check_provenance(&proposal.provenance, &snapshot.provenance)?;
            let m = Arc::new(ManifestSet::of_snapshot(&snapshot));
            (snapshot.provenance, m)
        }
    };
    verify_against_manifests(proposal, &actual, &manifests, policy)?;
    Ok(Verified {
        manifests,
        signed_by,
    })
}
