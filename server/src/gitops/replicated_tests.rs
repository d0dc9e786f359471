//! GitOps with four replicated ledgers in one process (the ledger's in-memory network) and a real
//! git repository: honest replicas running the real [`GitAdmission`] refuse a Byzantine
//! replica's forged git-sourced batch and still commit the honest sync of the real commit
//! (DESIGN.md BFT rule 3); and a sync asked of a replica that is not the source's chosen syncer
//! (webhook, `nexus gitops sync`) is written at once, with duplicates changing nothing.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nexus_gitops::sync::LiveObjects;
use nexus_gitops::{FetchOptions, GitRepo, ManifestSet, Mirrors, SourceConfig, SourceId};
use nexus_gitops::{claim_digest, prepare_sync};
use nexus_ledger::admission::{Admission, AdmitAll};
use nexus_ledger::consensus::ValidatorKey;
use nexus_ledger::consensus::types::Height;
use nexus_ledger::ledger::system_clock;
use nexus_ledger::replicated::consensus_set;
use nexus_ledger::replicated::mem::{MemNet, test_config};
use nexus_ledger::{
    Caller, Ledger, LedgerConfig, Op, Request, SignedRequest, Source, State, SubmitError, Validator,
};
use serde_json::json;

use super::request::{ops_of, source_of};
use super::tests::{Repo, apply, eventually, git, git_source, wl, workload};
use super::worker::syncer;
use super::*;

const N: usize = 4;

fn seed(i: usize) -> [u8; 32] {
    [40 + i as u8; 32]
}

fn signing(i: usize) -> SigningKey {
    SigningKey::from_bytes(&seed(i))
}

fn vkey(i: usize) -> ValidatorKey {
    ValidatorKey(signing(i).verifying_key().to_bytes())
}

fn genesis() -> Vec<Validator> {
    (0..N)
        .map(|i| Validator {
            name: format!("r{i}"),
            public_key: vkey(i).0,
            address: format!("r{i}"),
            power: 1,
        })
        .collect()
}

/// Four replicated ledgers on one in-memory network.
struct Replicas {
    net: Arc<MemNet>,
    dirs: Vec<tempfile::TempDir>,
    ledgers: Vec<Arc<Ledger>>,
}

impl Replicas {
    fn start() -> Replicas {
        let net: Arc<MemNet> = Arc::default();
        let dirs: Vec<_> = (0..N).map(|_| tempfile::tempdir().unwrap()).collect();
        let ledgers = (0..N)
            .map(|i| {
                let mut cfg = test_config("test", &format!("r{i}"), seed(i), genesis());
                // A forged request is never decided: its submitter gives up after this.
                cfg.submit_timeout = Duration::from_secs(5);
                let l = Arc::new(
                    Ledger::open_replicated(
                        dirs[i].path().join("ledger.redb"),
                        LedgerConfig::default(),
                        cfg,
                        net.link(vkey(i)),
                        system_clock(),
                    )
                    .expect("open a replica"),
                );
                net.register(vkey(i), l.clone());
                l
            })
            .collect();
        Replicas { net, dirs, ledgers }
    }

    fn dir(&self, i: usize) -> PathBuf {
        self.dirs[i].path().to_path_buf()
    }

