//! `nexus plan --repo PATH --base REF --head REF`: what merging head would change in the live
//! cluster. The head commit is planned exactly as a sync would plan it (with base as the last
//! synced commit, so drift the merge overwrites shows up), plus the git-side change from base to
//! head for context. Rendered as text, markdown (PR comments) or JSON by [`render`]; exit code
//! 0 = no changes, 1 = changes, 2 = error (the head commit would be rejected).

mod render;
#[cfg(test)]
mod tests;

use std::path::Path;

use nexus_schemas::{ChangeSet, diff_canonical};
use serde::Serialize;

pub use render::{render_json, render_markdown, render_text};

use crate::repo::{GitError, GitRepo};
use crate::snapshot::{CommitSnapshot, ManifestSet};
use crate::source::{Owner, SourceId};
use crate::sync::{LiveObject, LiveObjects, SyncInput, SyncPlan, SyncPolicy, plan_sync};

/// Exit code: nothing would change.
pub const EXIT_NO_CHANGES: i32 = 0;
/// Exit code: the merge would change the cluster.
pub const EXIT_CHANGES: i32 = 1;
/// Exit code: the head commit is invalid (or the plan could not be made).
pub const EXIT_ERROR: i32 = 2;

/// One side of the comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitRef {
    /// The revision as the user wrote it (`origin/main`, `HEAD`).
    pub rev: String,
    pub commit: String,
    /// First line of the commit message.
    pub subject: String,
}

impl CommitRef {
    fn of(rev: &str, snap: &CommitSnapshot) -> CommitRef {
        CommitRef {
            rev: rev.to_string(),
            commit: snap.provenance.commit.clone(),
            subject: snap
                .provenance
                .message
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        }
    }

    /// The first 12 hex digits.
    pub fn short(&self) -> &str {
        self.commit.get(..12).unwrap_or(&self.commit)
    }
}

/// Where the live objects came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "name")]
pub enum LiveOrigin {
    /// Read from a cluster (the CLI context name).
    Cluster(String),
    /// No cluster: the live state is assumed to be the base commit, fully synced.
    AssumedBase,
}

/// What merging head would do.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub source: SourceId,
    /// The manifests path inside the repository (`""` = the whole tree).
    pub path: String,
    pub base: CommitRef,
    pub head: CommitRef,
    pub live: LiveOrigin,
    /// The sync of head against the live objects.
    pub plan: SyncPlan,
    /// base -> head in git (context: what the pull request edits).
    pub git_changes: ChangeSet,
}

impl PlanReport {
    /// 0 = no changes, 1 = changes, 2 = the head commit would be rejected.
    pub fn exit_code(&self) -> i32 {
        if self.plan.is_rejected() {
            EXIT_ERROR
        } else if self.plan.has_changes() {
            EXIT_CHANGES
        } else {
            EXIT_NO_CHANGES
        }
    }
}

/// Inputs of a plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub source: &'a SourceId,
    pub policy: SyncPolicy,
    pub base_rev: &'a str,
    pub base: &'a CommitSnapshot,
    pub head_rev: &'a str,
    pub head: &'a CommitSnapshot,
    /// Live objects from a cluster (and the context's name), or `None` to assume base is synced.
    pub live: Option<(&'a str, &'a LiveObjects)>,
}

/// The live objects a fully synced `manifests` would leave, owned by `source`: the stand-in for
/// a cluster when none is given.
pub fn assume_synced(manifests: &ManifestSet, source: &SourceId) -> LiveObjects {
    manifests
        .objects
        .iter()
        .map(|(k, o)| {
            let live = LiveObject {
                value: o.value.clone(),
                owner: Owner::GitSource(source.clone()),
                resource_version: None,
            };
            (k.clone(), live)
        })
        .collect()
}

/// Builds the report. Pure.
pub fn build_plan(input: &PlanInput<'_>) -> PlanReport {
    let base = ManifestSet::of_snapshot(input.base);
    let head = ManifestSet::of_snapshot(input.head);
    let assumed;
    let (live, origin) = match input.live {
        Some((ctx, live)) => (live, LiveOrigin::Cluster(ctx.to_string())),
        None => {
            assumed = assume_synced(&base, input.source);
            (&assumed, LiveOrigin::AssumedBase)
        }
    };
    let plan = plan_sync(&SyncInput {
        source: input.source,
        policy: input.policy,
        provenance: &input.head.provenance,
        desired: &head,
        live,
        last_synced: Some(&base),
    });
    let canonical = |m: &ManifestSet| {
        m.objects
            .iter()
            .map(|(k, o)| (k.clone(), o.value.clone()))
            .collect()
    };
    let git_changes = diff_canonical(&canonical(&base), &canonical(&head));
    PlanReport {
        source: input.source.clone(),
        path: input.head.path.clone(),
        base: CommitRef::of(input.base_rev, input.base),
        head: CommitRef::of(input.head_rev, input.head),
        live: origin,
        plan,
        git_changes,
    }
}

/// What to compare in a clone, for [`plan_repo`].
#[derive(Debug, Clone, Copy)]
pub struct RepoPlan<'a> {
    /// The clone (`--repo`).
    pub repo: &'a Path,
    pub base_rev: &'a str,
    pub head_rev: &'a str,
    /// The source's manifests path.
    pub path: &'a str,
    /// The source's URL (what provenance records).
    pub repo_url: &'a str,
    pub source: &'a SourceId,
    pub policy: SyncPolicy,
}

/// Reads both revisions from a clone and builds the report.
pub fn plan_repo(
    req: &RepoPlan<'_>,
    live: Option<(&str, &LiveObjects)>,
) -> Result<PlanReport, GitError> {
    let git = GitRepo::open(req.repo)?;
    let base_commit = git.resolve(req.base_rev)?;
    let head_commit = git.resolve(req.head_rev)?;
    // A path missing at base (the pull request adds it) plans against an empty base.
    let base = match git.read_commit(&base_commit, req.path, req.repo_url) {
        Err(GitError::PathNotFound { .. }) => {
            let mut empty = git.read_commit(&base_commit, "", req.repo_url)?;
            empty.files.clear();
            empty.path = crate::source::normalize_path(req.path);
            empty
        }
        other => other?,
    };
    let head = git.read_commit(&head_commit, req.path, req.repo_url)?;
    Ok(build_plan(&PlanInput {
        source: req.source,
        policy: req.policy,
        base_rev: req.base_rev,
        base: &base,
        head_rev: req.head_rev,
        head: &head,
        live,
    }))
}
