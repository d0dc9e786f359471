//! Table tests of the sync planner.

use super::*;
use crate::snapshot::ManifestSet;
use nexus_schemas::SourceFile;

fn wl(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata: {{name: {name}}}\nspec: {{command: [run], replicas: {replicas}}}\n"
    )
}

fn set(docs: &[String]) -> ManifestSet {
    let files: Vec<SourceFile> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| SourceFile::from_text(format!("deploy/{i}.yaml"), d.clone()))
        .collect();
    ManifestSet::validate(&files)
}

fn prov() -> GitProvenance {
    GitProvenance {
        repo: "/srv/git/app.git".into(),
        commit: "c0ffee".into(),
        tree: "7ree".into(),
        author: "A <a@x>".into(),
        committer: "C <c@x>".into(),
        message: "msg".into(),
    }
}

fn me() -> SourceId {
    SourceId::new("default", "apps")
}

/// Live objects: (manifest, owner, resource version).
fn live(items: &[(String, &str)]) -> LiveObjects {
    items
        .iter()
        .enumerate()
        .map(|(i, (doc, owner))| {
            let s = set(std::slice::from_ref(doc));
            let (k, o) = s.objects.into_iter().next().unwrap();
            (
                k,
                LiveObject {
                    value: o.value,
                    owner: Owner::parse(owner),
                    resource_version: Some(i as u64 + 10),
                },
            )
        })
        .collect()
}

/// A compact, stable rendering of everything a plan decides.
fn brief(p: &SyncPlan) -> String {
    let mut out = Vec::new();
    if let Some(r) = &p.rejection {
        out.push(format!("REJECTED {:?}: {}", r.reason, r.message));
    }
    for op in &p.ops {
        match op {
            SyncOp::Apply {
                key,
                if_version,
                object,
            } => out.push(format!(
                "apply {} v{:?} replicas={}",
                key.name, if_version, object["spec"]["replicas"]
            )),
            SyncOp::Delete { key, if_version } => {
                out.push(format!("delete {} v{:?}", key.name, if_version))
            }
        }
    }
    for c in &p.conflicts {
        out.push(format!(
            "conflict {} owner={} same={}",
            c.key.name, c.owner, c.same_content
        ));
    }
    for d in &p.drift {
        let fields: Vec<&str> = d.fields.iter().map(|f| f.path.as_str()).collect();
        out.push(format!(
            "drift {} {:?} {:?} {:?}",
            d.key.name, d.kind, d.action, fields
        ));
    }
    for k in &p.prune {
        out.push(format!("prune-candidate {}", k.name));
    }
    out.push(format!("unchanged={}", p.changes.unchanged));
    out.join("\n")
}

