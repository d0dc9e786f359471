//! GitOps on a replica against real git (the `git` command): the admission check refuses forged
//! git-sourced requests and accepts honest ones; the controller converges, prunes, heals drift,
//! leaves other owners' objects alone, rejects an invalid commit whole, records a force-push,
//! and picks up a push through the notify watcher.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use nexus_gitops::sync::LiveObjects;
use nexus_gitops::{FetchOptions, Mirrors, SourceConfig, SourceId, prepare_sync};
use nexus_ledger::{
    Caller, Ledger, LedgerConfig, Op, Request, RequestError, SignedRequest, Source, SubmitError,
};
use nexus_schemas::{Kind, ObjectKey};
use serde_json::json;

use super::request::{ops_of, source_of};
use super::*;

pub(super) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice Example")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "CI Bot")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(super) struct Repo {
    pub _dir: tempfile::TempDir,
    pub origin: PathBuf,
    pub work: PathBuf,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        git(dir.path(), &["clone", "-q", "origin.git", "work"]);
        let work = dir.path().join("work");
        git(&work, &["checkout", "-q", "-b", "main"]);
        Repo {
            origin: dir.path().join("origin.git"),
            work,
            _dir: dir,
        }
    }
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    pub fn commit_push(&self, msg: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&self.work, &["push", "-q", "--force", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
    pub fn url(&self) -> String {
        self.origin.display().to_string()
    }
}

pub(super) fn workload(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/{name}]\n  replicas: {replicas}\n"
    )
}

pub(super) fn wl(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Workload, "default", name)
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Submits `ops` as `actor` signed with `seed`.
fn submit(
    l: &Ledger,
    actor: &str,
    seed: u8,
    source: Source,
    ops: Vec<Op>,
) -> Result<u64, SubmitError> {
    let req = Request {
        id: format!("{actor}-{}", rand_id()),
        actor: actor.into(),
        source,
        ops,
        created_at_ms: 0,
    };
    let caller = Caller {
        actor: actor.into(),
        public_key: key(seed).verifying_key().to_bytes(),
    };
    l.submit(SignedRequest::sign(req, &key(seed)), &caller)
        .map(|a| a.height)
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub(super) fn git_source(url: &str, prune: bool, self_heal: bool) -> serde_json::Value {
    json!({"apiVersion": "nexus/v1", "kind": "GitSource", "metadata": {"name": "apps"},
           "spec": {"url": url, "branch": "main", "path": "deploy", "interval": "1h",
                    "prune": prune, "selfHeal": self_heal}})
}

pub(super) fn apply(object: serde_json::Value) -> Op {
    Op::Apply {
        object,
        if_version: None,
    }
}

fn object(l: &Ledger, k: &ObjectKey) -> Option<nexus_ledger::ObjectState> {
    l.get(k)
}

#[test]
fn forged_git_requests_are_refused_and_honest_ones_pass() {
    let repo = Repo::new();
    repo.write("deploy/a.yaml", &workload("a", 1));
    let c1 = repo.commit_push("one");
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("l.redb"), LedgerConfig::default()).unwrap();
    let pool = Arc::new(mirrors::MirrorPool::new(&dir.path().join("replica")));
    ledger.set_admission(Arc::new(GitAdmission::new(
        pool.clone(),
        FetchOptions::default(),
    )));
    submit(
        &ledger,
        "user:admin",
        1,
        Source::Cli,
        vec![apply(git_source(&repo.url(), true, false))],
    )
    .unwrap();

    // The proposer's own mirror and plan.
    let cfg = SourceConfig::new(SourceId::new("default", "apps"), {
        let obj: nexus_schemas::Object =
            serde_json::from_value(git_source(&repo.url(), true, false)).unwrap();
        match obj.spec {
            nexus_schemas::Spec::GitSource(g) => g,
            _ => unreachable!(),
        }
    });
    let proposer = Mirrors::new(dir.path().join("proposer"))
        .open(&repo.url())
        .unwrap();
    let prep = prepare_sync(
        &proposer,
        &cfg,
        &FetchOptions::default(),
        &LiveObjects::new(),
        None,
    )
    .unwrap();
    let replica = |source: Source, ops: Vec<Op>| submit(&ledger, "replica:r0", 7, source, ops);
    let height = ledger.height();

    // Manifests git never held, smuggled into an otherwise honest request.
    let mut ops = ops_of(&prep.plan);
    ops.push(apply(json!({"apiVersion": "nexus/v1", "kind": "Workload",
        "metadata": {"name": "miner"}, "spec": {"command": ["/bin/miner"]}})));
    let err = replica(source_of(&prep.plan, None), ops).unwrap_err();
    let SubmitError::Refused(msg) = &err else {
        panic!("{err}")
    };
    assert!(msg.contains("git does not hold this object"), "{msg}");
    // Right ops, but a claim of objects git does not hold.
    let mut src = source_of(&prep.plan, None);
    if let Source::Gitops { claim, .. } = &mut src {
        *claim = "00".repeat(32);
    }
    let err = replica(src, ops_of(&prep.plan)).unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
    // A commit git does not have.
    let mut src = source_of(&prep.plan, None);
    if let Source::Gitops { commit, .. } = &mut src {
        *commit = "ab".repeat(20);
    }
    let err = replica(src, ops_of(&prep.plan)).unwrap_err();
    assert!(
        err.to_string().contains("git does not hold commit"),
        "{err}"
    );
    // A first sync that claims to be a force-push.
    let err = replica(source_of(&prep.plan, Some(c1.clone())), ops_of(&prep.plan)).unwrap_err();
    assert!(err.to_string().contains("force-push"), "{err}");
    // A user cannot write git-sourced changes at all.
    let err = submit(
        &ledger,
        "user:admin",
        1,
        source_of(&prep.plan, None),
        ops_of(&prep.plan),
    )
    .unwrap_err();
    assert!(
        matches!(err, SubmitError::Request(RequestError::NotAllowed(_))),
        "{err}"
    );
    assert_eq!(ledger.height(), height, "refused requests write nothing");
    assert!(object(&ledger, &wl("miner")).is_none());

    // The honest request is accepted and recorded.
    replica(source_of(&prep.plan, None), ops_of(&prep.plan)).unwrap();
    assert_eq!(
        object(&ledger, &wl("a")).unwrap().owner,
        "gitops:default/apps"
    );
    assert_eq!(ledger.state().git_syncs["default/apps"].commit, c1);
    // The check validated c1 from this replica's mirror once; a later check of c1 reuses it.
    let known = pool.known_manifests(&repo.url(), &c1, "deploy").unwrap();
    assert_eq!(known.objects.keys().collect::<Vec<_>>(), [&wl("a")]);
}

