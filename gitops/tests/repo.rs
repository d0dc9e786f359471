//! Repository access against the real `git` command: mirrors of local paths and file:// URLs,
//! reading trees, tree ids, force-pushes, missing branches and paths.

mod common;

use common::{Fixture, workload};
use nexus_gitops::repo::{FetchOptions, GitError, GitRepo, HeadMove, Mirrors};

#[test]
fn reads_manifests_sorted_with_repo_paths_and_tree_ids() {
    let f = Fixture::new();
    f.write("deploy/web.yaml", &workload("web", 2));
    f.write("deploy/apps/api.yml", &workload("api", 1));
    f.write("deploy/apps/notes.txt", "not a manifest");
    f.write("deploy/.github/workflows/ci.yaml", "on: push\n");
    f.write("deploy/.hidden.yaml", "junk: [\n");
    f.write("README.md", "# app\n");
    f.write("other/db.yaml", &workload("db", 1));
    let c1 = f.commit("add apps\n\nlonger body");
    f.push();

    let mirrors = Mirrors::new(&f.state);
    let mirror = mirrors.open(&f.url()).unwrap();
    assert!(mirror.dir().starts_with(f.state.join("git")));
    let head = mirror
        .fetch_branch("main", &FetchOptions::default())
        .unwrap();
    assert_eq!(head, c1);

    let snap = mirror.read_commit(&head, "./deploy/", &f.url()).unwrap();
    let names: Vec<&str> = snap.files.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["deploy/apps/api.yml", "deploy/web.yaml"]);
    assert_eq!(snap.path, "deploy");
    assert_eq!(snap.provenance.tree, f.git(&["rev-parse", "HEAD:deploy"]));
    assert_eq!(snap.root_tree, f.git(&["rev-parse", "HEAD^{tree}"]));
    assert_eq!(snap.provenance.commit, c1);
    assert_eq!(snap.provenance.repo, f.url());
    assert_eq!(snap.provenance.author, "Alice Example <alice@example.com>");
    assert_eq!(snap.provenance.committer, "CI Bot <ci@example.com>");
    assert_eq!(snap.provenance.message, "add apps\n\nlonger body\n");

    // The whole tree: root tree id, every manifest outside dot-directories.
    let all = mirror.read_commit(&head, ".", &f.url()).unwrap();
    assert_eq!(all.provenance.tree, all.root_tree);
    let names: Vec<&str> = all.files.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["deploy/apps/api.yml", "deploy/web.yaml", "other/db.yaml"]
    );

    // Reopening finds the same mirror, already populated.
    let again = mirrors.open(&f.url()).unwrap();
    assert_eq!(again.dir(), mirror.dir());
    assert_eq!(again.branch_head("main").unwrap(), c1);
}

#[test]
fn file_urls_and_missing_branches_and_paths() {
    let f = Fixture::new();
    f.write("deploy/a.yaml", &workload("a", 1));
    f.write("deploy/file.yaml/x.yaml", &workload("x", 1));
    let c = f.commit("one");
    f.push();
    let url = format!("file://{}", f.origin.display());
    let mirror = Mirrors::new(&f.state).open(&url).unwrap();
    assert_eq!(
        mirror
            .fetch_branch("main", &FetchOptions::default())
            .unwrap(),
        c
    );

    let err = mirror
        .fetch_branch("release", &FetchOptions::default())
        .unwrap_err();
    assert!(matches!(err, GitError::BranchNotFound { .. }), "{err}");
    assert!(err.to_string().contains("\"release\""), "{err}");

    let err = mirror.read_commit(&c, "nope", &url).unwrap_err();
    assert!(matches!(err, GitError::PathNotFound { .. }), "{err}");
    let err = mirror.read_commit(&c, "deploy/a.yaml", &url).unwrap_err();
    assert!(matches!(err, GitError::PathNotDirectory { .. }), "{err}");
    // A directory whose name ends in .yaml is walked, not read.
    let snap = mirror.read_commit(&c, "deploy", &url).unwrap();
    assert_eq!(snap.files.len(), 2);

    let err = mirror
        .read_commit(&"0".repeat(40), "deploy", &url)
        .unwrap_err();
    assert!(matches!(err, GitError::CommitNotFound { .. }), "{err}");

    // A repository that does not exist is a fetch error, not a panic.
    let gone = Mirrors::new(&f.state)
        .open("/nonexistent/repo.git")
        .unwrap();
    let err = gone
        .fetch_branch("main", &FetchOptions::default())
        .unwrap_err();
    assert!(matches!(err, GitError::Fetch { .. }), "{err}");
}

