//! One source's worker: waits to be woken, then syncs on a blocking thread. A sync reads the live
//! objects and the last recorded commit from the committed state, fetches and plans with
//! `prepare_sync`, and writes one request signed by this replica when the plan has changes. A
//! concurrent change to a planned object (an `if_version` conflict) is planned again at once.
//! With a validator set, one replica per source writes the syncs its routine triggers find
//! ([`syncer`]); the others take over when it leaves a change pending. A sync someone asked for
//! explicitly (the webhook, `nexus gitops sync`) is written by the replica that was asked, at
//! once: a second replica writing the same commit is harmless, because every op carries the
//! `if_version` it was planned against, so only the first request decided changes anything and
//! the other fails as a whole (its replica plans again and finds nothing to do).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nexus_api::gitops::SourceStatus;
use nexus_gitops::sync::{LiveObject, LiveObjects, SyncOp};
use nexus_gitops::{GitRepo, LastSync, Owner, SourceConfig, SourceId, prepare_sync};
use nexus_ledger::{Caller, GitSync, Request, RequestError, SignedRequest, SubmitError, Validator};
use nexus_schemas::ObjectKey;
use tokio::sync::Notify;

use super::mirrors::lock;
use super::request::{forced_over, ops_of, source_of};
use super::status::{self, commit_info, short, spelled};
use super::{GitOps, Why, now_ms};

/// Plans made again after an `if_version` conflict before giving up until the next trigger.
const ATTEMPTS: usize = 3;

/// What a sync leaves for the next one.
struct Carry {
    owned: BTreeSet<ObjectKey>,
    last: Option<LastSync>,
    /// Changes at this head left to the chosen replica since then (see [`syncer`]).
    waiting: Option<(String, Instant)>,
}

/// The replica that writes the syncs of `id` that polls, the watcher and drift find: the
/// validator whose name ranks first for the source by rendezvous hashing, so sources spread over
/// replicas and only one replica writes each (the others still plan every commit and verify the
/// chosen one's requests). `None` without a validator set: a lone replica writes its syncs
/// itself. Explicit triggers (webhook, `nexus gitops sync`) do not wait for it.
pub fn syncer<'a>(validators: &'a [Validator], id: &SourceId) -> Option<&'a str> {
    let rank = |name: &str| {
        let mut h = blake3::Hasher::new();
        h.update(id.to_string().as_bytes());
        h.update(&[0]);
        h.update(name.as_bytes());
        *h.finalize().as_bytes()
    };
    validators
        .iter()
        .max_by_key(|v| (rank(&v.name), v.name.clone()))
        .map(|v| v.name.as_str())
}

/// How long the other replicas leave a pending change to the chosen one before writing it
/// themselves (liveness only: whoever writes it, every replica checks it against git).
fn takeover(cfg: &SourceConfig) -> Duration {
    cfg.interval() * 2 + Duration::from_secs(5)
}

/// How one attempt ended.
enum Attempt {
    Done(Carry),
    /// Someone changed a planned object meanwhile: plan again.
    Retry(Carry),
}

impl GitOps {
    /// Runs syncs of `id` whenever `wake` fires, one at a time.
    pub(crate) async fn worker(self: Arc<Self>, id: SourceId, wake: Arc<Notify>) {
        loop {
            wake.notified().await;
            if self.is_stopped() {
                return;
            }
            let me = self.clone();
            let sid = id.clone();
            if tokio::task::spawn_blocking(move || me.sync_once(&sid))
                .await
                .is_err()
            {
                tracing::error!(source = %id, "a git sync panicked");
            }
        }
    }

