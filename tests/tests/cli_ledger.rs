//! The ledger commands of the real `nexus` binary against one real `nexus server`: `apply`
//! (created / configured / unchanged, `--dry-run` diffs against live state, `--prune -l`,
//! `--if-version`), `delete -f` and `delete KIND NAME`, `get -o table|wide|yaml|json` and
//! `get --watch`, `user create` with `--context` and `NEXUS_CONTEXT`, and `audit` filters.
//!
//! One cluster for the whole file: the steps run in order and each builds on the state the
//! previous ones left, so heights, versions and hashes in the snapshots are deterministic.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use expect_test::{Expect, expect};
use nexus_tests::{Cluster, text};
use serde_json::Value;

/// What one `nexus` run did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self, what: &str) -> Run {
        assert_eq!(
            self.code, 0,
            "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `nexus ARGS` with `stdin` as its input and extra environment.
fn nexus_with(cluster: &Cluster, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = cluster.command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nexus");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait for nexus");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

fn nexus(cluster: &Cluster, args: &[&str]) -> Run {
    nexus_with(cluster, args, "", &[])
}

/// `nexus apply -f - ARGS` with `manifests` on stdin.
fn apply(cluster: &Cluster, manifests: &str, extra: &[&str]) -> Run {
    let mut args = vec!["apply", "-f", "-"];
    args.extend_from_slice(extra);
    nexus_with(cluster, &args, manifests, &[])
}

/// stdout, then stderr under a marker, then the exit code: one snapshot for a whole run.
fn transcript(r: &Run) -> String {
    let mut s = r.stdout.clone();
    if !r.stderr.is_empty() {
        s.push_str("--- stderr\n");
        s.push_str(&r.stderr);
    }
    s.push_str(&format!("--- exit {}\n", r.code));
    s
}

/// The cluster's temporary directory, replaced by `$DIR` in snapshots.
static DIR: OnceLock<String> = OnceLock::new();

/// Output made stable: the temporary directory as `$DIR`, the test binary's name as `nexus`.
fn normalize(s: &str) -> String {
    let s = match DIR.get() {
        Some(dir) => s.replace(dir.as_str(), "$DIR"),
        None => s.to_string(),
    };
    s.replace("nexus-e2e", "nexus")
}

fn check(r: &Run, snapshot: Expect) {
    snapshot.assert_eq(&normalize(&transcript(r)));
}

fn workload(name: &str, labels: &str, replicas: u32) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  replicas: {replicas}\n  command: [\"sleep\", \"3600\"]\n  resources: {{cpu: 250m, memory: 64Mi}}\n"
    )
}

