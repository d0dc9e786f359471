//! Git-sourced ledger requests, both ways, pure: a sync plan becomes the request this replica
//! signs (provenance, the claim digest, the commit it was forced over, ops keeping `if_version`),
//! and a request becomes the proposal every replica checks against its own fetch of git.

use nexus_gitops::sync::SyncPlan;
use nexus_gitops::verify::{Claim, Proposal};
use nexus_gitops::{GitProvenance, GitRepo, SourceId, SyncOp, claim_digest};
use nexus_ledger::{Op, Request, Source};
use nexus_schemas::{Object, canonical_value};

/// Parses the ledger's `namespace/name` spelling of a source.
pub fn parse_source_id(text: &str) -> Option<SourceId> {
    let (ns, name) = text.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| SourceId::new(ns, name))
}

/// The previously recorded commit when `commit` does not descend from it: the rule both the
/// proposer and every verifier apply to their own mirror. A commit that is not in the mirror
/// after fetching a branch holding `commit` cannot be one of its ancestors.
pub fn forced_over(repo: &GitRepo, recorded: Option<&str>, commit: &str) -> Option<String> {
    let last = recorded?;
    (last != commit && !repo.is_reachable_from(last, commit)).then(|| last.to_string())
}

/// The ledger source of a sync.
pub fn source_of(plan: &SyncPlan, forced_over: Option<String>) -> Source {
    let p = &plan.provenance;
    Source::Gitops {
        git_source: plan.source.to_string(),
        repo: p.repo.clone(),
        commit: p.commit.clone(),
        tree: p.tree.clone(),
        author: p.author.clone(),
        committer: p.committer.clone(),
        message: p.message.clone(),
        claim: claim_digest(&plan.claim),
        forced_over,
    }
}

/// The ledger operations of a sync, in the plan's order, keeping `if_version`.
pub fn ops_of(plan: &SyncPlan) -> Vec<Op> {
    plan.ops
        .iter()
        .map(|op| match op {
            SyncOp::Apply {
                object, if_version, ..
            } => Op::Apply {
                object: object.clone(),
                if_version: *if_version,
            },
            SyncOp::Delete { key, if_version } => Op::Delete {
                key: key.clone(),
                if_version: *if_version,
            },
        })
        .collect()
}

/// What a git-sourced request claims, ready for `verify_proposal`.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub source: SourceId,
    pub proposal: Proposal,
    pub forced_over: Option<String>,
}

/// The proposal a request makes; `Ok(None)` when it is not git-sourced. Objects are compared in
/// canonical form, so an equivalent spelling of git's content is not refused for its spelling.
pub fn claimed(req: &Request) -> Result<Option<Claimed>, String> {
    let Source::Gitops {
        git_source,
        repo,
        commit,
        tree,
        author,
        committer,
        message,
        claim,
        forced_over,
    } = &req.source
    else {
        return Ok(None);
    };
    let source = parse_source_id(git_source)
        .ok_or_else(|| format!("{git_source:?} does not name a git source (namespace/name)"))?;
    if claim.is_empty() {
        return Err("a git-sourced request must carry the digest of its commit's objects".into());
    }
    let mut ops = Vec::with_capacity(req.ops.len());
    for (i, op) in req.ops.iter().enumerate() {
        ops.push(match op {
            Op::Apply { object, if_version } => {
                let obj: Object = serde_json::from_value(object.clone())
                    .map_err(|e| format!("operation {i}: not a valid object: {e}"))?;
                SyncOp::Apply {
                    key: obj.key(),
                    object: canonical_value(&obj),
                    if_version: *if_version,
                }
            }
            Op::Delete { key, if_version } => SyncOp::Delete {
                key: key.clone(),
                if_version: *if_version,
            },
            Op::NodeJoin { .. }
            | Op::NodeLabels { .. }
            | Op::NodeLostAttest { .. }
            | Op::AddValidator { .. }
            | Op::RemoveValidator { .. } => {
                return Err(format!(
                    "operation {i}: a git source only applies and deletes objects"
                ));
            }
        });
    }
    let proposal = Proposal {
        source: source.clone(),
        provenance: GitProvenance {
            repo: repo.clone(),
            commit: commit.clone(),
            tree: tree.clone(),
            author: author.clone(),
            committer: committer.clone(),
            message: message.clone(),
        },
        claim: Claim::Digest(claim.clone()),
        ops,
    };
    Ok(Some(Claimed {
        source,
        proposal,
        forced_over: forced_over.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_gitops::sync::{LiveObjects, SyncInput, SyncPolicy, plan_sync};
    use nexus_gitops::{ManifestSet, verify::verify_against_snapshot};
    use nexus_schemas::SourceFile;

    fn plan() -> (SyncPlan, ManifestSet) {
        let text =
            "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n";
        let set = ManifestSet::validate(&[SourceFile::from_text("deploy/a.yaml", text)]);
        let prov = GitProvenance {
            repo: "/srv/apps.git".into(),
            commit: "c1".into(),
            tree: "t1".into(),
            author: "Ann <a@x>".into(),
            committer: "Bot <b@x>".into(),
            message: "one".into(),
        };
        let plan = plan_sync(&SyncInput {
            source: &SourceId::new("default", "apps"),
            policy: SyncPolicy::default(),
            provenance: &prov,
            desired: &set,
            live: &LiveObjects::new(),
            last_synced: None,
        });
        (plan, set)
    }

    #[test]
    fn a_plan_round_trips_through_a_request() {
        let (plan, set) = plan();
        let req = Request {
            id: "r".into(),
            actor: "replica:r0".into(),
            source: source_of(&plan, Some("c0".into())),
            ops: ops_of(&plan),
            created_at_ms: 0,
        };
        let c = claimed(&req).unwrap().unwrap();
        assert_eq!(c.source, SourceId::new("default", "apps"));
        assert_eq!(c.forced_over.as_deref(), Some("c0"));
        assert_eq!(c.proposal.ops, plan.ops);
        assert_eq!(c.proposal.provenance, plan.provenance);
        assert_eq!(c.proposal.claim, Claim::Digest(claim_digest(&set.claim())));
        // The digest form verifies against the same content.
        let snap = nexus_gitops::CommitSnapshot {
            provenance: plan.provenance.clone(),
            path: "deploy".into(),
            root_tree: "r".into(),
            commit_time: 0,
            files: vec![SourceFile::from_text(
                "deploy/a.yaml",
                "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n",
            )],
        };
        verify_against_snapshot(&c.proposal, &snap, SyncPolicy::default()).unwrap();
    }

    #[test]
    fn malformed_git_requests_are_refused() {
        let (plan, _) = plan();
        let mut req = Request {
            id: "r".into(),
            actor: "replica:r0".into(),
            source: source_of(&plan, None),
            ops: vec![Op::NodeLostAttest {
                name: "n1".into(),
                lost: true,
            }],
            created_at_ms: 0,
        };
        assert!(
            claimed(&req)
                .unwrap_err()
                .contains("only applies and deletes")
        );
        if let Source::Gitops { claim, .. } = &mut req.source {
            claim.clear();
        }
        assert!(claimed(&req).unwrap_err().contains("digest"));
        req.source = Source::Cli;
        assert_eq!(claimed(&req), Ok(None));
        assert_eq!(parse_source_id("a/b"), Some(SourceId::new("a", "b")));
        assert_eq!(parse_source_id("a/b/c"), None);
        assert_eq!(parse_source_id("ab"), None);
    }
}