    /// One sync of `id` (blocking).
    pub(crate) fn sync_once(&self, id: &SourceId) {
        let (cfg, why, last, waiting, number, mut st, watching) = {
            let mut inner = self.lock();
            let Some(e) = inner.sources.get_mut(id) else {
                return;
            };
            e.started += 1;
            (
                e.cfg.clone(),
                e.why.take().unwrap_or(Why::Poll),
                e.last.take(),
                e.waiting.take(),
                e.started,
                e.status.clone(),
                e.watcher.is_some(),
            )
        };
        if !watching {
            self.watch_if_local(&cfg);
        }
        st.attempts += 1;
        st.last_trigger = Some(why.as_str().to_string());
        let mut carry = Carry {
            owned: BTreeSet::new(),
            last,
            waiting,
        };
        for attempt in 1..=ATTEMPTS {
            let (last, waiting) = (carry.last.take(), carry.waiting.take());
            match self.attempt(&cfg, why, last, waiting, &mut st, attempt == ATTEMPTS) {
                Attempt::Done(c) => {
                    carry = c;
                    break;
                }
                Attempt::Retry(c) => carry = c,
            }
        }
        st.last_attempt_ms = Some(now_ms());
        if let Some(e) = &st.error {
            tracing::warn!(source = %id, trigger = why.as_str(), "git sync: {e}");
        }
        let mut inner = self.lock();
        if let Some(e) = inner.sources.get_mut(id) {
            e.status = st;
            e.owned = carry.owned;
            if e.cfg == cfg {
                e.last = carry.last;
                e.waiting = carry.waiting;
            }
            e.done.send_replace(number);
        }
    }

    /// Starts the notify watcher for a local repository that exists.
    fn watch_if_local(&self, cfg: &SourceConfig) {
        let Ok(url) = nexus_gitops::RepoUrl::parse(&cfg.spec.url) else {
            return;
        };
        let Some(path) = url.local_path else {
            return;
        };
        if let Ok(repo) = GitRepo::open(&path) {
            self.ensure_watcher(&cfg.id, repo.git_dir());
        }
    }

