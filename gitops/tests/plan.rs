//! `nexus plan` on a real clone: base = origin/main, head = the local branch.

mod common;

use common::{Fixture, workload};
use nexus_gitops::plan::{
    EXIT_CHANGES, EXIT_ERROR, EXIT_NO_CHANGES, RepoPlan, plan_repo, render_text,
};
use nexus_gitops::{SourceId, SyncPolicy};

#[test]
fn plans_a_pull_request_branch() {
    let f = Fixture::new();
    let src = SourceId::new("default", "apps");
    let url = f.url();
    let req = |path: &'static str| RepoPlan {
        repo: &f.work,
        base_rev: "origin/main",
        head_rev: "HEAD",
        path,
        repo_url: &url,
        source: &src,
        policy: SyncPolicy {
            prune: true,
            self_heal: false,
        },
    };
    f.write("README.md", "# deploy\n");
    f.commit("init");
    f.push();
    // The pull request adds the manifests directory: base has no such path yet.
    f.write("deploy/api.yaml", &workload("api", 2));
    f.commit("add api");
    let r = plan_repo(&req("deploy"), None).unwrap();
    assert_eq!(r.exit_code(), EXIT_CHANGES);
    assert_eq!(
        r.plan.summary(),
        "1 to create, 0 to update, 0 to delete, 0 unchanged"
    );
    f.push();
    let r = plan_repo(&req("deploy"), None).unwrap();
    assert_eq!(r.exit_code(), EXIT_NO_CHANGES);

    f.write("deploy/api.yaml", &workload("api", 4));
    f.commit("scale api");
    let r = plan_repo(&req("deploy"), None).unwrap();
    assert_eq!(r.exit_code(), EXIT_CHANGES);
    let text = render_text(&r);
    assert!(
        text.contains("~ Workload default/api (update)\n    spec.replicas: 2 -> 4\n"),
        "{text}"
    );
    assert!(text.contains("head HEAD"), "{text}");

    f.write(
        "deploy/broken.yaml",
        "apiVersion: nexus/v1\nkind: Workload\nmetadata: {name: [x]}\n",
    );
    f.commit("broken");
    let r = plan_repo(&req("deploy"), None).unwrap();
    assert_eq!(r.exit_code(), EXIT_ERROR);
    assert!(
        render_text(&r).contains("deploy/broken.yaml:3:"),
        "{}",
        render_text(&r)
    );

    // Unknown revisions are errors the CLI maps to exit code 2.
    let mut bad = req("deploy");
    bad.base_rev = "origin/nope";
    assert!(plan_repo(&bad, None).is_err());
}
