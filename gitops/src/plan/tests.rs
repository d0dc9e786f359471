//! Snapshot tests of `nexus plan` rendering.

use expect_test::expect;
use nexus_schemas::SourceFile;

use super::*;
use crate::snapshot::GitProvenance;

fn snap(commit: char, subject: &str, files: &[(&str, &str)]) -> CommitSnapshot {
    CommitSnapshot {
        provenance: GitProvenance {
            repo: "https://git.example.com/org/deploy.git".into(),
            commit: commit.to_string().repeat(40),
            tree: "t".repeat(40),
            author: "Alice <alice@example.com>".into(),
            committer: "Alice <alice@example.com>".into(),
            message: format!("{subject}\n\nbody\n"),
        },
        path: "deploy".into(),
        root_tree: "r".repeat(40),
        commit_time: 0,
        files: files
            .iter()
            .map(|(n, t)| SourceFile::from_text(*n, *t))
            .collect(),
    }
}

const API2: &str = "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: api\n  labels: {app: api}\nspec:\n  command: [/bin/api]\n  replicas: 2\n";
const API3: &str = "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: api\n  labels: {app: api}\nspec:\n  command: [/bin/api]\n  replicas: 3\n";
const API5: &str = "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: api\n  labels: {app: api}\nspec:\n  command: [/bin/api]\n  replicas: 5\n";
const OLD: &str =
    "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: old}\nspec: {command: [/bin/old]}\n";
const SVC80: &str = "apiVersion: nexus/v1\nkind: Service\nmetadata: {name: api}\nspec: {selector: {app: api}, ports: [{port: 80}]}\n";
const SVC81: &str = "apiVersion: nexus/v1\nkind: Service\nmetadata: {name: api}\nspec: {selector: {app: api}, ports: [{port: 81}]}\n";
const WEB: &str =
    "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: web}\nspec: {command: [/bin/web]}\n";
const MANUAL: &str = "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: manual\nspec: {command: [/bin/manual]}\n";

fn live_of(items: &[(&str, Owner)]) -> LiveObjects {
    let mut out = LiveObjects::new();
    for (i, (text, owner)) in items.iter().enumerate() {
        let set = ManifestSet::validate(&[SourceFile::from_text("live.yaml", *text)]);
        for (k, o) in set.objects {
            let live = LiveObject {
                value: o.value,
                owner: owner.clone(),
                resource_version: Some(i as u64 + 1),
            };
            out.insert(k, live);
        }
    }
    out
}

fn report(head_files: &[(&str, &str)], live: Option<&LiveObjects>) -> PlanReport {
    let src = SourceId::new("default", "apps");
    let base = snap(
        'a',
        "base",
        &[
            ("deploy/api.yaml", API2),
            ("deploy/old.yaml", OLD),
            ("deploy/svc.yaml", SVC80),
        ],
    );
    let head = snap('b', "Scale api, add web", head_files);
    build_plan(&PlanInput {
        source: &src,
        policy: SyncPolicy {
            prune: true,
            self_heal: false,
        },
        base_rev: "origin/main",
        base: &base,
        head_rev: "HEAD",
        head: &head,
        live: live.map(|l| ("prod", l)),
    })
}

fn rich() -> PlanReport {
    let me = Owner::GitSource(SourceId::new("default", "apps"));
    let live = live_of(&[
        (API5, me.clone()),
        (OLD, me.clone()),
        (SVC81, me.clone()),
        (MANUAL, Owner::Apply),
    ]);
    report(
        &[
            ("deploy/api.yaml", API3),
            ("deploy/manual.yaml", MANUAL),
            ("deploy/svc.yaml", SVC80),
            ("deploy/web.yaml", WEB),
        ],
        Some(&live),
    )
}