#[test]
fn branch_deleted_upstream_is_reported_and_forgotten() {
    let f = Fixture::new();
    f.write("a.yaml", &workload("a", 1));
    f.commit("one");
    f.push();
    f.git(&["push", "-q", "origin", "main:feature"]);
    let mirror = Mirrors::new(&f.state).open(&f.url()).unwrap();
    mirror
        .fetch_branch("feature", &FetchOptions::default())
        .unwrap();
    f.git(&["push", "-q", "origin", ":feature"]);
    let err = mirror
        .fetch_branch("feature", &FetchOptions::default())
        .unwrap_err();
    assert!(matches!(err, GitError::BranchNotFound { .. }), "{err}");
    assert!(mirror.branch_head("feature").is_err());
}

#[test]
fn force_push_is_read_at_the_new_head() {
    let f = Fixture::new();
    f.write("deploy/a.yaml", &workload("a", 1));
    let c1 = f.commit("one");
    f.write("deploy/b.yaml", &workload("b", 1));
    let c2 = f.commit("two");
    f.push();
    let mirror = Mirrors::new(&f.state).open(&f.url()).unwrap();
    assert_eq!(
        mirror
            .fetch_branch("main", &FetchOptions::default())
            .unwrap(),
        c2
    );
    assert_eq!(mirror.head_move(None, &c2), HeadMove::Initial);
    assert_eq!(mirror.head_move(Some(&c2), &c2), HeadMove::Unchanged);
    assert_eq!(mirror.head_move(Some(&c1), &c2), HeadMove::FastForward);

    // Rewrite history: drop c2, commit c3 on top of c1, force-push.
    f.git(&["reset", "-q", "--hard", &c1]);
    f.write("deploy/c.yaml", &workload("c", 3));
    let c3 = f.commit("three (rewritten)");
    f.force_push();

    let head = mirror
        .fetch_branch("main", &FetchOptions::default())
        .unwrap();
    assert_eq!(head, c3);
    assert_eq!(mirror.head_move(Some(&c2), &c3), HeadMove::ForcePush);
    assert_eq!(
        mirror.head_move(Some(&"1".repeat(40)), &c3),
        HeadMove::Unknown
    );
    let snap = mirror.read_commit(&head, "deploy", &f.url()).unwrap();
    let names: Vec<&str> = snap.files.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["deploy/a.yaml", "deploy/c.yaml"]);
    // The old commit is still readable (needed for drift against the last synced commit).
    assert!(mirror.read_commit(&c2, "deploy", &f.url()).is_ok());
}

#[test]
fn a_users_clone_resolves_revisions() {
    let f = Fixture::new();
    f.write("a.yaml", &workload("a", 1));
    let c1 = f.commit("one");
    f.push();
    f.write("a.yaml", &workload("a", 2));
    let c2 = f.commit("two");
    let repo = GitRepo::open(&f.work).unwrap();
    assert_eq!(repo.resolve("HEAD").unwrap(), c2);
    assert_eq!(repo.resolve("origin/main").unwrap(), c1);
    assert_eq!(repo.resolve("HEAD~1").unwrap(), c1);
    assert!(matches!(
        repo.resolve("nope"),
        Err(GitError::RevNotFound { .. })
    ));
    assert!(repo.git_dir().ends_with(".git/") || repo.git_dir().ends_with(".git"));
}

#[test]
fn https_and_ssh_transports_are_built_in() {
    // Nothing listens on port 9 of loopback: the fetch must fail as a connection error, not as
    // "unsupported URL protocol" (which is what libgit2 says when built without https/ssh).
    let dir = tempfile::tempdir().unwrap();
    let mirrors = Mirrors::new(dir.path());
    for url in [
        "https://127.0.0.1:9/org/repo.git",
        "ssh://git@127.0.0.1:9/org/repo.git",
    ] {
        let m = mirrors.open(url).unwrap();
        let err = m
            .fetch_branch("main", &FetchOptions::default())
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, GitError::Fetch { .. }), "{url}: {text}");
        assert!(
            !text.to_lowercase().contains("unsupported"),
            "{url}: {text}"
        );
    }
}
