//! Sync end to end against real git: push -> prepare_sync -> apply ops to a stand-in ledger.
//! Prune, an invalid commit rejected whole with file:line:col, conflicts with apply-owned
//! objects, drift, a force-push synced and recorded, and replica-side verification.

mod common;

use common::{Fixture, apply_plan, workload};
use nexus_gitops::repo::{FetchOptions, HeadMove, Mirrors};
use nexus_gitops::sync::prepare::{LastSync, prepare_sync};
use nexus_gitops::sync::{DriftAction, LiveObject, LiveObjects, RejectReason, SyncOp};
use nexus_gitops::verify::{Claim, VerifyRejection, verify_proposal, verify_proposal_with};
use nexus_gitops::{ManifestSet, Owner, SourceConfig, SourceId};
use nexus_schemas::{GitSourceSpec, Kind, ObjectKey};

fn config(url: &str, prune: bool, self_heal: bool) -> SourceConfig {
    SourceConfig::new(
        SourceId::new("default", "apps"),
        GitSourceSpec {
            url: url.to_string(),
            branch: "main".into(),
            path: "deploy".into(),
            interval: "10s".into(),
            prune,
            self_heal,
            verify: None,
            webhook_secret_file: None,
        },
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Workload, "default", name)
}

#[test]
fn converge_prune_reject_invalid_and_force_push() {
    let f = Fixture::new();
    let cfg = config(&f.url(), true, false);
    let mirror = Mirrors::new(&f.state).open(&f.url()).unwrap();
    let fetch = FetchOptions::default();
    let mut live = LiveObjects::new();

    // 1. Two workloads: both created.
    f.write("deploy/a.yaml", &workload("a", 1));
    f.write("deploy/b.yaml", &workload("b", 1));
    let c1 = f.commit("two workloads");
    f.push();
    let s1 = prepare_sync(&mirror, &cfg, &fetch, &live, None).unwrap();
    assert_eq!(s1.head_move, HeadMove::Initial);
    assert_eq!(s1.plan.provenance.commit, c1);
    assert_eq!(
        s1.plan.summary(),
        "2 to create, 0 to update, 0 to delete, 0 unchanged"
    );
    apply_plan(&mut live, &s1.plan);
    let mut last = LastSync {
        commit: c1.clone(),
        manifests: Some(s1.manifests),
    };

    // 2. b deleted in git, a scaled: prune deletes b.
    f.remove("deploy/b.yaml");
    f.write("deploy/a.yaml", &workload("a", 3));
    let c2 = f.commit("scale a, drop b");
    f.push();
    let s2 = prepare_sync(&mirror, &cfg, &fetch, &live, Some(&last)).unwrap();
    assert_eq!(s2.head_move, HeadMove::FastForward);
    assert_eq!(
        s2.plan.summary(),
        "0 to create, 1 to update, 1 to delete, 0 unchanged"
    );
    assert!(matches!(&s2.plan.ops[1], SyncOp::Delete { key: k, .. } if *k == key("b")));
    apply_plan(&mut live, &s2.plan);
    assert_eq!(live.keys().cloned().collect::<Vec<_>>(), vec![key("a")]);
    last = LastSync {
        commit: c2.clone(),
        manifests: Some(s2.manifests),
    };

    // 3. An invalid manifest next to a valid change: nothing applies, the error is located.
    f.write("deploy/a.yaml", &workload("a", 5));
    f.write("deploy/bad.yaml", "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: bad\nspec:\n  command: [x]\n  replicaz: 2\n");
    let c3 = f.commit("oops");
    f.push();
    let s3 = prepare_sync(&mirror, &cfg, &fetch, &live, Some(&last)).unwrap();
    let rejection = s3.plan.rejection.clone().unwrap();
    assert_eq!(rejection.reason, RejectReason::InvalidManifests);
    assert!(s3.plan.ops.is_empty() && s3.plan.changes.is_empty());
    assert_eq!(s3.plan.provenance.commit, c3);
    assert!(
        rejection
            .message
            .starts_with("deploy/bad.yaml:7:3: error: unknown field \"replicaz\""),
        "{}",
        rejection.message
    );
    let err = s3.plan.diagnostics.iter().find(|d| d.is_error()).unwrap();
    assert_eq!(
        (err.file.as_str(), err.line, err.column),
        ("deploy/bad.yaml", 7, 3)
    );
    // The cluster stays on c2; `last` is not advanced.

    // 4. Force-push rewriting history from c1: synced at the new head and recorded as such.
    f.git(&["reset", "-q", "--hard", &c1]);
    f.write("deploy/c.yaml", &workload("c", 2));
    let c4 = f.commit("rewritten");
    f.force_push();
    let s4 = prepare_sync(&mirror, &cfg, &fetch, &live, Some(&last)).unwrap();
    assert_eq!(s4.head_move, HeadMove::ForcePush);
    assert_eq!(s4.plan.provenance.commit, c4);
    // Git now has a(1), b(1), c(2); live has a(3) written by c2: a is updated back, b and c created.
    assert_eq!(
        s4.plan.summary(),
        "2 to create, 1 to update, 0 to delete, 0 unchanged"
    );
    apply_plan(&mut live, &s4.plan);
    assert_eq!(live.len(), 3);
    assert_eq!(live[&key("a")].value["spec"]["replicas"], 1);
}