    /// Waits until every replica has committed height `h`.
    fn wait_all(&self, h: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for (i, l) in self.ledgers.iter().enumerate() {
            while l.height() < h {
                assert!(
                    Instant::now() < deadline,
                    "r{i} stuck at {} < {h}: {:?}",
                    l.height(),
                    l.replication_status()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Every replica holds the same chain, up to the lowest head (heights may still be decided
    /// while this runs: a Byzantine replica's pending requests keep waking heights).
    fn assert_same_chain(&self) {
        let low = self.ledgers.iter().map(|l| l.height()).min().unwrap();
        let at: Vec<_> = self
            .ledgers
            .iter()
            .map(|l| {
                l.store()
                    .read()
                    .unwrap()
                    .entry(low)
                    .unwrap()
                    .map(|e| e.hash)
            })
            .collect();
        assert!(
            at[0].is_some() && at.windows(2).all(|w| w[0] == w[1]),
            "entries at {low}: {at:?}"
        );
    }

    /// Every request committed on replica `i`, with whether it changed anything.
    fn committed_requests(&self, i: usize) -> Vec<(SignedRequest, bool)> {
        let l = &self.ledgers[i];
        let view = l.store().read().unwrap();
        let mut out = Vec::new();
        for h in 1..=l.height() {
            let e = view.entry(h).unwrap().expect("an entry at every height");
            let changed: BTreeSet<u32> = e.events.iter().map(|ev| ev.request).collect();
            for (k, r) in e.requests.iter().enumerate() {
                out.push((r.clone(), changed.contains(&(k as u32))));
            }
        }
        out
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..N {
            if let Some(l) = self.net.remove(&vkey(i)) {
                l.shutdown();
            }
        }
    }
}

/// Signs and submits `ops` as `actor` with `key`, under request id `id`.
fn submit_as(
    l: &Ledger,
    id: &str,
    actor: &str,
    key: &SigningKey,
    source: Source,
    ops: Vec<Op>,
) -> Result<u64, SubmitError> {
    let req = Request {
        id: id.into(),
        actor: actor.into(),
        source,
        ops,
        created_at_ms: now_ms(),
    };
    let caller = Caller {
        actor: actor.into(),
        public_key: key.verifying_key().to_bytes(),
    };
    l.submit(SignedRequest::sign(req, key), &caller)
        .map(|a| a.height)
}

fn admin() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

fn config_of(source: &serde_json::Value) -> SourceConfig {
    let obj: nexus_schemas::Object = serde_json::from_value(source.clone()).unwrap();
    SourceConfig::from_object(&obj).expect("a GitSource")
}

/// A replica's admission check that records its verdict on every git-sourced request.
struct Recording {
    inner: Arc<dyn Admission>,
    verdicts: Mutex<Vec<(String, Result<(), String>)>>,
}

impl Recording {
    fn new(inner: Arc<dyn Admission>) -> Arc<Recording> {
        Arc::new(Recording {
            inner,
            verdicts: Mutex::default(),
        })
    }

    fn note(&self, req: &SignedRequest, r: &Result<(), String>) {
        if matches!(req.request.source, Source::Gitops { .. }) {
            self.verdicts
                .lock()
                .unwrap()
                .push((req.request.id.clone(), r.clone()));
        }
    }

    fn verdicts(&self, id: &str) -> Vec<Result<(), String>> {
        let v = self.verdicts.lock().unwrap();
        v.iter()
            .filter(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

impl Admission for Recording {
    fn admit(&self, state: &State, req: &SignedRequest) -> Result<(), String> {
        let r = self.inner.admit(state, req);
        self.note(req, &r);
        r
    }

    fn admit_current(
        &self,
        state: &std::sync::RwLock<State>,
        req: &SignedRequest,
    ) -> Result<(), String> {
        let r = self.inner.admit_current(state, req);
        self.note(req, &r);
        r
    }
}

#[test]
fn honest_replicas_refuse_a_byzantine_replicas_forged_git_batch() {
    let repo = Repo::new();
    repo.write("deploy/a.yaml", &workload("a", 1));
    let c1 = repo.commit_push("one");
    // A commit git does hold, on another branch than the source's.
    git(&repo.work, &["checkout", "-q", "-b", "side"]);
    repo.write("deploy/miner.yaml", &workload("miner", 1));
    git(&repo.work, &["add", "-A"]);
    git(&repo.work, &["commit", "-q", "-m", "side"]);
    git(&repo.work, &["push", "-q", "origin", "side"]);
    let side = git(&repo.work, &["rev-parse", "HEAD"]);
    git(&repo.work, &["checkout", "-q", "main"]);

    // Every replica runs the real git admission check with its own mirrors.
    let r = Replicas::start();
    let checks: Vec<Arc<Recording>> = (0..N)
        .map(|i| {
            let pool = Arc::new(mirrors::MirrorPool::new(&r.dir(i).join("gitops")));
            let check = Recording::new(Arc::new(GitAdmission::new(pool, FetchOptions::default())));
            r.ledgers[i].set_admission(check.clone());
            check
        })
        .collect();
    let source = git_source(&repo.url(), true, false);
    let h = submit_as(
        &r.ledgers[0],
        "add-source",
        "user:admin",
        &admin(),
        Source::Cli,
        vec![apply(source.clone())],
    )
    .unwrap();
    r.wait_all(h);

    // The Byzantine replica is the one that proposes first at the next height, and it admits
    // anything (it runs modified code): its proposal carries whatever it was given.
    let set = consensus_set(&r.ledgers[0].state().validators).unwrap();
    let first = set.proposer(Height(h + 1), 0).key();
    let byz = (0..N).find(|i| vkey(*i) == first).unwrap();
    r.ledgers[byz].set_admission(Arc::new(AdmitAll));
    let honest: Vec<usize> = (0..N).filter(|i| *i != byz).collect();

    // What git really holds at c1, planned with a mirror of its own.
    let cfg = config_of(&source);
    let mirror = Mirrors::new(r.dir(byz).join("forger"))
        .open(&repo.url())
        .unwrap();
    let prep = prepare_sync(
        &mirror,
        &cfg,
        &FetchOptions::default(),
        &LiveObjects::new(),
        None,
    )
    .unwrap();
    let plan = &prep.plan;
    let miner = json!({"apiVersion": "nexus/v1", "kind": "Workload",
        "metadata": {"name": "miner"}, "spec": {"command": ["/bin/miner"]}});
    // 1. Manifests git never held, added to an otherwise honest sync of c1.
    let mut smuggled = ops_of(plan);
    smuggled.push(apply(miner));
    // 2. The honest ops and claim under a tree id git does not have for c1.
    let mut wrong_tree = source_of(plan, None);
    if let Source::Gitops { tree, .. } = &mut wrong_tree {
        *tree = "0".repeat(40);
    }
    // 3. A real commit with its real tree and claim, but not on the source's branch.
    let origin = GitRepo::open(&repo.origin).unwrap();
    let snap = origin.read_commit(&side, "deploy", &repo.url()).unwrap();
    let side_set = ManifestSet::of_snapshot(&snap);
    let off_branch = Source::Gitops {
        git_source: "default/apps".into(),
        repo: repo.url(),
        commit: side.clone(),
        tree: snap.provenance.tree.clone(),
        author: snap.provenance.author.clone(),
        committer: snap.provenance.committer.clone(),
        message: snap.provenance.message.clone(),
        claim: claim_digest(&side_set.claim()),
        forced_over: None,
    };
    let off_branch_ops: Vec<Op> = side_set
        .objects
        .values()
        .map(|o| Op::Apply {
            object: o.value.clone(),
            if_version: Some(0),
        })
        .collect();
    let forged = [
        ("forged-miner", source_of(plan, None), smuggled),
        ("forged-tree", wrong_tree, ops_of(plan)),
        ("forged-side-branch", off_branch, off_branch_ops),
    ];
    let actor = format!("replica:r{byz}");
    let submitted: Vec<_> = forged
        .iter()
        .cloned()
        .map(|(id, src, ops)| {
            let l = r.ledgers[byz].clone();
            let actor = actor.clone();
            std::thread::spawn(move || submit_as(&l, id, &actor, &signing(byz), src, ops))
        })
        .collect();

    // Every honest replica refuses to vote for the Byzantine batch, and refuses every forged
    // request for the reason git gives.
    let expected = [
        ("forged-miner", "git does not hold this object"),
        ("forged-tree", "tree does not match git"),
        (
            "forged-side-branch",
            &format!("commit {side} is not on branch main") as &str,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rejected: Vec<u64> = honest
            .iter()
            .map(|i| {
                r.ledgers[*i]
                    .replication_status()
                    .map_or(0, |s| s.rejected_proposals)
            })
            .collect();
        let refused = expected.iter().all(|(id, _)| {
            honest
                .iter()
                .any(|i| checks[*i].verdicts(id).iter().any(Result::is_err))
        });
        if refused && rejected.iter().all(|n| *n > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "honest replicas did not refuse the forged batch: rejected proposals {rejected:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (id, reason) in expected {
        for i in &honest {
            for v in checks[*i].verdicts(id) {
                let why = v.expect_err("an honest replica never admits a forged request");
                assert!(why.contains(reason), "r{i} on {id}: {why}");
            }
        }
    }

    // The honest sync of the real commit, written by an honest replica, is committed by all
    // four (the Byzantine one included) while the forged requests are still being pushed.
    let writer = honest[0];
    let hs = submit_as(
        &r.ledgers[writer],
        "honest-sync",
        &format!("replica:r{writer}"),
        &signing(writer),
        source_of(plan, None),
        ops_of(plan),
    )
    .unwrap();
    r.wait_all(hs);
    for (i, l) in r.ledgers.iter().enumerate() {
        assert_eq!(l.state().git_syncs["default/apps"].commit, c1, "r{i}");
        assert_eq!(
            l.get(&wl("a")).map(|o| o.owner),
            Some("gitops:default/apps".to_string()),
            "r{i}"
        );
        assert!(l.get(&wl("miner")).is_none(), "r{i}");
    }
    for i in &honest {
        assert!(
            checks[*i].verdicts("honest-sync").iter().any(Result::is_ok),
            "r{i} checked the honest sync against git itself"
        );
    }
    // The Byzantine replica's submitter gives up: none of its requests was ever decided.
    for (t, (id, ..)) in submitted.into_iter().zip(&forged) {
        let res = t.join().unwrap();
        assert!(res.is_err(), "{id} was committed at {res:?}");
    }
    r.assert_same_chain();
    for i in 0..N {
        let ids: Vec<String> = r
            .committed_requests(i)
            .into_iter()
            .map(|(req, _)| req.request.id)
            .collect();
        assert_eq!(ids, ["add-source", "honest-sync"], "r{i}");
    }
}

/// POSTs a push event for `default/apps`, signed with `secret`; the HTTP status.
fn post_webhook(addr: std::net::SocketAddr, secret: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = nexus_gitops::watch::sign_body(secret, body);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /hooks/git/default/apps HTTP/1.1\r\nHost: {addr}\r\nX-Hub-Signature-256: {sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The request that recorded `commit`, and its actor, on replica `i`.
fn writers_of(r: &Replicas, i: usize, commit: &str) -> Vec<(String, bool)> {
    r.committed_requests(i)
        .into_iter()
        .filter(|(req, _)| req.request.source.commit() == Some(commit))
        .map(|(req, changed)| (req.request.actor, changed))
        .collect()
}

async fn wait_synced(r: &Replicas, commit: &str) {
    eventually(&format!("every replica at {commit}"), || {
        r.ledgers.iter().all(|l| {
            l.state()
                .git_syncs
                .get("default/apps")
                .is_some_and(|g| g.commit == commit)
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_asked_of_a_replica_that_is_not_the_syncer_is_written_at_once() {
    let repo = Repo::new();
    repo.write("deploy/a.yaml", &workload("a", 1));
    let c1 = repo.commit_push("one");
    let r = Replicas::start();
    let secret_file = r.dir(0).join("hook.secret");
    std::fs::write(&secret_file, "s3cret").unwrap();
    let mut g = Vec::new();
    let mut hubs = Vec::new();
    for i in 0..N {
        let hub = crate::watch::Hub::start(r.ledgers[i].clone());
        let opts = GitOpsOptions {
            watch_local: false,
            webhook_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..GitOpsOptions::default()
        };
        let gi = GitOps::new(
            format!("r{i}"),
            signing(i),
            r.ledgers[i].clone(),
            r.dir(i).join("data"),
            opts,
        );
        gi.start(hub.subscribe()).await.unwrap();
        g.push(gi);
        hubs.push(hub);
    }
    // Polls an hour apart: a replica that is not the syncer would take over after 2h 5s.
    let mut source = git_source(&repo.url(), true, false);
    source["spec"]["webhookSecretFile"] = json!(secret_file.display().to_string());
    let l0 = r.ledgers[0].clone();
    tokio::task::spawn_blocking(move || {
        submit_as(
            &l0,
            "add-source",
            "user:admin",
            &admin(),
            Source::Cli,
            vec![apply(source)],
        )
    })
    .await
    .unwrap()
    .unwrap();
    let id = SourceId::new("default", "apps");
    let chosen: usize = syncer(&genesis(), &id).unwrap()[1..].parse().unwrap();
    let others: Vec<usize> = (0..N).filter(|i| *i != chosen).collect();

    // The first poll: only the chosen replica writes; the others leave it pending.
    wait_synced(&r, &c1).await;
    let actor = |i: usize| format!("replica:r{i}");
    assert_eq!(writers_of(&r, 0, &c1), [(actor(chosen), true)]);
    let pending = g[others[0]].statuses()[0].last_result.clone().unwrap();
    assert!(
        pending.contains(&format!("replica r{chosen} writes this source's syncs")),
        "{pending}"
    );

    // A push webhook that reaches another replica: that replica syncs now.
    repo.write("deploy/b.yaml", &workload("b", 1));
    let c2 = repo.commit_push("add b");
    let addr = g[others[0]].webhook_addr().unwrap();
    let code = tokio::task::spawn_blocking(move || post_webhook(addr, b"s3cret"))
        .await
        .unwrap();
    assert_eq!(code, 202);
    wait_synced(&r, &c2).await;
    assert_eq!(writers_of(&r, 0, &c2), [(actor(others[0]), true)]);
    assert!(r.ledgers.iter().all(|l| l.get(&wl("b")).is_some()));

    // `nexus gitops sync` asked of a third replica: answered once its sync is committed.
    repo.write("deploy/a.yaml", &workload("a", 2));
    let c3 = repo.commit_push("scale a");
    let st = g[others[1]]
        .sync_now(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(st.error, None);
    assert_eq!(st.synced.map(|c| c.commit), Some(c3.clone()));
    assert_eq!(st.recorded_commit.as_deref(), Some(c3.as_str()));
    wait_synced(&r, &c3).await;
    assert_eq!(writers_of(&r, 0, &c3), [(actor(others[1]), true)]);

    // Two replicas asked at once write the same commit: one request changes the cluster; the
    // other, planned against the same versions, changes nothing, and both report it synced.
    repo.write("deploy/c.yaml", &workload("c", 1));
    let c4 = repo.commit_push("add c");
    let (a, b) = tokio::join!(
        g[chosen].sync_now(&id, Duration::from_secs(30)),
        g[others[2]].sync_now(&id, Duration::from_secs(30)),
    );
    for st in [a.unwrap(), b.unwrap()] {
        assert_eq!(st.error, None, "{st:?}");
        assert_eq!(st.synced.map(|c| c.commit), Some(c4.clone()));
    }
    wait_synced(&r, &c4).await;
    let writes = writers_of(&r, 0, &c4);
    assert_eq!(
        writes.iter().filter(|(_, changed)| *changed).count(),
        1,
        "{writes:?}"
    );
    let created = r.ledgers[0].get(&wl("c")).expect("c was created");
    assert_eq!(created.generation, 1, "written once");
    for l in &r.ledgers {
        assert_eq!(
            l.get(&wl("c")).map(|o| (o.generation, o.created_height)),
            Some((1, created.created_height))
        );
    }
    r.assert_same_chain();
    for gi in &g {
        gi.stop();
    }
    for hub in &hubs {
        hub.stop();
    }
}
