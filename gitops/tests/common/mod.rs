//! Test fixtures: a bare "origin" repository and a clone driven by the real `git` command, and a
//! tiny in-memory stand-in for the ledger that applies sync ops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use nexus_gitops::Owner;
use nexus_gitops::sync::{LiveObject, LiveObjects, SyncOp, SyncPlan};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// The bare repository sources point at.
    pub origin: PathBuf,
    /// A clone people commit in.
    pub work: PathBuf,
    /// Where mirrors live.
    pub state: PathBuf,
}

pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
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
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin.git");
        let work = dir.path().join("work");
        let state = dir.path().join("state");
        git_in(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "origin.git"],
        );
        git_in(dir.path(), &["clone", "-q", "origin.git", "work"]);
        git_in(&work, &["checkout", "-q", "-b", "main"]);
        Fixture {
            dir,
            origin,
            work,
            state,
        }
    }

    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.work, args)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.work.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.work.join(rel)).unwrap();
    }

    /// Stages everything and commits; returns the commit id.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn push(&self) {
        self.git(&["push", "-q", "origin", "main"]);
    }

    pub fn force_push(&self) {
        self.git(&["push", "-q", "--force", "origin", "main"]);
    }

    pub fn url(&self) -> String {
        self.origin.display().to_string()
    }
}

pub fn workload(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: nexus/v1\nkind: Workload\nmetadata:\n  name: {name}\nspec:\n  command: [/bin/{name}]\n  replicas: {replicas}\n"
    )
}

/// Applies a plan's ops the way the ledger would: created objects are owned by the source.
pub fn apply_plan(live: &mut LiveObjects, plan: &SyncPlan) {
    let owner = Owner::GitSource(plan.source.clone());
    for op in &plan.ops {
        match op {
            SyncOp::Apply { key, object, .. } => {
                let prev = live.get(key).cloned();
                live.insert(
                    key.clone(),
                    LiveObject {
                        value: object.clone(),
                        owner: prev.as_ref().map_or(owner.clone(), |p| p.owner.clone()),
                        resource_version: Some(
                            prev.and_then(|p| p.resource_version).unwrap_or(0) + 1,
                        ),
                    },
                );
            }
            SyncOp::Delete { key, .. } => {
                live.remove(key);
            }
        }
    }
}
