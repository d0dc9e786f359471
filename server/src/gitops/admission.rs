//! The GitOps admission check (DESIGN.md BFT rule 3): a request whose source is a git commit is
//! accepted only if this replica, fetching that commit itself into its own mirror, finds exactly
//! what the request claims: the commit on the source's branch (and not older than the last
//! recorded one), its metadata and tree, the digest of every object git holds, ops that apply
//! git's content and delete only what left git (with prune), the signature policy, and the
//! force-push flag. Anything else is refused with the reason and nothing is written.

use std::sync::{Arc, RwLock};

use nexus_gitops::{FetchOptions, SourceConfig, verify_proposal};
use nexus_ledger::admission::Admission;
use nexus_ledger::{SignedRequest, State};
use nexus_schemas::{Kind, Object, ObjectKey};

use super::mirrors::{MirrorPool, lock};
use super::request::{Claimed, claimed, forced_over};

/// What the check needs from the state, copied so the state lock is not held during git IO.
struct Pending {
    cfg: SourceConfig,
    claimed: Claimed,
    recorded: Option<String>,
}

/// Verifies git-sourced requests against this replica's own mirrors.
pub struct GitAdmission {
    pool: Arc<MirrorPool>,
    fetch: FetchOptions,
}

impl GitAdmission {
    pub(crate) fn new(pool: Arc<MirrorPool>, fetch: FetchOptions) -> GitAdmission {
        GitAdmission { pool, fetch }
    }

    /// Reads the source's config and last recorded commit; `Ok(None)` for other requests.
    fn pending(state: &State, req: &SignedRequest) -> Result<Option<Pending>, String> {
        let Some(claimed) = claimed(&req.request)? else {
            return Ok(None);
        };
        let id = &claimed.source;
        let key = ObjectKey::new(Kind::GitSource, id.namespace.clone(), id.name.clone());
        let obj = state
            .get(&key)
            .ok_or_else(|| format!("git source {id} does not exist"))?;
        let cfg = serde_json::from_value::<Object>(obj.object.clone())
            .ok()
            .and_then(|o| SourceConfig::from_object(&o))
            .ok_or_else(|| format!("git source {id} is not a valid GitSource"))?;
        let recorded = state
            .git_syncs
            .get(&id.to_string())
            .map(|g| g.commit.clone());
        Ok(Some(Pending {
            cfg,
            claimed,
            recorded,
        }))
    }

    /// The git side of the check (blocking IO).
    fn check(&self, p: Pending) -> Result<(), String> {
        let url = &p.cfg.spec.url;
        let shared = self
            .pool
            .get(url)
            .map_err(|e| format!("cannot open the mirror of {url}: {e}"))?;
        let mirror = lock(&shared);
        let commit = &p.claimed.proposal.provenance.commit;
        verify_proposal(
            &mirror,
            &p.cfg,
            &p.claimed.proposal,
            p.recorded.as_deref(),
            &self.fetch,
        )
        .map_err(|e| format!("git source {}: {e}", p.cfg.id))?;
        let expected = forced_over(&mirror, p.recorded.as_deref(), commit);
        if expected != p.claimed.forced_over {
            return Err(format!(
                "git source {}: the request says commit {commit} {} but git shows it {}",
                p.cfg.id,
                describe(p.claimed.forced_over.as_deref()),
                describe(expected.as_deref()),
            ));
        }
        Ok(())
    }
}

fn describe(forced_over: Option<&str>) -> String {
    match forced_over {
        Some(c) => format!("replaces {c} (force-push)"),
        None => "descends from the last synced commit".into(),
    }
}

impl Admission for GitAdmission {
    fn admit(&self, state: &State, req: &SignedRequest) -> Result<(), String> {
        match Self::pending(state, req)? {
            Some(p) => self.check(p),
            None => Ok(()),
        }
    }

    fn admit_current(&self, state: &RwLock<State>, req: &SignedRequest) -> Result<(), String> {
        let pending = {
            let state = state.read().unwrap_or_else(|e| e.into_inner());
            Self::pending(&state, req)?
        };
        match pending {
            Some(p) => self.check(p),
            None => Ok(()),
        }
    }
}