#[test]
fn conflicts_drift_and_self_heal() {
    let f = Fixture::new();
    f.write("deploy/a.yaml", &workload("a", 1));
    f.write("deploy/mine.yaml", &workload("manual", 1));
    let c1 = f.commit("one");
    f.push();
    let mirror = Mirrors::new(&f.state).open(&f.url()).unwrap();
    let fetch = FetchOptions::default();

    // `manual` already exists, created by `nexus apply`.
    let applied = ManifestSet::validate(&[nexus_schemas::SourceFile::from_text(
        "x.yaml",
        workload("manual", 9),
    )]);
    let mut live = LiveObjects::new();
    live.insert(
        key("manual"),
        LiveObject {
            value: applied.objects[&key("manual")].value.clone(),
            owner: Owner::Apply,
            resource_version: Some(4),
        },
    );
    let cfg = config(&f.url(), false, false);
    let s1 = prepare_sync(&mirror, &cfg, &fetch, &live, None).unwrap();
    assert_eq!(s1.plan.conflicts.len(), 1);
    let c = &s1.plan.conflicts[0];
    assert_eq!(
        (
            c.key.name.as_str(),
            c.owner.to_string().as_str(),
            c.file.as_str(),
            c.line
        ),
        ("manual", "apply", "deploy/mine.yaml", 4)
    );
    assert!(s1.plan.ops.iter().all(|o| o.key().name != "manual"));
    apply_plan(&mut live, &s1.plan);
    let last = LastSync {
        commit: c1.clone(),
        manifests: None,
    }; // re-read from the mirror

    // A controller edits `a` outside git: drift, kept without selfHeal.
    let mut drifted = live[&key("a")].value.clone();
    drifted["spec"]["replicas"] = 7.into();
    live.get_mut(&key("a")).unwrap().value = drifted;
    let s2 = prepare_sync(&mirror, &cfg, &fetch, &live, Some(&last)).unwrap();
    assert_eq!(s2.head_move, HeadMove::Unchanged);
    assert_eq!(s2.plan.drift.len(), 1);
    assert_eq!(s2.plan.drift[0].action, DriftAction::Keep);
    assert_eq!(s2.plan.drift[0].fields[0].path, "spec.replicas");
    assert!(s2.plan.ops.is_empty());

    // With selfHeal the next sync reverts it.
    let healing = config(&f.url(), false, true);
    let s3 = prepare_sync(&mirror, &healing, &fetch, &live, Some(&last)).unwrap();
    assert_eq!(s3.plan.drift[0].action, DriftAction::Revert);
    apply_plan(&mut live, &s3.plan);
    assert_eq!(live[&key("a")].value["spec"]["replicas"], 1);
}