fn service(name: &str, labels: &str, selector: &str) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Service\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  selector: {{{selector}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

/// `nexus get ... -o json`, parsed.
fn get_json(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let r = nexus(cluster, &all).ok("get -o json");
    serde_json::from_str(&r.stdout).expect("get -o json prints a JSON list")
}

/// (name, generation, resource version) of every object `get` lists.
fn versions(cluster: &Cluster, args: &[&str]) -> Vec<(String, u64, u64)> {
    get_json(cluster, args)
        .iter()
        .map(|o| {
            (
                o["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["generation"].as_u64().unwrap_or_default(),
                o["resource_version"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The audit records a query returns, one JSON object per line.
fn audit(cluster: &Cluster, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "-o", "json"];
    args.extend_from_slice(filters);
    let r = nexus(cluster, &args).ok("audit -o json");
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record per line"))
        .collect()
}

/// `height type actor kind/name` of audit records, for compact snapshots.
fn audit_lines(records: &[Value]) -> String {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}/{}\n",
                r["height"],
                r["type"].as_str().unwrap_or_default(),
                r["actor"].as_str().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default(),
                r["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// A `nexus get --watch` process whose output lines arrive on a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(cluster: &Cluster, args: &[&str]) -> Watch {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.push("--watch");
        let mut child = cluster
            .command(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nexus get --watch");
        let stdout = child.stdout.take().expect("watch stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watch { child, lines }
    }

    /// The next `n` lines, failing after 20 s.
    fn next(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => panic!("watch printed {out:?}, expected {n} lines"),
            }
        }
        out
    }

    /// Whether another line arrives within `wait`.
    fn quiet_for(&self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `TYPE height kind/name generation` of `get --watch -o json` lines.
fn watch_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("watch -o json prints JSON lines");
            let o = &v["object"];
            format!(
                "{} {} {}/{} gen {}\n",
                v["type"].as_str().unwrap_or_default(),
                v["height"],
                o["object"]["kind"].as_str().unwrap_or_default(),
                o["object"]["metadata"]["name"].as_str().unwrap_or_default(),
                o["generation"]
            )
        })
        .collect()
}

#[test]
fn the_ledger_commands_against_a_live_server() {
    let t0 = Instant::now();
    let mut cluster = Cluster::init();
    DIR.set(cluster.dir.path().display().to_string())
        .expect("one cluster per file");
    cluster.start();
    let demo = docs(&[
        workload("web", "app: demo, tier: web", 2),
        workload("api", "app: demo, tier: api", 1),
        service("web", "app: demo", "tier: web"),
    ]);
    let db = workload("db", "app: db", 1);

    // --- apply: created, then unchanged.
    check(
        &apply(&cluster, &demo, &[]),
        expect![[r#"
            workload/web created
            workload/api created
            service/web created
            --- stderr
            committed at height 1
            --- exit 0
        "#]],
    );
    apply(&cluster, &db, &[]).ok("apply db");
    check(
        &apply(&cluster, &demo, &[]),
        expect![[r#"
            workload/web unchanged
            workload/api unchanged
            service/web unchanged
            --- stderr
            no changes; nothing was committed (live state at height 2)
            --- exit 0
        "#]],
    );

    // --- apply --dry-run: the diff against live state, nothing committed.
    let changed = docs(&[
        workload("web", "app: demo, tier: web", 5),
        workload("api", "app: demo, tier: api", 1),
        service("web", "app: demo", "tier: web"),
        workload("cache", "app: demo, tier: cache", 1),
    ]);
    check(
        &apply(&cluster, &changed, &["--dry-run"]),
        expect![[r#"
        workload/web configured (dry run)
        workload/api unchanged (dry run)
        service/web unchanged (dry run)
        workload/cache created (dry run)

        + Workload default/cache (create)
        ~ Workload default/web (update)
            spec.replicas: 2 -> 5

        1 to create, 1 to update, 0 to delete, 2 unchanged
        --- exit 1
    "#]],
    );
    assert_eq!(
        versions(&cluster, &["workload"]),
        [
            ("api".to_string(), 1, 1),
            ("db".to_string(), 1, 2),
            ("web".to_string(), 1, 1)
        ],
        "a dry run commits nothing"
    );
    check(
        &apply(&cluster, &demo, &["--dry-run"]),
        expect![[r#"
        workload/web unchanged (dry run)
        workload/api unchanged (dry run)
        service/web unchanged (dry run)

        No changes (3 unchanged).
        --- exit 0
    "#]],
    );

    // --- get in every output format.
    check(
        &nexus(&cluster, &["get", "all"]),
        expect![[r#"
        KIND      NAMESPACE  NAME  DETAIL          GEN  VERSION  OWNER
        Workload  default    api   0/1 ready       1    1        apply
        Workload  default    db    0/1 ready       1    2        apply
        Workload  default    web   0/2 ready       1    1        apply
        Service   default    web   tier=web -> 80  1    1        apply
        --- exit 0
    "#]],
    );
    check(
        &nexus(
            &cluster,
            &["get", "workloads", "-o", "wide", "-l", "app=demo"],
        ),
        expect![[r#"
            KIND      NAMESPACE  NAME  DETAIL     GEN  VERSION  OWNER  LIVE                               LABELS             LAST ACTOR  HASH
            Workload  default    api   0/1 ready  1    1        apply  nodes= (replica 0: no ready node)  app=demo,tier=api  user:admin  ab1d63192bd0
            Workload  default    web   0/2 ready  1    1        apply  nodes= (replica 0: no ready node)  app=demo,tier=web  user:admin  70c006334017
            --- exit 0
        "#]],
    );
    check(
        &nexus(&cluster, &["get", "svc", "web", "-o", "yaml"]),
        expect![[r#"
            ---
            apiVersion: nexus/v1
            kind: Service
            metadata:
              labels:
                app: demo
              name: web
              namespace: default
            spec:
              loadBalancing: roundRobin
              ports:
              - port: 80
                protocol: TCP
                targetPort: 8080
              selector:
                tier: web
            --- exit 0
        "#]],
    );
    check(
        &nexus(&cluster, &["get", "workload", "db", "-o", "json"]),
        expect![[r#"
            [
              {
                "object": {
                  "apiVersion": "nexus/v1",
                  "kind": "Workload",
                  "metadata": {
                    "labels": {
                      "app": "db"
                    },
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
                      "cpu": "250m",
                      "gpu": 0,
                      "memory": "64Mi"
                    },
                    "restartPolicy": "Always",
                    "rollingUpdate": {
                      "maxSurge": 1,
                      "maxUnavailable": 0
                    },
                    "runtime": "process",
                    "terminationGracePeriodSeconds": 10
                  }
                },
                "content_hash": "ca93cac0fb248aeb875888c299cdbad899f88078ecadd5be6c1381f8b9e2c51b",
                "generation": 1,
                "resource_version": 2,
                "created_height": 2,
                "updated_height": 2,
                "last_actor": "user:admin",
                "owner": "apply",
                "status": {
                  "complete": false,
                  "desired": 1,
                  "generation": 1,
                  "nodes": [],
                  "old": 0,
                  "problems": [
                    "replica 0: no ready node"
                  ],
                  "ready": 0,
                  "replicas": [],
                  "updated": 0
                }
              }
            ]
            --- exit 0
        "#]],
    );
    check(
        &nexus(&cluster, &["get", "workload", "nope"]),
        expect![[r#"
            --- stderr
            error: workload "nope" not found
            --- exit 1
        "#]],
    );

    // --- get --watch: the initial list, then changes as they commit.
    let all = Watch::start(&cluster, &["workload", "-o", "json"]);
    let selected = Watch::start(&cluster, &["workload", "-l", "tier=web", "-o", "json"]);
    let table = Watch::start(&cluster, &["workload", "web"]);
    expect![[r#"
        EVENT  KIND      NAMESPACE  NAME  DETAIL      GEN  VERSION  OWNER
        ADDED  Workload  default    web   2 replicas  1    1        apply"#]]
    .assert_eq(&table.next(2).join("\n"));
    let initial = all.next(3);
    expect![[r#"
        ADDED 2 Workload/api gen 1
        ADDED 2 Workload/db gen 1
        ADDED 2 Workload/web gen 1
    "#]]
    .assert_eq(&watch_lines(&initial));
    expect![[r#"
        ADDED 2 Workload/web gen 1
    "#]]
    .assert_eq(&watch_lines(&selected.next(1)));

    // --- apply --if-version: one object's version; several objects only with 0.
    check(
        &apply(&cluster, &demo, &["--if-version", "1"]),
        expect![[r#"
        --- stderr
        error: --if-version 1 is one object's resource version, but this apply has 3 objects; apply them one at a time, or use --if-version 0 to require that none of them exists yet
        --- exit 2
    "#]],
    );
    check(
        &apply(
            &cluster,
            &workload("web", "app: demo, tier: web", 3),
            &["--if-version", "2"],
        ),
        expect![[r#"
            --- stderr
            error: the server answered with an error: conflict on Workload default/web: expected resource version 2, current resource version is 1 (conflict)
              hint: someone changed the object; `nexus get` shows the current resource version
            --- exit 1
        "#]],
    );
    check(
        &apply(
            &cluster,
            &workload("web", "app: demo, tier: web", 3),
            &["--if-version", "1"],
        ),
        expect![[r#"
            workload/web configured
            --- stderr
            committed at height 3
            --- exit 0
        "#]],
    );
    check(
        &apply(
            &cluster,
            &docs(&[workload("web", "app: demo, tier: web", 3), db.clone()]),
            &["--if-version", "0"],
        ),
        expect![[r#"
            --- stderr
            error: the server answered with an error: conflict on Workload default/web: expected it not to exist, but it exists at resource version 3 (conflict)
              hint: someone changed the object; `nexus get` shows the current resource version
            --- exit 1
        "#]],
    );

    // --- apply --prune -l: objects from `apply` with the label and not in the files go.
    let without_api = docs(&[
        workload("web", "app: demo, tier: web", 3),
        service("web", "app: demo", "tier: web"),
    ]);
    check(
        &apply(
            &cluster,
            &without_api,
            &["--prune", "-l", "app=demo", "--dry-run"],
        ),
        expect![[r#"
            workload/web unchanged (dry run)
            service/web unchanged (dry run)
            workload/api deleted (dry run)

            - Workload default/api (delete)

            0 to create, 0 to update, 1 to delete, 2 unchanged
            --- exit 1
        "#]],
    );
    check(
        &apply(&cluster, &without_api, &["--prune", "-l", "app=demo"]),
        expect![[r#"
            workload/web unchanged
            service/web unchanged
            workload/api deleted
            --- stderr
            committed at height 4
            --- exit 0
        "#]],
    );
    assert_eq!(
        versions(&cluster, &["workload"]),
        [("db".to_string(), 1, 2), ("web".to_string(), 2, 3)],
        "prune deleted api only: db does not match the selector"
    );
    check(
        &nexus(&cluster, &["apply", "-f", "-", "--prune"]),
        expect![[r#"
        --- stderr
        error: the following required arguments were not provided:
          --selector <SELECTOR>

        Usage: nexus apply --filename <PATH> --selector <SELECTOR> --prune

        For more information, try '--help'.
        --- exit 2
    "#]],
    );

    // The watches saw web change and api go; the selector watch never saw api.
    expect![[r#"
        MODIFIED 3 Workload/web gen 2
        DELETED 4 Workload/api gen 1
    "#]]
    .assert_eq(&watch_lines(&all.next(2)));
    expect![[r#"
        MODIFIED 3 Workload/web gen 2
    "#]]
    .assert_eq(&watch_lines(&selected.next(1)));
    expect!["MODIFIED  Workload  default    web   3 replicas  2    3        apply"]
        .assert_eq(&table.next(1).join("\n"));

    // --- delete -f and delete KIND NAME.
    let dir = tempfile::tempdir().unwrap();
    let db_file = dir.path().join("db.yaml");
    std::fs::write(&db_file, &db).unwrap();
    check(
        &nexus(&cluster, &["delete", "-f", db_file.to_str().unwrap()]),
        expect![[r#"
            workload/db deleted
            --- stderr
            committed at height 5
            --- exit 0
        "#]],
    );
    check(
        &nexus(&cluster, &["delete", "service", "web"]),
        expect![[r#"
        service/web deleted
        --- stderr
        committed at height 6
        --- exit 0
    "#]],
    );
    check(
        &nexus(&cluster, &["delete", "workload", "db"]),
        expect![[r#"
        --- stderr
        error: the server answered with an error: Workload default/db not found (not_found)
        --- exit 1
    "#]],
    );
    check(
        &nexus(&cluster, &["delete", "pod", "x"]),
        expect![[r#"
        --- stderr
        error: unknown kind "pod"; kinds are Workload, Service, NetworkPolicy, GitSource
        --- exit 2
    "#]],
    );
    expect![[r#"
        DELETED 5 Workload/db gen 1
    "#]]
    .assert_eq(&watch_lines(&all.next(1)));
    assert_eq!(
        selected.quiet_for(Duration::from_millis(500)),
        None,
        "a label-selector watch says nothing about objects it never showed"
    );
    drop((all, selected, table));

    // --- user create, --context and NEXUS_CONTEXT.
    let r = nexus(&cluster, &["user", "create", "alice", "--add-context"]).ok("user create");
    expect![[r#"
        Issued user:alice for cluster "local":
          certificate: $DIR/config/clusters/local/users/alice.crt
          key:         $DIR/config/clusters/local/users/alice.key
          context:     alice@local (use --context alice@local)
    "#]]
    .assert_eq(&normalize(&r.stdout));
    check(
        &nexus_with(
            &cluster,
            &["--context", "alice@local", "apply", "-f", "-"],
            &workload("alice-app", "app: alice", 1),
            &[],
        ),
        expect![[r#"
            workload/alice-app created
            --- stderr
            committed at height 7
            --- exit 0
        "#]],
    );
    check(
        &nexus_with(
            &cluster,
            &["delete", "workload", "alice-app"],
            "",
            &[("NEXUS_CONTEXT", "alice@local")],
        ),
        expect![[r#"
            workload/alice-app deleted
            --- stderr
            committed at height 8
            --- exit 0
        "#]],
    );
    check(
        &nexus(&cluster, &["--context", "nobody@local", "get", "all"]),
        expect![[r#"
            --- stderr
            error: no context named "nobody@local" in $DIR/config/config.yaml; contexts: local, alice@local
            --- exit 2
        "#]],
    );
    check(
        &nexus(&cluster, &["user", "create", "alice"]),
        expect![[r#"
            --- stderr
            error: user "alice" already has a certificate at $DIR/config/clusters/local/users/alice.crt
            --- exit 2
        "#]],
    );

    // --- audit filters.
    expect![[r#"
        1 object_applied user:admin Workload/web
        1 object_applied user:admin Workload/api
        1 object_applied user:admin Service/web
        2 object_applied user:admin Workload/db
        3 object_applied user:admin Workload/web
        4 object_deleted user:admin Workload/api
        5 object_deleted user:admin Workload/db
        6 object_deleted user:admin Service/web
        7 object_applied user:alice Workload/alice-app
        8 object_deleted user:alice Workload/alice-app
    "#]]
    .assert_eq(&audit_lines(&audit(&cluster, &[])));
    expect![[r#"
        7 object_applied user:alice Workload/alice-app
        8 object_deleted user:alice Workload/alice-app
    "#]]
    .assert_eq(&audit_lines(&audit(&cluster, &["--actor", "user:alice"])));
    expect![[r#"
        1 object_applied user:admin Service/web
        6 object_deleted user:admin Service/web
    "#]]
    .assert_eq(&audit_lines(&audit(&cluster, &["--kind", "svc"])));
    expect![[r#"
        1 object_applied user:admin Workload/web
        3 object_applied user:admin Workload/web
    "#]]
    .assert_eq(&audit_lines(&audit(
        &cluster,
        &[
            "--kind",
            "workload",
            "--name",
            "web",
            "--namespace",
            "default",
        ],
    )));
    expect![[r#"
        7 object_applied user:alice Workload/alice-app
        8 object_deleted user:alice Workload/alice-app
    "#]]
    .assert_eq(&audit_lines(&audit(&cluster, &["--limit", "2"])));
    assert_eq!(
        audit(&cluster, &["--since", "1h", "--source", "cli"]).len(),
        audit(&cluster, &[]).len()
    );
    assert!(audit(&cluster, &["--source", "gitops"]).is_empty());
    assert!(
        audit(&cluster, &["--until", "1h"]).is_empty(),
        "nothing is an hour old"
    );
    assert!(audit(&cluster, &["--namespace", "prod"]).is_empty());
    let table = nexus(&cluster, &["audit", "--actor", "user:alice"]).ok("audit table");
    expect![[r#"
        HEIGHT  TIME                  ACTOR       SOURCE  EVENT           OBJECT                      GEN
        7       <time>                user:alice  cli     object_applied  workload/default/alice-app  1
        8       <time>                user:alice  cli     object_deleted  workload/default/alice-app  1
    "#]].assert_eq(&mask_times(&table.stdout));
    check(
        &nexus(&cluster, &["audit", "--since", "yesterday"]),
        expect![[r#"
        --- stderr
        error: --since: "yesterday" is neither an RFC 3339 time (2026-11-25T10:00:00Z) nor a duration (1h, 30m)
        --- exit 2
    "#]],
    );

    cluster.stop();
    eprintln!("cli_ledger took {:?}", t0.elapsed());
}

/// Replaces RFC 3339 times (`2026-01-02T03:04:05Z`) with `<time>`.
fn mask_times(s: &str) -> String {
    s.split_inclusive(' ')
        .map(|w| {
            let t = w.trim_end();
            let is_time = t.len() == 20
                && t.ends_with('Z')
                && t.as_bytes().get(10) == Some(&b'T')
                && t.as_bytes()[..4].iter().all(u8::is_ascii_digit);
            if is_time {
                w.replacen(t, &format!("{:<20}", "<time>"), 1)
            } else {
                w.to_string()
            }
        })
        .collect()
}