struct Case {
    name: &'static str,
    git: Vec<String>,
    last: Option<Vec<String>>,
    live: Vec<(String, &'static str)>,
    policy: SyncPolicy,
    want: &'static str,
}

const OWN: &str = "gitops:default/apps";
const NO: SyncPolicy = SyncPolicy {
    prune: false,
    self_heal: false,
};
const PRUNE: SyncPolicy = SyncPolicy {
    prune: true,
    self_heal: false,
};
const HEAL: SyncPolicy = SyncPolicy {
    prune: false,
    self_heal: true,
};

#[test]
fn table() {
    let cases = vec![
        Case {
            name: "first sync creates everything",
            git: vec![wl("a", 1), wl("b", 2)],
            last: None,
            live: vec![],
            policy: NO,
            want: "apply a vSome(0) replicas=1\napply b vSome(0) replicas=2\nunchanged=0",
        },
        Case {
            name: "identical live objects are unchanged",
            git: vec![wl("a", 1)],
            last: Some(vec![wl("a", 1)]),
            live: vec![(wl("a", 1), OWN)],
            policy: NO,
            want: "unchanged=1",
        },
        Case {
            name: "a git change updates with the live resource version",
            git: vec![wl("a", 3)],
            last: Some(vec![wl("a", 1)]),
            live: vec![(wl("a", 1), OWN)],
            policy: NO,
            want: "apply a vSome(10) replicas=3\nunchanged=0",
        },
        Case {
            name: "without a baseline a difference is an update, not drift",
            git: vec![wl("a", 3)],
            last: None,
            live: vec![(wl("a", 1), OWN)],
            policy: NO,
            want: "apply a vSome(10) replicas=3\nunchanged=0",
        },
        Case {
            name: "removed from git without prune: kept, reported",
            git: vec![wl("a", 1)],
            last: Some(vec![wl("a", 1), wl("gone", 1)]),
            live: vec![(wl("a", 1), OWN), (wl("gone", 1), OWN)],
            policy: NO,
            want: "prune-candidate gone\nunchanged=1",
        },
        Case {
            name: "removed from git with prune: deleted",
            git: vec![wl("a", 1)],
            last: Some(vec![wl("a", 1), wl("gone", 1)]),
            live: vec![(wl("a", 1), OWN), (wl("gone", 1), OWN)],
            policy: PRUNE,
            want: "delete gone vSome(11)\nprune-candidate gone\nunchanged=1",
        },
        Case {
            name: "prune never deletes objects owned by others",
            git: vec![],
            last: Some(vec![]),
            live: vec![
                (wl("mine", 1), "apply"),
                (wl("theirs", 1), "gitops:default/other"),
            ],
            policy: PRUNE,
            want: "unchanged=0",
        },
        Case {
            name: "apply-owned object in git is a conflict and untouched",
            git: vec![wl("a", 2), wl("b", 1)],
            last: None,
            live: vec![(wl("a", 1), "apply"), (wl("b", 1), "gitops:ops/other")],
            policy: SyncPolicy {
                prune: true,
                self_heal: true,
            },
            want: "conflict a owner=apply same=false\nconflict b owner=gitops:ops/other same=true\nunchanged=0",
        },
        Case {
            name: "drift without selfHeal is kept and reported",
            git: vec![wl("a", 1)],
            last: Some(vec![wl("a", 1)]),
            live: vec![(wl("a", 5), OWN)],
            policy: NO,
            want: "drift a Modified Keep [\"spec.replicas\"]\nunchanged=0",
        },
        Case {
            name: "drift with selfHeal is reverted",
            git: vec![wl("a", 1)],
            last: Some(vec![wl("a", 1)]),
            live: vec![(wl("a", 5), OWN)],
            policy: HEAL,
            want: "apply a vSome(10) replicas=1\ndrift a Modified Revert [\"spec.replicas\"]\nunchanged=0",
        },
        Case {
            name: "a git change overwrites drift even without selfHeal",
            git: vec![wl("a", 2)],
            last: Some(vec![wl("a", 1)]),
            live: vec![(wl("a", 5), OWN)],
            policy: NO,
            want: "apply a vSome(10) replicas=2\ndrift a Modified Overwrite [\"spec.replicas\"]\nunchanged=0",
        },
        Case {
            name: "drift that happens to match git is not drift",
            git: vec![wl("a", 2)],
            last: Some(vec![wl("a", 1)]),
            live: vec![(wl("a", 2), OWN)],
            policy: NO,
            want: "unchanged=1",
        },
        Case {
            name: "deleted outside git: kept deleted without selfHeal",
            git: vec![wl("a", 1)],
            last: Some(vec![wl("a", 1)]),
            live: vec![],
            policy: NO,
            want: "drift a Deleted Keep []\nunchanged=0",
        },
        Case {
            name: "deleted outside git: recreated with selfHeal",
            git: vec![wl("a", 1)],
            last: Some(vec![wl("a", 1)]),
            live: vec![],
            policy: HEAL,
            want: "apply a vSome(0) replicas=1\ndrift a Deleted Revert []\nunchanged=0",
        },
        Case {
            name: "drifted object that left git is pruned and the drift reported",
            git: vec![],
            last: Some(vec![wl("a", 1)]),
            live: vec![(wl("a", 4), OWN)],
            policy: PRUNE,
            want: "delete a vSome(10)\ndrift a Modified Prune [\"spec.replicas\"]\nprune-candidate a\nunchanged=0",
        },
    ];
    for c in cases {
        let desired = set(&c.git);
        let last = c.last.as_ref().map(|l| set(l));
        let live = live(&c.live);
        let p = prov();
        let src = me();
        let plan = plan_sync(&SyncInput {
            source: &src,
            policy: c.policy,
            provenance: &p,
            desired: &desired,
            live: &live,
            last_synced: last.as_ref(),
        });
        assert_eq!(brief(&plan), c.want, "case: {}", c.name);
        // Changes and ops always agree.
        assert_eq!(
            plan.ops.len(),
            plan.changes.changes.len(),
            "case: {}",
            c.name
        );
        assert_eq!(plan.claim.len(), desired.objects.len());
    }
}

#[test]
fn invalid_commit_is_rejected_whole_with_locations() {
    let bad = "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: b}\nspec:\n  command: [x]\n  replicas: many\n".to_string();
    let desired = set(&[wl("a", 1), bad]);
    // The valid file alone would create "a": the plan must not.
    assert_eq!(desired.objects.len(), 1);
    let live = live(&[(wl("old", 1), OWN)]);
    let (p, src) = (prov(), me());
    let plan = plan_sync(&SyncInput {
        source: &src,
        policy: PRUNE,
        provenance: &p,
        desired: &desired,
        live: &live,
        last_synced: None,
    });
    assert!(plan.is_rejected());
    assert!(plan.ops.is_empty() && plan.changes.is_empty() && plan.prune.is_empty());
    let err = plan.diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert_eq!(
        (err.file.as_str(), err.line, err.column),
        ("deploy/1.yaml", 6, 13)
    );
    assert_eq!(
        plan.summary(),
        "rejected: deploy/1.yaml:6:13: error: spec.replicas must be an integer, found a string (\"many\")"
    );
}

#[test]
fn plan_is_deterministic_and_ordered() {
    let desired = set(&[wl("c", 1), wl("a", 1), wl("b", 1)]);
    let live = live(&[(wl("z", 1), OWN)]);
    let (p, src) = (prov(), me());
    let input = SyncInput {
        source: &src,
        policy: PRUNE,
        provenance: &p,
        desired: &desired,
        live: &live,
        last_synced: None,
    };
    let a = plan_sync(&input);
    assert_eq!(a, plan_sync(&input));
    let names: Vec<&str> = a.ops.iter().map(|o| o.key().name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "z"]);
    assert_eq!(
        a.summary(),
        "3 to create, 0 to update, 1 to delete, 0 unchanged"
    );
}