    /// Plans and, when something changes, writes one sync.
    fn attempt(
        &self,
        cfg: &SourceConfig,
        why: Why,
        last: Option<LastSync>,
        waiting: Option<(String, Instant)>,
        st: &mut SourceStatus,
        final_attempt: bool,
    ) -> Attempt {
        let me = cfg.id.owner();
        let (live, mut owned, recorded, chosen) = {
            let state = self.ledger.state();
            let mut owned = BTreeSet::new();
            let live: LiveObjects = state
                .objects
                .iter()
                .map(|(k, o)| {
                    let owner = Owner::parse(&o.owner);
                    if owner == me {
                        owned.insert(k.clone());
                    }
                    let l = LiveObject {
                        value: o.object.clone(),
                        owner,
                        resource_version: Some(o.resource_version),
                    };
                    (k.clone(), l)
                })
                .collect();
            let recorded: Option<GitSync> = state.git_syncs.get(&cfg.id.to_string()).cloned();
            let chosen = syncer(&state.validators, &cfg.id).map(str::to_string);
            (live, owned, recorded, chosen)
        };
        let recorded_commit = recorded.as_ref().map(|r| r.commit.clone());
        st.recorded_commit = recorded_commit.clone();
        st.synced_height = recorded.as_ref().map(|r| r.height);
        // The drift baseline is the last recorded commit; its manifests are kept in memory.
        let last = match (&recorded_commit, last) {
            (Some(r), Some(l)) if l.commit == *r => Some(l),
            (Some(r), _) => Some(LastSync {
                commit: r.clone(),
                manifests: None,
            }),
            (None, _) => None,
        };
        let fail = |st: &mut SourceStatus, msg: String, last: Option<LastSync>, owned| {
            st.error = Some(msg);
            Attempt::Done(Carry {
                owned,
                last,
                waiting: None,
            })
        };
        let shared = match self.pool.get(&cfg.spec.url) {
            Ok(m) => m,
            Err(e) => return fail(st, e.to_string(), last, owned),
        };
        let (prep, forced) = {
            let mirror = lock(&shared);
            let prep = match prepare_sync(&mirror, cfg, &self.opts.fetch, &live, last.as_ref()) {
                Ok(p) => p,
                Err(e) => return fail(st, e.to_string(), last, owned),
            };
            // Read and validated here, from this replica's mirror: the admission check of a
            // request for this commit (this replica's or another's) reuses them.
            self.pool.remember_manifests(
                &cfg.spec.url,
                &prep.plan.provenance.commit,
                &cfg.path(),
                prep.manifests.clone(),
            );
            let forced = forced_over(
                &mirror,
                recorded_commit.as_deref(),
                &prep.plan.provenance.commit,
            );
            (prep, forced)
        };
        drop(live);
        let plan = &prep.plan;
        let head = commit_info(&plan.provenance);
        st.head = Some(head.clone());
        st.head_move = Some(spelled(&prep.head_move));
        st.drift = plan.drift.iter().map(status::drift).collect();
        st.conflicts = plan.conflicts.iter().map(status::conflict).collect();
        st.not_pruned = if plan.policy.prune {
            Vec::new()
        } else {
            plan.prune.iter().map(status::object_name).collect()
        };
        st.signed_by = prep.signed_by.as_ref().map(|s| s.principal.clone());
        st.diagnostics = status::diagnostics(&plan.diagnostics);
        if let Some(r) = &plan.rejection {
            let msg = format!("commit {} rejected: {}", short(&head.commit), r.message);
            return fail(st, msg, last, owned);
        }
        st.objects = prep.manifests.objects.len();
        if !plan.has_changes() {
            st.synced = Some(head.clone());
            st.error = None;
            st.last_result = Some(format!("up to date ({})", plan.summary()));
            // Keep the baseline: the recorded commit's manifests.
            let last = if recorded_commit.as_deref() == Some(head.commit.as_str()) {
                Some(LastSync {
                    commit: head.commit.clone(),
                    manifests: Some(prep.manifests),
                })
            } else {
                last
            };
            return Attempt::Done(Carry {
                owned,
                last,
                waiting: None,
            });
        }
        // Someone asked this replica for the sync (a push webhook, `nexus gitops sync`): write
        // it now rather than leave it to the chosen replica, which may not hear of the push
        // before its next poll. A duplicate from the chosen replica changes nothing (see above).
        let asked = matches!(why, Why::Webhook | Why::Manual);
        if let Some(chosen) = chosen.filter(|c| *c != self.replica && !asked) {
            let since = match waiting {
                Some((c, t)) if c == head.commit => t,
                _ => Instant::now(),
            };
            if since.elapsed() < takeover(cfg) {
                st.error = None;
                st.last_result = Some(format!(
                    "replica {chosen} writes this source's syncs; pending: {}",
                    plan.summary()
                ));
                return Attempt::Done(Carry {
                    owned,
                    last,
                    waiting: Some((head.commit.clone(), since)),
                });
            }
            tracing::warn!(source = %cfg.id, %chosen, "the chosen replica did not sync; writing the sync here");
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            id: format!("{}-git-{}-{n}", self.replica, now_ms()),
            actor: self.actor.clone(),
            source: source_of(plan, forced),
            ops: ops_of(plan),
            created_at_ms: now_ms(),
        };
        let signed = SignedRequest::sign(request, &self.key);
        let caller = Caller {
            actor: self.actor.clone(),
            public_key: self.key.verifying_key().to_bytes(),
        };
        match self.ledger.submit(signed, &caller) {
            Ok(applied) => {
                for op in &plan.ops {
                    match op {
                        SyncOp::Apply { key, .. } => owned.insert(key.clone()),
                        SyncOp::Delete { key, .. } => owned.remove(key),
                    };
                }
                st.synced = Some(head.clone());
                st.synced_height = Some(applied.height);
                st.recorded_commit = Some(head.commit.clone());
                st.error = None;
                st.last_result = Some(plan.summary());
                Attempt::Done(Carry {
                    owned,
                    last: Some(LastSync {
                        commit: head.commit.clone(),
                        manifests: Some(prep.manifests),
                    }),
                    waiting: None,
                })
            }
            Err(SubmitError::Request(RequestError::Conflict { .. })) if !final_attempt => {
                Attempt::Retry(Carry {
                    owned,
                    last,
                    waiting: None,
                })
            }
            Err(e) => {
                let msg = format!("commit {} was not applied: {e}", short(&head.commit));
                fail(st, msg, last, owned)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syncer_per_source_spread_over_replicas() {
        let v = |name: &str| Validator {
            name: name.into(),
            public_key: [0; 32],
            address: String::new(),
            power: 1,
        };
        let set: Vec<Validator> = ["r0", "r1", "r2", "r3"].into_iter().map(v).collect();
        assert_eq!(syncer(&[], &SourceId::new("default", "apps")), None);
        let mut chosen = BTreeSet::new();
        for i in 0..40 {
            let id = SourceId::new("default", format!("s{i}"));
            let c = syncer(&set, &id).unwrap();
            // The order of the set does not matter: every replica picks the same one.
            let mut rev = set.clone();
            rev.reverse();
            assert_eq!(syncer(&rev, &id), Some(c));
            chosen.insert(c.to_string());
        }
        assert_eq!(chosen.len(), 4, "40 sources use every replica: {chosen:?}");
    }
}
