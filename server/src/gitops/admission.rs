//! The GitOps admission check (DESIGN.md BFT rule 3): a request whose source is a git commit is
//! accepted only if this replica, fetching that commit itself into its own mirror, finds exactly
//! what the request claims: the commit on the source's branch (and not older than the last
//! recorded one), its metadata and tree, the digest of every object git holds, ops that apply
//! git's content and delete only what left git (with prune), the signature policy, and the
//! force-push flag. Anything else is refused with the reason and nothing is written.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};

use nexus_gitops::verify::verify_proposal_with;
use nexus_gitops::{FetchOptions, SourceConfig};
use nexus_ledger::admission::Admission;
use nexus_ledger::{SignedRequest, State};
use nexus_schemas::{Kind, Object, ObjectKey};

use super::mirrors::{MirrorPool, lock};
use super::request::{Claimed, claimed, forced_over};

/// Checks remembered as passed: the same request is checked when it is submitted, when a batch
/// holding it is built and when that batch is validated.
const REMEMBERED: usize = 64;

/// What the check needs from the state, copied so the state lock is not held during git IO.
struct Pending {
    cfg: SourceConfig,
    claimed: Claimed,
    recorded: Option<String>,
    /// Identifies this exact check: the request, the source's spec and the recorded commit.
    memo: [u8; 32],
}

/// Verifies git-sourced requests against this replica's own mirrors.
pub struct GitAdmission {
    pool: Arc<MirrorPool>,
    fetch: FetchOptions,
    passed: Mutex<VecDeque<[u8; 32]>>,
}

impl GitAdmission {
    pub(crate) fn new(pool: Arc<MirrorPool>, fetch: FetchOptions) -> GitAdmission {
        GitAdmission {
            pool,
            fetch,
            passed: Mutex::default(),
        }
    }

    fn remembered(&self, memo: &[u8; 32]) -> bool {
        self.passed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(memo)
    }

    fn remember(&self, memo: [u8; 32]) {
        let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        if passed.len() >= REMEMBERED {
            passed.pop_front();
        }
        passed.push_back(memo);
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
        let mut h = blake3::Hasher::new();
        h.update(&req.request.digest());
        h.update(obj.content_hash.0.as_slice());
        h.update(recorded.as_deref().unwrap_or("-").as_bytes());
        Ok(Some(Pending {
            cfg,
            claimed,
            recorded,
            memo: *h.finalize().as_bytes(),
        }))
    }

    /// The git side of the check (blocking IO).
    fn check(&self, p: Pending) -> Result<(), String> {
        if self.remembered(&p.memo) {
            return Ok(());
        }
        let url = &p.cfg.spec.url;
        let shared = self
            .pool
            .get(url)
            .map_err(|e| format!("cannot open the mirror of {url}: {e}"))?;
        let mirror = lock(&shared);
        let commit = &p.claimed.proposal.provenance.commit;
        let path = p.cfg.path();
        // Manifests this replica validated itself for this commit, if it did lately.
        let known = self.pool.known_manifests(url, commit, &path);
        let reused = known.is_some();
        let verified = verify_proposal_with(
            &mirror,
            &p.cfg,
            &p.claimed.proposal,
            p.recorded.as_deref(),
            &self.fetch,
            known,
        )
        .map_err(|e| format!("git source {}: {e}", p.cfg.id))?;
        if !reused {
            self.pool
                .remember_manifests(url, commit, &path, verified.manifests);
        }
        let expected = forced_over(&mirror, p.recorded.as_deref(), commit);
        if expected != p.claimed.forced_over {
            return Err(format!(
                "git source {}: the request says commit {commit} {} but git shows it {}",
                p.cfg.id,
                describe(p.claimed.forced_over.as_deref()),
                describe(expected.as_deref()),
            ));
        }
        self.remember(p.memo);
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