/// Waits until `f` holds (the watcher and drift triggers run in the background).
pub(super) async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_converges_prunes_heals_and_records_force_pushes() {
    let repo = Repo::new();
    repo.write("deploy/a.yaml", &workload("a", 1));
    repo.write("deploy/b.yaml", &workload("b", 1));
    repo.write("deploy/c.yaml", &workload("c", 1));
    let c1 = repo.commit_push("first");
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        Arc::new(Ledger::open(dir.path().join("l.redb"), LedgerConfig::default()).unwrap());
    // `c` exists already, created by apply: a conflict the source must leave alone.
    let c_by_hand: serde_json::Value = json!({"apiVersion": "nexus/v1", "kind": "Workload",
        "metadata": {"name": "c"}, "spec": {"command": ["/bin/c"], "replicas": 5}});
    submit(
        &ledger,
        "user:admin",
        1,
        Source::Cli,
        vec![apply(c_by_hand.clone())],
    )
    .unwrap();
    let hub = crate::watch::Hub::start(ledger.clone());
    let g = GitOps::new(
        "r0".into(),
        key(7),
        ledger.clone(),
        dir.path().join("data"),
        GitOpsOptions::default(),
    );
    g.start(hub.subscribe()).await.unwrap();
    submit(
        &ledger,
        "user:admin",
        1,
        Source::Cli,
        vec![apply(git_source(&repo.url(), true, true))],
    )
    .unwrap();
    let id = SourceId::new("default", "apps");
    eventually("the source", || g.lock().sources.contains_key(&id)).await;
    let st = g.sync_now(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(st.error, None);
    assert_eq!(st.synced.as_ref().unwrap().commit, c1);
    assert_eq!(
        object(&ledger, &wl("a")).unwrap().owner,
        "gitops:default/apps"
    );
    assert_eq!(
        object(&ledger, &wl("b")).unwrap().owner,
        "gitops:default/apps"
    );
    let c = object(&ledger, &wl("c")).unwrap();
    assert_eq!(
        (c.owner.as_str(), c.object["spec"]["replicas"].as_u64()),
        ("apply", Some(5))
    );
    assert_eq!(st.conflicts.len(), 1);
    assert_eq!(
        (
            st.conflicts[0].object.as_str(),
            st.conflicts[0].owner.as_str()
        ),
        ("Workload/default/c", "apply")
    );
    assert_eq!(ledger.state().git_syncs["default/apps"].commit, c1);

    // Drift: someone scales `a` by hand; selfHeal reverts it (woken by the drift itself).
    let mut a = object(&ledger, &wl("a")).unwrap().object;
    a["spec"]["replicas"] = json!(9);
    submit(&ledger, "user:admin", 1, Source::Cli, vec![apply(a)]).unwrap();
    eventually("selfHeal", || {
        object(&ledger, &wl("a")).unwrap().object["spec"]["replicas"] == json!(1)
    })
    .await;
    assert_eq!(object(&ledger, &wl("a")).unwrap().last_actor, "replica:r0");

    // Prune: `b` leaves git.
    std::fs::remove_file(repo.work.join("deploy/b.yaml")).unwrap();
    let c2 = repo.commit_push("drop b");
    let st = g.sync_now(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(st.synced.as_ref().unwrap().commit, c2);
    assert!(object(&ledger, &wl("b")).is_none());

    // An invalid manifest rejects the whole commit, with its location; nothing changes.
    repo.write("deploy/a.yaml", &workload("a", 3));
    repo.write(
        "deploy/bad.yaml",
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: bad\nspec:\n  command: [/bin/bad]\n  replicas: many\n",
    );
    let bad = repo.commit_push("broken");
    let height = ledger.height();
    let st = g.sync_now(&id, Duration::from_secs(30)).await.unwrap();
    let err = st.error.clone().unwrap();
    assert!(
        err.contains(&bad[..12]) && err.contains("deploy/bad.yaml:7:"),
        "{err}"
    );
    assert!(
        st.diagnostics
            .iter()
            .any(|d| d.file == "deploy/bad.yaml" && d.line == 7)
    );
    assert_eq!(
        st.synced.as_ref().unwrap().commit,
        c2,
        "still on the last good commit"
    );
    assert_eq!(ledger.height(), height);
    assert_eq!(
        object(&ledger, &wl("a")).unwrap().object["spec"]["replicas"],
        json!(1)
    );

    // A force-push rewrites history: synced to the new head and recorded as such.
    git(&repo.work, &["reset", "-q", "--hard", &c1]);
    repo.write("deploy/a.yaml", &workload("a", 2));
    std::fs::remove_file(repo.work.join("deploy/b.yaml")).unwrap();
    let rewritten = repo.commit_push("rewrite");
    let st = g.sync_now(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(st.error, None);
    assert_eq!(st.synced.as_ref().unwrap().commit, rewritten);
    let entry = ledger
        .store()
        .read()
        .unwrap()
        .entry(ledger.height())
        .unwrap()
        .unwrap();
    let Source::Gitops {
        commit,
        forced_over,
        ..
    } = &entry.requests[0].request.source
    else {
        panic!("the last entry is the sync");
    };
    assert_eq!(
        (commit, forced_over.as_deref()),
        (&rewritten, Some(c2.as_str()))
    );

    // The notify watcher: a push lands without anyone asking.
    repo.write("deploy/d.yaml", &workload("d", 1));
    repo.commit_push("add d");
    eventually("the watcher", || object(&ledger, &wl("d")).is_some()).await;
    assert_eq!(
        object(&ledger, &wl("c")).unwrap().object["spec"]["replicas"],
        json!(5)
    );
    g.stop();
    hub.stop();
}

fn ssh_key(dir: &Path, name: &str) -> Option<(String, String)> {
    let path = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    Some((path.display().to_string(), public.trim().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_with_signers_syncs_only_signed_commits() {
    let repo = Repo::new();
    let keys = repo._dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let Some((alice_key, alice_pub)) = ssh_key(&keys, "alice") else {
        println!("skipped: ssh-keygen is not installed (apt-get install openssh-client)");
        return;
    };
    let signed_push = |msg: &str| {
        git(&repo.work, &["add", "-A"]);
        git(
            &repo.work,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={alice_key}"),
                "commit",
                "-q",
                "-S",
                "-m",
                msg,
            ],
        );
        git(&repo.work, &["push", "-q", "origin", "main"]);
        git(&repo.work, &["rev-parse", "HEAD"])
    };
    repo.write("deploy/a.yaml", &workload("a", 1));
    let good = signed_push("signed");
    let dir = tempfile::tempdir().unwrap();
    let ledger =
        Arc::new(Ledger::open(dir.path().join("l.redb"), LedgerConfig::default()).unwrap());
    let hub = crate::watch::Hub::start(ledger.clone());
    let opts = GitOpsOptions {
        watch_local: false,
        ..GitOpsOptions::default()
    };
    let g = GitOps::new(
        "r0".into(),
        key(7),
        ledger.clone(),
        dir.path().join("data"),
        opts,
    );
    g.start(hub.subscribe()).await.unwrap();
    let mut src = git_source(&repo.url(), true, false);
    src["spec"]["verify"] = json!({"ssh": [format!("alice@example.com {alice_pub}")]});
    submit(&ledger, "user:admin", 1, Source::Cli, vec![apply(src)]).unwrap();
    let id = SourceId::new("default", "apps");
    let st = g.sync_now(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(st.error, None);
    assert_eq!(st.synced.as_ref().unwrap().commit, good);
    assert_eq!(st.signed_by.as_deref(), Some("alice@example.com"));
    assert!(object(&ledger, &wl("a")).is_some());

    // An unsigned commit is refused whole, by the sync and (were it proposed) by every replica.
    repo.write("deploy/b.yaml", &workload("b", 1));
    let unsigned = repo.commit_push("unsigned");
    let height = ledger.height();
    let st = g.sync_now(&id, Duration::from_secs(30)).await.unwrap();
    let err = st.error.unwrap();
    assert!(
        err.contains(&unsigned[..12]) && err.contains("not signed"),
        "{err}"
    );
    assert_eq!(st.synced.unwrap().commit, good);
    assert_eq!(ledger.height(), height);
    assert!(object(&ledger, &wl("b")).is_none());
    g.stop();
    hub.stop();
}