#[test]
fn replicas_accept_honest_proposals_and_reject_forged_ones() {
    let f = Fixture::new();
    f.write("deploy/a.yaml", &workload("a", 1));
    let c1 = f.commit("one");
    f.write("deploy/b.yaml", &workload("b", 1));
    let c2 = f.commit("two");
    f.push();
    let cfg = config(&f.url(), true, false);
    let fetch = FetchOptions::default();
    // The proposer and the verifying replica use separate state directories.
    let proposer = Mirrors::new(f.dir.path().join("proposer"))
        .open(&f.url())
        .unwrap();
    let replica = Mirrors::new(f.dir.path().join("replica"))
        .open(&f.url())
        .unwrap();
    let live = LiveObjects::new();
    let honest = prepare_sync(&proposer, &cfg, &fetch, &live, None)
        .unwrap()
        .proposal();
    let ok = verify_proposal(&replica, &cfg, &honest, None, &fetch).unwrap();
    assert_eq!(ok.manifests.objects.len(), 2);

    // A manifest git never held, smuggled into the ops.
    let mut forged = honest.clone();
    let mut evil = honest.ops[0].clone();
    if let SyncOp::Apply { key, object, .. } = &mut evil {
        key.name = "miner".into();
        object["metadata"]["name"] = "miner".into();
    }
    forged.ops.push(evil);
    let err = verify_proposal(&replica, &cfg, &forged, None, &fetch).unwrap_err();
    assert!(matches!(err, VerifyRejection::Op { .. }), "{err}");
    assert!(
        err.to_string().contains("git does not hold this object"),
        "{err}"
    );

    // Changed content under a real key.
    let mut forged = honest.clone();
    if let SyncOp::Apply { object, .. } = &mut forged.ops[0] {
        object["spec"]["command"][0] = "/bin/evil".into();
    }
    let err = verify_proposal(&replica, &cfg, &forged, None, &fetch).unwrap_err();
    assert!(
        err.to_string().contains("content differs from git"),
        "{err}"
    );

    // A claim with an extra object.
    let mut forged = honest.clone();
    let Claim::Objects(claim) = &mut forged.claim else {
        panic!("a plan's proposal lists its objects")
    };
    let mut extra = claim[0].clone();
    extra.key.name = "ghost".into();
    claim.push(extra);
    let ghost_digest = forged.claim.digest();
    let err = verify_proposal(&replica, &cfg, &forged, None, &fetch).unwrap_err();
    assert!(matches!(err, VerifyRejection::Objects(_)), "{err}");
    assert!(
        err.to_string()
            .contains("not in git: Workload default/ghost"),
        "{err}"
    );

    // The digest form (what the ledger records): the honest digest passes, the ghost's fails.
    let mut digest = honest.clone();
    digest.claim = Claim::Digest(honest.claim.digest());
    verify_proposal(&replica, &cfg, &digest, None, &fetch).unwrap();
    digest.claim = Claim::Digest(ghost_digest);
    let err = verify_proposal(&replica, &cfg, &digest, None, &fetch).unwrap_err();
    assert!(
        matches!(err, VerifyRejection::ClaimDigest { objects: 2, .. }),
        "{err}"
    );

    // A wrong tree id, a wrong author.
    let mut forged = honest.clone();
    forged.provenance.tree = "0".repeat(40);
    let err = verify_proposal(&replica, &cfg, &forged, None, &fetch).unwrap_err();
    assert!(
        err.to_string().starts_with("tree does not match git"),
        "{err}"
    );
    let mut forged = honest.clone();
    forged.provenance.author = "Mallory <m@x>".into();
    assert!(matches!(
        verify_proposal(&replica, &cfg, &forged, None, &fetch),
        Err(VerifyRejection::Metadata {
            field: "author",
            ..
        })
    ));

    // A commit git does not hold at all.
    let mut forged = honest.clone();
    forged.provenance.commit = "ab".repeat(20);
    let err = verify_proposal(&replica, &cfg, &forged, None, &fetch).unwrap_err();
    assert!(
        matches!(err, VerifyRejection::CommitNotInGit { .. }),
        "{err}"
    );

    // A commit on another branch only.
    f.git(&["checkout", "-q", "-b", "side"]);
    f.write("deploy/x.yaml", &workload("x", 1));
    let side = f.commit("side");
    f.git(&["push", "-q", "origin", "side"]);
    proposer.fetch_branch("side", &fetch).unwrap();
    replica.fetch_branch("side", &fetch).unwrap();
    let mut forged = honest.clone();
    forged.provenance.commit = side;
    let err = verify_proposal(&replica, &cfg, &forged, None, &fetch).unwrap_err();
    assert!(matches!(err, VerifyRejection::NotOnBranch { .. }), "{err}");

    // Rolling the source back to c1 after c2 was synced.
    let old_cfg_snapshot = proposer.read_commit(&c1, "deploy", &f.url()).unwrap();
    let old_set = ManifestSet::of_snapshot(&old_cfg_snapshot);
    let rollback = nexus_gitops::verify::Proposal {
        source: cfg.id.clone(),
        provenance: old_cfg_snapshot.provenance.clone(),
        claim: Claim::Objects(old_set.claim()),
        ops: vec![],
    };
    let err = verify_proposal(&replica, &cfg, &rollback, Some(&c2), &fetch).unwrap_err();
    assert!(matches!(err, VerifyRejection::Rollback { .. }), "{err}");
    // ...but it is fine if it is the first sync.
    verify_proposal(&replica, &cfg, &rollback, None, &fetch).unwrap();

    // Wrong repository or source.
    let mut forged = honest.clone();
    forged.provenance.repo = "/elsewhere.git".into();
    assert!(matches!(
        verify_proposal(&replica, &cfg, &forged, None, &fetch),
        Err(VerifyRejection::WrongRepo { .. })
    ));
    let mut forged = honest;
    forged.source = SourceId::new("default", "other");
    assert!(matches!(
        verify_proposal(&replica, &cfg, &forged, None, &fetch),
        Err(VerifyRejection::WrongSource { .. })
    ));
}