#[test]
fn text_rendering() {
    let r = rich();
    assert_eq!(r.exit_code(), EXIT_CHANGES);
    expect![[r#"
        nexus plan for default/apps (path "deploy")
          base origin/main  aaaaaaaaaaaa "base"
          head HEAD         bbbbbbbbbbbb "Scale api, add web"
          live: cluster "prod"
          prune: on, selfHeal: off

        Changes to the cluster:
        ~ Workload default/api (update)
            spec.replicas: 5 -> 3
        - Workload default/old (delete, prune)
        + Workload default/web (create)

        Conflicts (defined in git, owned by someone else; not touched):
        ! Workload default/manual owned by apply (deploy/manual.yaml:4, same content)

        Drift (owned objects changed outside git):
        ~ Workload default/api modified: overwritten by this merge
            spec.replicas: git 2 -> live 5
        ~ Service default/api modified: kept (selfHeal is off)
            spec.ports[0].port: git 80 -> live 81

        Git, base -> head: 2 to create, 1 to update, 1 to delete, 1 unchanged
        Plan: 1 to create, 1 to update, 1 to delete, 0 unchanged; 1 conflict(s); 2 drifted
    "#]]
    .assert_eq(&render_text(&r));
}

#[test]
fn markdown_rendering() {
    expect![[r####"
        ### nexus plan: `default/apps`

        **head** `bbbbbbbbbbbb` Scale api, add web · **base** `aaaaaaaaaaaa` (origin/main) · path "deploy" · live: cluster "prod" · prune on, selfHeal off

        **1 to create, 1 to update, 1 to delete**, 0 unchanged · 1 conflict(s) · 2 drifted

        | | Kind | Namespace | Name | Details |
        |---|---|---|---|---|
        | ✏️ update | Workload | default | `api` | 1 field(s) |
        | 🗑️ delete | Workload | default | `old` | pruned: gone from git |
        | ➕ create | Workload | default | `web` |  |

        <details><summary>update Workload <code>default/api</code></summary>

        | Field | Live | After merge |
        |---|---|---|
        | `spec.replicas` | `5` | `3` |

        </details>

        <details><summary>delete Workload <code>default/old</code></summary>

        ```json
        {
          "apiVersion": "nexus/v1",
          "kind": "Workload",
          "metadata": {
            "labels": {},
            "name": "old",
            "namespace": "default"
          },
          "spec": {
            "command": [
              "/bin/old"
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

        <details><summary>create Workload <code>default/web</code></summary>

        ```json
        {
          "apiVersion": "nexus/v1",
          "kind": "Workload",
          "metadata": {
            "labels": {},
            "name": "web",
            "namespace": "default"
          },
          "spec": {
            "command": [
              "/bin/web"
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

        #### ⚠️ Conflicts: defined in git, owned by someone else (not touched)

        | Object | Owner | Defined at |
        |---|---|---|
        | `Workload default/manual` | `apply` | `deploy/manual.yaml:4` |

        #### Drift: owned objects changed outside git

        | Object | Change | Outcome |
        |---|---|---|
        | `Workload default/api` | `spec.replicas` `2` → `5` | overwritten by this merge |
        | `Service default/api` | `spec.ports[0].port` `80` → `81` | kept (selfHeal is off) |

        <sub>git, base → head: 2 to create, 1 to update, 1 to delete, 1 unchanged</sub>
    "####]]
    .assert_eq(&render_markdown(&rich()));
}

#[test]
fn json_rendering_is_machine_readable() {
    let v: serde_json::Value = serde_json::from_str(&render_json(&rich())).unwrap();
    assert_eq!(v["exitCode"], 1);
    assert_eq!(v["source"]["name"], "apps");
    assert_eq!(v["head"]["commit"], "b".repeat(40));
    assert_eq!(
        v["live"],
        serde_json::json!({"type": "cluster", "name": "prod"})
    );
    assert_eq!(v["plan"]["changes"]["changes"][0]["op"], "update");
    assert_eq!(v["plan"]["changes"]["changes"][0]["fields"][0]["new"], 3);
    assert_eq!(v["plan"]["ops"][1]["op"], "delete");
    assert_eq!(v["plan"]["conflicts"][0]["owner"], "apply");
    assert_eq!(v["plan"]["drift"][0]["action"], "overwrite");
    assert_eq!(v["plan"]["drift"][1]["action"], "keep");
    assert_eq!(
        v["plan"]["provenance"]["author"],
        "Alice <alice@example.com>"
    );
    assert_eq!(v["gitChanges"]["unchanged"], 1);
    assert!(v["summary"].as_str().unwrap().starts_with("1 to create"));
}

#[test]
fn invalid_head_is_an_error_with_locations() {
    let bad = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: api}\nspec:\n  command: [/bin/api]\n  replicaz: 3\n";
    let r = report(&[("deploy/api.yaml", bad), ("deploy/web.yaml", WEB)], None);
    assert_eq!(r.exit_code(), EXIT_ERROR);
    expect![[r#"
        nexus plan for default/apps (path "deploy")
          base origin/main  aaaaaaaaaaaa "base"
          head HEAD         bbbbbbbbbbbb "Scale api, add web"
          live: assumed to be base, fully synced (no cluster given)
          prune: on, selfHeal: off

        Error: head would be rejected whole; nothing would change.
        deploy/api.yaml:6:3: error: unknown field "replicaz"
            help: did you mean "replicas"?
    "#]]
    .assert_eq(&render_text(&r));
    expect![[r#"
        ### nexus plan: `default/apps` ❌

        **head** `bbbbbbbbbbbb` Scale api, add web · **base** `aaaaaaaaaaaa` (origin/main) · path "deploy" · live: assumed to be base, fully synced (no cluster given) · prune on, selfHeal off

        **This commit would be rejected whole**: nothing changes until the errors are fixed.

        | Location | Problem |
        |---|---|
        | `deploy/api.yaml:6:3` | error: unknown field "replicaz" — did you mean "replicas"? |
    "#]]
    .assert_eq(&render_markdown(&r));
}

#[test]
fn no_changes_without_a_cluster() {
    let r = report(
        &[
            ("deploy/api.yaml", API2),
            ("deploy/old.yaml", OLD),
            ("deploy/svc.yaml", SVC80),
        ],
        None,
    );
    assert_eq!(r.exit_code(), EXIT_NO_CHANGES);
    assert_eq!(r.live, LiveOrigin::AssumedBase);
    let text = render_text(&r);
    assert!(text.contains("\nNo changes to the cluster.\n"), "{text}");
    assert!(
        text.ends_with("Plan: 0 to create, 0 to update, 0 to delete, 3 unchanged\n"),
        "{text}"
    );
    assert!(render_markdown(&r).starts_with("### nexus plan: `default/apps` ✅\n"));
    // Without a cluster, removing a file shows as a prune delete of the base object.
    let r = report(
        &[("deploy/api.yaml", API2), ("deploy/svc.yaml", SVC80)],
        None,
    );
    assert_eq!(r.exit_code(), EXIT_CHANGES);
    assert_eq!(
        r.plan.summary(),
        "0 to create, 0 to update, 1 to delete, 2 unchanged"
    );
}
