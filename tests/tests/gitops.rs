//! GitOps end to end: a real `nexus server`, a bare repository and a clone driven by the real
//! `git` command. Pushes converge the cluster (objects owned by `gitops:default/apps`), a
//! deletion is pruned, an invalid manifest is rejected with its location while the cluster stays
//! unchanged, a missing repository is only a sync error, a force-push is synced and recorded, a
//! signed webhook triggers a sync, `nexus plan` reads the live cluster (and falls back to offline),
//! `nexus audit --commit` and `nexus history` name the commit and its author, and a forged
//! git-sourced request signed with the replica's own key is refused.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use expect_test::expect;
use nexus_api::client::{GetRequest, GetResponse, SubmitRequest, SubmitResponse};
use nexus_api::kinds;
use nexus_cli::client::Session;
use nexus_cli::config::{GitopsConfig, ServerConfig};
use nexus_ledger::{Op, Source};
use nexus_tests::fleet::eventually;
use nexus_tests::{Cluster, text};
use nexus_transport::ErrorCode;
use serde_json::{Value, json};

fn git(dir: &Path, args: &[&str]) -> String {
    git_at(dir, args, None)
}

/// `git` with author and committer dates fixed to `date` when given, so commit ids (and output
/// that shows them) are the same on every run.
fn git_at(dir: &Path, args: &[&str], date: Option<&str>) -> String {
    let mut cmd = Command::new("git");
    if let Some(d) = date {
        cmd.env("GIT_AUTHOR_DATE", d).env("GIT_COMMITTER_DATE", d);
    }
    let out = cmd
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice Example")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "CI Bot")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// A bare "origin" and a clone people commit in.
struct Repo {
    _dir: tempfile::TempDir,
    origin: PathBuf,
    work: PathBuf,
    /// Commit dates, fixed for output snapshots that show commit ids.
    date: Option<&'static str>,
}

impl Repo {
    /// A repository whose commits all carry the same date: commit ids depend on content only.
    fn dated() -> Repo {
        Repo {
            date: Some("2026-01-02T03:04:05Z"),
            ..Repo::new()
        }
    }
    fn new() -> Repo {
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
            date: None,
        }
    }
    fn write(&self, rel: &str, text: &str) {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.work.join(rel)).unwrap();
    }
    fn git(&self, args: &[&str]) -> String {
        git_at(&self.work, args, self.date)
    }
    /// Commits everything and pushes; returns the commit.
    fn commit_push(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["push", "-q", "--force", "origin", "HEAD:main"]);
        self.git(&["rev-parse", "HEAD"])
    }
    fn url(&self) -> String {
        self.origin.display().to_string()
    }
}

fn workload(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  command: [\"sleep\", \"3600\"]\n"
    )
}

/// A started cluster with the given `gitops:` section in server.yaml.
fn cluster(gitops: Option<GitopsConfig>) -> Cluster {
    let mut c = Cluster::init();
    let mut cfg = ServerConfig::load(&c.server_yaml()).unwrap();
    cfg.gitops = gitops;
    cfg.save(&c.server_yaml()).unwrap();
    c.start();
    c
}