#[test]
fn manifests_known_from_the_replicas_own_mirror_are_reused_and_every_check_still_runs() {
    let f = Fixture::new();
    f.write("deploy/a.yaml", &workload("a", 1));
    let c1 = f.commit("one");
    f.push();
    let cfg = config(&f.url(), true, false);
    let fetch = FetchOptions::default();
    let proposer = Mirrors::new(f.dir.path().join("proposer"))
        .open(&f.url())
        .unwrap();
    let replica = Mirrors::new(f.dir.path().join("replica"))
        .open(&f.url())
        .unwrap();
    let honest = prepare_sync(&proposer, &cfg, &fetch, &LiveObjects::new(), None)
        .unwrap()
        .proposal();
    // The replica validated c1 itself once (as its own sync or an earlier check would have).
    let own = verify_proposal(&replica, &cfg, &honest, None, &fetch)
        .unwrap()
        .manifests;
    let again =
        verify_proposal_with(&replica, &cfg, &honest, None, &fetch, Some(own.clone())).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&again.manifests, &own),
        "the known set is used, not validated again"
    );

    // The checks that do not depend on validating the manifests still run with a known set.
    let mut forged = honest.clone();
    forged.provenance.tree = "0".repeat(40);
    let err =
        verify_proposal_with(&replica, &cfg, &forged, None, &fetch, Some(own.clone())).unwrap_err();
    assert!(
        err.to_string().starts_with("tree does not match git"),
        "{err}"
    );
    let mut forged = honest.clone();
    let mut evil = honest.ops[0].clone();
    if let SyncOp::Apply { key, object, .. } = &mut evil {
        key.name = "miner".into();
        object["metadata"]["name"] = "miner".into();
    }
    forged.ops.push(evil);
    let err =
        verify_proposal_with(&replica, &cfg, &forged, None, &fetch, Some(own.clone())).unwrap_err();
    assert!(
        err.to_string().contains("git does not hold this object"),
        "{err}"
    );
    let mut forged = honest.clone();
    forged.provenance.commit = "ab".repeat(20);
    let err = verify_proposal_with(&replica, &cfg, &forged, None, &fetch, Some(own)).unwrap_err();
    assert!(
        matches!(err, VerifyRejection::CommitNotInGit { .. }),
        "{err}"
    );
    assert_eq!(honest.provenance.commit, c1);
}