/// `nexus get KIND -o json` as (name -> object info).
fn objects(c: &Cluster, kind: &str) -> Vec<Value> {
    let out = c.nexus(&["get", kind, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn names(c: &Cluster, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = objects(c, kind)
        .iter()
        .map(|o| {
            o["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

fn replicas(c: &Cluster, name: &str) -> Option<u64> {
    objects(c, "workload")
        .into_iter()
        .find(|o| o["object"]["metadata"]["name"] == name)
        .and_then(|o| o["object"]["spec"]["replicas"].as_u64())
}

fn status_json(c: &Cluster, name: &str) -> Value {
    let out = c.nexus(&["gitops", "status", name, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["sources"][0].clone()
}

/// The ledger's height, from `nexus audit verify` ("... at height N) ...").
fn height(c: &Cluster) -> u64 {
    let out = text(&c.nexus(&["audit", "verify"]).stdout);
    out.split("at height ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|h| h.trim().parse().ok())
        .unwrap_or_else(|| panic!("no height in {out:?}"))
}

/// Waits until `f` holds, showing the server log on failure.
fn wait_until(c: &Cluster, what: &str, mut f: impl FnMut() -> bool) {
    eventually(
        Duration::from_secs(30),
        what,
        || c.server_log(),
        || f().then_some(()),
    );
}

fn add_source(c: &Cluster, repo: &Repo, extra: &[&str]) {
    let url = repo.url();
    let mut args = vec![
        "gitops", "add", "apps", "--url", &url, "--path", "deploy", "--wait",
    ];
    args.extend_from_slice(extra);
    let out = c.nexus(&args);
    assert!(
        out.status.success(),
        "gitops add: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn pushes_converge_prune_reject_invalid_commits_and_are_audited() {
    let repo = Repo::new();
    repo.write("deploy/web.yaml", &workload("web", 1));
    repo.write("deploy/api.yaml", &workload("api", 2));
    repo.write("README.md", "not a manifest\n");
    let c1 = repo.commit_push("Deploy web and api");
    let c = cluster(None);

    add_source(&c, &repo, &["--prune"]);
    assert_eq!(names(&c, "workload"), ["api", "web"]);
    for o in objects(&c, "workload") {
        assert_eq!(o["owner"], "gitops:default/apps", "{o}");
        assert_eq!(o["last_actor"], "replica:r0", "{o}");
    }

    // A push lands without anyone asking (the notify watcher on the local repository).
    repo.write("deploy/web.yaml", &workload("web", 3));
    repo.commit_push("Scale web");
    wait_until(&c, "web scaled from git", || replicas(&c, "web") == Some(3));

    // Deleting a manifest deletes the object (prune).
    repo.remove("deploy/api.yaml");
    let c3 = repo.commit_push("Retire api");
    wait_until(&c, "api pruned", || names(&c, "workload") == ["web"]);

    // An invalid manifest rejects the whole commit, with its location; nothing changes.
    repo.write("deploy/web.yaml", &workload("web", 5));
    repo.write(
        "deploy/bad.yaml",
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: bad\nspec:\n  command: [sleep]\n  replicas: lots\n",
    );
    let bad = repo.commit_push("Break things");
    let before = height(&c);
    let out = c.nexus(&["gitops", "sync", "apps"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("commit {} rejected", &bad[..12])),
        "{shown}"
    );
    assert!(shown.contains("deploy/bad.yaml:7:"), "{shown}");
    let st = status_json(&c, "apps");
    assert_eq!(
        st["synced"]["commit"], c3,
        "still on the last good commit: {st}"
    );
    assert_eq!(st["head"]["commit"], bad);
    assert_eq!(st["diagnostics"][0]["file"], "deploy/bad.yaml");
    assert_eq!(st["diagnostics"][0]["line"], 7);
    assert_eq!(replicas(&c, "web"), Some(3), "the cluster is unchanged");
    assert_eq!(height(&c), before, "nothing was written");
    let table = text(&c.nexus(&["gitops", "status"]).stdout);
    assert!(
        table.contains("Error") && table.contains("deploy/bad.yaml:7:"),
        "{table}"
    );

    // Fixing it syncs again.
    repo.remove("deploy/bad.yaml");
    let fixed = repo.commit_push("Fix things");
    wait_until(&c, "the fix synced", || replicas(&c, "web") == Some(5));
    let st = status_json(&c, "apps");
    assert_eq!(st["synced"]["commit"], fixed);
    assert!(st["error"].is_null(), "{st}");

    // A source whose repository does not exist is a sync error and nothing else.
    let out = c.nexus(&[
        "gitops",
        "add",
        "missing",
        "--url",
        "/nonexistent/nexus/repo.git",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let st = status_json(&c, "missing");
    assert!(
        st["error"]
            .as_str()
            .unwrap_or_default()
            .contains("/nonexistent/nexus/repo.git"),
        "{st}"
    );
    assert!(status_json(&c, "apps")["error"].is_null());
    assert_eq!(names(&c, "workload"), ["web"]);

    // The audit log and history name the commit and its author.
    let out = c.nexus(&["audit", "--commit", &c1[..10]]);
    let audit = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        audit.contains(&c1[..12]) && audit.contains("Alice Example"),
        "{audit}"
    );
    assert!(
        audit.contains("workload/default/api") && audit.contains("workload/default/web"),
        "{audit}"
    );
    let out = c.nexus(&["audit", "--commit", &c1, "-o", "json"]);
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["actor"], "replica:r0");
    assert_eq!(first["source"]["commit"], c1);
    assert_eq!(
        first["source"]["author"],
        "Alice Example <alice@example.com>"
    );
    assert_eq!(first["source"]["git_source"], "default/apps");
    let history = text(&c.nexus(&["history", "workload/web"]).stdout);
    assert!(
        history.contains("Alice Example") && history.contains("\"Scale web\""),
        "{history}"
    );
    let verify = c.nexus(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}

#[test]
fn a_force_push_is_synced_to_the_new_head_and_recorded() {
    let repo = Repo::new();
    repo.write("deploy/web.yaml", &workload("web", 1));
    let c1 = repo.commit_push("one");
    repo.write("deploy/web.yaml", &workload("web", 2));
    let c2 = repo.commit_push("two");
    let c = cluster(None);
    add_source(&c, &repo, &[]);
    assert_eq!(replicas(&c, "web"), Some(2));

    // Rewrite history: drop `two`, commit something else, force-push.
    repo.git(&["reset", "-q", "--hard", &c1]);
    repo.write("deploy/web.yaml", &workload("web", 3));
    let rewritten = repo.commit_push("rewritten");
    let out = c.nexus(&["gitops", "sync", "apps", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The sync may already have run from the watcher; either way the head is the new one.
    assert_eq!(st["synced"]["commit"], rewritten, "{st}");
    assert_eq!(replicas(&c, "web"), Some(3));

    let out = c.nexus(&["audit", "--commit", &rewritten, "-o", "json"]);
    let rec: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(rec["source"]["forced_over"], c2, "{rec}");
    let table = text(&c.nexus(&["audit", "--commit", &rewritten]).stdout);
    assert!(
        table.contains(&format!("force-push over {}", &c2[..12])),
        "{table}"
    );
}

/// POSTs `body` to the webhook with `signature`; returns the status code.
fn post_hook(addr: &str, path: &str, body: &[u8], signature: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_signed_webhook_triggers_a_sync() {
    let repo = Repo::new();
    repo.write("deploy/web.yaml", &workload("web", 1));
    repo.commit_push("one");
    // No notify watcher, so only the webhook (or an hourly poll) can notice a push.
    let c = cluster(Some(GitopsConfig {
        webhook_listen: Some("127.0.0.1:0".into()),
        watch_local: Some(false),
        ..GitopsConfig::default()
    }));
    let secret = c.dir.path().join("hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    add_source(
        &c,
        &repo,
        &[
            "--interval",
            "1h",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    assert_eq!(names(&c, "workload"), ["web"]);
    let out = c.nexus(&["gitops", "status", "-o", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let addr = all["webhook"]
        .as_str()
        .expect("the webhook address")
        .to_string();
    assert!(
        all["sources"][0]["triggers"]
            .to_string()
            .contains("webhook"),
        "{all}"
    );

    repo.write("deploy/api.yaml", &workload("api", 1));
    let pushed = repo.commit_push("add api");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        names(&c, "workload"),
        ["web"],
        "nothing watches the repository"
    );

    let body = format!(r#"{{"ref":"refs/heads/main","after":"{pushed}"}}"#);
    let good = nexus_gitops::watch::sign_body(b"s3cret", body.as_bytes());
    let bad = nexus_gitops::watch::sign_body(b"guess", body.as_bytes());
    assert_eq!(
        post_hook(&addr, "/hooks/git/apps", body.as_bytes(), &bad),
        401
    );
    assert_eq!(
        post_hook(&addr, "/hooks/git/other", body.as_bytes(), &good),
        404
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        names(&c, "workload"),
        ["web"],
        "a bad signature syncs nothing"
    );
    assert_eq!(
        post_hook(&addr, "/hooks/git/default/apps", body.as_bytes(), &good),
        202
    );
    wait_until(&c, "the webhook's sync", || {
        names(&c, "workload") == ["api", "web"]
    });
    let st = status_json(&c, "apps");
    assert_eq!(st["synced"]["commit"], pushed);
    assert_eq!(st["last_trigger"], "webhook", "{st}");
}

#[test]
fn plan_reads_the_live_cluster_and_falls_back_to_offline() {
    let repo = Repo::dated();
    repo.write("deploy/web.yaml", &workload("web", 1));
    repo.write("deploy/api.yaml", &workload("api", 1));
    repo.commit_push("base");
    let mut c = cluster(None);
    add_source(&c, &repo, &["--prune"]);

    // A pull request: scale web, add db, remove api.
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write("deploy/web.yaml", &workload("web", 4));
    repo.write("deploy/db.yaml", &workload("db", 1));
    repo.remove("deploy/api.yaml");
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "feature"]);
    // Drift: someone scaled web by hand; the merge overwrites it.
    let by_hand = c.dir.path().join("web.yaml");
    std::fs::write(&by_hand, workload("web", 2)).unwrap();
    let out = c.nexus(&["apply", "-f", by_hand.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let work = repo.work.to_str().unwrap().to_string();
    let plan = |c: &Cluster, extra: &[&str]| {
        let mut args = vec![
            "plan", "--repo", &work, "--base", "main", "--head", "feature",
        ];
        args.extend_from_slice(extra);
        c.nexus(&args)
    };
    // Commit dates are fixed, so the report (commit ids included) is the same on every run.
    let out = plan(&c, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    expect![[r#"
        nexus plan for default/apps (path "deploy")
          base main         6d29c333f2a2 "base"
          head feature      252e2fb31c2f "feature"
          live: cluster "local"
          prune: on, selfHeal: off

        Changes to the cluster:
        - Workload default/api (delete, prune)
        + Workload default/db (create)
        ~ Workload default/web (update)
            spec.replicas: 2 -> 4

        Drift (owned objects changed outside git):
        ~ Workload default/web modified: overwritten by this merge
            spec.replicas: git 1 -> live 2

        Git, base -> head: 1 to create, 1 to update, 1 to delete, 0 unchanged
        Plan: 1 to create, 1 to update, 1 to delete, 0 unchanged; 1 drifted
    "#]]
    .assert_eq(&text(&out.stdout));
    let out = plan(&c, &["-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["live"]["type"], "cluster", "{report}");
    assert_eq!(report["source"]["name"], "apps");
    let out = plan(&c, &["-o", "markdown"]);
    assert_eq!(out.status.code(), Some(1));
    expect![[r####"
        ### nexus plan: `default/apps`

        **head** `252e2fb31c2f` feature · **base** `6d29c333f2a2` (main) · path "deploy" · live: cluster "local" · prune on, selfHeal off

        **1 to create, 1 to update, 1 to delete**, 0 unchanged · 1 drifted

        | | Kind | Namespace | Name | Details |
        |---|---|---|---|---|
        | 🗑️ delete | Workload | default | `api` | pruned: gone from git |
        | ➕ create | Workload | default | `db` |  |
        | ✏️ update | Workload | default | `web` | 1 field(s) |

        <details><summary>delete Workload <code>default/api</code></summary>

        ```json
        {
          "apiVersion": "nexus/v1",
          "kind": "Workload",
          "metadata": {
            "labels": {},
            "name": "api",
            "namespace": "default"
          },
          "spec": {
            "command": [
              "sleep",
              "3600"
            ],
            "env": {},
            "placement": {
              "maxPerNode": 0,
              "nodeSelector": {}
            },
            "ports": [],
            "replicas": 1,
            "resources": {
              "cpu": "100m",
              "gpu": 0,
              "memory": "128Mi"
            },
            "restartPolicy": "Always",
            "rollingUpdate": {
              "maxSurge": 1,
              "maxUnavailable": 0
            },
            "runtime": "process",
            "terminationGracePeriodSeconds": 10
          }
        }
        ```

        </details>

        <details><summary>create Workload <code>default/db</code></summary>

        ```json
        {
          "apiVersion": "nexus/v1",
          "kind": "Workload",
          "metadata": {
            "labels": {},
            "name": "db",
            "namespace": "default"
          },
          "spec": {
            "command": [
              "sleep",
              "3600"
            ],
            "env": {},
            "placement": {
              "maxPerNode": 0,
              "nodeSelector": {}
            },
            "ports": [],
            "replicas": 1,
            "resources": {
              "cpu": "100m",
              "gpu": 0,
              "memory": "128Mi"
            },
            "restartPolicy": "Always",
            "rollingUpdate": {
              "maxSurge": 1,
              "maxUnavailable": 0
            },
            "runtime": "process",
            "terminationGracePeriodSeconds": 10
          }
        }
        ```

        </details>

        <details><summary>update Workload <code>default/web</code></summary>

        | Field | Live | After merge |
        |---|---|---|
        | `spec.replicas` | `2` | `4` |

        </details>

        #### Drift: owned objects changed outside git

        | Object | Change | Outcome |
        |---|---|---|
        | `Workload default/web` | `spec.replicas` `1` → `2` | overwritten by this merge |

        <sub>git, base → head: 1 to create, 1 to update, 1 to delete, 0 unchanged</sub>
    "####]].assert_eq(&text(&out.stdout));

    // Nothing to merge: exit 0 (the drift stays: selfHeal is off).
    let out = c.nexus(&["plan", "--repo", &work, "--base", "main", "--head", "main"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // An invalid head commit: exit 2 with the location.
    repo.write("deploy/db.yaml", "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: db\nspec:\n  command: [x]\n  replicas: -1\n");
    repo.git(&["commit", "-q", "-am", "broken"]);
    let out = plan(&c, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    expect![[r#"
        nexus plan for default/apps (path "deploy")
          base main         6d29c333f2a2 "base"
          head feature      05f3c5a4a163 "broken"
          live: cluster "local"
          prune: on, selfHeal: off

        Error: head would be rejected whole; nothing would change.
        deploy/db.yaml:7:13: error: spec.replicas must be between 0 and 100000, found -1
            help: spec.replicas: Number of replicas to run (0 stops them all). Default 1.
    "#]]
    .assert_eq(&text(&out.stdout));
    repo.git(&["reset", "-q", "--hard", "HEAD~1"]);

    // Without a reachable cluster the plan is made offline, and says so.
    c.stop();
    let out = plan(&c, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let note = text(&out.stderr);
    assert!(
        note.starts_with("note: no cluster read (")
            && note
                .contains("); planning offline: the live state is assumed to be main fully synced"),
        "{note}"
    );
    expect![[r#"
        nexus plan for default/work (the whole repository)
          base main         6d29c333f2a2 "base"
          head feature      252e2fb31c2f "feature"
          live: assumed to be base, fully synced (no cluster given)
          prune: off, selfHeal: off

        Changes to the cluster:
        + Workload default/db (create)
        ~ Workload default/web (update)
            spec.replicas: 1 -> 4

        Left in the cluster (gone from git; prune is off):
          Workload default/api

        Git, base -> head: 1 to create, 1 to update, 1 to delete, 0 unchanged
        Plan: 1 to create, 1 to update, 0 to delete, 0 unchanged; 1 not pruned
    "#]]
    .assert_eq(&text(&out.stdout));
}

#[test]
fn a_forged_git_request_signed_by_the_replica_is_refused() {
    let repo = Repo::new();
    repo.write("deploy/web.yaml", &workload("web", 1));
    let c1 = repo.commit_push("one");
    let c = cluster(None);
    add_source(&c, &repo, &[]);

    // What git really holds at c1, as the replica would claim it.
    let url = repo.url();
    let git_repo = nexus_gitops::GitRepo::open(&repo.origin).unwrap();
    let snap = git_repo.read_commit(&c1, "deploy", &url).unwrap();
    let set = nexus_gitops::ManifestSet::of_snapshot(&snap);
    let claim = nexus_gitops::claim_digest(&set.claim());
    let p = &snap.provenance;
    let source = |claim: &str| Source::Gitops {
        git_source: "default/apps".into(),
        repo: url.clone(),
        commit: c1.clone(),
        tree: p.tree.clone(),
        author: p.author.clone(),
        committer: p.committer.clone(),
        message: p.message.clone(),
        claim: claim.to_string(),
        forced_over: None,
    };
    let miner = json!({"apiVersion": "nexus/v1", "kind": "Workload", "metadata": {"name": "miner", "namespace": "default"},
                       "spec": {"command": ["/bin/miner"]}});

    // Connect with the replica's own certificate and key.
    let server = ServerConfig::load(&c.server_yaml()).unwrap();
    let ctx = nexus_cli::config::Context {
        cert: server.cert.clone(),
        key: server.key.clone(),
        ..c.context()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let session = Session::connect_to(ctx)
            .await
            .expect("connect as the replica");
        assert_eq!(session.actor(), "replica:r0");
        let before: GetResponse = session
            .call(kinds::GET, &GetRequest::default())
            .await
            .unwrap();
        let submit = |signed: nexus_ledger::SignedRequest| {
            let session = &session;
            async move {
                session
                    .call::<_, SubmitResponse>(
                        kinds::SUBMIT,
                        &SubmitRequest {
                            signed: signed.to_bytes(),
                        },
                    )
                    .await
            }
        };
        // Manifests git never held, under a real commit and a correct claim.
        let forged = session.sign(
            vec![Op::Apply {
                object: miner.clone(),
                if_version: None,
            }],
            source(&claim),
        );
        let err = submit(forged).await.unwrap_err();
        assert_eq!(err.remote_code(), Some(ErrorCode::InvalidArgument), "{err}");
        assert!(
            err.to_string().contains("git does not hold this object"),
            "{err}"
        );
        // A claim of objects git does not hold.
        let forged = session.sign(vec![], source(&"0".repeat(64)));
        let err = submit(forged).await.unwrap_err();
        assert_eq!(err.remote_code(), Some(ErrorCode::InvalidArgument), "{err}");
        expect!["the server answered with an error: refused: git source default/apps: the proposal's object digest 0000000000000000000000000000000000000000000000000000000000000000 is not that of the 1 objects git holds (f6e1495e5d619832bbf3a7753cf31cb95d37e29ec2640d1fad161be1496478e7) (invalid_argument)"].assert_eq(&err.to_string());
        let forged = session.sign(
            vec![Op::Apply {
                object: miner.clone(),
                if_version: None,
            }],
            source(&"0".repeat(64)),
        );
        let err = submit(forged).await.unwrap_err();
        assert_eq!(err.remote_code(), Some(ErrorCode::InvalidArgument), "{err}");
        expect!["the server answered with an error: refused: git source default/apps: the proposal's object digest 0000000000000000000000000000000000000000000000000000000000000000 is not that of the 1 objects git holds (f6e1495e5d619832bbf3a7753cf31cb95d37e29ec2640d1fad161be1496478e7) (invalid_argument)"].assert_eq(&err.to_string());
        let after: GetResponse = session
            .call(kinds::GET, &GetRequest::default())
            .await
            .unwrap();
        assert_eq!(
            before.height, after.height,
            "a refused request writes nothing"
        );
        assert_eq!(before.objects, after.objects);
    });
    assert_eq!(names(&c, "workload"), ["web"]);
}
